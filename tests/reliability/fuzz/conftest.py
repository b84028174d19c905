"""Fuzz harness shared by the targets in this folder.

Contract checked for every input (issue 10): the reader returns a correct value,
or raises a :class:`~medkit.io.MedkitInputError` whose message names the file;
never another exception, never a hang (``PER_INPUT_S`` per input), never a file
left behind (inputs live in a scratch folder that is compared before and after,
and the working directory is an empty folder that must stay empty).

Inputs per target: ``MEDKIT_FUZZ_N`` (``make fuzz`` sets 20000); otherwise each
target's bounded default, sized so the whole reliability suite stays under 90 s on
one core. The default run is derandomised (the same inputs every time, so the suite
cannot flake); a ``MEDKIT_FUZZ_N`` run draws fresh random inputs.

Counts (inputs tried, results, errors by class, crashes, hangs, slowest input)
are written at the end of the session to ``fuzz.json`` under pytest's base temp
folder, or, when ``MEDKIT_FUZZ_N`` is set, to ``bench/results/fuzz.json``
(``MEDKIT_FUZZ_OUT`` overrides either).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LONG_RUN = "MEDKIT_FUZZ_N" in os.environ
PER_INPUT_S = float(os.environ.get("MEDKIT_FUZZ_TIMEOUT_S", "10"))


def fuzz_n(default: int) -> int:
    """Inputs for one target: ``MEDKIT_FUZZ_N`` if set, else the target's bounded default."""
    return int(os.environ["MEDKIT_FUZZ_N"]) if LONG_RUN else default


def fuzz_settings(default_n: int):
    """hypothesis settings: ``fuzz_n(default_n)`` examples, no deadline (we time inputs
    ourselves), no example database (nothing written into the repository), every health
    check off (inputs are files: large and slow to make by design)."""
    from hypothesis import HealthCheck, Phase, settings

    return settings(
        max_examples=fuzz_n(default_n), deadline=None, database=None, derandomize=not LONG_RUN,
        suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink], print_blob=True,
    )


class FuzzTimeout(BaseException):
    """Raised by SIGALRM inside a reader that ran past ``PER_INPUT_S`` (BaseException, so
    no ``except Exception`` in the reader can swallow it)."""


@dataclass
class TargetStats:
    inputs: int = 0
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    crashes: list = field(default_factory=list)
    hangs: list = field(default_factory=list)
    stray_files: list = field(default_factory=list)
    max_input_s: float = 0.0
    total_s: float = 0.0
    notes: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "inputs": self.inputs, "ok": self.ok,
            "errors_by_class": dict(sorted(self.errors.items())),
            "crashes": len(self.crashes), "crash_examples": self.crashes[:5],
            "hangs": len(self.hangs), "hang_examples": self.hangs[:5],
            "stray_files": len(self.stray_files), "stray_examples": self.stray_files[:5],
            "max_input_s": round(self.max_input_s, 3), "total_s": round(self.total_s, 2),
            "notes": dict(sorted(self.notes.items())),
        }


STATS: dict[str, TargetStats] = {}


def stats_for(target: str) -> TargetStats:
    return STATS.setdefault(target, TargetStats())


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns)
    return out


def _zip_scratch() -> set[str]:
    """What readers left in the temp folder (``fuzz_workdir`` points ``tempfile`` at a private one)."""
    return {p.name for p in Path(tempfile.gettempdir()).iterdir()}


@contextlib.contextmanager
def _time_limit(seconds: float):
    """SIGALRM after ``seconds``; restores whatever timer (pytest-timeout's) was armed."""
    def on_alarm(signum, frame):
        raise FuzzTimeout(f"input ran past {seconds} s")

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_left, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    t0 = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_left > 0:
            signal.setitimer(signal.ITIMER_REAL, max(old_left - (time.monotonic() - t0), 0.001))


def error_names_input(err, inputs: list[Path]) -> bool:
    """The message names a file: ``err.path`` is set, appears in the message, and is one of
    ``inputs`` or lies inside one of them (a zip names ``archive [member]``)."""
    if not err.path or err.path not in str(err):
        return False
    p = err.path.split(" [", 1)[0]
    for root in inputs:
        r = str(root)
        if p == r or p.startswith(r.rstrip("/") + "/"):
            return True
    return False


