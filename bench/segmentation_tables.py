"""Assemble the segmentation benchmark's tables, curves and targets from its finished cells.

``assemble(bench, settings)`` is what every ``bench/segmentation.py`` command ends with:
it reads ``bench/results/segmentation-<device>/cells/*.json``, draws the learning curves
(``.../curves/*.png``), prints the tables and writes ``bench/results/segmentation-<device>.json``
with the ``targets`` of issue 17. Missing cells leave their rows out and their targets
``None`` (not held); nothing here trains.
"""

from __future__ import annotations

import numpy as np

from bench.cells import Bench, target, target_ci
from medkit.metrics.stats import paired_diff
from medkit.segmentation import COUINAUD_NAMES
from medkit.viz.curves import plot_curves

NAMES = list(COUINAUD_NAMES.values())
PEERS = ("dynunet", "swinunetr", "basicunet")
LABEL = {"liverformer": "LiverFormer", "liverformer_notr": "LF no-transformer", "dynunet": "DynUNet",
         "basicunet": "BasicUNet", "swinunetr": "SwinUNETR"}


def _row(cells, widths) -> str:
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def _case_means(results: list[dict], key: str = "test") -> dict[str, float]:
    """Per test case: its mean-over-segments Dice averaged over the given cells (seeds)."""
    acc: dict[str, list[float]] = {}
    for r in results:
        for c in r[key]["cases"]:
            acc.setdefault(c["case_id"], []).append(c["dice_mean"])
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _paired(a: list[dict], b: list[dict], key: str = "test") -> dict | None:
    """LiverFormer-style paired difference of two arms over the test cases (seeds averaged per case)."""
    if not a or not b:
        return None
    ma, mb = _case_means(a, key), _case_means(b, key)
    ids = sorted(set(ma) & set(mb))
    return paired_diff([ma[i] for i in ids], [mb[i] for i in ids], units=ids)


