"""Large CTs through ``medkit segment``: peak memory of the process, for one 512 x 512 x 800 CT
and for folders of 1 and of 5 512 x 512 x 400 CTs (streamed: peak independent of the count).

The volume is a small abdominal phantom upsampled (nearest neighbour) to
512 x 512 x 800 voxels at 0.7 x 0.7 x 0.5 mm (a 358 mm field of view, 400 mm
long: a chest-abdomen-pelvis CT), stored as an uncompressed int16 NIfTI (400 MiB).
The segment subprocess is sampled with psutil; the test fails above a 24 GiB
machine's budget (leaving room for the OS: 20 GiB) and is stopped early if it
gets there, so it cannot take the machine down.

Measured (2 CPU cores, tiny untrained model, ``--fast``): peak RSS 2.9 GiB, 128 s.
It was 13.4 GiB before the overlay stopped casting labels to int64 and listing every
foreground index (an untrained model labels nearly every voxel, which is the worst
case for that code); ``predict_volume`` also takes the argmax per resampled chunk, so
class probabilities are never held on the input grid.
"""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from .conftest import cli_env, medkit_cmd, small_ct

BUDGET_GIB = 20.0
NEEDS_FREE_GIB = 6.0  # twice the measured peak (2.9 GiB, see above)
SHAPE = (512, 512, 800)
SPACING = (0.7, 0.7, 0.5)


def _write_big_ct(path, shape=SHAPE, index: int = 0) -> None:
    import nibabel as nib
    from scipy import ndimage

    c = small_ct(index)
    zoom = [t / s for t, s in zip(shape, c.image.shape)]
    big = ndimage.zoom(c.image.astype(np.int16), zoom, order=0)[: shape[0], : shape[1], : shape[2]]
    assert big.shape == shape
    aff = np.diag([*SPACING, 1.0])
    aff[:3, 3] = [-179.0, -179.0, -200.0]
    img = nib.Nifti1Image(big, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    nib.save(img, str(path))


def _peak_rss(cmd: list[str], stop_at_gib: float) -> tuple[float, float, int, str]:
    """Run ``cmd``; ``(peak RSS GiB of it and its children, seconds, exit code, log)``; killed above ``stop_at_gib``."""
    import psutil

    proc = subprocess.Popen(cmd, env=cli_env(MEDKIT_PROGRESS_EVERY_S="60"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    peak, t0 = 0, time.monotonic()
    try:
        while proc.poll() is None:
            try:
                rss = sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)])
            except psutil.Error:
                break
            peak = max(peak, rss)
            if rss > stop_at_gib * 2**30:
                proc.kill()
                break
            time.sleep(0.05)
    except BaseException:
        proc.kill()
        raise
    log = proc.communicate()[0]
    return peak / 2**30, time.monotonic() - t0, proc.returncode, log


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~5 min on a free core; far longer on a loaded 2-core box
def test_segment_512x512x800_peak_rss(tmp_path, tiny_model_dir):
    psutil = pytest.importorskip("psutil")
    free = psutil.virtual_memory().available / 2**30
    if free < NEEDS_FREE_GIB:
        pytest.skip(f"needs {NEEDS_FREE_GIB:.0f} GiB free to measure safely, {free:.1f} GiB available")
    stop_at = min(BUDGET_GIB, free - 1.5)  # the watchdog: never push the machine into the OOM killer
    src = tmp_path / "in"
    src.mkdir()
    _write_big_ct(src / "bigct.nii")
    out = tmp_path / "out"
    peak, seconds, rc, log = _peak_rss(medkit_cmd("segment", "-i", str(src / "bigct.nii"), "-o", str(out), "--model",
                                                  str(tiny_model_dir), "--device", "cpu", "--fast"), stop_at)
    print(f"segment {SHAPE}: peak RSS {peak:.2f} GiB, {seconds:.0f} s, exit {rc}")
    assert peak <= stop_at, f"peak RSS passed {stop_at:.1f} GiB; stopped. Log tail:\n{log[-2000:]}"
    assert rc == 0, log[-3000:]
    import nibabel as nib

    lab = nib.load(str(out / "bigct.nii.gz"))
    assert lab.shape == SHAPE
    assert peak < BUDGET_GIB


FOLDER_SHAPE = (512, 512, 400)  # an abdominal CT: 0.7 x 0.7 x 0.5 mm over 358 x 358 x 200 mm


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_folder_of_1_and_5_large_cts_same_peak_rss(tmp_path, tiny_model_dir):
    """Streaming: every header first, then one case at a time. Peak RSS of a folder of 5 large CTs
    stays that of a folder of 1 (it grew by 0.45 GB per case when all cases were loaded first)."""
    psutil = pytest.importorskip("psutil")
    free = psutil.virtual_memory().available / 2**30
    if free < NEEDS_FREE_GIB:
        pytest.skip(f"needs {NEEDS_FREE_GIB:.0f} GiB free to measure safely, {free:.1f} GiB available")
    results = {}
    for n in (1, 5):
        src = tmp_path / f"in{n}"
        src.mkdir()
        for i in range(n):
            _write_big_ct(src / f"ct{i}.nii", FOLDER_SHAPE, index=i)
        out = tmp_path / f"out{n}"
        peak, secs, rc, log = _peak_rss(medkit_cmd("segment", "-i", str(src), "-o", str(out), "--model",
                                                   str(tiny_model_dir), "--device", "cpu", "--fast"),
                                        min(BUDGET_GIB, free - 1.5))
        assert rc == 0, log[-3000:]
        assert len(list(out.glob("*.nii.gz"))) == n
        results[n] = (peak, secs)
        print(f"segment folder of {n} CT(s) {FOLDER_SHAPE}: peak RSS {peak:.2f} GiB, {secs:.0f} s")
        import shutil

        shutil.rmtree(src)
    # The same peak within 10 % (+0.1 GiB of allocator noise), not +4 x 0.45 GB.
    assert results[5][0] <= 1.10 * results[1][0] + 0.1, results
