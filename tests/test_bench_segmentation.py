"""bench/segmentation.py runs where it says it runs: ``--device`` picks the device, the
cells land in that device's table and their provenance names it (a GPU session's cells
used to be trained on the CPU and filed as CPU cells)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _smoke(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDKIT_BENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "MEDKIT_NO_PROGRESS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "segmentation.py"), "--smoke", "--results-root",
                        str(tmp_path / "res"), *args], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _cell(tmp_path: Path, tag: str) -> dict:
    files = sorted((tmp_path / "res" / f"segmentation-{tag}" / "cells").glob("table1__liverformer__*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_cpu_cell_is_filed_and_labelled_cpu(tmp_path):
    _smoke(tmp_path, "--device", "cpu", "--part", "table1", "--nets", "liverformer", "--seeds", "0")
    cell = _cell(tmp_path, "cpu")
    assert cell["provenance"]["device"] == "cpu"
    assert "gpu" not in cell["provenance"]
    assert cell["result"]["test"]["infer_s_per_case"] > 0
    assert not (tmp_path / "res" / "segmentation-cuda").exists()


def test_cuda_without_a_gpu_is_an_error_not_a_cpu_run(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    env = {**os.environ, "MEDKIT_BENCH_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "segmentation.py"), "--smoke", "--device", "cuda",
                        "--assemble", "--results-root", str(tmp_path / "res")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0
    assert "cuda" in (r.stderr + r.stdout).lower()
    assert not (tmp_path / "res").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run `pytest -m gpu` on a GPU)")
def test_cuda_cells_train_time_and_file_on_the_gpu(tmp_path):
    _smoke(tmp_path, "--device", "cuda", "--part", "table1", "--nets", "liverformer", "--seeds", "0")
    _smoke(tmp_path, "--device", "cuda", "--part", "timing")
    cell = _cell(tmp_path, "cuda")
    assert cell["provenance"]["device"].startswith("cuda") and cell["provenance"]["gpu"]
    timing = json.loads(next((tmp_path / "res" / "segmentation-cuda" / "cells").glob("timing__*.json")).read_text())
    assert timing["result"]["_device"].startswith("cuda")
    assert all(timing["result"][n]["train_mem_mb"] is not None for n in ("liverformer", "swinunetr"))
    table = json.loads((tmp_path / "res" / "segmentation-cuda.json").read_text())
    assert table["tables"]["timing"]["device"].startswith("cuda")
