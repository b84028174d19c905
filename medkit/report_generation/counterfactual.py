"""Counterfactual images by patch swapping until the diagnosis shifts (CoFE, arXiv 2407.14474).

For an anchor study, the *negative* is the most semantically similar study
whose diagnosis labels differ (:func:`pick_negatives`; similarity from report
embeddings or image features). Patches of the negative replace patches of the
anchor cumulatively, most relevant first (:func:`occlusion_relevance`), until
the diagnosis shifts (:func:`diagnosis_shifted`): the prediction on the swapped
image is closer (L1 over the 14 observations) to the negative's *labels* than to
the anchor's *labels*, the label-space reading of CoFE's "closer to the
negative's report than to its own". During training both label vectors are the
studies' own (a shift is then a real change of what the model reads from the
image, not a drift away from its own earlier guess); at test time the anchor's
labels are unknown and its prediction stands in for them, while the negative is
a training image of known labels. :func:`swap_counterfactual` returns the image
and its swap mask; :func:`cell_hits` and :func:`swap_precision` measure how much
of a swap mask lies on the findings that differ (against the share of random
cells that would).

Everything here is a pure function of tensors and a ``predict`` callable
``(K, C, H, W) -> (K, L)`` probabilities, so it is testable without the LM.
Shapes: images ``(C, H, W)``; patch grid ``(H // patch, W // patch)``; ``H``
and ``W`` must be multiples of ``patch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

Predict = Callable[[torch.Tensor], torch.Tensor]


def pick_negatives(similarity: np.ndarray, labels: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
    """For each row i, the column j != i of highest similarity with ``labels[j] != labels[i]``.

    Args:
        similarity: ``(N, M)``; row i = anchor i, column j = candidate j.
        labels: ``(N, L)`` anchor labels (0/1); with ``candidates`` ``(M, L)`` the
            candidates' labels (default: the anchors themselves, ``M == N``, and j == i is excluded).

    Returns:
        ``(N,)`` int indices into the candidates; -1 where every candidate has the same labels.
    """
    sim = np.asarray(similarity, dtype=np.float64).copy()
    lab = np.asarray(labels)
    cand = lab if candidates is None else np.asarray(candidates)
    differ = (lab[:, None, :] != cand[None, :, :]).any(-1)
    if candidates is None:
        np.fill_diagonal(differ, False)
    sim[~differ] = -np.inf
    out = sim.argmax(1)
    out[~differ.any(1)] = -1
    return out


def cosine_similarity(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``(N, M)`` cosine similarity of row vectors (``b`` defaults to ``a``)."""
    a = np.asarray(a, dtype=np.float64)
    b = a if b is None else np.asarray(b, dtype=np.float64)
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return an @ bn.T


def patch_mask(grid: tuple[int, int], cells, patch: int) -> torch.Tensor:
    """``(H, W)`` bool mask of the given patch cells (flat row-major indices)."""
    gh, gw = grid
    m = torch.zeros(gh * gw, dtype=torch.bool)
    m[torch.as_tensor(list(cells), dtype=torch.long)] = True
    return m.view(gh, gw).repeat_interleave(patch, 0).repeat_interleave(patch, 1)


def _grid(img: torch.Tensor, patch: int) -> tuple[int, int]:
    H, W = img.shape[-2:]
    if H % patch or W % patch:
        raise ValueError(f"image {tuple(img.shape[-2:])} is not a multiple of patch {patch}")
    return H // patch, W // patch


def diagnosis_shifted(p: torch.Tensor, target_anchor: torch.Tensor, target_negative: torch.Tensor) -> torch.Tensor:
    """``(K,)`` bool: prediction ``p`` ``(K, L)`` is nearer (L1) ``target_negative`` than ``target_anchor``
    (each ``(L,)`` or ``(1, L)``: 0/1 labels in training, probabilities where labels are unknown)."""
    return (p - target_negative).abs().sum(-1) < (p - target_anchor).abs().sum(-1)


