"""Config of :func:`medkit.rl.sft.sft`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SFTConfig:
    out_dir: str = "runs/sft"
    steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    max_len: int = 256
    seed: int = 0
    save_every: int = 50            # checkpoint period in optimizer steps (0: only at the end)
    resume: bool = False            # continue from <out_dir>/checkpoints/last.pt (only when asked)
    device: str = "auto"
