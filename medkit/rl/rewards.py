"""Reward functions: plain callables and pure tensor functions.

Conventions: sequence rewards are ``(B,)``; token rewards are ``(B, T)`` aligned
with the sequences (see :mod:`medkit.lm.generate`), 0 off the response mask.
A text reward function has the TRL signature ``fn(prompts, completions, **kw) ->
list[float | None]``; ``None`` means "not applicable" and is excluded (never
scored 0): :func:`combine_rewards` averages only the applicable ones and marks
rows with none as invalid.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` index of the last 1 in each row of a ``(B, T)`` mask (the EOS / final token)."""
    T = mask.shape[-1]
    idx = torch.arange(T, device=mask.device).expand_as(mask)
    return torch.where(mask > 0, idx, torch.full_like(idx, -1)).max(-1).values.clamp(min=0)


def place_at_eos(seq_reward: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` sequence reward -> ``(B, T)`` token rewards, all of it on the last response token."""
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    has = mask.sum(-1) > 0
    rows = torch.arange(mask.shape[0], device=mask.device)
    out[rows, last_token_index(mask)] = seq_reward.to(torch.float32) * has.to(torch.float32)
    return out


def self_reward(sft_logprobs: torch.Tensor, base_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Self-rewarding PPO reward (arXiv 2510.21090): ``log pi_SFT(y|x) - log pi_base(y|x)``.

    Args:
        sft_logprobs, base_logprobs: ``(B, T)`` per-token log-probs of the response under the
            SFT policy and the base (pre-SFT) model; mask ``(B, T)`` response tokens.
    Returns:
        ``(B,)`` summed over response tokens; give it at EOS with :func:`place_at_eos`
        (one reward per sequence avoids rewarding length).
    """
    m = mask.to(torch.float32)
    return ((sft_logprobs.float() - base_logprobs.float()) * m).sum(-1)


def extract_answer(text: str, pattern: str = r"<answer>(.*?)</answer>") -> str | None:
    """The first capture of ``pattern`` (stripped), or None."""
    m = re.search(pattern, text, flags=re.S | re.I)
    return m.group(1).strip() if m else None


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def exact_answer_reward(answers: Sequence[str | None], *, pattern: str | None = None,
                        contains: bool = True) -> Callable:
    """Make ``fn(prompts, completions) -> list[float | None]``: 1 if the answer matches, else 0.

    ``answers[i]`` is the truth for completion i (None -> reward None, not applicable).
    With ``pattern`` the answer is read from the capture group (no match -> 0); else the
    whole completion is used; ``contains`` accepts the truth anywhere in the normalised text.
    """
    def fn(prompts, completions, **kw):
        out: list[float | None] = []
        for c, a in zip(completions, answers):
            if a is None:
                out.append(None)
                continue
            got = extract_answer(c, pattern) if pattern else c
            if got is None:
                out.append(0.0)
                continue
            g, t = _norm(got), _norm(a)
            out.append(float(t == g or (contains and t != "" and t in g)))
        return out

    return fn


def format_reward(pattern: str = r"^\s*<answer>.*?</answer>\s*$") -> Callable:
    """Make ``fn(prompts, completions) -> list[float]``: 1 if the completion matches ``pattern``."""
    rx = re.compile(pattern, re.S)
    return lambda prompts, completions, **kw: [float(bool(rx.match(c))) for c in completions]


def combine_rewards(columns: Sequence[Sequence[float | None]], weights: Sequence[float] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean of several reward functions' outputs, skipping ``None``.

    Args:
        columns: K lists of B rewards each.
    Returns:
        ``(rewards (B,), valid (B,) bool)``; a row where every function said None is
        invalid (reward 0, to be excluded by the caller, e.g. ``group_advantages(valid=)``).
    """
    K = len(columns)
    w = list(weights) if weights is not None else [1.0] * K
    B = len(columns[0])
    r = torch.zeros(B)
    valid = torch.zeros(B, dtype=torch.bool)
    for i in range(B):
        num = den = 0.0
        for k in range(K):
            v = columns[k][i]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            num += w[k] * float(v)
            den += w[k]
        if den > 0:
            r[i] = num / den
            valid[i] = True
    return r, valid