@torch.no_grad()
def occlusion_relevance(predict: Predict, anchor: torch.Tensor, negative: torch.Tensor, patch: int,
                        batch: int = 64, target_negative: torch.Tensor | None = None) -> torch.Tensor:
    """``(gh, gw)`` relevance: how far swapping that one patch moves the prediction towards the negative.

    Relevance of cell c = ``d(p(anchor), t) - d(p(anchor with c swapped), t)`` with ``d`` the L1
    distance and ``t`` = ``target_negative`` (default: the prediction on the negative); larger =
    more relevant. One batched forward pass per ``batch`` cells.
    """
    gh, gw = _grid(anchor, patch)
    p_neg = predict(negative[None])[0] if target_negative is None else target_negative.to(anchor.device).float()
    base = (predict(anchor[None])[0] - p_neg).abs().sum()
    rel = torch.empty(gh * gw)
    for s in range(0, gh * gw, batch):
        cells = range(s, min(s + batch, gh * gw))
        imgs = anchor[None].repeat(len(cells), 1, 1, 1)
        for k, c in enumerate(cells):
            r, q = divmod(c, gw)
            sl = (slice(None), slice(r * patch, (r + 1) * patch), slice(q * patch, (q + 1) * patch))
            imgs[k][sl] = negative[sl]
        rel[s:s + len(cells)] = base - (predict(imgs) - p_neg).abs().sum(-1).cpu()
    return rel.view(gh, gw)


def gradient_relevance(predict: Predict, anchors: torch.Tensor, negatives: torch.Tensor, patch: int,
                       target_negative: torch.Tensor) -> torch.Tensor:
    """``(B, gh, gw)`` first-order relevance of every cell for a batch of anchor/negative pairs.

    Swapping cell c changes the image by ``delta = (negative - anchor) * 1_c``; to first order the
    distance ``d = |p(x) - t|_1`` to the negative's target ``t`` changes by ``grad_x d . delta``, so
    relevance ``-sum_{pixels in c} grad_x d * (negative - anchor)`` (larger = the swap moves the
    prediction further towards ``t``). One forward and backward pass for the whole batch instead of
    one forward per cell (:func:`occlusion_relevance`); the model must be in eval mode (batch
    statistics would couple the samples).

    Args:
        anchors, negatives: ``(B, C, H, W)``. target_negative: ``(B, L)``.
    """
    gh, gw = _grid(anchors, patch)
    x = anchors.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        d = (predict(x) - target_negative.to(x.device).float()).abs().sum()
        (g,) = torch.autograd.grad(d, x)
    contrib = -(g * (negatives - anchors)).sum(1)  # (B, H, W)
    B = contrib.shape[0]
    return contrib.reshape(B, gh, patch, gw, patch).sum((2, 4)).detach().cpu()


@dataclass
class Counterfactual:
    """``image`` ``(C, H, W)``; ``mask`` ``(H, W)`` bool (True = pixel from the negative);
    ``n_swapped`` patches; ``shifted``: whether the diagnosis shift was reached (else the
    ``max_fraction`` cap stopped the swapping); ``order``: cells, most relevant first;
    ``already_shifted``: the unswapped anchor's prediction was already nearer the negative's
    target (the model misreads the anchor), so one swapped patch "shifts" it."""

    image: torch.Tensor
    mask: torch.Tensor
    n_swapped: int
    shifted: bool
    order: list[int]
    already_shifted: bool = False

    @property
    def cells(self) -> list[int]:
        """The swapped cells (flat row-major indices), most relevant first."""
        return self.order[: self.n_swapped]