def run_input(target: str, fn, inputs: list[Path], scratch: Path, describe=lambda: ""):
    """Call ``fn()`` under the contract; count the outcome; return ``fn``'s value or None.

    Args:
        target: the name the counts go under.
        fn: the reader call, e.g. ``lambda: load_volume(path)``.
        inputs: the paths an error may name.
        scratch: folder holding the input, compared before/after (no file written or
            removed); the working directory is compared too.
        describe: returns a short description of the input for crash reports.
    """
    from medkit.io import MedkitInputError

    st = stats_for(target)
    before, cwd_before, zips_before = _snapshot(scratch), _snapshot(Path.cwd()), _zip_scratch()
    st.inputs += 1
    t0 = time.perf_counter()
    result = None
    try:
        with _time_limit(PER_INPUT_S):
            result = fn()
    except FuzzTimeout:
        st.hangs.append(describe())
        raise AssertionError(f"{target}: input ran past {PER_INPUT_S} s: {describe()}") from None
    except MedkitInputError as e:
        st.errors[type(e).__name__] += 1
        if not error_names_input(e, inputs):
            st.crashes.append(f"error does not name the input file: {type(e).__name__}: {e} [{describe()}]")
            raise AssertionError(f"{target}: error does not name the input file ({inputs}): {e!r}") from None
    except Exception as e:  # noqa: BLE001 - the point: anything else is a crash
        st.crashes.append(f"{type(e).__name__}: {str(e)[:300]} [{describe()}] "
                          + traceback.format_exc(limit=-3).replace("\n", " | ")[-600:])
        raise
    else:
        st.ok += 1
    finally:
        dt = time.perf_counter() - t0
        st.total_s += dt
        st.max_input_s = max(st.max_input_s, dt)
    if dt > PER_INPUT_S:  # a reader stuck in C code cannot be interrupted: caught here
        st.hangs.append(f"{dt:.1f} s: {describe()}")
        raise AssertionError(f"{target}: input took {dt:.1f} s > {PER_INPUT_S} s: {describe()}")
    after, cwd_after, zips_after = _snapshot(scratch), _snapshot(Path.cwd()), _zip_scratch()
    stray = sorted(set(after) ^ set(before)) + sorted(set(cwd_after) ^ set(cwd_before)) \
        + sorted(zips_after - zips_before)
    changed = [k for k in before if k in after and after[k] != before[k]]
    if stray or changed:
        st.stray_files.append(f"{stray + changed} [{describe()}]")
        raise AssertionError(f"{target}: files created/removed/changed by a reader: {stray + changed}")
    return result


def check_volume_invariants(vol, source: Path) -> None:
    """What every successfully loaded volume must satisfy (the data contract)."""
    import numpy as np
    import torch
    from monai.data import MetaTensor

    from medkit.io.volume import check_affine

    assert isinstance(vol, MetaTensor), type(vol)
    assert vol.dtype == torch.float32 and vol.ndim == 4 and vol.shape[0] == 1, (vol.dtype, vol.shape)
    assert min(vol.shape[1:]) >= 1
    assert torch.isfinite(vol.as_tensor()).all()
    aff = np.asarray(vol.affine, dtype=np.float64)
    assert aff.shape == (4, 4) and np.all(np.isfinite(aff))
    check_affine(source, aff)  # raises if singular/sheared
    assert tuple(vol.meta["spatial_shape"]) == tuple(vol.shape[1:])
    assert vol.meta["filename_or_obj"] == str(source)


def warm_up() -> None:
    """Import what the readers import lazily (torch, MONAI, SimpleITK: seconds), so the
    first input is not timed with the imports."""
    import monai.data  # noqa: F401
    import nibabel  # noqa: F401
    import pydicom  # noqa: F401
    import SimpleITK  # noqa: F401
    import torch  # noqa: F401


@pytest.fixture
def fuzz_workdir():
    """Inputs folder for the test; the working directory and the temp folder are private
    empty folders that readers must leave as they found them."""
    old, old_tmp = Path.cwd(), tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="medkit-fuzz-") as d:
        root = Path(d)
        (root / "cwd").mkdir()
        (root / "tmp").mkdir()
        (root / "inputs").mkdir()
        os.chdir(root / "cwd")
        tempfile.tempdir = str(root / "tmp")  # readers' scratch (zip extraction) goes here
        try:
            yield root / "inputs"
        finally:
            os.chdir(old)
            tempfile.tempdir = old_tmp


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in ("hypothesis", "pydicom", "SimpleITK", "nibabel", "numpy", "monai", "torch"):
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = None
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not STATS:
        return
    sys.path.insert(0, str(REPO))
    from bench.cells import provenance, target

    crashes = sum(len(v.crashes) for v in STATS.values())
    hangs = sum(len(v.hangs) for v in STATS.values())
    stray = sum(len(v.stray_files) for v in STATS.values())
    cfg = {"MEDKIT_FUZZ_N": os.environ.get("MEDKIT_FUZZ_N"), "per_input_limit_s": PER_INPUT_S,
           "derandomized": not LONG_RUN}
    prov = provenance(cfg, "cpu")
    report = {
        "git_sha": prov["git_sha"], "command": prov["command"], "config": cfg, "provenance": prov,
        # The readers' contract (issue 10): a correct value or one MedkitInputError naming the file.
        "targets": {"no_crashes": target(crashes, 0, "<="), "no_hangs": target(hangs, 0, "<="),
                    "no_stray_files": target(stray, 0, "<=")},
        "what": "medkit fuzz run (tests/reliability/fuzz): inputs tried and outcomes per target",
        "long_run": LONG_RUN, "derandomized": not LONG_RUN,
        "inputs_per_target_requested": os.environ.get("MEDKIT_FUZZ_N", "per-target default"),
        "per_input_limit_s": PER_INPUT_S,
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count()},
        "versions": _versions(),
        "fuzz_targets": {k: v.as_dict() for k, v in sorted(STATS.items())},
    }
    default_out = REPO / "bench" / "results" / "fuzz.json" if LONG_RUN else \
        Path(str(config._tmp_path_factory.getbasetemp())) / "fuzz.json"  # noqa: SLF001
    out = Path(os.environ.get("MEDKIT_FUZZ_OUT", default_out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    tr = terminalreporter
    tr.section("medkit fuzz counts")
    for name, s in sorted(STATS.items()):
        errs = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items())) or "-"
        tr.write_line(f"{name}: {s.inputs} inputs, {s.ok} ok, errors [{errs}], crashes {len(s.crashes)}, "
                      f"hangs {len(s.hangs)}, stray files {len(s.stray_files)}, slowest {s.max_input_s:.2f} s")
    tr.write_line(f"written to {out}")
