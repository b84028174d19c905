"""ST-NeRP vs per-pair registration on synthetic 4D CT (medkit.synth.motion), held-out phases.

    .venv/bin/python bench/deformation.py            # CPU default: 1 patient, 80x64x64 @ 4 mm
    .venv/bin/python bench/deformation.py --full     # GPU-sized: 3 patients, 128x128x96 @ 2.5 mm

Per patient (10 phases, reference 0, held-out phases ``--holdout``, default 3 and 7):

- ST-NeRP: one fit on the observed phases; fields predicted at every phase.
- SimpleITK B-spline and demons: one registration reference -> each observed phase.
- Pairwise INR (IDIR-style): the same deformation network, one fit per observed phase.
- Time interpolation: held-out fields linearly interpolated in time between the
  pairwise (B-spline / INR) fields of the neighbouring imaged phases.

TRE: landmarks ``q`` at phase k (exact), reference ``p``; a pull-back field ``u_k``
on the phase grid predicts ``q + u_k(q)``; TRE = ``|q + u_k(q) - p|`` (mm), the same
for every method. Folding: fraction of voxels with det J <= 0. Image metrics: the
reference warped by ``u_k`` against the true phase k. Times are wall seconds on
this machine for the fits/registrations (prediction of dense fields excluded).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medkit.config import load_config, to_dict  # noqa: E402
from medkit.deformation import baselines as B  # noqa: E402
from medkit.deformation.deform_config import DeformConfig  # noqa: E402
from medkit.deformation.fit import Sequence, fit, predict_field  # noqa: E402
from medkit.deformation.sequence import read_sequence  # noqa: E402
from medkit.metrics import deformation as M  # noqa: E402
from medkit.nn import warp as W  # noqa: E402
from medkit.runs import package_versions, pick_device, seed_everything  # noqa: E402
from medkit.synth.motion import Motion4DConfig, generate_4dct_dataset  # noqa: E402


def evaluate(u_mm: np.ndarray, k: int, ref_img, img_k, lab0, lab_k, lm, affine) -> dict:
    """Metrics of one pull-back field ``(3, X, Y, Z)`` mm for phase ``k``."""
    aff = torch.as_tensor(affine, dtype=torch.float32)
    u = torch.as_tensor(u_mm, dtype=torch.float32)[None]
    q = torch.as_tensor(lm["frames"][k]["mm"], dtype=torch.float32)
    uq = W.sample_points(u, W.points_mm_to_voxel(q, aff)[None])[0].T
    t = M.tre((q + uq).numpy(), np.asarray(lm["reference"]["mm"]))
    jac = W.jacobian_determinant(W.ddf_mm_to_voxel(u, aff))[0].numpy()
    shp = (1, 1, *ref_img.shape)
    warped = W.warp_mm(torch.as_tensor(ref_img).reshape(shp), u, aff)[0, 0].numpy()
    wl = W.warp_mm(torch.as_tensor(lab0, dtype=torch.float32).reshape(shp), u, aff, mode="nearest")[0, 0].numpy()
    d = M.dice(np.round(wl).astype(int), lab_k, [1, 2, 3])
    return {"tre": t, "fold": M.folding_fraction(jac), "ncc": M.ncc(warped, img_k),
            "psnr": M.psnr(warped, img_k), "ssim": M.ssim3d(warped, img_k), "dice": float(np.mean(list(d.values())))}


def load_case(case: Path):
    """``(times, affine (4, 4), images (T, X, Y, Z), landmarks, labels per phase)`` of a synth 4D CT case."""
    import nibabel as nib

    seq_in = read_sequence(case)
    affine = np.asarray(seq_in.frames[0].affine, dtype=np.float64)
    imgs = torch.stack([torch.as_tensor(np.asarray(f[0]), dtype=torch.float32) for f in seq_in.frames])
    lm = json.loads((case / "landmarks.json").read_text())
    labs = [np.asarray(nib.load(case / f"labels_{k:02d}.nii.gz").dataobj).astype(int) for k in range(len(imgs))]
    return seq_in.times, affine, imgs, lm, labs


def run_case(case: Path, cfg: DeformConfig, holdout: list[int], device, pair_iters: int, log) -> dict:
    times, affine, imgs, lm, labs = load_case(case)
    n = len(imgs)
    observed = [k for k in range(n) if k not in holdout]
    moving = [k for k in observed if k != 0]
    ev = lambda u, k: evaluate(u, k, imgs[0].numpy(), imgs[k].numpy(), labs[0], labs[k], lm, affine)  # noqa: E731
    res: dict[str, dict] = {}

    log(f"{case.name}: ST-NeRP fit on phases {observed}")
    seq = Sequence(imgs, times, torch.as_tensor(affine, dtype=torch.float32), 0)
    f = fit(seq, cfg, observed, device)
    fields = {k: predict_field(f["model"], times[k], tuple(imgs.shape[1:]), seq.affine)[0].cpu().numpy()
              for k in range(1, n)}
    res["ST-NeRP"] = {"seconds": f["seconds"], "observed": {k: ev(fields[k], k) for k in moving},
                      "heldout": {k: ev(fields[k], k) for k in holdout}}
    zero = np.zeros((3, *imgs.shape[1:]), np.float32)
    for name, fn in (("B-spline (SimpleITK)", lambda k: B.bspline_pair(imgs[k].numpy(), imgs[0].numpy(), affine,
                                                                     iters=pair_iters, seed=cfg.seed)),
                     ("Demons (SimpleITK)", lambda k: B.demons_pair(imgs[k].numpy(), imgs[0].numpy(), affine)),
                     ("Pairwise INR (IDIR-style)", lambda k: B.inr_pair(imgs, times, k, affine, cfg, device)[0])):
        log(f"{case.name}: {name} x {len(moving)} pairs")
        t0 = time.perf_counter()
        pf = {k: fn(k) for k in moving}
        sec = time.perf_counter() - t0
        res[name] = {"seconds": sec, "observed": {k: ev(pf[k], k) for k in moving}}
        interp = {times[0]: zero, **{times[k]: pf[k] for k in moving}}
        res[name]["heldout_time_interp"] = {k: ev(B.interpolate_in_time(interp, times[k]), k) for k in holdout}
    return res


def _agg(rows: list[dict]) -> dict:
    if not rows:
        return {}
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    return {"tre_mean": float(np.mean([r["tre"]["mean"] for r in rows])),
            "tre_std": float(np.mean([r["tre"]["std"] for r in rows])),
            "tre_p95": float(np.mean([r["tre"]["p95"] for r in rows])),
            "fold_pct": 100 * mean("fold"), "ncc": mean("ncc"), "psnr": mean("psnr"), "ssim": mean("ssim"),
            "dice": mean("dice"), "n_phases": len(rows)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="GPU-sized setting (3 patients, 128x128x96 @ 2.5 mm)")
    ap.add_argument("--cases", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", default="3,7")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--pair-iters", type=int, default=30, help="LBFGSB iterations per B-spline level")
    ap.add_argument("--set", action="append", default=[], help="DeformConfig override (repeatable)")
    ap.add_argument("--data", default=None, help="reuse a generated dataset folder")
    a = ap.parse_args(argv)
    device = pick_device(a.device)
    seed_everything(a.seed)
    n_cases = a.cases or (3 if a.full else 1)
    mcfg = Motion4DConfig(n_cases=n_cases, seed=a.seed, n_phases=10)
    if a.full:
        mcfg.shape, mcfg.spacing_mm = (128, 128, 96), (2.5, 2.5, 2.5)
    # CPU default: the settings tried in development (300 iterations, 1024 points per phase);
    # --full: the GPU-sized settings of pipelines/deform_dirlab.yaml.
    cpu = ["iters=300", "ref_iters=150", "points_per_phase=1024", "reg_points=512", "width=96"]
    gpu = ["iters=3000", "ref_iters=2000", "ref_points=65536", "points_per_phase=8192", "reg_points=4096",
           "width=256", "fourier_sigma=3.0"]
    over = (gpu if a.full else cpu) + a.set
    cfg = load_config(None, DeformConfig, [f"seed={a.seed}", *over])
    holdout = [int(h) for h in a.holdout.split(",") if h]
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    data = Path(a.data) if a.data else Path(tempfile.mkdtemp(prefix="bench-deform-"))
    if not (data / "dataset.json").exists():
        t0 = time.perf_counter()
        generate_4dct_dataset(mcfg, data)
        log(f"generated {n_cases} patient(s) in {time.perf_counter() - t0:.0f} s under {data}")
    per_case = {}
    t_all = time.perf_counter()
    for i in range(n_cases):
        per_case[f"4dct_{i:03d}"] = run_case(data / f"4dct_{i:03d}", cfg, holdout, device, a.pair_iters, log)
    names = list(next(iter(per_case.values())))
    agg = {}
    for nm in names:
        obs = [r for c in per_case.values() for r in c[nm]["observed"].values()]
        ho_key = "heldout" if nm == "ST-NeRP" else "heldout_time_interp"
        ho = [r for c in per_case.values() for r in c[nm][ho_key].values()]
        agg[nm] = {"seconds": float(sum(c[nm]["seconds"] for c in per_case.values())),
                   "observed": _agg(obs), "heldout": _agg(ho), "heldout_kind": ho_key}
    st = agg["ST-NeRP"]
    hdr = (f"{'method':28s} {'TRE obs mm (p95)':>18s} {'TRE held-out mm (p95)':>22s} {'fold %':>7s} "
           f"{'NCC':>6s} {'SSIM':>6s} {'Dice':>5s} {'fit s':>7s} {'s ratio':>8s} {'held-out ratio':>14s}")
    lines = [hdr, "-" * len(hdr)]
    for nm, r in agg.items():
        o, h = r["observed"], r["heldout"]
        lines.append(f"{nm:28s} {o['tre_mean']:8.2f} ({o['tre_p95']:5.2f})   {h['tre_mean']:11.2f} ({h['tre_p95']:5.2f})"
                     f"{'*' if nm != 'ST-NeRP' else ' '}  {o['fold_pct']:7.3f} {o['ncc']:6.3f} {o['ssim']:6.3f} "
                     f"{o['dice']:5.3f} {r['seconds']:7.1f} {st['seconds'] / r['seconds']:8.2f} "
                     f"{st['heldout']['tre_mean'] / h['tre_mean']:14.2f}")
    lines.append("* held-out for pairwise methods = their fields linearly interpolated in time; "
                 "ratios = ST-NeRP / method (time, held-out TRE)")
    lm0 = [json.loads((data / c / "landmarks.json").read_text()) for c in per_case]
    no_reg = float(np.mean([np.linalg.norm(np.asarray(lm["frames"][k]["mm"]) - np.asarray(lm["reference"]["mm"]), axis=1).mean()
                            for lm in lm0 for k in range(1, 10)]))
    lines.append(f"no registration: mean landmark motion {no_reg:.2f} mm over phases 1-9; held-out phases {holdout}; "
                 f"total wall {time.perf_counter() - t_all:.0f} s on {device}")
    print("\n".join(lines))
    out = ROOT / "bench" / "results" / f"deformation-{device.type}{'-full' if a.full else ''}.json"
    out.write_text(json.dumps({
        "command": " ".join(["bench/deformation.py", *(argv or sys.argv[1:])]), "table": lines,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "device": str(device),
                    "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0]},
        "versions": package_versions(), "seed": a.seed, "synthetic_config": to_dict(mcfg),
        "deform_config": to_dict(cfg), "holdout": holdout, "aggregate": agg,
        "per_case": {c: {m: {k: v for k, v in r.items()} for m, r in d.items()} for c, d in per_case.items()},
    }, indent=2, default=lambda o: str(o)))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
