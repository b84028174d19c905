"""The `medkit` command line end to end on tmp folders (typer's CliRunner, in process)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from medkit.cli import app
from medkit.io import load_volume
from medkit.io.dicom_write import write_dicom_series

ENV = {"COLUMNS": "240", "MEDKIT_NO_PROGRESS": "1"}  # wide tables: UIDs are not wrapped


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


@pytest.fixture
def two_series(tmp_path):
    study = tmp_path / "study"
    aff = np.diag([-0.8, -0.8, 2.5, 1.0])
    write_dicom_series(np.full((6, 5, 3), -500.0), study / "a", affine=aff, series_description="AX 5mm",
                       uid_seed=1, series_number=1)
    write_dicom_series(np.full((6, 5, 4), 40.0), study / "b", affine=aff, series_description="AX 1mm",
                       uid_seed=2, series_number=2)
    return study


def test_help_lists_commands():
    r = _invoke("--help")
    assert r.exit_code == 0, r.output
    for cmd in ("info", "convert", "inspect", "run"):
        assert cmd in r.output


def test_info():
    r = _invoke("info")
    assert r.exit_code == 0, r.output
    import medkit

    assert f"medkit {medkit.__version__}" in r.output and "device (auto)" in r.output and "pydicom" in r.output


def test_inspect_dicom_file(make_series):
    folder, arr, _ = make_series("one")
    r = _invoke("inspect", folder / "IM0001.dcm")
    assert r.exit_code == 0, r.output
    assert "dicom" in r.output and f"({arr.shape[0]}, {arr.shape[1]}, 1)" in r.output and "CT" in r.output


def test_inspect_two_series_lists_them_with_whole_uids(two_series):
    """A folder of two studies lists its cases with their series UIDs whole (no '...' at any
    width, piped), and no SeriesDescription (free text, may hold names)."""
    from medkit.io import MultipleSeriesError

    with pytest.raises(MultipleSeriesError) as ei:
        load_volume(two_series)
    r = CliRunner().invoke(app, ["inspect", str(two_series)], env={"COLUMNS": "60", "MEDKIT_NO_PROGRESS": "1"})
    assert r.exit_code == 0, r.output
    assert "2 cases" in r.output and "AX 5mm" not in r.output and "..." not in r.output
    for uid, *_ in ei.value.series:
        assert uid in r.output


def test_inspect_wrong_series_uid_is_an_error(two_series):
    r = _invoke("inspect", two_series / "a", "--series-uid", "1.2.3.999")
    _one_error_line(r, str(two_series / "a"), "series UID 1.2.3.999 not found")


def test_convert_folder_to_nifti(make_series, tmp_path):
    folder, arr, aff = make_series("ct")
    out = tmp_path / "out" / "ct.nii.gz"
    r = _invoke("convert", folder, out)
    assert r.exit_code == 0, r.output
    vol = load_volume(out)
    np.testing.assert_allclose(np.asarray(vol.affine), aff, atol=1e-4)
    np.testing.assert_array_equal(vol[0].numpy(), arr.astype(np.float32))


def test_convert_two_series_to_folder(two_series, tmp_path):
    out = tmp_path / "nifti"
    r = _invoke("convert", two_series, out)
    assert r.exit_code == 0, r.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["a_0000.nii.gz", "b_0000.nii.gz", "cases.csv"]  # ids: the study folders' names
    assert sorted(load_volume(out / f).shape[-1] for f in files[:2]) == [3, 4]
    # The same again is refused (nothing replaced silently); --overwrite replaces.
    _one_error_line(_invoke("convert", two_series, out), "a_0000.nii.gz", "--overwrite")
    assert _invoke("convert", two_series, out, "--overwrite").exit_code == 0


def test_run_convert_pipeline(make_series, tmp_path):
    folder, _, aff = make_series("ct")
    spec = tmp_path / "convert.yaml"
    spec.write_text(yaml.safe_dump({"pipeline": "convert", "config": {"input": str(folder), "modality": "CT"}}))
    out = tmp_path / "run"
    r = _invoke("run", spec, "--out", out)
    assert r.exit_code == 0, r.output
    for name in ("manifest.json", "config.yaml", "summary.json"):
        assert (out / name).is_file(), name
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "completed" and folder.name in m["inputs"] and m["pipeline"]["name"] == "convert"
    assert yaml.safe_load((out / "config.yaml").read_text())["input"] == str(folder)
    s = json.loads((out / "summary.json").read_text())
    assert s["n_ok"] == 1 and s["n_error"] == 0
    written = sorted((out / "predictions").iterdir())
    assert [p.name for p in written] == ["cases.csv", "ct_0000.nii.gz"]
    np.testing.assert_allclose(np.asarray(load_volume(written[1]).affine), aff, atol=1e-4)
    # The same --out again is refused (exit 2), not overwritten.
    again = _invoke("run", spec, "--out", out)
    assert again.exit_code == 2 and "not empty" in again.stderr


def test_run_unknown_config_key(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump({"pipeline": "convert", "config": {"inptu": "x"}}))
    r = _invoke("run", spec, "--out", tmp_path / "run")
    assert r.exit_code == 2 and "inptu" in r.stderr
    assert not (tmp_path / "run").exists()


def _one_error_line(r, *words):
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in r.output


def test_convert_bad_input_exits_2_and_writes_nothing(make_series, tmp_path):
    folder, _, _ = make_series("gap", affine=np.diag([-0.8, -0.8, 2.5, 1.0]))
    (folder / "IM0003.dcm").unlink()
    out = tmp_path / "gap.nii.gz"
    _one_error_line(_invoke("convert", folder, out), str(folder), "missing slice")
    assert not out.exists() and not list(tmp_path.glob(".gap.nii.gz*"))

    missing = tmp_path / "absent"
    _one_error_line(_invoke("convert", missing, tmp_path / "o.nii.gz"), str(missing), "no such")
    assert not (tmp_path / "o.nii.gz").exists()


def test_convert_mr_as_ct_writes_nothing(make_series, tmp_path):
    folder, _, _ = make_series("mr", arr=np.full((4, 4, 3), 200.0), modality="MR", rescale_intercept=0.0)
    out = tmp_path / "folder_out"
    _one_error_line(_invoke("convert", folder, out, "--modality", "CT"), "modality is MR")
    assert not out.exists() or not any(out.iterdir())


def test_inspect_bad_file(tmp_path):
    p = tmp_path / "noise.dcm"
    p.write_bytes(b"\x42" * 300)
    _one_error_line(_invoke("inspect", p), str(p), "not a DICOM file")
