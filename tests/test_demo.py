"""`medkit demo` end to end: the main job a new user runs first."""

import json

from typer.testing import CliRunner

from medkit.cli import app


def test_demo_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDKIT_NO_PROGRESS", "1")
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["command"] == "medkit demo"
    steps = summary["steps"]
    for name in ("synth_liver_ct", "read_dicom_convert", "overlay", "synth_4dct", "synth_cxr", "synth_cases"):
        assert name in steps, f"demo step {name} missing"
        assert name in manifest["timings_s"]
    conv = steps["read_dicom_convert"]
    # The DICOM series medkit wrote reads back onto the ground-truth NIfTI grid.
    assert conv["affine_max_err_mm"] < 1e-4
    assert conv["hu_max_err"] <= 1.0
    assert (out / "predictions" / f"{conv['case_id']}_0000.nii.gz").exists()
    assert (out / "predictions" / f"{conv['case_id']}_truth_overlay.png").stat().st_size > 1000
    vols = steps["overlay"]["segment_volumes_ml"]
    assert len(vols) == 8 and all(v > 0 for v in vols.values())
    assert not list(out.rglob(".*.tmp-*")), "a temp file was left behind"


def test_demo_refuses_a_folder_that_is_not_a_demo_run(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.csv").write_text("precious\n")
    res = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert res.exit_code == 2
    assert "not a previous demo run" in res.output
    assert (out / "results.csv").read_text() == "precious\n"
