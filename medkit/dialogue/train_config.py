"""Configuration of `medkit dialogue train` (:mod:`.train`): data, oracle, model and the three stages."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError
from .policy import ModelConfig

SOURCES = ("synth", "ddxplus", "both")
SPLITS = ("train", "validate", "test")


@dataclass
class DataConfig:
    source: str = "synth"          # synth | ddxplus (a local DDXPlus release folder) | both (one doctor for both)
    root: str | None = None        # ddxplus / both: the folder with release_*.json / release_*_patients[.csv]
    pool: int = 2000               # synth: cases generated (each has a split: train / val / test)
    n_train: int = 200             # cases with oracle demonstrations (SFT), per source
    n_rl: int = 32                 # further training cases for RL (no demonstrations), per source
    n_eval: int = 12               # cases of eval_split each stage is evaluated on, per source
    train_split: str = "train"     # where the demonstration and RL cases come from
    eval_split: str = "validate"   # where `medkit dialogue train` evaluates its stages (never test)
    kb_split: str = "train"        # ddxplus: the patients the knowledge base is counted on
    seed: int = 0


@dataclass
class OracleConfig:
    stop_p: float = 0.95           # diagnose once the posterior of the top condition reaches this
    min_gain: float = 0.01
    test_weight: float = 0.7
    group_weight: float = 1.0      # DDXPlus multi-choice questions: weight of their summed gain


@dataclass
class SFTStage:
    steps: int = 300
    batch_size: int = 8            # dialogues per step
    lr: float = 1e-4
    warmup: int = 20
    train_layers: int | None = None    # full fine-tuning of the top N blocks only (None: all; LoRA: unused)
    train_embeddings: bool = False
    eval_every: int = 50           # teacher-forced agreement with the oracle (medkit.dialogue.sft)
    eval_n: int = 64
    save_every: int = 50           # loop checkpoint period in steps (resume point of a killed run)


@dataclass
class SRPPOStage:
    enabled: bool = True
    steps: int = 4
    cases_per_step: int = 16
    lr: float = 5e-5
    vf_lr: float = 1e-3
    kl_coef: float = 0.0
    ppo_epochs: int = 1
    temperature: float = 1.0
    save_every: int = 1


@dataclass
class GRPOStage:
    enabled: bool = True
    steps: int = 6
    cases_per_step: int = 4
    group_size: int = 4
    lr: float = 5e-5
    temperature: float = 1.0
    reward: str = "success"
    info_gain_weight: float = 0.0
    entropy_alpha: float = 0.0
    entropy_kappa: float = 2.0
    planning_upweight: float = 0.0
    save_every: int = 1


@dataclass
class DialogueTrainConfig:
    name: str = "dialogue"
    seed: int = 0
    device: str = "cpu"
    max_turns: int = 10
    patient: str = "persona"              # training / evaluation patient: persona | generic
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    sft: SFTStage = field(default_factory=SFTStage)
    srppo: SRPPOStage = field(default_factory=SRPPOStage)
    grpo: GRPOStage = field(default_factory=GRPOStage)
    grpo_entropy_alpha: float = 0.0       # > 0: also train GRPO with DeepPlanner shaping (grpo_entropy/)


def check_config(cfg: DialogueTrainConfig) -> None:
    d = cfg.data
    if d.source not in SOURCES:
        raise ConfigError(f"data.source = {d.source!r} must be one of {list(SOURCES)}")
    if d.source in ("ddxplus", "both") and not d.root:
        raise ConfigError(f"data.source = {d.source} needs data.root (a local DDXPlus release folder)")
    if d.eval_split not in SPLITS or d.kb_split not in SPLITS or d.train_split not in SPLITS:
        raise ConfigError(f"data.train_split / eval_split / kb_split must be one of {list(SPLITS)}")
    if d.train_split == d.eval_split:
        raise ConfigError(f"data.train_split and data.eval_split are both {d.train_split!r}: held-out cases "
                          "must not be training cases")
    if cfg.patient not in ("persona", "generic"):
        raise ConfigError(f"patient = {cfg.patient!r} must be persona or generic")
    if cfg.grpo.reward not in ("success", "diaggym"):
        raise ConfigError(f"grpo.reward = {cfg.grpo.reward!r} must be success or diaggym")
    if cfg.max_turns < 1 or d.n_train < 1 or d.n_eval < 1:
        raise ConfigError("max_turns, data.n_train and data.n_eval must be at least 1")
    if cfg.grpo.group_size < 2:
        raise ConfigError("grpo.group_size must be at least 2 (group-normalised advantages)")
    if cfg.model.top_k < 1:
        raise ConfigError("model.top_k must be at least 1")
    if cfg.model.save_dtype not in ("float32", "float16", "bfloat16"):
        raise ConfigError(f"model.save_dtype = {cfg.model.save_dtype!r} must be float32, float16 or bfloat16")
