"""Config of :func:`medkit.rl.grpo.train_grpo`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GRPOConfig:
    out_dir: str = "runs/grpo"
    steps: int = 50
    prompts_per_step: int = 2
    group_size: int = 4              # G completions per prompt
    grad_accum: int = 1
    lr: float = 1e-4
    max_new_tokens: int = 24
    temperature: float = 1.0
    advantage: str = "grpo"          # grpo | rloo | tempo
    scale: str = "group"             # group | batch | none (GRPO std scaling)
    entropy_alpha: float = 0.0       # > 0: DeepPlanner entropy shaping
    entropy_kappa: float = 2.0
    plan_beta: float = 0.0           # > 0: upweight planning-heavy rollouts
    beta: float = 0.0                # KL coefficient vs the reference (adapter disabled); 0 = no ref pass
    kl_kind: str = "k3"
    clip_eps: float = 0.2
    clip_eps_high: float | None = None
    agg: str = "token-mean"
    seed: int = 0
    save_every: int = 0
    resume: bool = False            # continue from <out_dir>/checkpoints/last.pt (only when asked)
    device: str = "auto"
