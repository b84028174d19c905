"""Deformation metrics: landmark TRE, image similarity, folding, label overlap.

Pure functions on NumPy arrays (no model, no medkit.nn: metrics stand on the
ground floor only). Conventions follow medkit.nn.warp: a pull-back field ``u``
on the phase grid maps a phase point ``q`` to its reference position ``q + u(q)``.
"""

from __future__ import annotations

import numpy as np


def tre(pred_mm: np.ndarray, true_mm: np.ndarray) -> dict:
    """Target registration error between ``(K, 3)`` predicted and true points (mm).

    Returns ``mean``, ``std``, ``p95`` (95th percentile), ``max`` and ``n``. A NaN
    prediction (a lost landmark) counts as the worst finite error, +inf if none
    is finite: it is never dropped.
    """
    e = np.linalg.norm(np.asarray(pred_mm, float) - np.asarray(true_mm, float), axis=1)
    bad = ~np.isfinite(e)
    if bad.any():
        e[bad] = np.max(e[~bad]) if (~bad).any() else np.inf
    return {"mean": float(e.mean()), "std": float(e.std()), "p95": float(np.percentile(e, 95)),
            "max": float(e.max()), "n": int(len(e))}


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Global normalised cross-correlation of two images (1 for identical non-constant images)."""
    a = np.asarray(a, float).ravel() - np.mean(a)
    b = np.asarray(b, float).ravel() - np.mean(b)
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def psnr(pred: np.ndarray, true: np.ndarray, data_range: float | None = None) -> float:
    """PSNR in dB; ``data_range`` defaults to ``true.max() - true.min()`` (HU: about 2000-3000)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    rng = float(true.max() - true.min()) if data_range is None else data_range
    mse = float(np.mean((pred - true) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(rng**2 / mse))


def ssim3d(pred: np.ndarray, true: np.ndarray, data_range: float | None = None, sigma: float = 1.5) -> float:
    """Mean 3D SSIM (Wang et al. 2004): Gaussian window of ``sigma`` voxels truncated at 3.5 sigma
    (11 voxels for 1.5), K1 = 0.01, K2 = 0.03, population (co)variances, averaged over the voxels
    whose window lies inside the image. That is MONAI's ``SSIMMetric`` (win_size 11, kernel_sigma
    1.5) and scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``; tests/metrics/test_def_metrics.py checks MONAI's.
    ``data_range`` defaults to ``true.max() - true.min()``."""
    from scipy.ndimage import gaussian_filter

    x, y = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    L = float(y.max() - y.min()) if data_range is None else data_range
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    f = lambda v: gaussian_filter(v, sigma, truncate=3.5)  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    r = int(3.5 * sigma + 0.5)  # window radius: inside this margin the window would leave the image
    if min(s.shape) <= 2 * r:
        raise ValueError(f"ssim3d: image {s.shape} is smaller than the {2 * r + 1}-voxel window")
    return float(s[(slice(r, -r),) * s.ndim].mean())


def folding_fraction(jac_det: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction of voxels with ``det J <= 0`` (inside ``mask`` when given)."""
    j = np.asarray(jac_det)
    if mask is not None:
        j = j[np.asarray(mask, bool)]
    return float(np.mean(j <= 0)) if j.size else 0.0


def dice(pred: np.ndarray, true: np.ndarray, labels: list[int] | None = None) -> dict[int, float]:
    """Dice per label. A label absent from the prediction but present in the truth scores 0;
    absent from both scores 1 (nothing to find, nothing found)."""
    pred, true = np.asarray(pred), np.asarray(true)
    labels = labels if labels is not None else [int(v) for v in np.unique(true) if v != 0]
    out = {}
    for v in labels:
        p, t = pred == v, true == v
        den = p.sum() + t.sum()
        out[int(v)] = 1.0 if den == 0 else float(2 * np.logical_and(p, t).sum() / den)
    return out
