"""Generation speed of the embedded benchmark sets (medkit.synth).

Times each generator end to end (render + write files) at the sizes the
synthetic-data issue names: one 192x192x160 liver CT, one 10-phase 4D CT (the
default 80x64x64 and a 128x128x96 one), 100 radiograph studies, 1,000 clinical
cases. There is no peer to compare with (nothing else generates these sets), so
this is a measurement of this machine, not a performance claim; wall times on a
shared CPU vary with load.

    python bench/synth_speed.py            # all rows
    python bench/synth_speed.py --quick    # skip the large 4D case
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the 128x128x96 4D case (~3 min)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("MEDKIT_NO_PROGRESS", "1")

    from medkit.synth import cases, cxr, liver_ct, motion

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jobs = [
            ("liver CT 192x192x160 (+DICOM)", "1 case", lambda: liver_ct.generate_dataset(
                liver_ct.LiverCTConfig(n_cases=1, seed=args.seed, dicom=True, shape=(192, 192, 160),
                                       spacing_xy_mm=(1.7, 1.9), spacing_z_mm=(1.25, 2.0)), tmp / "liver")),
            ("4D CT 80x64x64, 10 phases", "1 patient", lambda: motion.generate_4dct_dataset(
                motion.Motion4DConfig(n_cases=1, seed=args.seed, n_phases=10), tmp / "4d")),
        ]
        if not args.quick:
            jobs.append(("4D CT 128x128x96 @2.5 mm, 10 phases", "1 patient", lambda: motion.generate_4dct_dataset(
                motion.Motion4DConfig(n_cases=1, seed=args.seed, n_phases=10, shape=(128, 128, 96),
                                      spacing_mm=(2.5, 2.5, 2.5)), tmp / "4d-big")))
        jobs += [
            ("radiographs 256 px, PA + lateral", "100 studies", lambda: cxr.generate_dataset(
                cxr.CXRConfig(n_cases=100, seed=args.seed), tmp / "cxr")),
            ("clinical cases + personas", "1,000 cases", lambda: cases.generate_dataset(
                cases.CasesConfig(n_cases=1000, seed=args.seed), tmp / "cases")),
        ]
        for name, unit, fn in jobs:
            rows.append({"set": name, "amount": unit, "seconds": round(_time(fn), 2)})
            print(f"  {name}: {rows[-1]['seconds']:.1f} s", flush=True)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\n| set | amount | wall s |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r['set']} | {r['amount']} | {r['seconds']:.1f} |")
    print(f"\npeak RSS {peak_mb:.0f} MB; {os.cpu_count()} CPU(s); {platform.processor() or platform.machine()}")

    from bench.cells import Bench

    bench = Bench("synth_speed", device="cpu", config={"seed": args.seed})
    # Wall times on a shared 2-core CPU: read them as the order of magnitude a user waits,
    # not as a speed claim (no peer is measured here, so no target).
    out = bench.write({"rows": rows, "peak_rss_mb": round(peak_mb), "load_avg_1min": os.getloadavg()[0]},
                      targets={})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
