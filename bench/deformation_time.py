"""Choose ST-NeRP's time encoding on tuning patients: held-out TRE of unseen phases / scans.

    python bench/deformation_time.py --setting sparse --variant "time_harmonics=2" --variant "time_harmonics=3"
    python bench/deformation_time.py --assemble

ST-NeRP only, on the 2 tuning patients (generator seed 1, never the test patients of
``bench/deformation.py``), in its ``sparse`` (4 of 10 phases imaged) and ``longitudinal``
(3 of 4 scans) settings: each variant (``DeformConfig`` overrides on the current defaults) is
one resumable cell per patient. The table gives the held-out and observed TRE (mm) per
variant; the defaults in ``medkit/deformation/deform_config.py`` take the best held-out
variant, and this file's results say which it was. Writes
``bench/results/deformation_time-<device>.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from cells import Bench, target  # noqa: E402
from deformation import SETTINGS, run_cell, stnerp_config  # noqa: E402
from deformation_data import PATIENTS  # noqa: E402

from medkit.config import to_dict  # noqa: E402
from medkit.runs import pick_device, seed_everything  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setting", action="append", choices=["sparse", "longitudinal"], default=None)
    ap.add_argument("--variant", action="append", default=[], help="space-separated DeformConfig overrides")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--assemble", action="store_true")
    a = ap.parse_args(argv)
    device = pick_device(a.device)
    seed_everything(0)
    settings = a.setting or ["sparse", "longitudinal"]
    bench = Bench("deformation_time", device=device, config={"settings": {s: SETTINGS[s] for s in settings},
                                                             "patients": PATIENTS["tune"], "variants": a.variant})
    if not a.assemble:
        for s in settings:
            for v in a.variant:
                for p in range(PATIENTS["tune"][1]):
                    cfg = stnerp_config(v.split())
                    bench.cell(f"{s}/{v or 'defaults'}/{p}", lambda s=s, v=v, p=p: run_cell(
                        s, "tune", p, v.split(), device, methods=("ST-NeRP",)), config=to_dict(cfg))
    lines, table, best = [], {}, {}
    for s in ("sparse", "longitudinal"):
        cells = bench.cells(f"{s}/")
        by_var: dict[str, list[dict]] = {}
        for k, r in cells.items():
            by_var.setdefault(k.split("/")[1], []).append(r)
        if not by_var:
            continue
        lines.append(f"{s} (tuning patients; imaged {SETTINGS[s]['imaged']})")
        lines.append(f"  {'variant':48s} {'n':>2s} {'TRE held-out':>12s} {'TRE observed':>12s} {'fold % max':>10s} {'fit s':>6s}")
        rows = {}
        now = to_dict(stnerp_config([]))
        for v, rs in sorted(by_var.items()):
            st = [r["methods"]["ST-NeRP"] for r in rs]
            ho = float(np.mean([e for m in st for x in m["heldout"].values() for e in x["errors"]]))
            ob = float(np.mean([e for m in st for x in m["observed"].values() for e in x["errors"]]))
            fold = 100 * max(x["fold"] for m in st for part in ("observed", "heldout") for x in m[part].values())
            rows[v] = {"n_patients": len(rs), "tre_heldout": ho, "tre_observed": ob, "fold_pct_max": fold,
                       "seconds": float(np.mean([m["seconds"] for m in st]))}
            # '' ran the defaults of its day: say what differs from today's (a default set from this table)
            then = {k: x for k, x in rs[0]["config"].items() if k in now and now[k] != x}
            label = v if v != "defaults" or not then else "defaults then: " + " ".join(f"{k}={x}" for k, x in then.items())
            lines.append(f"  {label[:48]:48s} {len(rs):2d} {ho:12.3f} {ob:12.3f} {fold:10.3f} {rows[v]['seconds']:6.0f}")
        complete = {v: r for v, r in rows.items() if r["n_patients"] == PATIENTS["tune"][1]}
        if complete:
            best[s] = min(complete, key=lambda v: complete[v]["tre_heldout"])
            lines.append(f"  best held-out on the tuning patients: {best[s]}")
        table[s] = rows
        lines.append("")
    print("\n".join(lines))
    path = bench.write(table, targets={"time_encoding_chosen_on_tuning_patients": target(
        len(best), 1, ">=", best=best)}, extra={"printed": lines})
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
