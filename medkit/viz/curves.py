"""Learning curves: the plateau test every benchmark budget comes from, and the PNG.

A budget is set by a curve, never by a time limit. :func:`plateau` is the rule the
issues name: the metric gained less than ``tol`` (absolute, e.g. 0.005 = half a Dice
point) over the last ``frac`` of the steps. :func:`plot_curves` draws one or more
named series (matplotlib, imported lazily; Agg backend, no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plateau(steps: Sequence[float], values: Sequence[float], *, frac: float = 0.25, tol: float = 0.005,
            higher_is_better: bool = True, smooth: int = 1) -> dict:
    """Did a curve stop improving?

    Args:
        steps: ``(N,)`` increasing step counts of the checks.
        values: ``(N,)`` the metric at each check (None/NaN checks are dropped).
        frac: the tail fraction of the *steps* (not of the checks) that is tested.
        tol: the largest gain over that tail that still counts as a plateau.
        higher_is_better: False for losses/TRE (the gain is then a decrease).
        smooth: running mean over this many checks before comparing (noisy metrics).

    Returns:
        ``{"reached", "gain", "start_step", "end_step", "value_start", "value_end"}``: ``gain`` is
        the best value in the tail minus the value at the tail's start (sign-adjusted, so
        positive means still improving). ``reached`` is False with fewer than 3 checks.
    """
    pts = [(float(s), float(v)) for s, v in zip(steps, values) if v is not None and np.isfinite(v)]
    if len(pts) < 3:
        return {"reached": False, "gain": None, "start_step": None, "end_step": None,
                "value_start": None, "value_end": None}
    s = np.array([p[0] for p in pts])
    v = np.array([p[1] for p in pts]) * (1.0 if higher_is_better else -1.0)
    if smooth > 1:  # trailing running mean
        v = np.array([v[max(0, i - smooth + 1): i + 1].mean() for i in range(len(v))])
    start = s[-1] - frac * (s[-1] - s[0])
    i0 = int(np.searchsorted(s, start, side="left"))
    i0 = min(i0, len(s) - 2)
    gain = float(v[i0 + 1:].max() - v[i0])
    sign = 1.0 if higher_is_better else -1.0
    return {"reached": bool(gain < tol), "gain": gain, "start_step": float(s[i0]), "end_step": float(s[-1]),
            "value_start": float(sign * v[i0]), "value_end": float(sign * v[-1])}


def plot_curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *,
                xlabel: str = "step", ylabel: str = "", title: str = "", logy: bool = False,
                hlines: dict[str, float] | None = None) -> Path:
    """One PNG with a line per named ``(x, y)`` series, optional labelled horizontal lines
    (targets, a peer's level). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, (x, y) in series.items():
        xs = [a for a, b in zip(x, y) if b is not None]
        ys = [b for b in y if b is not None]
        ax.plot(xs, ys, marker="o", markersize=2.5, linewidth=1.4, label=name)
    for name, yv in (hlines or {}).items():
        ax.axhline(yv, linestyle="--", linewidth=1, color="grey")
        # x in axes fraction (just inside the left spine), y in data: the label never sits on the axis
        ax.annotate(name, (0.01, yv), xycoords=ax.get_yaxis_transform(), fontsize=8, color="grey", va="bottom")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(series) > 1 or hlines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
