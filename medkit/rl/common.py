"""Plumbing shared by the loops: accelerator, ranks, checkpoints, metrics, rollouts, reward calls.

No math here (that lives in advantages / losses / rewards).

Rollouts use ``transformers.generate`` (:func:`medkit.lm.generate`). There is no vLLM
path: it needs the LoRA policy synced into a vLLM engine every step and a GPU to test
on; an option that could only raise was removed rather than kept as a promise.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import torch


def make_accelerator(grad_accum: int, device: str = "auto"):
    """An ``accelerate.Accelerator`` (works on CPU); bf16 mixed precision on CUDA only.

    Under ``accelerate launch --num_processes N`` (torchrun env) the ranks join a process
    group (gloo on CPU, NCCL on CUDA) and ``prepare`` wraps the model in DDP.
    """
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    return Accelerator(gradient_accumulation_steps=grad_accum, mixed_precision="bf16" if cuda else "no",
                       cpu=not cuda)


def rank_seed(seed: int, rank: int, start: int = 0) -> int:
    """The sampling seed of one rank: ranks draw different prompts and samples, and a resumed
    loop (``start`` steps done) draws fresh ones rather than repeating its first steps."""
    return int(seed) + 1_000_003 * int(rank) + int(start)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class MetricsLog:
    """Append-only ``<out>/logs/metrics.jsonl``; one flushed JSON line per call.

    ``enabled=False`` (the non-main ranks of a multi-process run) makes ``log`` a no-op,
    so one file gets one row per step.
    """

    def __init__(self, out_dir: str | Path, enabled: bool = True):
        self.path = Path(out_dir) / "logs" / "metrics.jsonl"
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"time": round(time.time(), 3), **{k: (float(v) if isinstance(v, torch.Tensor) else v)
                                                 for k, v in row.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def read(self) -> list[dict]:
        return [json.loads(x) for x in self.path.read_text().splitlines()] if self.path.exists() else []


def checkpoint_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints" / "last.pt"


def save_checkpoint(out_dir: str | Path, model, optimizer, step: int, config, extra: dict | None = None) -> Path:
    """Write ``<out>/checkpoints/last.pt`` through the one checkpoint writer
    (:func:`medkit.runs.save_checkpoint`: atomic, config inside, loadable with weights_only).

    Keys: ``model`` (trainable parameters only: LoRA adapter + value head), ``optimizer``,
    ``step``, ``rng`` (torch CPU RNG state), ``extra`` (plain data, e.g. a Python RNG state).
    """
    from ..lm.lora import trainable_state_dict
    from ..runs import save_checkpoint as write

    state = {"step": int(step), "model": trainable_state_dict(model), "optimizer": optimizer.state_dict(),
             "rng": torch.get_rng_state(), "extra": extra or {}}
    return write(checkpoint_path(out_dir), state, config=config)


def load_checkpoint(out_dir: str | Path, model, optimizer=None) -> dict | None:
    """Restore ``last.pt`` into ``model`` (and ``optimizer``) and the torch RNG; returns the
    state, or None when there is no checkpoint. Read with ``weights_only=True``
    (:func:`medkit.runs.load_checkpoint`): a file holding other pickled objects is refused."""
    from ..lm.lora import load_trainable_state_dict
    from ..runs import load_checkpoint as read

    state = read(checkpoint_path(out_dir))
    if state is None:
        return None
    load_trainable_state_dict(model, state["model"] if "model" in state else state["trainable"])
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if "rng" in state:
        torch.set_rng_state(state["rng"])
    return state


def rollout(model, tok, prompts: list[str], *, max_new_tokens: int, temperature: float):
    """Sample a :class:`medkit.lm.Rollout` with ``transformers.generate``."""
    from ..lm.generate import generate

    return generate(model, tok, prompts, max_new_tokens=max_new_tokens, temperature=temperature, do_sample=True)


def call_rewards(reward_fns, rollout, batch_kw: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run reward callables on a rollout.

    Each ``fn(prompts, completions, rollout=..., **batch_kw)`` returns a list (None allowed) or
    a ``(B,)`` tensor (sequence reward) or a ``(B, T)`` tensor (token rewards, e.g. a token-level RM).
    Returns ``(token_rewards (B, T), valid (B,))``: sequence rewards are averaged over the
    applicable functions and placed at EOS; token rewards are added as they are.
    """
    from .rewards import combine_rewards, place_at_eos

    B = rollout.sequences.shape[0]
    cols, tok_r = [], torch.zeros(rollout.response_mask.shape)
    for fn in reward_fns:
        out = fn(rollout.prompts, rollout.texts, rollout=rollout, **(batch_kw or {}))
        if isinstance(out, torch.Tensor) and out.dim() == 2:
            tok_r = tok_r + out.float().cpu() * rollout.response_mask.cpu()
        else:
            cols.append(out.tolist() if isinstance(out, torch.Tensor) else list(out))
    if cols:
        seq, valid = combine_rewards(cols)
        tok_r = tok_r + place_at_eos(seq, rollout.response_mask.cpu())
    else:
        valid = torch.ones(B, dtype=torch.bool)
    return tok_r.to(rollout.sequences.device), valid.to(rollout.sequences.device)
