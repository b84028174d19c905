"""Config of :func:`medkit.rl.ppo.train_ppo`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PPOConfig:
    out_dir: str = "runs/ppo"
    steps: int = 50                  # rollout batches
    batch_size: int = 8              # prompts per rollout batch
    mini_batch_size: int = 4
    ppo_epochs: int = 2
    grad_accum: int = 1
    lr: float = 1e-4
    max_new_tokens: int = 24
    temperature: float = 1.0
    gamma: float = 1.0
    lam: float = 0.95
    clip_eps: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.1
    kl_coef: float = 0.05            # per-token k1 penalty folded into the reward (InstructGPT)
    whiten_advantages: bool = True
    agg: str = "token-mean"
    seed: int = 0
    save_every: int = 0
    resume: bool = True
    use_vllm: bool = False
    device: str = "auto"
