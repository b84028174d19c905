"""`medkit run` under `accelerate launch --num_processes 2` on CPU (gloo): both ranks train,
draw different samples, and end with identical weights; rank 0 alone writes the run folder."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.distributed

TINY = ["data.synth.n_cases=5", "data.n_val=1", "data.n_test=0", "preprocess.spacing_mm=[10.0,10.0,10.0]",
        "preprocess.grid_shape=[32,24,24]", "preprocess.patch=[16,16,16]", "augment.kind=none",
        "model.liverformer.channels=[4,8,16]", "model.liverformer.embed_dim=16", "model.liverformer.depth=1",
        "model.liverformer.heads=2", "optim.steps=4", "optim.val_every=4", "optim.batch_size=1"]


def test_two_process_training_ranks_differ_in_data_agree_in_weights(tmp_path, accelerate_launch):
    out = tmp_path / "run"
    cmd = accelerate_launch("-m", "medkit", "run", "couinaud_synthetic", "--out", str(out), "--device", "cpu")
    for s in TINY + [f"data.root={tmp_path / 'data'}"]:
        cmd += ["--set", s]
    env = {**os.environ, "MEDKIT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    ranks = [json.loads((out / "logs" / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert all(len(x["drawn"]) == 4 for x in ranks)
    assert [c for _, c in ranks[0]["drawn"]] != [c for _, c in ranks[1]["drawn"]]  # each rank its own cases
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # DDP kept them in step
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "completed" and "rank" not in man  # written by rank 0 only
    assert json.loads((out / "summary.json").read_text())["step"] == 4
