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


def test_an_interrupted_cell_resumes_where_it_stopped(tmp_path, monkeypatch):
    """A cell killed after its first check continues from that check's checkpoint (weights,
    optimiser, schedule, random streams) and ends where an uninterrupted run ends; its run
    folder goes once the cell's JSON is written."""
    import importlib

    import medkit.segmentation.train as T

    monkeypatch.syspath_prepend(str(ROOT))
    seg = importlib.import_module("bench.segmentation")
    monkeypatch.setattr(seg, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(seg, "SMOKE", True)
    monkeypatch.setattr(seg, "DEVICE", torch.device("cpu"))
    torch.set_num_threads(1)
    s = seg.settings(smoke=True)
    train, val, test = seg.split(s, seg.load_cases(s, True))
    cfg = seg.table1_cfg(s, "liverformer", 0)
    ref = seg.train_cell(s, cfg, train, val, test)  # in memory, never interrupted

    real, calls = T.write_curve, []

    def die_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "write_curve", die_on_second)
    with pytest.raises(KeyboardInterrupt):
        seg.train_cell(s, cfg, train, val, test, key="table1/x/seed0")
    monkeypatch.setattr(T, "write_curve", real)
    d = seg.cell_run_dir("table1/x/seed0")
    assert (d / "checkpoints" / "last.pt").exists()
    out = seg.train_cell(s, cfg, train, val, test, key="table1/x/seed0")
    assert out["resumed_from_step"] == s["optim"].val_every
    assert [h["step"] for h in out["history"]] == [h["step"] for h in ref["history"]]
    assert [h["loss"] for h in out["history"]] == pytest.approx([h["loss"] for h in ref["history"]], rel=1e-5)
    assert out["test"]["dice_mean"] == pytest.approx(ref["test"]["dice_mean"], abs=1e-6)
    # a changed config does not resume a stale checkpoint
    run, step = seg._open_cell_run(seg.table1_cfg(s, "liverformer", 1), "table1/x/seed0")
    assert step == 0 and not (d / "checkpoints" / "last.pt").exists()
    seg._drop_run("table1/x/seed0")
    assert not d.exists()
