"""Cases and MONAI transform chains for Couinaud training and inference.

Samples follow the data contract: dicts with ``image`` (``MetaTensor`` ``(1, X, Y, Z)``),
``label`` (same grid, 0..8) and ``case_id``.
"""

from __future__ import annotations

from pathlib import Path

from ..io import EmptyInputError, VolumeError, discover_cases, load_volume
from .train_config import AugmentConfig, DataConfig, PreprocessConfig


def list_cases(cfg: DataConfig) -> list[tuple[str, Path, Path | None]]:
    """``[(case_id, image_path, label_path or None)]`` sorted by id, for the configured layout."""
    root = Path(cfg.root)
    if cfg.layout == "nnunet":
        if not (root / "summary.json").exists() and cfg.generate_if_missing:
            _generate_once(cfg, root)
        return [(c.case_id, c.images[0], c.label) for c in discover_cases(root) if c.split == "train"]
    if cfg.label_dir is None:
        raise VolumeError(root, f"layout {cfg.layout!r} needs data.label_dir (the Couinaud label folder)")
    if not root.exists():
        raise EmptyInputError(root, "no such folder (see the data card for the expected layout)")
    if cfg.layout == "msd":
        pairs = [(cid, p, Path(cfg.label_dir) / p.name) for cid, p in msd_training_images(root)]
    else:  # lits: volume-N.nii -> label_dir/segmentation-N.nii (or .nii.gz)
        images = sorted(root.rglob("volume-*.nii*"), key=lambda p: int(p.name.split("-")[1].split(".")[0]))
        pairs = []
        for p in images:
            n = p.name.split("-")[1].split(".")[0]
            lab = next((q for q in (Path(cfg.label_dir) / f"segmentation-{n}{s}" for s in (".nii.gz", ".nii"))
                        if q.exists()), None)
            pairs.append((f"lits_{int(n):03d}", p, lab))
    if not pairs:
        raise EmptyInputError(root, f"no images in the {cfg.layout} layout (see the data card)")
    return [(cid, img, lab if lab is not None and lab.exists() else None) for cid, img, lab in pairs]


