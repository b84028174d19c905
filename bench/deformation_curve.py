"""ST-NeRP convergence curves: landmark TRE (mm) against motion iterations, on tuning patients only.

    python bench/deformation_curve.py --name fit --iters 3000 --every 100 \\
        --variant "" --variant "coarse_to_fine=0.3 fourier_sigma=4"

Each variant (``DeformConfig`` overrides on top of the current defaults) is fitted once on
every imaged phase of tuning patient ``--patient`` (``bench/deformation_data.py``: a
different generator seed from the test patients). Every ``--every`` iterations the
observed-phase TRE is computed at the landmarks (the INR evaluated at the points), mean
over the moving phases and at the peak-inhale phase, with the wall time so far. The
demons per-pair TRE of the same patient is drawn as the peer's level. Each variant is a
resumable cell; the PNG and ``bench/results/deformation_curve-<device>.json`` (with
``plateau()`` per variant: the budget rule) are rebuilt from all finished cells.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from cells import Bench, target  # noqa: E402
from deformation_data import Case, dataset, demons_tre, patient_ids  # noqa: E402

from medkit.config import load_config, to_dict  # noqa: E402
from medkit.deformation.deform_config import DeformConfig  # noqa: E402
from medkit.deformation.fit import Sequence, fit, predict_field  # noqa: E402
from medkit.nn import warp as W  # noqa: E402
from medkit.runs import pick_device, seed_everything  # noqa: E402
from medkit.viz.curves import plateau, plot_curves  # noqa: E402


def curve(case: Case, cfg: DeformConfig, observed: list[int], every: int, device) -> dict:
    seq = Sequence(case.images, case.times, torch.as_tensor(case.affine, dtype=torch.float32), 0, period=case.period)
    moving = [k for k in observed if k != 0]
    rows, t0 = [], time.perf_counter()

    def monitor(it: int, model) -> None:
        per = {}
        for k in range(1, len(case.times)):
            per[k] = float(case.landmark_errors_at_points(
                lambda q, k=k: model.displacement(q, torch.full((len(q),), float(case.times[k]))), k).mean())
        rows.append({"iter": it, "seconds": time.perf_counter() - t0, "per_phase": per,
                     "tre_observed": float(np.mean([per[k] for k in moving])), "tre_peak": per[case.peak],
                     "tre_heldout": float(np.mean([per[k] for k in per if k not in observed])) if len(moving) < len(per)
                     else None})
        print(f"  it {it:5d}  {rows[-1]['seconds']:6.0f} s  TRE observed {rows[-1]['tre_observed']:.3f}  "
              f"peak {rows[-1]['tre_peak']:.3f}", file=sys.stderr, flush=True)

    res = fit(seq, cfg, observed, device, monitor=monitor, monitor_every=every)
    seconds = res["seconds"]
    # folding of the final dense fields (det J <= 0, % of voxels) at every frame
    aff = torch.as_tensor(case.affine, dtype=torch.float32)
    fold = {}
    for k in range(1, len(case.times)):
        u = predict_field(res["model"], case.times[k], tuple(case.images.shape[1:]), aff).cpu()
        fold[k] = 100 * float((W.jacobian_determinant(W.ddf_mm_to_voxel(u, aff)) <= 0).float().mean())
    return {"rows": rows, "seconds": seconds, "final_loss": res["losses"]["motion"][-1], "fold_pct": fold,
            "ref_loss": res["losses"]["reference"][-1] if res["losses"]["reference"] else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True, help="curve family (cells are <name>/<variant>)")
    ap.add_argument("--variant", action="append", default=None, help="space-separated DeformConfig overrides")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--patient", type=int, default=0, help="index among the tuning patients")
    ap.add_argument("--observed", default="all", help="'all' or comma-separated imaged phases")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--plot-only", action="store_true",
                    help="redraw the figures and print the table from the finished cells; the results JSON is not rewritten")
    a = ap.parse_args(argv)
    device = pick_device(a.device)
    seed_everything(0)
    folder = dataset("4dct", "tune") / patient_ids("4dct", "tune")[a.patient]
    case = Case(folder)
    n = len(case.times)
    observed = list(range(n)) if a.observed == "all" else [int(k) for k in a.observed.split(",")]
    bench = Bench("deformation_curve", device=device, config={"iters": a.iters, "every": a.every, "patient": folder.name,
                                                               "observed": observed, "group": "tune"})
    peer = bench.cell(f"peer/demons/{folder.name}", lambda: {"per_phase": demons_tre(case, list(range(1, n)))})
    for v in (a.variant or [] if not a.plot_only else []):
        cfg = load_config(None, DeformConfig, [f"iters={a.iters}", *v.split()])
        key = f"{a.name}/{folder.name}/{'obs=' + a.observed + '/' if a.observed != 'all' else ''}{v or 'defaults'}"
        bench.cell(key, lambda cfg=cfg: {"config": to_dict(cfg), **curve(case, cfg, observed, a.every, device)},
                   config=to_dict(cfg))
    cells = {k: r for k, r in bench.cells(f"{a.name}/").items()}
    dem = {int(k): v for k, v in peer["per_phase"].items()}
    moving = [k for k in observed if k != 0]
    dem_obs = float(np.mean([dem[k] for k in moving]))
    series, peak_series, summary = {}, {}, {}
    for key, r in cells.items():
        label = key.split("/", 2)[-1]
        if not r["config"].get("frame_latents", False):  # cells from before the option (or with it off)
            label += " [no frame latents]"
        it = [row["iter"] for row in r["rows"]]
        tre = [row["tre_observed"] for row in r["rows"]]
        series[label] = (it, tre)
        peak_series[label + " (peak)"] = (it, [row["tre_peak"] for row in r["rows"]])
        pl = plateau(it, tre, higher_is_better=False, tol=0.02)
        summary[label] = {"final_tre_observed": tre[-1], "final_tre_peak": r["rows"][-1]["tre_peak"],
                          "fold_pct_max": max(r["fold_pct"].values()) if r.get("fold_pct") else None,
                          "seconds": r["seconds"], "plateau": pl,
                          "vs_demons": target(tre[-1], dem_obs, "<=")}
    png = ROOT / "bench" / "results" / f"deformation_curve-{bench.tag}-{a.name}.png"
    if series:
        plot_curves(series, png, xlabel="motion iterations", ylabel="observed-phase landmark TRE (mm)",
                    title=f"ST-NeRP on tuning patient {folder.name} ({len(moving)} moving phases)",
                    hlines={f"demons per pair {dem_obs:.2f} mm": dem_obs})
        plot_curves(peak_series, png.with_name(png.stem + "-peak.png"), xlabel="motion iterations",
                    ylabel="peak-phase landmark TRE (mm)", title=f"peak phase {case.peak}",
                    hlines={f"demons peak {dem[case.peak]:.2f} mm": dem[case.peak]})
    lines = [f"{'variant':60s} {'TRE obs':>8s} {'peak':>6s} {'fold %':>7s} {'fit s':>7s} {'plateau (gain last 25%)':>24s}"]
    for label, s in summary.items():
        g = s["plateau"]["gain"]
        fp = f"{s['fold_pct_max']:7.3f}" if s["fold_pct_max"] is not None else "      -"
        lines.append(f"{label[:60]:60s} {s['final_tre_observed']:8.3f} {s['final_tre_peak']:6.3f} {fp} {s['seconds']:7.0f} "
                     f"{('yes' if s['plateau']['reached'] else 'no') + f' ({g:+.3f})' if g is not None else 'n/a':>24s}")
    lines.append(f"demons per pair: observed {dem_obs:.3f} mm, peak (phase {case.peak}) {dem[case.peak]:.3f} mm")
    print("\n".join(lines))
    if a.plot_only:  # figures redrawn from the cells; the results file keeps the run that made them
        return 0
    bench.write({"printed": lines, "summary": summary, "demons_per_phase": dem},
                targets={"observed_tre_vs_demons_tuning": target(min((s["final_tre_observed"] for s in summary.values()),
                                                                     default=None), dem_obs, "<=")},
                path=ROOT / "bench" / "results" / f"deformation_curve-{bench.tag}-{a.name}.json",
                extra={"png": str(png.relative_to(ROOT))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
