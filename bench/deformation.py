"""ST-NeRP vs per-pair registration + time interpolation: synthetic 4D CT and longitudinal CT.

    python bench/deformation.py                       # every test cell (resumes), then the table
    python bench/deformation.py --setting sparse --patient 0   # one cell (a queue job)
    python bench/deformation.py --assemble            # the table and results from finished cells

Patients (``bench/deformation_data.py``): 3 test patients (generator seed 0); the
hyper-parameters were chosen on 2 tuning patients of another seed
(``bench/deformation_curve.py``: iterations, points, encodings; ``bench/deformation_time.py``:
the time encoding), never on these. Data carry irregular breathing, hysteresis and
60-100 HU per-phase noise (``medkit.synth.motion.REALISTIC_4DCT``), the same for every method.

Settings:

- ``dense``: all 10 phases of one cycle imaged; observed-phase TRE (peak phase included),
  folding, fit time (one cell runs every method on one patient, so the time ratios come
  from one process under one load).
- ``sparse``: 4 of 10 phases imaged (0, 2, 4, 7); the other 6, peak inhale (5) among
  them, are predicted: ST-NeRP at those times, the per-pair methods by interpolating their
  imaged-phase fields in time (linear around the cycle, and a periodic cubic spline).
- ``longitudinal``: 4 scans 21 days apart, 3 imaged (0, 1, 3), scan 2 predicted (linear
  interpolation in days for the per-pair methods); span-normalised time.

Methods: ST-NeRP (``DeformConfig`` defaults, periodic time when the series is one cycle);
the same INR fitted per pair at equal iterations per phase (sharing ST-NeRP's prior
embedding, whose fit time is counted once); SimpleITK demons and B-spline per pair.
Paired per-landmark tests (``medkit.metrics.stats.paired_diff``, units = landmark id per
patient, each landmark's errors averaged over the phases first) with 95 % bootstrap CIs.
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
from cells import Bench, target, target_ci  # noqa: E402
from deformation_data import PATIENTS, Case, dataset, evaluate, patient_ids  # noqa: E402

from medkit.config import load_config, to_dict  # noqa: E402
from medkit.deformation import baselines as B  # noqa: E402
from medkit.deformation.deform_config import DeformConfig  # noqa: E402
from medkit.deformation.fit import Sequence, fit, predict_field  # noqa: E402
from medkit.metrics.stats import paired_diff  # noqa: E402
from medkit.runs import pick_device, seed_everything  # noqa: E402

SETTINGS = {
    "dense": {"kind": "4dct", "imaged": list(range(10))},
    "sparse": {"kind": "4dct", "imaged": [0, 2, 4, 7]},
    "longitudinal": {"kind": "longitudinal", "imaged": [0, 1, 3]},
}
PEERS = ("INR per pair", "Demons (SimpleITK)", "B-spline (SimpleITK)")
BSPLINE_ITERS = 30  # LBFGSB iterations per level (bench/results/deformation-cpu.json before: the same)


def stnerp_config(overrides: list[str]) -> DeformConfig:
    return load_config(None, DeformConfig, list(overrides))


def run_stnerp(case: Case, cfg: DeformConfig, imaged: list[int], device, keep: dict | None = None) -> tuple[dict, dict]:
    """One ST-NeRP fit on ``imaged``; (result with per-frame metrics, the fit's state). ``keep``:
    ``{"frame": k}`` receives ``"ST-NeRP": field`` at frame k (for the figure)."""
    seq = Sequence(case.images, case.times, torch.as_tensor(case.affine, dtype=torch.float32), 0, period=case.period)
    f = fit(seq, cfg, imaged, device)
    shape = tuple(case.images.shape[1:])
    out = {"seconds": f["seconds"], "seconds_reference": f["seconds_reference"], "seconds_motion": f["seconds_motion"],
           "final_loss": f["losses"]["motion"][-1], "observed": {}, "heldout": {}}
    for k in range(1, len(case.times)):
        u = predict_field(f["model"], case.times[k], shape, seq.affine)[0].cpu().numpy()
        out["observed" if k in imaged else "heldout"][k] = evaluate(case, u, k)
        if keep is not None and keep.get("frame") == k:
            keep["ST-NeRP"] = u
    return out, f["state"]


def run_peer(name: str, case: Case, cfg: DeformConfig, imaged: list[int], device, ref_state: dict | None,
             keep: dict | None = None) -> dict:
    """A per-pair method on every imaged frame, then its fields interpolated to the others."""
    moving = [k for k in imaged if k != 0]
    imgs = case.images
    fields, secs = {}, 0.0
    for k in moving:
        t0 = time.perf_counter()
        if name == "INR per pair":
            u, s = B.inr_pair(imgs, case.times, k, case.affine, cfg, device, reference_state=ref_state)
        elif name == "Demons (SimpleITK)":
            u = B.demons_pair(imgs[k].numpy(), imgs[0].numpy(), case.affine)
            s = time.perf_counter() - t0
        else:
            u = B.bspline_pair(imgs[k].numpy(), imgs[0].numpy(), case.affine, iters=BSPLINE_ITERS, seed=cfg.seed)
            s = time.perf_counter() - t0
        fields[k], secs = u, secs + s
    out = {"seconds": secs, "observed": {k: evaluate(case, fields[k], k) for k in moving}, "heldout": {}}
    held = [k for k in range(1, len(case.times)) if k not in imaged]
    if held:
        known = {case.times[0]: np.zeros_like(fields[moving[0]]), **{case.times[k]: fields[k] for k in moving}}
        kinds = ["linear", "cubic"] if case.period else ["linear"]
        for kind in kinds:
            out["heldout"][kind] = {}
            for k in held:
                u = B.interpolate_in_time(known, case.times[k], period=case.period, kind=kind)
                out["heldout"][kind][k] = evaluate(case, u, k)
                if keep is not None and keep.get("frame") == k:
                    keep[f"{name} + {kind}"] = u
    return out


def run_cell(setting: str, group: str, patient: int, overrides: list[str], device, methods=("ST-NeRP", *PEERS),
             figure_dir: Path | None = None) -> dict:
    spec = SETTINGS[setting]
    folder = dataset(spec["kind"], group) / patient_ids(spec["kind"], group)[patient]
    case = Case(folder)
    cfg = stnerp_config(overrides)
    log = lambda m: print(f"[{setting}/{folder.name}] {m}", file=sys.stderr, flush=True)  # noqa: E731
    res = {"patient": folder.name, "imaged": spec["imaged"], "peak": case.peak, "period": case.period,
           "no_motion": {k: case.motion_mm(k) for k in range(1, len(case.times))}, "config": to_dict(cfg), "methods": {}}
    ref_state = None
    keep = {"frame": case.peak} if case.peak not in spec["imaged"] else None
    if "ST-NeRP" in methods:
        log("ST-NeRP")
        res["methods"]["ST-NeRP"], state = run_stnerp(case, cfg, spec["imaged"], device, keep)
        ref_state = state["ref"] if cfg.similarity_source == "inr" else None
    for name in methods:
        if name == "ST-NeRP":
            continue
        log(name)
        res["methods"][name] = run_peer(name, case, cfg, spec["imaged"], device, ref_state, keep)
        if name == "INR per pair" and ref_state is not None:  # the shared prior embedding, counted once
            shared = res["methods"]["ST-NeRP"]["seconds_reference"]
            res["methods"][name].update(seconds=res["methods"][name]["seconds"] + shared, seconds_reference_shared=shared)
    if keep is not None and len(keep) > 2 and figure_dir is not None:
        fig = peak_figure(case, keep, figure_dir / f"{setting}_{folder.name}_peak.png")
        res["figure"] = str(fig.relative_to(ROOT)) if fig.is_relative_to(ROOT) else str(fig)
    return res


def peak_figure(case: Case, fields: dict, path: Path) -> Path:
    """|u| (mm) at the predicted peak-inhale frame on a coronal slice through the landmarks: the truth,
    ST-NeRP and the interpolated peers, and each one's error |u - u_true|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    k = fields["frame"]
    true = np.moveaxis(np.asarray(nib.load(case.folder / f"ddf_{k:02d}.nii.gz").dataobj), -1, 0)
    y = int(round(np.mean(case.lm["frames"][k]["voxel"], axis=0)[1]))
    arms = [("truth", true)] + [(n, u) for n, u in fields.items() if n != "frame"]
    fig, ax = plt.subplots(2, len(arms), figsize=(2.4 * len(arms), 4.2), dpi=110)
    vmax = float(np.linalg.norm(true, axis=0)[:, y].max())
    for i, (name, u) in enumerate(arms):
        mag = np.linalg.norm(u, axis=0)[:, y].T  # (Z, X): superior up
        im = ax[0, i].imshow(mag, origin="lower", cmap="magma", vmin=0, vmax=vmax)
        ax[0, i].set_title(f"{name}\n|u| mm", fontsize=7)
        err = np.linalg.norm(u - true, axis=0)[:, y].T
        im2 = ax[1, i].imshow(err, origin="lower", cmap="viridis", vmin=0, vmax=max(1e-3, vmax / 3))
        ax[1, i].set_title(f"|u - u_true| mean {err.mean():.2f}", fontsize=7)
        for a in ax[:, i]:
            a.set_xticks([])
            a.set_yticks([])
    fig.colorbar(im, ax=ax[0, :].tolist(), shrink=0.8)
    fig.colorbar(im2, ax=ax[1, :].tolist(), shrink=0.8)
    what = "peak inhale" if case.id.startswith("4dct") else "largest motion"  # a follow-up scan has no inhale peak
    fig.suptitle(f"{case.id}: frame {k} ({what}, not imaged), coronal slice y={y}; error scale clipped at "
                 f"{max(1e-3, vmax / 3):.1f} mm", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- assembly


def _rows(cells: list[dict], method: str, part: str, kind: str | None = None, only: int | None = None):
    """Per-landmark rows ``(errors, units)`` of one method over cells: ``part`` observed | heldout."""
    errs, units = [], []
    for c in cells:
        m = c["methods"][method][part]
        if kind is not None:
            m = m[kind]
        for k, r in m.items():
            if only is not None and int(k) != only:
                continue
            errs += r["errors"]
            units += [f"{c['patient']}/{i}" for i in range(len(r["errors"]))]
    return np.asarray(errs), units


def _mean(cells, method, part, key, kind=None):
    vals = []
    for c in cells:
        m = c["methods"][method][part]
        m = m[kind] if kind else m
        vals += [r[key] for r in m.values()]
    return float(np.mean(vals)) if vals else None


def _heldout_arms(cells: list[dict]) -> list[tuple[str, str | None]]:
    arms = [("ST-NeRP", None)]
    for p in PEERS:
        if p in cells[0]["methods"]:
            arms += [(p, kind) for kind in cells[0]["methods"][p]["heldout"]]
    return arms


def assemble(bench: Bench, group: str, tag: str = "") -> tuple[list[str], dict, dict]:
    lines, tables, targets = [], {}, {}
    for setting in SETTINGS:
        cells = [r for k, r in sorted(bench.cells(f"{group}/{setting}/").items())
                 if k.split("/", 2)[2].lstrip("0123456789") == tag]
        if not cells:
            continue
        methods = list(cells[0]["methods"])
        pk = {c["patient"]: c["peak"] for c in cells}
        st_secs = sum(c["methods"]["ST-NeRP"]["seconds"] for c in cells) if "ST-NeRP" in methods else None
        rows = {}
        lines.append(f"{setting}: {len(cells)} patient(s) {', '.join(pk)}; imaged {cells[0]['imaged']}")
        hdr = (f"  {'method':34s} {'TRE obs mm':>10s} {'peak obs':>9s} {'TRE held-out':>12s} {'fold %':>7s} "
               f"{'NCC':>6s} {'SSIM':>6s} {'Dice':>5s} {'fit s':>8s} {'ST-NeRP s / s':>13s}")
        lines += [hdr, "  " + "-" * (len(hdr) - 2)]
        for arm, kind in [(m, None) for m in methods] + [(a, k) for a, k in _heldout_arms(cells) if k]:
            obs_e, _ = _rows(cells, arm, "observed")
            peak = [np.mean(c["methods"][arm]["observed"][str(c["peak"])]["errors"]) for c in cells
                    if str(c["peak"]) in c["methods"][arm]["observed"]]
            if kind is None and arm == "ST-NeRP":
                ho_e, _ = _rows(cells, arm, "heldout")
            elif kind is not None:
                ho_e, _ = _rows(cells, arm, "heldout", kind)
            else:
                ho_e = np.asarray([])
            secs = sum(c["methods"][arm]["seconds"] for c in cells)
            name = arm if kind is None else f"{arm} + {kind} interp."
            fold = max([r["fold"] for c in cells for part in ("observed",) for r in c["methods"][arm][part].values()],
                       default=0.0) if kind is None else None
            r = {"tre_observed": float(obs_e.mean()) if len(obs_e) and kind is None else None,
                 "tre_peak_observed": float(np.mean(peak)) if peak and kind is None else None,
                 "tre_heldout": float(ho_e.mean()) if len(ho_e) else None, "fold_pct_max": 100 * fold if fold is not None else None,
                 "ncc": _mean(cells, arm, "observed", "ncc") if kind is None else None,
                 "ssim": _mean(cells, arm, "observed", "ssim") if kind is None else None,
                 "dice": _mean(cells, arm, "observed", "dice") if kind is None else None,
                 "seconds": secs if kind is None else None,
                 "time_ratio": st_secs / secs if kind is None and st_secs else None}
            rows[arm if kind is None else f"{arm} + {kind}"] = r
            f = lambda v, w, d=2: f"{v:{w}.{d}f}" if v is not None else " " * (w - 1) + "-"  # noqa: E731
            lines.append(f"  {name:34s} {f(r['tre_observed'], 10)} {f(r['tre_peak_observed'], 9)} {f(r['tre_heldout'], 12)} "
                         f"{f(r['fold_pct_max'], 7, 3)} {f(r['ncc'], 6, 3)} {f(r['ssim'], 6, 3)} {f(r['dice'], 5, 3)} "
                         f"{f(r['seconds'], 8, 0)} {f(r['time_ratio'], 13)}")
        nm = np.mean([v for c in cells for k, v in c["no_motion"].items() if int(k) in c["imaged"]])
        lines.append(f"  no registration: {nm:.2f} mm at the imaged frames" + (
            f", {np.mean([v for c in cells for k, v in c['no_motion'].items() if int(k) not in c['imaged']]):.2f} mm "
            "at the predicted ones" if len(cells[0]["imaged"]) < len(cells[0]["no_motion"]) + 1 else ""))
        # paired per-landmark tests: ST-NeRP - peer (negative = ST-NeRP better)
        tests = {}
        if "ST-NeRP" in methods:
            st_o, u_o = _rows(cells, "ST-NeRP", "observed")
            for p in PEERS:
                if p not in methods:
                    continue
                pe, _ = _rows(cells, p, "observed")
                tests[f"observed: ST-NeRP - {p}"] = paired_diff(st_o, pe, units=u_o)
            st_h, u_h = _rows(cells, "ST-NeRP", "heldout")
            if len(st_h):
                for a, kind in _heldout_arms(cells)[1:]:
                    pe, _ = _rows(cells, a, "heldout", kind)
                    tests[f"held-out: ST-NeRP - {a} + {kind}"] = paired_diff(st_h, pe, units=u_h)
        for name, d in tests.items():
            lines.append(f"  {name:58s} {d['mean']:+.3f} mm  95% CI [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]  "
                         f"p {d['p_boot']:.4f}  ({d['n_units']} landmarks)")
        lines.append("")
        tables[setting] = {"rows": rows, "paired": tests, "patients": list(pk), "peak_phase": pk}
        targets.update(_targets(setting, cells, rows, tests, st_secs))
    return lines, tables, targets


def _targets(setting: str, cells: list[dict], rows: dict, tests: dict, st_secs: float | None) -> dict:
    out = {}
    if setting == "dense" and "Demons (SimpleITK)" in rows:
        st_o, u_o = _rows(cells, "ST-NeRP", "observed")
        dm_o, _ = _rows(cells, "Demons (SimpleITK)", "observed")
        all_d = paired_diff(st_o, dm_o, units=u_o)
        peak_st, peak_dm, pu = [], [], []
        for c in cells:
            e_st = c["methods"]["ST-NeRP"]["observed"][str(c["peak"])]["errors"]
            peak_st += e_st
            peak_dm += c["methods"]["Demons (SimpleITK)"]["observed"][str(c["peak"])]["errors"]
            pu += [f"{c['patient']}/{i}" for i in range(len(e_st))]
        peak_d = paired_diff(peak_st, peak_dm, units=pu)
        # the worse of "all observed phases" and "peak phase": both must be at or below demons
        out["observed_tre_vs_demons"] = target(max(all_d["mean"], peak_d["mean"]), 0.0, "<=",
                                               unit="mm, ST-NeRP - demons (worse of all phases / peak phase)",
                                               all_phases=all_d, peak_phase=peak_d)
        pair = rows.get("INR per pair", {}).get("seconds")
        out["fit_time_vs_pairwise_total"] = target(st_secs / pair if pair else None, 1.0, "<",
                                                   unit="ST-NeRP fit s / INR-per-pair total s (same cells)",
                                                   st_nerp_s=st_secs, inr_pair_s=pair,
                                                   demons_s=rows.get("Demons (SimpleITK)", {}).get("seconds"),
                                                   bspline_s=rows.get("B-spline (SimpleITK)", {}).get("seconds"))
    if setting == "sparse":
        interp = {k: r["tre_heldout"] for k, r in rows.items() if " + " in k and r["tre_heldout"] is not None}
        if interp and "ST-NeRP" in rows:
            best = min(interp, key=interp.get)
            arm, kind = best.split(" + ")
            d = paired_diff(*[_rows(cells, *a)[0] for a in (("ST-NeRP", "heldout"), (arm, "heldout", kind))],
                            units=_rows(cells, "ST-NeRP", "heldout")[1])
            t = target_ci(d, better="lower")
            t["held"] = bool(t["held"] and d["p_boot"] < 0.05)
            out["heldout_tre_vs_interpolated_best"] = {**t, "best_interpolated": best, "unit": "mm, ST-NeRP - best",
                                                       "st_nerp_mm": d["mean_a"], "best_mm": d["mean_b"]}
    if "ST-NeRP" in rows:
        folds = [100 * r["fold"] for c in cells for part in ("observed", "heldout")
                 for r in c["methods"]["ST-NeRP"][part].values()]
        out[f"_folding_{setting}"] = max(folds) if folds else 0.0
    return out


TARGETS = {  # name -> (goal, op, the setting whose test cells decide it)
    "observed_tre_vs_demons": (0.0, "<=", "dense"),
    "heldout_tre_vs_interpolated_best": ("ci95 high < 0 and p < 0.05", None, "sparse"),
    "folding": (0.1, "<", "any"),
    "fit_time_vs_pairwise_total": (1.0, "<", "dense"),
}


def untuned(setting: str, cfg: dict, device) -> str | None:
    """Why test cells of ``setting`` must not run with config ``cfg``, or None. The time encoding
    of the sparse and longitudinal settings is chosen on the tuning patients by
    ``bench/deformation_time.py``; once its results name a winner, the test cells run only with
    that winner's config (the defaults must be set to it first), so no test cell runs an
    encoding the tuning rejected."""
    if setting not in ("sparse", "longitudinal"):
        return None
    tb = Bench("deformation_time", device=device)
    res = tb.root / f"deformation_time-{tb.tag}.json"
    if not res.exists():
        print(f"[deformation] warning: no {res.name}: the {setting} time encoding is not tuned yet", file=sys.stderr)
        return None
    import json

    best = json.loads(res.read_text()).get("targets", {}).get("time_encoding_chosen_on_tuning_patients", {}).get(
        "best", {}).get(setting)
    if best is None:
        return None
    won = [r["config"] for r in tb.cells(f"{setting}/{best}/").values()]
    # only the settings the tuning varied for this setting (a default tuned for another setting,
    # e.g. span_harmonics for longitudinal series, does not touch a periodic 4D CT fit)
    tuned = {kv.split("=")[0] for k in tb.cells(f"{setting}/") for kv in k.split("/")[1].split() if "=" in kv}
    diff = sorted(k for k in cfg if k in tuned and won and won[0].get(k) != cfg[k])
    if diff:
        return (f"{setting}: the tuning patients chose variant '{best}' ({res.name}) but the DeformConfig "
                f"defaults differ from it in {', '.join(diff)}: set the defaults to the winner, then run the test cells")
    return None


def missing_cells(bench: Bench, group: str, tag: str = "") -> dict[str, list[str]]:
    """The test cells of each setting not finished yet (``{setting: [keys]}``)."""
    n = PATIENTS[group][1]
    out = {}
    for setting in SETTINGS:
        miss = [f"{group}/{setting}/{p}{tag}" for p in range(n) if not bench.done(f"{group}/{setting}/{p}{tag}")]
        if miss:
            out[setting] = miss
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setting", action="append", choices=list(SETTINGS), default=None)
    ap.add_argument("--patient", type=int, action="append", default=None)
    ap.add_argument("--group", default="test", choices=list(PATIENTS))
    ap.add_argument("--set", action="append", default=[], help="DeformConfig override (tuning only)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--assemble", action="store_true", help="only assemble finished cells")
    a = ap.parse_args(argv)
    if a.group == "test" and a.set:
        raise SystemExit("--set is for tuning patients: test cells run the DeformConfig defaults")
    device = pick_device(a.device)
    seed_everything(0)
    cfg = stnerp_config(a.set)
    bench = Bench("deformation", device=device, config={"deform": to_dict(cfg), "settings": SETTINGS,
                                                        "patients": PATIENTS, "bspline_iters": BSPLINE_ITERS})
    tag = "" if not a.set else "[" + " ".join(a.set) + "]"
    if not a.assemble:
        for setting in a.setting or list(SETTINGS):
            if a.group == "test" and (why := untuned(setting, to_dict(cfg), device)):
                raise SystemExit(why)
            n = PATIENTS[a.group][1]
            for p in a.patient if a.patient is not None else range(n):
                bench.cell(f"{a.group}/{setting}/{p}{tag}", lambda s=setting, p=p: run_cell(
                    s, a.group, p, a.set, device, figure_dir=bench.cells_dir.parent / "figures"), config=to_dict(cfg))
    lines, tables, targets = assemble(bench, a.group, tag)
    folds = [v for k, v in targets.items() if k.startswith("_folding_")]
    for k in [k for k in targets if k.startswith("_folding_")]:
        targets.pop(k)
    targets["folding"] = target(max(folds) if folds else None, 0.1, "<", unit="% of voxels with det J <= 0, "
                                "largest over every ST-NeRP field (imaged and predicted), every setting and patient")
    missing = missing_cells(bench, a.group, tag)
    for name, (goal, op, setting) in TARGETS.items():
        gone = [k for s, ks in missing.items() if setting in (s, "any") for k in ks]
        if name not in targets:  # no finished cell of its setting: not held, and why
            targets[name] = {"value": None, "target": goal, "op": op, "held": False,
                             "reason": f"no finished {setting} test cell (missing: {', '.join(gone)})"}
        elif gone:
            targets[name]["missing_cells"] = gone  # computed from the finished cells only
    if missing:
        lines.append("missing cells: " + ", ".join(k for ks in missing.values() for k in ks))
    lines.append("targets: " + ", ".join(f"{k} {v['value'] if not isinstance(v['value'], float) else round(v['value'], 4)}"
                                         f" ({'held' if v['held'] else 'not held'})" for k, v in targets.items()))
    print("\n".join(lines))
    if a.group == "test" and not a.set:
        path = bench.write(tables, targets=targets, extra={"printed": lines, "missing_cells": missing})
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
