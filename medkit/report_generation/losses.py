"""CoFE's losses as pure functions on tensors.

- :func:`counterfactual_info_nce`: for report embedding ``t_i``, the positive is its own
  image ``v_i``; negatives are the other images of the batch and its counterfactual
  ``v_cf_i``. With a batch of one this is CoFE's ``-log softmax([cos(t,v), cos(t,v_cf)] / tau)[0]``.
- :func:`diagnosis_loss`: multi-label BCE over the 14 CheXpert observations.
- :func:`report_nll`: token cross-entropy of the report, mean over report tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def counterfactual_info_nce(t: torch.Tensor, v: torch.Tensor, v_cf: torch.Tensor | None,
                            temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE of reports against factual images, with counterfactual images as hard negatives.

    Args:
        t: ``(B, D)`` report embeddings. v: ``(B, D)`` factual image embeddings.
        v_cf: ``(B, D)`` counterfactual image embeddings (``None``: plain image-report InfoNCE).

    Returns:
        scalar: ``mean_i -log( e^{s_ii} / (sum_j e^{s_ij} + e^{s_i,cf_i}) )`` with
        ``s = cos / temperature``.
    """
    t, v = F.normalize(t, dim=-1), F.normalize(v, dim=-1)
    logits = t @ v.T / temperature  # (B, B), diagonal = positives
    if v_cf is not None:
        cf = (t * F.normalize(v_cf, dim=-1)).sum(-1, keepdim=True) / temperature  # (B, 1)
        logits = torch.cat([logits, cf], 1)
    return F.cross_entropy(logits, torch.arange(t.shape[0], device=t.device))


def diagnosis_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits of ``(B, L)`` logits against ``(B, L)`` 0/1 targets."""
    return F.binary_cross_entropy_with_logits(logits, targets.float())


def report_nll(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Next-token NLL: ``logits`` ``(B, T, V)`` at position t predict ``targets[:, t + 1]`` ``(B, T)``;
    positions equal to ``ignore_index`` (prompt, padding) do not count."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets[:, 1:].reshape(-1),
                           ignore_index=ignore_index)
