"""GRPO under `accelerate launch --num_processes 2` on CPU (gloo): each rank draws its own
prompts, DDP keeps the weights identical, rank 0 alone writes the log and the checkpoint
(issue 15, item 5)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed
STEPS = 3


def test_two_process_grpo_ranks_differ_in_prompts_agree_in_weights(tmp_path, accelerate_launch):
    worker = Path(__file__).with_name("grpo_ddp_worker.py")
    cmd = accelerate_launch(str(worker), str(tmp_path), str(STEPS))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert all(len(x["drawn"]) == STEPS for x in ranks)
    assert ranks[0]["drawn"] != ranks[1]["drawn"]                      # each rank its own prompts
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]    # DDP kept them in step
    rows = (tmp_path / "loop" / "logs" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in rows] == list(range(1, STEPS + 1))   # rank 0 only: one row a step
    assert (tmp_path / "loop" / "checkpoints" / "last.pt").exists()
