"""Plumbing shared by the loops: accelerator, checkpoints, metrics, rollouts, reward calls.

No math here (that lives in advantages / losses / rewards).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from ..io.atomic import atomic_path


def make_accelerator(grad_accum: int, device: str = "auto"):
    """An ``accelerate.Accelerator`` (works on CPU); bf16 mixed precision on CUDA only."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    return Accelerator(gradient_accumulation_steps=grad_accum, mixed_precision="bf16" if cuda else "no",
                       cpu=not cuda)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class MetricsLog:
    """Append-only ``<out>/logs/metrics.jsonl``; one flushed JSON line per call."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / "logs" / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, row: dict[str, Any]) -> None:
        row = {"time": round(time.time(), 3), **{k: (float(v) if isinstance(v, torch.Tensor) else v)
                                                 for k, v in row.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def read(self) -> list[dict]:
        return [json.loads(x) for x in self.path.read_text().splitlines()] if self.path.exists() else []


def save_checkpoint(out_dir: str | Path, model, optimizer, step: int, config, extra: dict | None = None) -> Path:
    """Atomically write ``<out>/checkpoints/last.pt``: trainable params (LoRA adapter + value
    head), optimizer state, step, resolved config, RNG state."""
    from ..lm.lora import trainable_state_dict

    path = Path(out_dir) / "checkpoints" / "last.pt"
    state = {"step": step, "trainable": trainable_state_dict(model), "optimizer": optimizer.state_dict(),
             "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config,
             "rng": torch.get_rng_state(), "extra": extra or {}}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(out_dir: str | Path, model, optimizer=None) -> dict | None:
    """Restore ``last.pt`` into ``model`` (and ``optimizer``); returns the state or None if absent."""
    from ..lm.lora import load_trainable_state_dict

    path = Path(out_dir) / "checkpoints" / "last.pt"
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    load_trainable_state_dict(model, state["trainable"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return state


def vllm_available(device: torch.device) -> bool:
    """vLLM is used for rollouts only when installed AND on CUDA (guarded import)."""
    if device.type != "cuda":
        return False
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def rollout(model, tok, prompts: list[str], *, max_new_tokens: int, temperature: float, use_vllm: bool = False):
    """Generate a :class:`medkit.lm.Rollout`.

    The vLLM path is not implemented in this version (it needs weight syncing of the
    LoRA policy into a vLLM engine); ``use_vllm=True`` raises rather than silently
    falling back, and the loops only ask for it when :func:`vllm_available` is true
    and the config enables it.
    """
    from ..lm.generate import generate

    if use_vllm:
        raise NotImplementedError("vLLM rollouts are not implemented yet; set use_vllm=False")
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
