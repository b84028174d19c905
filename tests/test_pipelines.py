"""`medkit run`: every shipped spec resolves (--dry-run), specs by name from any folder, and a
seconds-long `medkit train segmentation` end to end (docs/contract.md, section 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medkit.cli import app
from medkit.pipelines import PIPELINES

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "pipelines").glob("*.yaml"))
ENV = {"MEDKIT_NO_PROGRESS": "1"}
runner = CliRunner()


def test_every_spec_names_a_registered_pipeline():
    assert len(SPECS) >= 15
    for spec in SPECS:
        assert yaml.safe_load(spec.read_text())["pipeline"] in PIPELINES, spec.name


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_dry_run_resolves_every_spec(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # from any folder, by name
    r = runner.invoke(app, ["run", spec.stem, "--dry-run"], env=ENV)
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"# {spec}: pipeline ") and "nothing was run" in r.output
    resolved = yaml.safe_load(r.output)
    assert isinstance(resolved, dict) and resolved  # the whole config, defaults filled in
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_dry_run_applies_overrides_and_refuses_unknown_keys():
    r = runner.invoke(app, ["run", "couinaud_synthetic", "--dry-run", "--set", "optim.steps=7"], env=ENV)
    assert r.exit_code == 0 and yaml.safe_load(r.output)["optim"]["steps"] == 7
    r = runner.invoke(app, ["run", "couinaud_synthetic", "--dry-run", "--set", "optim.stepz=7"], env=ENV)
    assert r.exit_code == 2 and "optim.stepz" in r.output


def test_unknown_spec_name_lists_the_shipped_ones(tmp_path):
    r = runner.invoke(app, ["run", "no_such_pipeline"], env=ENV)
    assert r.exit_code == 2 and "no such pipeline spec" in r.output and "couinaud_synthetic" in r.output


def test_train_command_refuses_a_spec_of_another_pipeline():
    r = runner.invoke(app, ["train", "segmentation", "report_synthetic", "--dry-run"], env=ENV)
    assert r.exit_code != 0
    r = runner.invoke(app, ["train", "segmentation", "report_synthetic"], env=ENV)
    assert r.exit_code == 2 and "not 'train-segmentation'" in r.output


def test_train_segmentation_end_to_end_in_seconds(tmp_path):
    """The real command on freshly generated phantoms: 3 steps of a tiny LiverFormer, a run
    folder with config, manifest, checkpoints, curve and a held-out test summary; the model
    exports to a model folder that `medkit segment` loads."""
    data, out = tmp_path / "data", tmp_path / "run"
    tiny = ["data.synth.n_cases=4", "data.n_val=1", "data.n_test=1", f"data.root={data}",
            "preprocess.spacing_mm=[10.0,10.0,10.0]", "preprocess.grid_shape=[32,24,24]",
            "preprocess.patch=[16,16,16]", "augment.kind=none", "model.liverformer.channels=[4,8,16]",
            "model.liverformer.embed_dim=16", "model.liverformer.depth=1", "model.liverformer.heads=2",
            "optim.steps=3", "optim.val_every=3", "optim.batch_size=1"]
    args = ["train", "segmentation", "couinaud_synthetic", "--out", str(out), "--device", "cpu"]
    for s in tiny:
        args += ["--set", s]
    r = runner.invoke(app, args, env=ENV)
    assert r.exit_code == 0, r.output
    for f in ("config.yaml", "manifest.json", "summary.json", "checkpoints/best.pt", "checkpoints/last.pt",
              "logs/metrics.jsonl", "logs/curve.png"):
        assert (out / f).is_file(), f
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "completed" and man["pipeline"]["name"] == "train-segmentation"
    summ = json.loads((out / "summary.json").read_text())
    assert summ["step"] == 3 and len(summ["split"]["test"]) == 1
    assert 0.0 <= summ["test"]["aggregate"]["dice_mean"]["mean"] <= 1.0
    # a second run into the same folder is refused unless --resume
    r = runner.invoke(app, args, env=ENV)
    assert r.exit_code == 2 and "--resume" in r.output
    r = runner.invoke(app, ["model", "export", str(out), str(tmp_path / "m"), "--component", "segmentation"], env=ENV)
    assert r.exit_code == 0, r.output
    from medkit.segmentation.predict import load_model

    net, cfg = load_model(tmp_path / "m")
    assert cfg.model.liverformer.channels == (4, 8, 16)


def test_python_dash_m_medkit_runs_a_spec_by_name_from_elsewhere(tmp_path):
    r = subprocess.run([sys.executable, "-m", "medkit", "run", "convert", "--dry-run"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env={**__import__("os").environ, **ENV})
    assert r.returncode == 0, r.stderr
    assert "pipeline convert" in r.stdout
