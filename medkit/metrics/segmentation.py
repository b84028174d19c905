"""Per-segment Dice, HD95 and ASSD (mm) for label maps, with failures counted.

Definitions (MONAI's metric code does the distance work, with voxel spacing):

- Dice ``2|P n T| / (|P| + |T|)`` per label.
- HD95: 95th percentile of the symmetric surface distances (mm),
  ``monai.metrics.compute_hausdorff_distance(..., percentile=95, spacing=...)``.
- ASSD: average symmetric surface distance (mm),
  ``monai.metrics.compute_average_surface_distance(..., symmetric=True, spacing=...)``.

Edge cases, never silently dropped (MONAI returns NaN/inf there):

- Label in the truth, missing in the prediction (or the reverse: a
  hallucinated segment): Dice 0, HD95 = ASSD = the image diagonal in mm
  (the worst distance possible inside the volume). Counted in every mean.
- Label absent in both: no value (``None``) for that case, and that label is
  left out of the case mean; a segment can be legitimately absent (resected,
  or out of the field of view), and scoring it 1 would inflate the mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the volume's diagonal in mm: the worst possible surface distance."""
    return float(math.sqrt(sum((float(n) * float(s)) ** 2 for n, s in zip(shape, spacing))))


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (callers handle that case)."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & t).sum()) / denom


def _surface_distances(p: np.ndarray, t: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    # MONAI wants one-hot (B, C, X, Y, Z); one channel = this label.
    pp = torch.from_numpy(p[None, None].astype(np.float32))
    tt = torch.from_numpy(t[None, None].astype(np.float32))
    sp = [float(s) for s in spacing]
    hd = compute_hausdorff_distance(pp, tt, include_background=True, percentile=95, spacing=sp)
    asd = compute_average_surface_distance(pp, tt, include_background=True, symmetric=True, spacing=sp)
    return float(hd.item()), float(asd.item())


def segment_scores(pred: np.ndarray, truth: np.ndarray, labels: Sequence[int],
                   spacing: Sequence[float]) -> dict[int, dict[str, float | None]]:
    """Dice / HD95 / ASSD per label for one case.

    Args:
        pred, truth: integer label maps ``(X, Y, Z)`` on the same grid.
        labels: label values to score (e.g. 1..8).
        spacing: voxel size ``(X, Y, Z)`` in mm.

    Returns:
        ``{label: {"dice", "hd95", "assd"}}``; values are ``None`` when the label
        is absent from both maps (see the module doc).
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    worst = image_diagonal_mm(pred.shape, spacing)
    out: dict[int, dict[str, float | None]] = {}
    for lab in labels:
        p, t = pred == lab, truth == lab
        if not p.any() and not t.any():
            out[int(lab)] = {"dice": None, "hd95": None, "assd": None}
        elif not p.any() or not t.any():
            out[int(lab)] = {"dice": 0.0, "hd95": worst, "assd": worst}
        else:
            hd, asd = _surface_distances(p, t, spacing)
            # A non-finite distance can only mean an empty surface; score it as a miss.
            out[int(lab)] = {"dice": dice(p, t), "hd95": hd if math.isfinite(hd) else worst,
                             "assd": asd if math.isfinite(asd) else worst}
    return out


def case_row(case_id: str, scores: dict[int, dict[str, float | None]], names: dict[int, str] | None = None) -> dict:
    """Flatten one case's scores into a row with per-case means over present labels."""
    names = names or {}
    row: dict = {"case_id": case_id}
    for metric in ("dice", "hd95", "assd"):
        vals = []
        for lab, s in scores.items():
            row[f"{metric}_{names.get(lab, lab)}"] = s[metric]
            if s[metric] is not None:
                vals.append(s[metric])
        row[f"{metric}_mean"] = float(np.mean(vals)) if vals else None
    return row


def spread(values: Sequence[float | None]) -> dict:
    """Mean, std (ddof 1), n and a normal-approximation 95% CI of the non-None values."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0, "ci95": None}
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    half = 1.96 * std / math.sqrt(v.size)
    return {"mean": float(v.mean()), "std": std, "n": int(v.size),
            "ci95": [float(v.mean() - half), float(v.mean() + half)]}


def summarise(rows: list[dict]) -> dict:
    """Aggregate per-case rows: every numeric column -> :func:`spread`."""
    keys = [k for k in (rows[0] if rows else {}) if k != "case_id"]
    return {"cases": rows, "aggregate": {k: spread([r.get(k) for r in rows]) for k in keys}}
