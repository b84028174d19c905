"""Survey: run ``medkit.io.load_volume`` over every public test image we ship with.

Sources: pydicom's own test files and the ``pydicom-data`` store (both listed by
``pydicom.data.get_testdata_files()``), and nibabel's test data (only the files
whose suffix ``load_volume`` claims: NIfTI, NRRD/MHA, zip, DICOM).

Each file is classified as

* ``loaded``    -- a volume came back (shape, spacing and value range recorded),
* ``rejected``  -- a ``medkit.io.VolumeError`` subclass was raised (class recorded),
* ``crashed``   -- any other exception, or the per-file time limit was exceeded.

``crashed`` must be 0: every other exception is a medkit bug.

Files are loaded in one long-lived worker process (imports paid once); a file
that runs past ``--timeout`` seconds kills the worker, counts as crashed, and a
fresh worker takes the next file.

Usage::

    .venv/bin/python bench/io_survey.py [--timeout 60] [--out bench/results/io_survey-cpu.json]
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

CLAIMED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".zip", ".dcm")


def list_files() -> list[tuple[str, str]]:
    """``(source, path)`` for every file to survey."""
    from pydicom.data import get_testdata_files

    out = []
    for f in sorted(get_testdata_files()):
        src = "pydicom-data" if f"{os.sep}data_store{os.sep}" in f else "pydicom"
        out.append((src, f))
    import nibabel.testing

    root = Path(nibabel.testing.data_path)
    for p in sorted(root.iterdir()):
        if p.is_file() and p.name.lower().endswith(CLAIMED_SUFFIXES):
            out.append(("nibabel", str(p)))
    return out


def _load_one(path: str) -> dict:
    """Runs in the worker: load one file and describe the outcome."""
    import numpy as np

    from medkit.io import VolumeError, load_volume

    t0 = time.perf_counter()
    try:
        vol = load_volume(path)
    except VolumeError as e:
        return {"status": "rejected", "error_class": type(e).__name__, "message": str(e)[:300],
                "seconds": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001 - this is what the survey looks for
        return {"status": "crashed", "error_class": type(e).__name__, "message": str(e)[:300],
                "seconds": time.perf_counter() - t0}
    arr = vol.as_tensor().numpy()
    return {
        "status": "loaded",
        "shape": list(arr.shape[1:]),
        "spacing_mm": [round(float(s), 4) for s in vol.meta["original_spacing"]],
        "orientation": vol.meta["original_orientation"],
        "modality": vol.meta.get("modality"),
        "range": [float(np.min(arr)), float(np.max(arr))],
        "seconds": time.perf_counter() - t0,
    }


def _warm() -> None:
    """Worker initializer: pay the heavy imports once, outside the per-file timings."""
    import monai.data  # noqa: F401
    import SimpleITK  # noqa: F401

    import medkit.io  # noqa: F401


def survey(files: list[tuple[str, str]], timeout: float) -> list[dict]:
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(1, initializer=_warm)
    rows = []
    for src, path in files:
        res = pool.apply_async(_load_one, (path,))
        try:
            row = res.get(timeout=timeout)
        except mp.TimeoutError:
            pool.terminate()
            pool = ctx.Pool(1, initializer=_warm)
            row = {"status": "crashed", "error_class": "Timeout", "message": f"over {timeout:.0f} s",
                   "seconds": timeout}
        except Exception as e:  # noqa: BLE001 - the worker died (segfault, pickling)
            pool.terminate()
            pool = ctx.Pool(1, initializer=_warm)
            row = {"status": "crashed", "error_class": type(e).__name__, "message": str(e)[:300],
                   "seconds": float("nan")}
        row.update(source=src, path=path)
        rows.append(row)
    pool.close()
    pool.join()
    return rows


def time_help(repeats: int = 5) -> float:
    """Best-of-``repeats`` wall time of ``medkit --help`` in a fresh interpreter."""
    best = float("inf")
    cmd = [sys.executable, "-c", "from medkit.cli import app; app()", "--help"]
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def print_table(rows: list[dict], help_s: float) -> None:
    by_src: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_err: collections.Counter = collections.Counter()
    for r in rows:
        by_src[r["source"]][r["status"]] += 1
        by_src["total"][r["status"]] += 1
        if r["status"] != "loaded":
            by_err[(r["status"], r["error_class"])] += 1
    print(f"{'source':<14}{'files':>7}{'loaded':>8}{'rejected':>10}{'crashed':>9}")
    for src in [s for s in by_src if s != "total"] + ["total"]:
        c = by_src[src]
        print(f"{src:<14}{sum(c.values()):>7}{c['loaded']:>8}{c['rejected']:>10}{c['crashed']:>9}")
    print()
    print(f"{'outcome':<10}{'error class':<34}{'files':>6}")
    for (status, cls), n in sorted(by_err.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        print(f"{status:<10}{cls:<34}{n:>6}")
    for r in rows:
        if r["status"] == "crashed":
            print(f"CRASHED {r['path']}: {r['error_class']}: {r['message']}")
    print(f"\n`medkit --help`: {help_s * 1000:.0f} ms (best of 5, fresh interpreter)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=60.0, help="per-file limit in seconds")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "io_survey-cpu.json")
    args = ap.parse_args()

    files = list_files()
    t0 = time.perf_counter()
    rows = survey(files, args.timeout)
    wall = time.perf_counter() - t0
    help_s = time_help()
    print_table(rows, help_s)
    print(f"surveyed {len(rows)} files in {wall:.1f} s")

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.cells import Bench

    counts = collections.Counter(r["status"] for r in rows)
    bench = Bench("io_survey", device="cpu", config={"timeout_s": args.timeout, "n_files": len(rows)})
    # No issue names a target for this survey; "crashes" is the one number that must be 0.
    from bench.cells import target

    bench.write({"counts": dict(counts), "medkit_help_s_best_of_5": round(help_s, 4),
                 "survey_wall_s": round(wall, 2),
                 "files": [{k: (v if not (isinstance(v, float) and v != v) else None) for k, v in r.items()}
                           for r in rows]},
                targets={"no_crashes": target(counts["crashed"], 0, "<=")}, path=args.out)
    print(f"wrote {args.out}")
    return 1 if counts["crashed"] else 0


if __name__ == "__main__":
    sys.exit(main())
