"""Paired comparisons for benchmarks: bootstrap CIs of paired differences, McNemar.

Every claim "A beats B" in a results file comes from one of these, on per-unit
(per case, per landmark, per item) values of both arms measured on the same units.

- :func:`paired_diff`: mean of ``a - b`` over units with a percentile bootstrap 95 %
  CI and a two-sided bootstrap p-value. Rows sharing a ``unit`` id (one per seed) are
  averaged first, so seeds never count as extra cases.
- :func:`mcnemar`: exact two-sided McNemar test on paired 0/1 outcomes.

Pure NumPy/SciPy; deterministic for a given ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def paired_diff(a: Sequence[float], b: Sequence[float], *, units: Sequence | None = None, n_boot: int = 10000,
                alpha: float = 0.05, seed: int = 0) -> dict:
    """Paired difference ``a - b``.

    Args:
        a, b: ``(N,)`` values of the two arms, row ``i`` of both measured on the same unit
            (and, with seeds, the same seed).
        units: ``(N,)`` unit ids (case ids). Rows of one unit (one per seed) are averaged
            into one paired difference before resampling, so the CI is over units. None:
            every row is its own unit.
        n_boot: bootstrap resamples of the units.

    Returns:
        ``{"mean", "ci95": [lo, hi], "p_boot", "n_units", "n_rows", "mean_a", "mean_b",
        "excludes_0"}``. ``p_boot`` is the two-sided bootstrap p-value (twice the smaller
        tail share of resampled means beyond 0, floored at ``1 / n_boot``).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D of one length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    if not keep.all():
        raise ValueError(f"{int((~keep).sum())} non-finite paired value(s): score failures as the worst value "
                         "instead of dropping them")
    d = a - b
    if units is not None:
        u = np.asarray(list(units))
        if len(u) != len(d):
            raise ValueError("units must have one id per row")
        keys, inv = np.unique(u, return_inverse=True)
        d_u = np.bincount(inv, weights=d) / np.bincount(inv)
    else:
        d_u = d
    n = len(d_u)
    if n == 0:
        return {"mean": None, "ci95": [None, None], "p_boot": None, "n_units": 0, "n_rows": 0,
                "mean_a": None, "mean_b": None, "excludes_0": False}
    rng = np.random.default_rng(seed)
    boots = d_u[rng.integers(0, n, size=(n_boot, n))].mean(1)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    p = 2 * min((boots <= 0).mean(), (boots >= 0).mean())
    p = float(min(1.0, max(p, 1.0 / n_boot)))
    return {"mean": float(d_u.mean()), "ci95": [float(lo), float(hi)], "p_boot": p, "n_units": int(n),
            "n_rows": int(len(d)), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "excludes_0": bool(lo > 0 or hi < 0)}


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict:
    """Exact two-sided McNemar test: ``b01`` = only B right, ``b10`` = only A right.

    p = P(X <= min(b01, b10)) * 2 under X ~ Binomial(b01 + b10, 1/2), capped at 1.
    Worked example: b10 = 9, b01 = 1 -> n = 10, P(X <= 1) = 11/1024, p = 0.0215.
    """
    from scipy.stats import binom

    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError("paired outcomes must have one length")
    b10 = int((a & ~b).sum())
    b01 = int((~a & b).sum())
    n = b10 + b01
    p = 1.0 if n == 0 else float(min(1.0, 2 * binom.cdf(min(b10, b01), n, 0.5)))
    return {"only_a": b10, "only_b": b01, "n": int(len(a)), "acc_a": float(a.mean()) if len(a) else None,
            "acc_b": float(b.mean()) if len(b) else None, "p": p}
