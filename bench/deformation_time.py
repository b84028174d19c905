"""ST-NeRP temporal ablation: which time encoding predicts phases the fit never saw?

    python bench/deformation_time.py [--variant time_harmonics=3 --variant time_harmonics=1 ...]

Same synthetic 4D CT patients (``medkit.synth.motion``, seed 0, 80x64x64 at 4 mm), the CPU
settings of ``bench/deformation.py`` (300 iterations, 1024 points per phase), one fit per
variant on every phase but the held-out ones; then the landmark TRE (mm) of the predicted
field at the observed and at the held-out phases, the mean predicted vs true motion
inside the labelled organs at the held-out phases, and "no registration" as the floor.
Two schedules: 10 phases with phases 3 and 7 held out (``bench/deformation.py``'s) and
6 phases with phase 2 held out (``medkit demo``'s: between a near-rest and the peak phase).
Writes ``bench/results/deformation_time-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from deformation import evaluate, load_case  # noqa: E402  (bench/deformation.py)

from medkit.config import load_config  # noqa: E402
from medkit.deformation.deform_config import DeformConfig  # noqa: E402
from medkit.deformation.fit import Sequence, fit, predict_field  # noqa: E402
from medkit.runs import package_versions, pick_device  # noqa: E402
from medkit.synth.motion import Motion4DConfig, generate_4dct_dataset  # noqa: E402

CPU = ["iters=300", "ref_iters=150", "points_per_phase=1024", "reg_points=512", "width=96"]
SCHEDULES = {"10 phases, held out 3,7": (10, [3, 7]), "6 phases, held out 2": (6, [2])}


def run(case: Path, cfg: DeformConfig, holdout: list[int], device) -> dict:
    import nibabel as nib

    times, affine, imgs, lm, labs = load_case(case)
    n = len(imgs)
    observed = [k for k in range(n) if k not in holdout]
    seq = Sequence(imgs, times, torch.as_tensor(affine, dtype=torch.float32), 0)
    f = fit(seq, cfg, observed, device)
    out = {"seconds": f["seconds"], "observed": {}, "heldout": {}}
    organs = labs[0] > 0
    for k in range(1, n):
        u = predict_field(f["model"], times[k], tuple(imgs.shape[1:]), seq.affine)[0].cpu().numpy()
        r = evaluate(u, k, imgs[0].numpy(), imgs[k].numpy(), labs[0], labs[k], lm, affine)
        true = np.moveaxis(np.asarray(nib.load(case / f"ddf_{k:02d}.nii.gz").dataobj), -1, 0)
        r["motion_pred_mm"] = float(np.linalg.norm(u, axis=0)[organs].mean())
        r["motion_true_mm"] = float(np.linalg.norm(true, axis=0)[organs].mean())
        out["heldout" if k in holdout else "observed"][k] = r
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", action="append", default=None,
                    help="DeformConfig overrides of one variant, space-separated (repeatable)")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    device = pick_device(a.device)
    variants = a.variant or ["time_harmonics=3", "time_harmonics=2", "time_harmonics=1"]
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    res, lines = {}, []
    t_all = time.perf_counter()
    for sched, (n_phases, holdout) in SCHEDULES.items():
        data = Path(tempfile.mkdtemp(prefix="bench-deform-time-"))
        generate_4dct_dataset(Motion4DConfig(n_cases=1, seed=0, n_phases=n_phases), data)
        case = data / "4dct_000"
        lm = json.loads((case / "landmarks.json").read_text())
        ref = np.asarray(lm["reference"]["mm"])
        floor = {k: float(np.linalg.norm(np.asarray(lm["frames"][k]["mm"]) - ref, axis=1).mean()) for k in holdout}
        res[sched] = {"no_registration_heldout_tre": float(np.mean(list(floor.values()))), "variants": {}}
        for v in variants:
            log(f"{sched}: {v}")
            cfg = load_config(None, DeformConfig, ["seed=0", *CPU, *v.split()])
            r = run(case, cfg, holdout, device)
            res[sched]["variants"][v] = r
        lines.append(f"{sched} (no registration: held-out TRE {res[sched]['no_registration_heldout_tre']:.2f} mm)")
        lines.append(f"  {'variant':34s} {'TRE obs':>8s} {'TRE held-out':>13s} {'motion held-out pred/true mm':>30s} "
                     f"{'Dice held-out':>14s} {'fit s':>6s}")
        for v, r in res[sched]["variants"].items():
            o, h = r["observed"].values(), r["heldout"].values()
            lines.append(f"  {v:34s} {np.mean([x['tre']['mean'] for x in o]):8.2f} "
                         f"{np.mean([x['tre']['mean'] for x in h]):13.2f} "
                         f"{np.mean([x['motion_pred_mm'] for x in h]):19.2f} / {np.mean([x['motion_true_mm'] for x in h]):5.2f}"
                         f"    {np.mean([x['dice'] for x in h]):14.3f} {r['seconds']:6.0f}")
    lines.append(f"device {device}; total wall {time.perf_counter() - t_all:.0f} s")
    text = "\n".join(lines)
    print(text)
    out = ROOT / "bench" / "results" / f"deformation_time-{device.type}.json"
    out.write_text(json.dumps({"command": " ".join(["bench/deformation_time.py", *sys.argv[1:]]), "printed": text,
                               "settings": CPU, "results": res,
                               "machine": {"platform": platform.platform(), "device": str(device),
                                           "torch_threads": torch.get_num_threads()},
                               "versions": package_versions()}, indent=2, default=str))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
