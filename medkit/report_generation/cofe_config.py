"""Configuration of CoFE training (:mod:`medkit.report_generation.train`); YAML sets these fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import ConfigError, check_ranges


@dataclass
class DataConfig:
    """Where studies come from: an R2Gen-layout ``annotation.json`` under ``root``.

    ``dataset`` picks R2Gen's report cleaner (``iu_xray`` / ``mimic_cxr``; the
    synthetic set is cleaned like IU-Xray). Studies without ``labels`` in the
    annotation (IU-Xray, MIMIC-CXR in R2Gen's files) get diagnosis targets from
    :func:`medkit.metrics.clinical.label_report` on their reference report.
    """

    root: Path = Path("data/synth-cxr")
    dataset: Literal["synthetic", "iu_xray", "mimic_cxr"] = "synthetic"
    image_dir: Path | None = None  # default: root/images
    generate_if_missing: bool = False  # synthetic only: run `medkit synth cxr` into root
    synth_n_cases: int = 120
    synth_seed: int = 0
    synth_size: int = 64
    image_size: int = 64  # encoder input side in pixels (images are resized)
    view: int = 0  # which entry of image_path (0: the frontal view in IU-Xray and the synthetic set)
    max_train: int | None = None  # first N training studies only (quick runs)
    max_eval: int | None = None  # first N val / test studies only

    def __post_init__(self) -> None:
        check_ranges(self, at_least={"synth_n_cases": 1, "synth_size": 8, "image_size": 8, "view": 0, "max_train": 1,
                                     "max_eval": 1})


@dataclass
class EncoderConfig:
    """MONAI 2D trunk. ``densenet``: DenseNet121 layout when ``block_config`` is (6, 12, 24, 16);
    ``vit``: ViT-B/16 layout when ``vit_patch=16, vit_hidden=768, vit_layers=12, vit_heads=12,
    vit_mlp=3072`` (CoFE's ViT option; the defaults below are a CPU-sized ~70k-parameter ViT)."""

    arch: Literal["densenet", "resnet", "vit"] = "densenet"
    init_features: int = 16
    growth_rate: int = 8
    block_config: tuple[int, ...] = (2, 2, 2)
    resnet_layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    resnet_planes: tuple[int, int, int, int] = (16, 32, 64, 128)
    vit_patch: int = 8  # patch side in pixels; data.image_size must be a multiple (64 px -> 8 x 8 = 64 tokens)
    vit_hidden: int = 64  # token width C (must be a multiple of vit_heads)
    vit_layers: int = 2  # transformer blocks
    vit_heads: int = 4  # attention heads per block
    vit_mlp: int = 128  # hidden width of each block's MLP

    def __post_init__(self) -> None:
        check_ranges(self, at_least={"init_features": 1, "growth_rate": 1, "block_config": 1, "resnet_layers": 1,
                                     "resnet_planes": 1, "vit_patch": 1, "vit_hidden": 1, "vit_layers": 1,
                                     "vit_heads": 1, "vit_mlp": 1})


@dataclass
class CounterfactualConfig:
    """Counterfactual images (:mod:`.counterfactual`) and their use in training."""

    # false: the no-counterfactual ablation. No counterfactual images: the InfoNCE term keeps only
    # the in-batch image negatives (set loss.w_cf=0 to drop InfoNCE too) and the prompt loses its
    # counterfactual tokens. tests/report_generation/test_model.py holds the code to this.
    enabled: bool = True
    negatives: Literal["report", "image"] = "report"  # similarity used to pick the negative study
    text_embedder: Literal["minilm", "tfidf"] = "minilm"  # report embedding (InfoNCE text side, negatives)
    patch: int = 8  # swapped patch side, pixels (of the image_size input)
    # which patches are most relevant: "gradient" (first-order, one backward pass per batch of
    # studies) or "occlusion" (one forward pass per patch: exact, ~20x slower on CPU)
    relevance: Literal["gradient", "occlusion"] = "gradient"
    swap_chunk: int = 8  # cumulative swap candidates scored per forward pass
    max_fraction: float = 0.5  # most of the image that may be swapped
    warmup_steps: int = 100  # diagnosis-only encoder steps before counterfactuals are built
    # rebuild the training counterfactuals every this many steps after the warm-up, against the
    # encoder as it is then (0: build once after the warm-up and keep them)
    refresh_every: int = 0
    bank_size: int = 256  # training images kept in the model for test-time counterfactual prompts
    n_pictures: int = 4  # original / counterfactual / mask PNGs written to the run folder

    def __post_init__(self) -> None:
        check_ranges(self, unit=("max_fraction",), at_least={"patch": 1, "swap_chunk": 1, "warmup_steps": 0,
                                                             "refresh_every": 0, "bank_size": 1, "n_pictures": 0})


@dataclass
class DecoderConfig:
    """The causal LM and the learnable prompt.

    ``lm``: ``smollm2-135m-instruct`` (packaged), a local HF folder, or
    ``tiny-word`` (a random-init 2-layer Llama with a word-level vocabulary
    built from the training reports, trained in full: the CPU benchmark's LM).
    """

    lm: str = "smollm2-135m-instruct"
    tune: Literal["frozen", "lora", "full"] = "lora"
    lora_r: int = 8
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # projections that get a LoRA adapter
    tiny_hidden: int = 128
    tiny_layers: int = 2
    tiny_heads: int = 4
    prompt: bool = True  # false: the no-learnable-prompt ablation (visual tokens only)
    n_context: int = 8  # learnable context tokens of the prompt
    max_report_tokens: int = 128  # training targets are truncated to this many tokens

    def __post_init__(self) -> None:
        check_ranges(self, at_least={"lora_r": 1, "tiny_hidden": 1, "tiny_layers": 1, "tiny_heads": 1, "n_context": 0,
                                     "max_report_tokens": 1})


@dataclass
class LossConfig:
    """Total = w_nll * NLL + w_diag * BCE + w_cf * InfoNCE (the last only with counterfactuals)."""

    w_nll: float = 1.0
    w_diag: float = 1.0
    w_cf: float = 0.5
    temperature: float = 0.1
    embed_dim: int = 128  # shared space of the InfoNCE image / report projections

    def __post_init__(self) -> None:
        check_ranges(self, at_least={"w_nll": 0, "w_diag": 0, "w_cf": 0, "embed_dim": 1}, positive=("temperature",))


@dataclass
class OptimConfig:
    lr: float = 1e-3
    lr_lm: float = 2e-4  # LM parameters (LoRA adapter or full)
    weight_decay: float = 0.01
    steps: int = 600
    batch_size: int = 8
    eval_every: int = 200
    warmup_lr_steps: int = 20

    def __post_init__(self) -> None:
        check_ranges(self, positive=("lr", "lr_lm"), at_least={"weight_decay": 0, "steps": 1, "batch_size": 1,
                                                              "eval_every": 1, "warmup_lr_steps": 0})


@dataclass
class GenerateConfig:
    beams: int = 1  # 1 = greedy
    max_new_tokens: int = 96

    def __post_init__(self) -> None:
        check_ranges(self, at_least={"beams": 1, "max_new_tokens": 1})


@dataclass
class EvalConfig:
    """How the test split is scored after training (:func:`~.train.score_reports`)."""

    # jar: METEOR 1.5 (pycocoevalcap's meteor-1.5.jar, needs Java; checked before training starts);
    # approx: medkit's pure-Python approximation, reported as such; none: no METEOR
    meteor: Literal["jar", "approx", "none"] = "jar"
    val_ce_every: int = 0  # also generate val reports and log val CE micro-F1 every N steps (0: never)
    val_ce_max: int = 64  # val studies used for that (first N)
    val_max: int | None = None  # val studies for the val NLL and diagnosis-head F1 at every check (None: all)
    # which checkpoint is ``best.pt`` (exported, used for the test split): the lowest val NLL, or
    # the highest val CE micro-F1 of generated reports (needs val_ce_every > 0; R2Gen-style model
    # selection on a generation metric, for a model judged by the findings it reports)
    select: Literal["val_nll", "val_ce_f1"] = "val_nll"

    def __post_init__(self) -> None:
        check_ranges(self, at_least={"val_ce_every": 0, "val_ce_max": 1, "val_max": 1})
        if self.select == "val_ce_f1" and self.val_ce_every < 1:
            raise ConfigError("select=val_ce_f1 needs val_ce_every >= 1 (the val CE-F1 it selects on)")


@dataclass
class ReportConfig:
    """``medkit train report`` settings (pipelines/report_*.yaml ``config:`` block)."""

    name: str = "report-synthetic"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    counterfactual: CounterfactualConfig = field(default_factory=CounterfactualConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