@torch.no_grad()
def swap_counterfactual(predict: Predict, anchor: torch.Tensor, negative: torch.Tensor, patch: int, *,
                        relevance: torch.Tensor | None = None, max_fraction: float = 0.5, batch: int = 64,
                        target_anchor: torch.Tensor | None = None,
                        target_negative: torch.Tensor | None = None) -> Counterfactual:
    """Swap the negative's patches into the anchor, most relevant first, until the diagnosis shifts.

    Candidate k holds the k most relevant cells swapped (k = 1..K, K = ``max_fraction`` of
    the cells); candidates are scored ``batch`` at a time, stopping at the first chunk holding a
    shifted one, and the first shifted one is kept. ``relevance`` ``(gh, gw)`` defaults to
    :func:`occlusion_relevance`.

    Args:
        target_anchor, target_negative: ``(L,)`` what the shift is measured against: the two
            studies' 0/1 labels in training; default the model's predictions on the two images
            (for a test image, whose labels are unknown).
    """
    gh, gw = _grid(anchor, patch)
    p_anchor = predict(anchor[None])[0] if target_anchor is None else target_anchor.to(anchor.device).float()
    p_neg = predict(negative[None])[0] if target_negative is None else target_negative.to(anchor.device).float()
    if relevance is None:
        relevance = occlusion_relevance(predict, anchor, negative, patch, batch, target_negative=p_neg)
    order = torch.argsort(relevance.flatten(), descending=True, stable=True).tolist()
    K = max(1, int(round(max_fraction * gh * gw)))
    already = bool(diagnosis_shifted(predict(anchor[None]), p_anchor[None], p_neg[None])[0])
    cur = anchor.clone()
    for s in range(0, K, batch):
        imgs = []
        for k in range(s, min(s + batch, K)):
            r, q = divmod(order[k], gw)
            sl = (slice(None), slice(r * patch, (r + 1) * patch), slice(q * patch, (q + 1) * patch))
            cur[sl] = negative[sl]
            imgs.append(cur.clone())
        hit = diagnosis_shifted(predict(torch.stack(imgs)), p_anchor[None], p_neg[None]).cpu()
        if hit.any():
            n = s + int(hit.float().argmax()) + 1
            return _result(anchor, negative, order, n, patch, (gh, gw), True, already)
    return _result(anchor, negative, order, K, patch, (gh, gw), False, already)


def _result(anchor, negative, order, n, patch, grid, shifted, already=False) -> Counterfactual:
    mask = patch_mask(grid, order[:n], patch)
    image = torch.where(mask[None], negative, anchor)
    return Counterfactual(image=image, mask=mask, n_swapped=n, shifted=shifted, order=order, already_shifted=already)


def cell_hits(mask: np.ndarray, patch: int) -> np.ndarray:
    """``(gh, gw)`` bool: which patch cells of an ``(H, W)`` mask hold at least one mask pixel."""
    m = np.asarray(mask, dtype=bool)
    H, W = m.shape
    if H % patch or W % patch:
        raise ValueError(f"mask {m.shape} is not a multiple of patch {patch}")
    return m.reshape(H // patch, patch, W // patch, patch).any(axis=(1, 3))


def swap_precision(cells, hits: np.ndarray) -> dict:
    """How much of a swap lies on the true findings, against random cells.

    Args:
        cells: swapped cells (flat row-major indices into ``hits``).
        hits: ``(gh, gw)`` bool from :func:`cell_hits` (cells touching the findings that differ).

    Returns:
        ``{"precision": share of swapped cells that touch the findings (None if none swapped),
        "random": share of all cells that do (the expected precision of the same number of cells
        drawn uniformly at random), "n_cells": number swapped}``.
    """
    flat = np.asarray(hits, dtype=bool).ravel()
    cells = list(cells)
    prec = float(flat[cells].mean()) if cells else None
    return {"precision": prec, "random": float(flat.mean()), "n_cells": len(cells)}


def save_counterfactual_png(path: str | Path, anchor: torch.Tensor, counterfactual: torch.Tensor,
                            mask: torch.Tensor, negative: torch.Tensor | None = None, scale: int = 4) -> Path:
    """Write panels original | counterfactual | mask (| negative) side by side, 8-bit grayscale.

    Images are ``(1, H, W)`` in [0, 1]; panels are upscaled ``scale`` times (nearest) and
    separated by a 2-pixel white bar. The mask panel is white where pixels came from the negative.
    """
    from PIL import Image

    from ..io.atomic import atomic_path

    panels = [anchor[0], counterfactual[0], mask.float()] + ([negative[0]] if negative is not None else [])
    H = panels[0].shape[0] * scale
    bar = np.full((H, 2), 255, np.uint8)
    cols = []
    for p in panels:
        a = np.clip(p.detach().cpu().numpy(), 0, 1)
        a = np.kron(a, np.ones((scale, scale)))
        cols += [np.round(a * 255).astype(np.uint8), bar]
    img = np.concatenate(cols[:-1], 1)
    with atomic_path(path) as tmp:
        Image.fromarray(img, mode="L").save(tmp, format="PNG")
    return Path(path)
