"""kill -9 at random moments: no partial output file, ``--resume`` continues, and a
resumed training run ends where an uninterrupted one does.

- Default suite (fast): a subprocess doing medkit's atomic writes (NIfTI, JSON, JSONL,
  text) in a loop is killed at random moments, 8 times; every file under its final
  name must open completely.
- Slow: ``medkit segment`` over a folder of cases killed mid-run, then re-run;
  ``medkit train segmentation`` killed after its first checkpoint, then ``--resume``d,
  compared with an uninterrupted run of the same seed.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import TINY_TRAIN_SETS, check_whole, cli_env, medkit_cmd, run_cli, write_nifti_cases

WRITER = r"""
import sys, types, numpy as np
from pathlib import Path
from medkit.io import save_volume, write_json, write_jsonl, write_text
out = Path(sys.argv[1])
like = types.SimpleNamespace(affine=np.diag([0.8, 0.8, 2.5, 1.0]), shape=(1, 96, 96, 48))  # no torch import
i = 0
print("ready", flush=True)
while True:
    k = i % 4
    save_volume(np.full((96, 96, 48), i, dtype=np.int16), out / f"vol{k}.nii.gz", like=like)  # ~0.9 MB
    write_json(out / f"doc{k}.json", {"i": i, "rows": list(range(20000))})
    write_jsonl(out / "rows.jsonl", [{"i": j} for j in range(i % 500 + 1)])
    write_text(out / "log.txt", "line\n" * (i % 1000 + 1))
    i += 1
"""


def _kill_after(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL ``proc`` after ``seconds``; False if it had already ended."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def test_kill9_during_atomic_writes_leaves_only_whole_files(tmp_path):
    rng = random.Random(1234)
    out = tmp_path / "out"
    out.mkdir()
    kills, leftovers = 0, 0
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], env=cli_env(), stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "ready"  # imports done: the loop is writing
        kills += _kill_after(proc, rng.uniform(0.05, 1.0))
        report = check_whole(out)  # raises on any partial file under a final name
        leftovers = len(report["temp_leftovers"])
    # Not per kill: on a loaded machine an early kill can land before the first write completes.
    assert report["files"] >= 1
    assert kills == 8
    # A killed write may leave its hidden temp file (at most one per kill), never more.
    assert leftovers <= kills


# ----------------------------------------------------------------------------- segment (slow)


def _segment_outputs(folder: Path) -> dict[str, bytes]:
    import nibabel as nib

    return {p.name: np.asarray(nib.load(str(p)).dataobj).tobytes() for p in sorted(folder.glob("*.nii.gz"))}


@pytest.mark.slow
def test_kill9_segment_folder_then_rerun(tmp_path, tiny_model_dir):
    cases = tmp_path / "cases"
    ids = write_nifti_cases(cases, 3)
    args = ["segment", "-i", str(cases), "--model", str(tiny_model_dir), "--device", "cpu", "--fast"]
    ref = run_cli(*args, "-o", str(tmp_path / "ref"), cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr[-2000:]
    want = _segment_outputs(tmp_path / "ref")
    assert sorted(want) == sorted(f"{i}.nii.gz" for i in ids)

    rng = random.Random(7)
    out = tmp_path / "out"
    for _attempt in range(3):
        proc = subprocess.Popen(medkit_cmd(*args, "-o", str(out)), cwd=tmp_path, env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Kill once the first case is being written (its log line), plus a random delay.
        for line in proc.stderr:
            if ": liver " in line or "voxels, spacing" in line:
                break
        killed = _kill_after(proc, rng.uniform(0.0, 1.5))
        report = check_whole(out) if out.exists() else {"files": 0, "temp_leftovers": []}
        if killed:
            break
    assert killed, "segment finished before every kill: nothing was interrupted"
    # The rerun (medkit segment has no --resume: it redoes every case) gives the same labels.
    again = run_cli(*args, "-o", str(out), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _segment_outputs(out) == want
    final = check_whole(out)
    assert final["by_type"].get(".csv") == 1 and final["by_type"].get(".png") == len(ids)
    print(f"segment kill: {report['files']} whole file(s) after the kill, "
          f"{len(report['temp_leftovers'])} temp leftover(s); rerun matches the uninterrupted labels")


# ----------------------------------------------------------------------------- training (slow)


def _train_args(tmp_path: Path, out: Path, steps: int = 6) -> list[str]:
    sets = [*TINY_TRAIN_SETS, f"data.root={tmp_path / 'data'}", f"optim.steps={steps}", "optim.val_every=2"]
    return ["train", "segmentation", str(Path(__file__).resolve().parents[2] / "pipelines" /
                                         "couinaud_synthetic.yaml"),
            "--out", str(out), "--device", "cpu", *[a for s in sets for a in ("--set", s)]]


def _weights(run: Path) -> tuple[int, dict, list]:
    import torch

    ck = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    return ck["step"], ck["model"], [h["loss"] for h in ck["history"]]


@pytest.fixture(scope="module")
def interrupted_training(tmp_path_factory):
    """An uninterrupted 6-step run and one killed at a random moment after its first
    checkpoint, then resumed: ``(tmp, ref_run, resumed_run, files_after_kill)``."""
    tmp = tmp_path_factory.mktemp("train")
    ref = run_cli(*_train_args(tmp, tmp / "ref"), cwd=tmp)  # also generates the data folder
    assert ref.returncode == 0, ref.stderr[-3000:]
    rng = random.Random(11)
    run = tmp / "killed"
    proc = subprocess.Popen(medkit_cmd(*_train_args(tmp, run)), cwd=tmp, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while not (run / "checkpoints" / "last.pt").exists() and proc.poll() is None and time.monotonic() - t0 < 300:
        time.sleep(0.02)
    killed = _kill_after(proc, rng.uniform(0.0, 0.3))
    assert killed, "training finished before the kill"
    after_kill = check_whole(run)
    step_at_kill = _weights(run)[0]
    res = run_cli(*_train_args(tmp, run), "--resume", cwd=tmp)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed at step {step_at_kill}" in res.stderr
    return tmp, tmp / "ref", run, after_kill


@pytest.mark.slow
def test_train_kill9_leaves_whole_files_and_resume_finishes(interrupted_training):
    _tmp, ref, run, after_kill = interrupted_training
    assert after_kill["by_type"].get(".pt", 0) >= 1 and after_kill["by_type"].get(".json", 0) >= 1
    check_whole(run)
    step, _, losses = _weights(run)
    assert step == 6 and len(losses) == 3
    steps = [json.loads(line)["step"] for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # the count continued; no step logged twice
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and len(manifest["resumed_at"]) == 1


@pytest.mark.slow
def test_resumed_training_is_bitwise_equal_to_uninterrupted(interrupted_training):
    import torch

    _tmp, ref, run, _ = interrupted_training
    s_ref, w_ref, l_ref = _weights(ref)
    s_run, w_run, l_run = _weights(run)
    assert s_ref == s_run == 6
    assert l_run == l_ref  # same losses at every logged step
    differ = [k for k in w_ref if not torch.equal(w_ref[k], w_run[k])]
    assert not differ, f"{len(differ)} of {len(w_ref)} weight tensors differ after the resume"
