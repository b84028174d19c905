"""Configuration of Couinaud training (:mod:`medkit.segmentation.train`); YAML sets these fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import ConfigError, check_ranges
from ..synth.liver_ct import LiverCTConfig
from ..transforms.registration import RegistrationConfig
from .network_config import LiverFormerConfig


@dataclass
class DataConfig:
    """Where cases come from. ``layout``: ``nnunet`` (imagesTr/{case}_0000 + labelsTr, what
    ``medkit synth liver-ct`` writes), ``msd`` (a Decathlon task folder as released, e.g.
    Task08_HepaticVessel ``imagesTr/hepaticvessel_001.nii.gz`` or Task03_Liver
    ``imagesTr/liver_0.nii.gz``, ``dataset.json`` read when present; Couinaud labels of the
    same file name in ``label_dir``), ``lits`` (volume-N.nii; labels in ``label_dir``)."""

    root: Path = Path("data/liver-ct")
    layout: Literal["nnunet", "msd", "lits"] = "nnunet"
    label_dir: Path | None = None  # msd/lits: the Couinaud label folder
    generate_if_missing: bool = False  # nnunet only: run the synthetic generator into root
    synth: LiverCTConfig = field(default_factory=LiverCTConfig)
    n_val: int = 2  # last cases: validation (Dice per check)
    n_test: int = 0  # cases before validation: held out, never seen in training
    n_labelled: int | None = None  # training cases whose labels are used (rest: unlabelled scans)

    def __post_init__(self) -> None:
        check_ranges(self, at_least={"n_val": 0, "n_test": 0, "n_labelled": 1})


@dataclass
class PreprocessConfig:
    """The MONAI chain: orientation RAS, spacing, HU window, body crop, pad/crop to one grid."""

    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0)
    window_hu: tuple[float, float] = (-160.0, 240.0)  # abdomen soft tissue: liver vs contrast vessels
    grid_shape: tuple[int, int, int] = (80, 64, 64)  # common grid (registration needs one)
    patch: tuple[int, int, int] = (64, 64, 32)  # training crop / sliding-window ROI
    # Patch centres: ``class_balanced`` picks a class uniformly among background and the
    # eight segments, then a voxel of it (nnU-Net's foreground oversampling, per class), so
    # segment I, a few ml, is seen as often as segment VIII; ``pos_neg`` is MONAI's 2:1
    # foreground/background draw, which almost never centres on segment I.
    patch_sampling: Literal["class_balanced", "pos_neg"] = "class_balanced"

    def __post_init__(self) -> None:
        check_ranges(self, positive=("spacing_mm",), at_least={"grid_shape": 1, "patch": 1}, increasing=("window_hu",))


@dataclass
class AugmentConfig:
    kind: Literal["none", "elastic", "registration"] = "registration"
    prob: float = 0.6
    scale_range: tuple[float, float] = (0.5, 1.0)  # registration: field scale
    compose_prob: float = 0.25  # registration: chance to compose two fields
    max_targets: int = 6  # registration: targets per atlas (labelled + unlabelled training scans)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    # Registration gate: warped-atlas Couinaud Dice on a labelled pair must beat no warp by
    # this much before training starts (None: no check).
    gate_min_gain: float | None = 0.05
    elastic_sigma: tuple[float, float] = (4.0, 6.0)  # voxels (MONAI Rand3DElasticd)
    # Random offsets before smoothing; (100, 200) gives ~12 mm RMS displacement in the liver on
    # a 6 mm grid, about what the registration fields carry (~13 mm; bench/segmentation.py).
    elastic_magnitude: tuple[float, float] = (100.0, 200.0)

    def __post_init__(self) -> None:
        check_ranges(self, unit=("prob", "compose_prob"), at_least={"max_targets": 1, "elastic_magnitude": 0},
                     positive=("scale_range", "elastic_sigma"),
                     ordered=("scale_range", "elastic_sigma", "elastic_magnitude"))


@dataclass
class ModelConfig:
    arch: Literal["liverformer", "swinunetr", "basicunet", "dynunet"] = "liverformer"
    liverformer: LiverFormerConfig = field(default_factory=LiverFormerConfig)
    swin_feature_size: int = 12
    basicunet_features: tuple[int, int, int, int, int, int] = (16, 16, 32, 64, 128, 16)
    # DynUNet (MONAI's nnU-Net architecture): one stage per filter count, stride 2 after the first.
    dynunet_filters: tuple[int, ...] = (16, 32, 64, 128)


@dataclass
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 1e-5
    steps: int = 400
    batch_size: int = 2
    val_every: int = 100
    deep_supervision_weights: tuple[float, ...] = (1.0, 0.5, 0.25)

    def __post_init__(self) -> None:
        check_ranges(self, positive=("lr",), at_least={"weight_decay": 0, "steps": 1, "batch_size": 1, "val_every": 1,
                                                     "deep_supervision_weights": 0})


@dataclass
class TrainConfig:
    """Everything a training run needs; saved inside every checkpoint."""

    name: str = "couinaud"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sw_overlap: float = 0.25  # sliding-window overlap at validation

    def __post_init__(self) -> None:
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ConfigError(f"sw_overlap must be in [0, 1), got {self.sw_overlap}")

    @classmethod
    def tiny(cls) -> TrainConfig:
        """Seconds-long smoke training on CPU (tests, kill/resume checks): 10 mm grid, 16^3
        patches, a tiny LiverFormer with deep supervision, 3 steps, validation every 3."""
        return cls(
            name="tiny", seed=0, data=DataConfig(n_val=0),
            preprocess=PreprocessConfig(spacing_mm=(10.0, 10.0, 10.0), grid_shape=(32, 24, 24), patch=(16, 16, 16)),
            augment=AugmentConfig(kind="none"),
            model=ModelConfig(liverformer=LiverFormerConfig(channels=(4, 8, 16), embed_dim=16, depth=1, heads=2,
                                                            deep_supervision=True)),
            optim=OptimConfig(steps=3, batch_size=1, val_every=3, lr=1e-2))
