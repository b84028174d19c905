"""Run folders: config + manifest, refusal to overwrite, checkpoints, atomic writes, devices."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import yaml

from medkit.io.atomic import atomic_path, write_json
from medkit.runs import RunDir, load_checkpoint, pick_device, sha256_file


@dataclass
class Cfg:
    lr: float = 0.01
    steps: int = 5


def test_create_writes_config_and_manifest(tmp_path):
    inp = tmp_path / "input.bin"
    inp.write_bytes(b"abc")
    run = RunDir.create(tmp_path / "run", config=Cfg(steps=3), seed=42, device="cpu", command="medkit run x")
    run.add_input(inp)
    run.finish()
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == {"lr": 0.01, "steps": 3}
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    for key in ("medkit_version", "git_sha", "packages", "seed", "device", "inputs", "started_at", "finished_at"):
        assert key in m, key
    import medkit

    assert m["medkit_version"] == medkit.__version__ and m["seed"] == 42 and m["device"] == "cpu"
    assert m["packages"]["torch"] and m["packages"]["numpy"]
    # sha256("abc"), the FIPS 180-2 test vector.
    assert m["inputs"]["input.bin"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert m["status"] == "completed" and m["finished_at"] >= m["started_at"]
    for sub in ("predictions", "logs", "checkpoints"):
        assert (tmp_path / "run" / sub).is_dir()


def test_refuses_non_empty_folder_without_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not empty"):
        RunDir.create(out, config=Cfg())
    assert (out / "summary.json").read_text() == "{}" and not (out / "manifest.json").exists()
    first = RunDir.create(tmp_path / "r2", config=Cfg(), seed=1)
    again = RunDir.create(tmp_path / "r2", config=Cfg(), resume=True)
    assert again.manifest["started_at"] == first.manifest["started_at"]
    assert len(again.manifest["resumed_at"]) == 1


def test_checkpoint_holds_config(tmp_path):
    import torch

    run = RunDir.create(tmp_path / "run")
    assert run.load_checkpoint() is None
    w = torch.arange(6.0).reshape(2, 3)
    path = run.save_checkpoint({"step": 4, "model": {"w": w}}, config=Cfg(lr=0.5))
    ck = load_checkpoint(path)
    assert ck["step"] == 4 and torch.equal(ck["model"]["w"], w)
    assert ck["config"] == {"lr": 0.5, "steps": 5}
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["last.pt"]


def test_atomic_write_leaves_nothing_on_exception(tmp_path):
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]
    assert target.read_bytes() == b"old"
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        write_json(tmp_path / "s.json", {"x": float("nan")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


def test_sha256_file(tmp_path):
    p = tmp_path / "empty"
    p.write_bytes(b"")
    assert sha256_file(p) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_pick_device():
    import torch

    assert pick_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        pytest.skip("this check is for machines without CUDA")
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        pick_device("cuda")