def _natural_key(name: str) -> tuple:
    """``liver_2`` before ``liver_10``: digit runs compare as numbers."""
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def msd_training_images(root: Path) -> list[tuple[str, Path]]:
    """``[(case_id, image)]`` of a Medical Segmentation Decathlon task folder as released.

    Works for every task (``Task08_HepaticVessel``: ``imagesTr/hepaticvessel_001.nii.gz``;
    ``Task03_Liver``: ``imagesTr/liver_0.nii.gz``): images carry no ``_0000`` channel suffix.
    With ``dataset.json`` its ``training`` list is the case list (paths like
    ``./imagesTr/liver_0.nii.gz``, resolved against ``root``) and every listed image must
    exist; without it, ``imagesTr/*.nii.gz``. The release tarballs hold macOS
    resource-fork files (``imagesTr/._liver_0.nii.gz``); they are not images and are
    skipped. Case id: the file name without ``.nii.gz``; natural sort order.
    """
    import json

    ds = root / "dataset.json"
    if ds.exists():
        try:
            meta = json.loads(ds.read_text())
            listed = [e["image"] if isinstance(e, dict) else e for e in meta["training"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise VolumeError(ds, f"not a Decathlon dataset.json with a 'training' list ({type(e).__name__}: {e})") \
                from None
        images = [root / str(p) for p in listed]  # "./imagesTr/x.nii.gz" -> root/imagesTr/x.nii.gz
        images = [p for p in images if not p.name.startswith("._")]
        missing = [p for p in images if not p.exists()]
        if missing:
            raise EmptyInputError(ds, f"lists {len(images)} training images, {len(missing)} missing on disk "
                                      f"(first: {missing[0]}); download the whole task or remove dataset.json")
    else:
        if not (root / "imagesTr").is_dir():
            raise EmptyInputError(root, "no imagesTr/ folder: expected a Decathlon task folder (see the data card)")
        images = [p for p in (root / "imagesTr").glob("*.nii.gz") if not p.name.startswith("._")]
    out = [(p.name[: -len(".nii.gz")] if p.name.endswith(".nii.gz") else p.stem, p) for p in images]
    return sorted(out, key=lambda x: _natural_key(x[0]))


def _generate_once(cfg: DataConfig, root: Path, timeout_s: float = 1800.0) -> None:
    """Generate the synthetic set into ``root``: rank 0 writes it, other ranks of an
    ``accelerate launch`` wait for its last file (``summary.json``)."""
    import time

    from ..runs import process_rank

    if process_rank() == 0:
        if root.exists() and any(root.iterdir()):
            raise VolumeError(root, "exists but holds no finished synthetic set (no summary.json); remove it "
                                    "or point data.root elsewhere")
        from ..synth.liver_ct import generate_dataset

        generate_dataset(cfg.synth, root)
        return
    t0 = time.monotonic()
    while not (root / "summary.json").exists():
        if time.monotonic() - t0 > timeout_s:
            raise VolumeError(root, f"rank {process_rank()}: waited {timeout_s:.0f} s for rank 0 to generate the data")
        time.sleep(1.0)


def load_sample(case_id: str, image: Path, label: Path | None) -> dict:
    """Read one case (image in HU, label as float MetaTensor on the image grid)."""
    d = {"case_id": case_id, "image": load_volume(image, modality="CT")}
    if label is not None:
        d["label"] = load_volume(label)
        if tuple(d["label"].shape) != tuple(d["image"].shape):
            raise VolumeError(label, f"label shape {tuple(d['label'].shape)} != image {tuple(d['image'].shape)}")
    return d


def preprocess_transforms(cfg: PreprocessConfig, with_label: bool = True):
    """Deterministic chain: RAS, spacing, window, body crop, pad/crop to ``grid_shape``."""
    from monai.transforms import (
        Compose,
        CropForegroundd,
        Orientationd,
        ResizeWithPadOrCropd,
        ScaleIntensityRanged,
        Spacingd,
    )

    keys = ["image", "label"] if with_label else ["image"]
    modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
    return Compose([
        Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=cfg.spacing_mm, mode=modes),
        # The CT window: HU in window_hu -> [0, 1], clipped (abdomen soft tissue by default).
        ScaleIntensityRanged("image", *cfg.window_hu, b_min=0.0, b_max=1.0, clip=True),
        # Body crop: windowed fat is ~0.15, air 0; a margin keeps the skin.
        CropForegroundd(keys, source_key="image", select_fn=lambda x: x > 0.05, margin=2, allow_smaller=True),
        ResizeWithPadOrCropd(keys, spatial_size=cfg.grid_shape),
    ])


def train_transforms(pre: PreprocessConfig, aug: AugmentConfig, batch: int, bank=None):
    """Random chain applied to preprocessed samples: augmentation, then pos/neg patch sampling.

    No flips: Couinaud labels are lateralised (segments V-VIII are the right lobe),
    so a left-right flip would teach wrong anatomy.
    """
    from monai.transforms import (
        Compose,
        EnsureTyped,
        Rand3DElasticd,
        RandCropByLabelClassesd,
        RandCropByPosNegLabeld,
        RandScaleIntensityd,
    )

    from ..transforms import RandRegistrationAugmentd

    ts = []
    if aug.kind == "registration":
        if bank is None:
            raise ValueError("augment.kind=registration needs a field bank")
        ts.append(RandRegistrationAugmentd(bank, prob=aug.prob, scale_range=aug.scale_range,
                                           compose_prob=aug.compose_prob))
    elif aug.kind == "elastic":
        ts.append(Rand3DElasticd(["image", "label"], sigma_range=aug.elastic_sigma,
                                 magnitude_range=aug.elastic_magnitude, prob=aug.prob,
                                 mode=["bilinear", "nearest"], padding_mode="border"))
    if pre.patch_sampling == "class_balanced":
        # Classes absent from a case get no centres (MONAI warns and renormalises the ratios).
        crop = RandCropByLabelClassesd(["image", "label"], "label", spatial_size=pre.patch, ratios=[1] * 9,
                                       num_classes=9, num_samples=batch, allow_smaller=False,
                                       warn=False)
    else:
        crop = RandCropByPosNegLabeld(["image", "label"], "label", spatial_size=pre.patch, pos=2, neg=1,
                                      num_samples=batch, allow_smaller=False)
    ts += [
        RandScaleIntensityd("image", factors=0.1, prob=0.3),
        crop,
        EnsureTyped(["image", "label"], track_meta=False),
    ]
    return Compose(ts)
