"""`medkit deform` end to end on a tiny 3-phase sequence, and refusing bad input."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medkit.cli import app

SET = ["--set", "iters=6", "--set", "ref_iters=4", "--set", "points_per_phase=128", "--set", "reg_points=32",
       "--set", "width=16", "--set", "depth=1", "--set", "fourier_features=8", "--set", "checkpoint_every=3",
       "--set", "ref_points=256"]


def test_deform_end_to_end(tiny_sequence, tmp_path, monkeypatch):
    import nibabel as nib

    monkeypatch.setenv("MEDKIT_NO_PROGRESS", "1")
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["deform", "-i", str(tiny_sequence), "-o", str(out), "--reference", "0",
                                 "--predict-at", "1,1.5", "--labels", str(tiny_sequence / "labels_ref.nii.gz"),
                                 "--device", "cpu", *SET])
    assert r.exit_code == 0, r.output
    ref = nib.load(tiny_sequence / "phase_00.nii.gz")
    for tag in ("t1", "t1p5"):
        for kind in ("ddf", "warped", "labels", "jacdet"):
            img = nib.load(out / "predictions" / f"{kind}_{tag}.nii.gz")
            assert np.allclose(img.affine, ref.affine) and img.shape[:3] == ref.shape
        assert nib.load(out / "predictions" / f"ddf_{tag}.nii.gz").shape == (*ref.shape, 3)
        assert (out / "predictions" / f"field_{tag}.png").stat().st_size > 0
    for f in ("loss.png", "summary.json", "manifest.json", "config.yaml", "checkpoints/last.pt"):
        assert (out / f).exists(), f
    # --resume on a finished run reloads the checkpoint and rewrites the outputs
    r2 = CliRunner().invoke(app, ["deform", "-i", str(tiny_sequence), "-o", str(out), "--resume", "--device", "cpu", *SET])
    assert r2.exit_code == 0, r2.output
    assert "resumed" in r2.output


def test_refuses_single_3d_volume(tiny_sequence, tmp_path):
    one = tiny_sequence / "phase_00.nii.gz"
    r = CliRunner().invoke(app, ["deform", "-i", str(one), "-o", str(tmp_path / "o"), "--device", "cpu"])
    assert r.exit_code == 2
    assert f"{one}: one 3D volume: ST-NeRP needs a sequence of at least 2 time points" in r.output


def test_unknown_config_key_is_an_error(tiny_sequence, tmp_path):
    r = CliRunner().invoke(app, ["deform", "-i", str(tiny_sequence), "-o", str(tmp_path / "o"), "--set", "itres=3"])
    assert r.exit_code == 2 and "itres" in r.output


def test_config_spec_feeds_deform_overrides(tmp_path):
    """`medkit deform --config pipelines/deform_*.yaml` turns the spec's `model:` block into typed
    overrides of the fit."""
    from medkit.cli import _spec_overrides
    from medkit.config import ConfigError, load_config
    from medkit.deformation.deform_config import DeformConfig

    ROOT = Path(__file__).resolve().parents[2]
    for spec in sorted((ROOT / "pipelines").glob("deform_*.yaml")):
        cfg = load_config(None, DeformConfig, _spec_overrides(spec, "deform", "model"))  # unknown keys would raise
        assert isinstance(cfg.iters, int)
    bad = tmp_path / "x.yaml"
    bad.write_text("pipeline: convert\nconfig: {}\n")
    with pytest.raises(ConfigError, match="expected deform"):
        _spec_overrides(bad, "deform")


def test_cases_csv_and_overwrite_only_the_same_case(tiny_sequence, tmp_path, monkeypatch):
    """A deform run folder lists its case in cases.csv; running again is refused, --overwrite replaces
    a run of the same case, and never a folder holding another case's run."""
    import csv
    import shutil

    monkeypatch.setenv("MEDKIT_NO_PROGRESS", "1")
    out = tmp_path / "run"
    args = ["deform", "-i", str(tiny_sequence), "-o", str(out), "--device", "cpu", *SET]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    (row,) = list(csv.DictReader((out / "cases.csv").open()))
    assert row["case_id"] == tiny_sequence.name and row["source"] == str(tiny_sequence)
    assert "predictions/ddf_t0.nii.gz" in row["outputs"].split(";")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "not empty" in again.output and "--overwrite" in again.output
    first = (out / "summary.json").stat().st_mtime_ns
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert (out / "summary.json").stat().st_mtime_ns != first
    other = tmp_path / "other-patient"
    shutil.copytree(tiny_sequence, other)
    r = CliRunner().invoke(app, ["deform", "-i", str(other), "-o", str(out), "--device", "cpu", "--overwrite", *SET])
    assert r.exit_code == 2 and f"holds the deform run of case '{tiny_sequence.name}'" in r.output
    assert (out / "summary.json").exists()
