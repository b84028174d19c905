"""PPO/GRPO losses and KL estimators: pure functions on ``(B, T)`` tensors.

``mask`` is the response mask (policy tokens only); prompt and padding never
count. Aggregation modes (how per-token losses become one number):

- ``"token-mean"``: sum over all policy tokens / their count (DAPO; long answers weigh more);
- ``"sequence-mean-token-mean"``: mean over tokens within a sequence, then over sequences (GRPO paper);
- ``"sequence-mean-token-sum-norm"``: sum over tokens / a constant ``norm`` (default T), then mean over
  sequences (Dr. GRPO: no length bias).
"""

from __future__ import annotations

import torch

AGG_MODES = ("token-mean", "sequence-mean-token-mean", "sequence-mean-token-sum-norm")


def aggregate(loss_tok: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean",
              norm: float | None = None) -> torch.Tensor:
    """``(B, T)`` per-token loss -> scalar, see the module docstring."""
    m = mask.to(loss_tok.dtype)
    if mode == "token-mean":
        return (loss_tok * m).sum() / m.sum().clamp(min=1)
    if mode == "sequence-mean-token-mean":
        per = (loss_tok * m).sum(-1) / m.sum(-1).clamp(min=1)
        has = (m.sum(-1) > 0).to(loss_tok.dtype)
        return (per * has).sum() / has.sum().clamp(min=1)
    if mode == "sequence-mean-token-sum-norm":
        n = float(norm if norm is not None else loss_tok.shape[-1])
        return ((loss_tok * m).sum(-1) / n).mean()
    raise ValueError(f"aggregation must be one of {AGG_MODES}, got {mode!r}")


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimators (Schulman 2020) on samples from pi, ``(B, T)``.

    k1 = log pi - log pi_ref (unbiased, high variance, can be negative);
    k3 = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1 (unbiased, >= 0).
    """
    d = ref_logprobs - logprobs
    if kind == "k1":
        return -d
    if kind == "k3":
        return torch.exp(d) - d - 1.0
    raise ValueError(f"kind must be k1 / k3, got {kind!r}")


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, *, clip_eps: float = 0.2, clip_eps_high: float | None = None,
                agg: str = "token-mean", norm: float | None = None) -> tuple[torch.Tensor, dict]:
    """PPO clipped surrogate: ``-min(ratio * A, clip(ratio, 1-e, 1+e_high) * A)``, aggregated.

    All inputs ``(B, T)``; ``advantages`` are token advantages (broadcast a sequence
    advantage with :func:`medkit.rl.advantages.broadcast`). Returns ``(loss, stats)``
    with ``clipfrac`` and ``approx_kl`` (k3 of old vs new) over policy tokens.
    """
    hi = clip_eps if clip_eps_high is None else clip_eps_high
    ratio = torch.exp(logprobs - old_logprobs)
    un = ratio * advantages
    cl = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + hi) * advantages
    loss_tok = -torch.minimum(un, cl)
    m = mask.to(logprobs.dtype)
    with torch.no_grad():
        n = m.sum().clamp(min=1)
        stats = {"clipfrac": float(((cl < un).to(m.dtype) * m).sum() / n),
                 "approx_kl": float((kl_estimate(logprobs, old_logprobs, "k3") * m).sum() / n)}
    return aggregate(loss_tok, mask, agg, norm), stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *,
               clip: float | None = 0.2, agg: str = "token-mean") -> torch.Tensor:
    """Clipped value loss ``0.5 * max((V - R)^2, (clip(V, V_old +- c) - R)^2)``, ``(B, T)`` in."""
    lo = (values - returns) ** 2
    if clip is not None:
        vc = old_values + torch.clamp(values - old_values, -clip, clip)
        lo = torch.maximum(lo, (vc - returns) ** 2)
    return aggregate(0.5 * lo, mask, agg)
