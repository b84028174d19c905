"""Figures of bench/report.py: the generator's co-occurrence beside MIMIC-CXR's published rates,
and how much of each counterfactual swap lies on the findings that differ (vs random cells)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHORT = {"No Finding": "NoF", "Enlarged Cardiomediastinum": "ECM", "Cardiomegaly": "CM", "Lung Opacity": "LO",
         "Lung Lesion": "LL", "Edema": "Ed", "Consolidation": "Co", "Pneumonia": "Pn", "Atelectasis": "At",
         "Pneumothorax": "Ptx", "Pleural Effusion": "PE", "Pleural Other": "PO", "Fracture": "Fx",
         "Support Devices": "SD"}


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from medkit.io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def plot_cooccurrence(gen: dict, published_rates: dict[str, float], path: Path) -> Path:
    """Left: the generator's P(B | A) (positive labels, rows A); right: its label rates beside
    MIMIC-CXR's published ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obs = gen["observations"]
    cond = np.array([[np.nan if v is None else v for v in r] for r in gen["conditional"]])
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5.2), dpi=110, gridspec_kw={"width_ratios": [1.1, 1]})
    im = a.imshow(cond, vmin=0, vmax=1, cmap="viridis")
    lab = [SHORT[o] for o in obs]
    a.set_xticks(range(len(obs)), lab, rotation=90, fontsize=8)
    a.set_yticks(range(len(obs)), lab, fontsize=8)
    for i in range(len(obs)):
        for j in range(len(obs)):
            if np.isfinite(cond[i, j]) and i != j and cond[i, j] >= 0.2:
                a.text(j, i, f"{cond[i, j]:.2f}", ha="center", va="center", fontsize=5.5, color="w")
    a.set_title(f"generator: P(column | row), positive labels, n={gen['n']}", fontsize=9)
    fig.colorbar(im, ax=a, fraction=0.046)
    x = np.arange(len(obs))
    b.bar(x - 0.2, gen["rate"], 0.4, label="generator")
    b.bar(x + 0.2, [published_rates[o] for o in obs], 0.4, label="MIMIC-CXR (published)")
    b.set_xticks(x, lab, rotation=90, fontsize=8)
    b.set_ylabel("share of studies, positive")
    b.set_title("label rates: generator vs MIMIC-CXR-JPG v2 CheXpert labels\n(LO differs: the generator applies "
                "CheXpert's hierarchy)", fontsize=9)
    b.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_overlap(builds: list[dict], path: Path) -> Path:
    """Left: per counterfactual build, mean share of swapped cells on the differing findings vs the
    share random cells would hit; right: per study (first and last build), precision against random."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110)
    steps = [o["step"] for o in builds]
    a.plot(steps, [o["precision"] for o in builds], marker="o", label="swapped cells")
    a.plot(steps, [o["random"] for o in builds], marker="s", label="random cells (expected)")
    a.set_xlabel("training step of the counterfactual build")
    a.set_ylabel("share of cells on the findings that differ")
    a.set_ylim(0, 1)
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    a.set_title("CoFE seed 0: swap masks vs true finding masks", fontsize=9)
    for o, c in ((builds[0], "tab:orange"), (builds[-1], "tab:blue")):
        ps = np.array(o["per_study"], dtype=float)
        if len(ps):
            b.scatter(ps[:, 1], ps[:, 0], s=4, alpha=0.35, color=c, label=f"build at step {o['step']}")
    b.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    b.set_xlabel("random cells on the findings (per study)")
    b.set_ylabel("swapped cells on the findings (per study)")
    b.set_xlim(0, 1)
    b.set_ylim(0, 1)
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