def _fmt_diff(d: dict | None) -> str:
    if d is None:
        return "n/a (cells missing)"
    lo, hi = d["ci95"]
    return f"{100 * d['mean']:+.1f} Dice points [95% CI {100 * lo:+.1f}, {100 * hi:+.1f}], p={d['p_boot']:.3g}, " \
           f"{d['n_units']} cases"


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{np.mean(xs):.3f}+-{np.std(xs, ddof=1):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def _by(cells: dict, prefix: str) -> dict[str, list[dict]]:
    """Cells under ``prefix`` grouped by the key with its seed removed."""
    out: dict[str, list[dict]] = {}
    for k, v in cells.items():
        if k.startswith(prefix):
            out.setdefault(k.rsplit("/", 1)[0], []).append(v)
    return out


def table1(bench: Bench, s: dict, curves_dir) -> tuple[list[str], dict, dict]:
    steps = s["optim"].steps
    cells = bench.cells("table1/")
    groups = {k.split("/")[1]: v for k, v in _by(cells, "table1/").items() if k.endswith(f"/steps{steps}")}
    lines = [f"Table 1: test Dice on {s['n_test']} held-out phantoms; {steps} steps x batch {s['optim'].batch_size}, "
             f"patch {tuple(s['pre'].patch)}, {s['pre'].spacing_mm[0]:g} mm grid {tuple(s['pre'].grid_shape)}, "
             f"AdamW {s['optim'].lr:g} poly, Dice+CE, no deep supervision, class-balanced patches, "
             f"{s['n_train']} training cases, no augmentation. Mean +- sd over seeds of the mean over cases.",
             _row(["network", "seeds"] + [f"D-{n}" for n in NAMES] + ["Dice", "HD95 mm", "plateau", "own step",
                                                                      "Dice@own"],
                  [18, 5] + [5] * 8 + [13, 10, 8, 8, 13])]
    rows = {}
    for net in ("liverformer", "liverformer_notr", "dynunet", "swinunetr", "basicunet"):
        rs = groups.get(net, [])
        if not rs:
            lines.append(_row([LABEL[net], 0, "(no finished cell)"], [18, 5, 20]))
            continue
        dice = [r["test"]["dice_mean"] for r in rs]
        rows[net] = {"seeds": sorted(r["seed"] for r in rs), "dice_mean": float(np.mean(dice)), "dice_per_seed": dice,
                     "dice": {n: float(np.mean([r["test"]["dice"][n] for r in rs])) for n in NAMES},
                     "hd95_mean": float(np.mean([r["test"]["hd95_mean"] for r in rs])),
                     "plateau_reached": [bool(r["plateau"]["reached"]) for r in rs],
                     "plateau_gain": [r["plateau"]["gain"] for r in rs],
                     "own_plateau_step": [r["own_plateau_step"] for r in rs],
                     "dice_own_plateau": float(np.mean([r["test_own_plateau"]["dice_mean"] for r in rs])),
                     "params": rs[0]["params"], "train_s_per_step_in_cell": float(np.mean([r["train_s_per_step"]
                                                                                           for r in rs]))}
        rr = rows[net]
        lines.append(_row([LABEL[net], len(rs)] + [f"{rr['dice'][n]:.3f}" for n in NAMES]
                          + [_mean_sd(dice), f"{rr['hd95_mean']:.1f}",
                             f"{sum(rr['plateau_reached'])}/{len(rs)}",
                             "/".join(str(x) for x in rr["own_plateau_step"]),
                             _mean_sd([r["test_own_plateau"]["dice_mean"] for r in rs])],
                          [18, 5] + [5] * 8 + [13, 10, 8, 8, 13]))
    lines.append("  plateau: cells whose validation curve gained < 0.5 Dice points over the last quarter of the "
                 "steps; own step: first check after which smoothed validation Dice gains < 0.5 points "
                 "(test Dice there: Dice@own)")
    # Learning curves (seed 0 of every network): the PNG the budget comes from.
    series = {}
    for net, rs in groups.items():
        r0 = min(rs, key=lambda r: r["seed"])
        series[f"{LABEL[net]} (seed {r0['seed']})"] = ([h["step"] for h in r0["history"]],
                                                       [h.get("dice_mean") for h in r0["history"]])
    if series:
        plot_curves(series, curves_dir / "table1_val_dice.png", ylabel="validation Dice (mean I-VIII)",
                    title=f"Table 1 networks: validation Dice, {s['n_val']} cases, budget {steps} steps")
        lines.append(f"  curves: {(curves_dir / 'table1_val_dice.png').relative_to(bench.root.parent.parent)}")
    diffs, targets = {}, {}
    lf = groups.get("liverformer", [])
    for other in (*PEERS, "liverformer_notr"):
        diffs[other] = _paired(lf, groups.get(other, []))
        diffs[other + "@own"] = _paired(lf, groups.get(other, []), "test_own_plateau")
    peers = {p: rows[p]["dice_mean"] for p in PEERS if p in rows}
    best = max(peers, key=peers.get) if peers else None
    lines.append("Paired differences, LiverFormer minus each (per test case, seeds averaged; bootstrap 95 % CI):")
    for other in (*PEERS, "liverformer_notr"):
        lines.append(f"  - {LABEL[other]:18s} at the budget: {_fmt_diff(diffs[other])}; "
                     f"each at its own plateau: {_fmt_diff(diffs[other + '@own'])}")
    d = diffs.get(best) if best else None
    targets["liverformer_vs_best_peer"] = target(
        d["mean"] if d else None, 0.0, ">=", best_peer=best, ci95=d["ci95"] if d else None,
        p_boot=d["p_boot"] if d else None, n_units=d["n_units"] if d else None,
        rule="held when every peer has a finished cell and LiverFormer's mean Dice minus the best peer's "
             "(paired over test cases) is >= 0")
    missing = [p for p in PEERS if p not in rows]
    if missing:  # the best peer is not known while a peer has no cell: never held on a partial table
        targets["liverformer_vs_best_peer"].update(held=False, peers_missing=missing,
                                                   best_peer_so_far=targets["liverformer_vs_best_peer"].pop("best_peer"))
    dn = diffs.get("liverformer_notr")
    targets["liverformer_vs_no_transformer"] = (target_ci(dn) if dn else target(None, 0.0, ">"))
    return lines, {"rows": rows, "paired": diffs, "best_peer": best, "steps": steps}, targets


def timing_table(bench: Bench, s: dict) -> tuple[list[str], dict, dict]:
    cells = bench.cells("timing/")
    if not cells:
        return ["Speed and memory: (timing cell not run)"], {}, {
            "inference_time_vs_swinunetr": target(None, 0.5, "<=")}
    key, t = sorted(cells.items())[-1]
    grid = tuple(t.pop("_grid"))
    dev = t.pop("_device", "cpu")  # cells before --device ran on the CPU
    mem = "torch.cuda.max_memory_allocated growth in a fresh process" if dev.startswith("cuda") else \
        "RSS growth in a fresh process, CPU"
    lf = t["liverformer"]
    lines = [f"Speed and memory (one process, networks interleaved round-robin, median of {lf['rounds']} rounds; "
             f"training step: batch {s['optim'].batch_size} x {tuple(s['pre'].patch)}, AdamW; inference: sliding "
             f"window over a {grid} grid; device {dev}; memory: {mem})",
             _row(["network", "params", "s/step", "s/case", "train MB", "infer MB", "LF/x params", "LF/x s/step",
                   "LF/x s/case", "LF/x train MB"], [18, 9, 7, 7, 9, 9, 11, 11, 11, 13])]

    def ratio(a, b):
        return f"{a / b:.2f}" if a is not None and b else "n/a"

    for net in ("liverformer", "liverformer_notr", "dynunet", "swinunetr", "basicunet"):
        r = t[net]
        lines.append(_row([LABEL[net], f"{r['params'] / 1e6:.3f}M", f"{r['train_s_per_step']:.3f}",
                           f"{r['infer_s_per_case']:.3f}", f"{r['train_mem_mb'] or float('nan'):.0f}",
                           f"{r['infer_mem_mb'] or float('nan'):.0f}", ratio(lf["params"], r["params"]),
                           ratio(lf["train_s_per_step"], r["train_s_per_step"]),
                           ratio(lf["infer_s_per_case"], r["infer_s_per_case"]),
                           ratio(lf["train_mem_mb"], r["train_mem_mb"])], [18, 9, 7, 7, 9, 9, 11, 11, 11, 13]))
    rt = lf["infer_s_per_case"] / t["swinunetr"]["infer_s_per_case"]
    return lines, {"cell": key, "grid": list(grid), "device": dev, **t}, {
        "inference_time_vs_swinunetr": target(rt, 0.5, "<=", lf_s_per_case=lf["infer_s_per_case"],
                                              swinunetr_s_per_case=t["swinunetr"]["infer_s_per_case"])}


def few_table(bench: Bench, s: dict, curves_dir) -> tuple[list[str], dict, dict]:
    f = s["few"]
    steps = f["optim"].steps
    lines = []
    q = bench.load("registration/quality")
    if q is not None:
        lines += [q["printed"], ""]
    groups = _by(bench.cells("few/"), "few/")
    lines += [f"Table 2: LiverFormer with n labelled cases + {f['n_unlabelled']} unlabelled registration targets; "
              f"{steps} steps x batch {f['optim'].batch_size}, patch {tuple(f['pre'].patch)}; test Dice on "
              f"{s['n_test']} phantoms, mean +- sd over seeds (labelled cases drawn per seed)",
              _row(["n", "augmentation", "seeds", "Dice", "HD95 mm", "plateau", "Dice@own"], [3, 13, 5, 13, 8, 8, 13])]
    rows, diffs = {}, {}
    for n in f["n_labels"]:
        for aug in ("none", "elastic", "registration"):
            rs = groups.get(f"few/n{n}/{aug}/steps{steps}", [])
            if not rs:
                continue
            dice = [r["test"]["dice_mean"] for r in rs]
            rows[f"n{n}/{aug}"] = {"seeds": sorted(r["seed"] for r in rs), "dice_per_seed": dice,
                                   "dice_mean": float(np.mean(dice)),
                                   "hd95_mean": float(np.mean([r["test"]["hd95_mean"] for r in rs])),
                                   "plateau_reached": [bool(r["plateau"]["reached"]) for r in rs],
                                   "own_plateau_step": [r["own_plateau_step"] for r in rs]}
            lines.append(_row([n, aug, len(rs), _mean_sd(dice), f"{rows[f'n{n}/{aug}']['hd95_mean']:.1f}",
                               f"{sum(rows[f'n{n}/{aug}']['plateau_reached'])}/{len(rs)}",
                               _mean_sd([r["test_own_plateau"]["dice_mean"] for r in rs])],
                              [3, 13, 5, 13, 8, 8, 13]))
        for other in ("none", "elastic"):
            a = groups.get(f"few/n{n}/registration/steps{steps}", [])
            b = groups.get(f"few/n{n}/{other}/steps{steps}", [])
            sa, sb = {r["seed"] for r in a}, {r["seed"] for r in b}
            both = sa & sb  # paired seeds only
            diffs[f"n{n}/registration-{other}"] = _paired([r for r in a if r["seed"] in both],
                                                          [r for r in b if r["seed"] in both])
    lines.append("Paired differences, registration minus each (per test case, paired seeds averaged):")
    for k, d in diffs.items():
        lines.append(f"  - {k}: {_fmt_diff(d)}")
    targets = {}
    for other in ("none", "elastic"):
        a, b = [], []
        for n in (1, 2):  # the 1-2 label regime, pooled: per case, averaged over n and paired seeds
            ra = {r["seed"]: r for r in groups.get(f"few/n{n}/registration/steps{steps}", [])}
            rb = {r["seed"]: r for r in groups.get(f"few/n{n}/{other}/steps{steps}", [])}
            for seed in sorted(set(ra) & set(rb)):
                a.append(ra[seed])
                b.append(rb[seed])
        d = _paired(a, b)
        diffs[f"n1+2/registration-{other}"] = d
        lines.append(f"  - n=1 and 2 pooled, registration-{other}: {_fmt_diff(d)}")
        t = target_ci(d) if d else target(None, 0.0, ">")
        # the evidence: every configured seed of n = 1 and 2 in both arms; fewer is a partial table
        def seeds_of(n, arm):
            return {r["seed"] for r in groups.get(f"few/n{n}/{arm}/steps{steps}", [])}

        missing = [f"n{n}/seed{seed}" for n in (1, 2) for seed in f["seeds"]
                   if seed not in seeds_of(n, "registration") & seeds_of(n, other)]
        if missing:
            t.update(held=False, paired_cells_missing=missing,
                     rule=f"held when the CI excludes 0 with all {len(f['seeds'])} seeds of n = 1 and 2 in both arms")
        targets[f"registration_vs_{other}_few_labels"] = t
    series = {}
    for k, rs in groups.items():
        if k.endswith(f"/steps{steps}"):
            r0 = min(rs, key=lambda r: r["seed"])
            series[f"{k.split('/')[1]} {k.split('/')[2]} (seed {r0['seed']})"] = (
                [h["step"] for h in r0["history"]], [h.get("dice_mean") for h in r0["history"]])
    if series:
        plot_curves(series, curves_dir / "few_label_val_dice.png", ylabel="validation Dice (mean I-VIII)",
                    title=f"Few-label LiverFormer: validation Dice, budget {steps} steps")
        lines.append(f"  curves: {(curves_dir / 'few_label_val_dice.png').relative_to(bench.root.parent.parent)}")
    return lines, {"rows": rows, "paired": diffs, "steps": steps,
                   "registration_quality": None if q is None else {k: v for k, v in q.items() if k != "fields"}}, \
        targets


def assemble(bench: Bench, s: dict) -> str:
    curves_dir = bench.cells_dir.parent / "curves"
    l1, t1, g1 = table1(bench, s, curves_dir)
    lt, tt, gt = timing_table(bench, s)
    l2, t2, g2 = few_table(bench, s, curves_dir)
    text = "\n".join(l1 + [""] + lt + [""] + l2)
    targets = {**g1, **g2, **gt}
    text += "\n\nTargets:\n" + "\n".join(
        f"  {k}: value {v['value'] if v['value'] is None else round(v['value'], 4)} / target {v.get('op', '')} "
        f"{v['target']} / held {v['held']}"
        + (f" (peers without a cell: {', '.join(v['peers_missing'])})" if v.get("peers_missing") else "")
        + (f" ({len(v['paired_cells_missing'])} paired cells missing)" if v.get("paired_cells_missing") else "")
        for k, v in targets.items())
    path = bench.write({"table1": t1, "timing": tt, "few_label": t2}, targets=targets, extra={"printed": text})
    return text + f"\nwrote {path}"
