"""Configuration of `medkit dialogue train` (:mod:`.train`): data, oracle, model and the three stages."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError
from .policy import ModelConfig


@dataclass
class DataConfig:
    source: str = "synth"          # synth (medkit.synth.cases) | ddxplus (a local DDXPlus release folder)
    root: str | None = None        # ddxplus: the folder with release_*.json / release_*_patients*
    pool: int = 2000               # synth: cases generated; held-out = split "test", training = "train"
    n_train: int = 200             # cases with oracle demonstrations (SFT)
    n_rl: int = 32                 # further training cases for RL (no demonstrations)
    n_eval: int = 12               # held-out cases for evaluation
    eval_split: str = "validate"   # where `medkit dialogue train` evaluates its stages (never test)
    kb_split: str = "train"        # ddxplus: the patients the knowledge base is counted on
    seed: int = 0


@dataclass
class OracleConfig:
    stop_p: float = 0.85
    min_gain: float = 0.01
    test_weight: float = 0.7


@dataclass
class SFTStage:
    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    max_len: int = 512
    save_every: int = 50           # loop checkpoint period in steps (resume point of a killed run)


@dataclass
class SRPPOStage:
    enabled: bool = True
    steps: int = 4
    batch_size: int = 16
    mini_batch_size: int = 8
    ppo_epochs: int = 1
    lr: float = 5e-4
    kl_coef: float = 0.05
    temperature: float = 1.0
    save_every: int = 1


@dataclass
class GRPOStage:
    enabled: bool = True
    steps: int = 6
    cases_per_step: int = 4
    group_size: int = 4
    lr: float = 5e-4
    temperature: float = 1.0
    reward: str = "success"
    info_gain_weight: float = 0.0
    entropy_alpha: float = 0.0
    entropy_kappa: float = 2.0
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
    if cfg.data.source not in ("synth", "ddxplus"):
        raise ConfigError(f"data.source = {cfg.data.source!r} must be synth or ddxplus")
    if cfg.data.source == "ddxplus" and not cfg.data.root:
        raise ConfigError("data.source = ddxplus needs data.root (a local DDXPlus release folder)")
    if cfg.patient not in ("persona", "generic"):
        raise ConfigError(f"patient = {cfg.patient!r} must be persona or generic")
    if cfg.grpo.reward not in ("success", "diaggym"):
        raise ConfigError(f"grpo.reward = {cfg.grpo.reward!r} must be success or diaggym")
    if cfg.max_turns < 1 or cfg.data.n_train < 1 or cfg.data.n_eval < 1:
        raise ConfigError("max_turns, data.n_train and data.n_eval must be at least 1")
    if cfg.grpo.group_size < 2:
        raise ConfigError("grpo.group_size must be at least 2 (group-normalised advantages)")
