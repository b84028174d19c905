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
    critic_lr: float | None = None   # value head learning rate (None: lr)
    max_new_tokens: int = 24
    temperature: float = 1.0
    gamma: float = 1.0
    lam: float = 0.95
    clip_eps: float = 0.2
    value_clip: float | None = 0.2   # on whitened returns (unit scale); None: unclipped value loss
    vf_coef: float = 0.5
    critic: str = "detached"         # detached: the value head reads a detached trunk | shared: value loss trains the trunk
    reward_norm: str = "running"     # running | batch | none: whiten scores before the KL penalty and GAE
    kl_coef: float = 0.05            # per-token k1 penalty folded into the (whitened) reward (InstructGPT)
    whiten_advantages: bool = True
    agg: str = "token-mean"
    seed: int = 0
    save_every: int = 0
    resume: bool = False             # continue from <out_dir>/checkpoints/last.pt (only when asked)
    device: str = "auto"
