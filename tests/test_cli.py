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


def test_info_lists_shipped_models_with_full_paths():
    from medkit.assets import shipped_models

    r = CliRunner().invoke(app, ["info"], env={"COLUMNS": "60"})
    assert r.exit_code == 0, r.output
    models = shipped_models()
    assert models and all(m.name in r.output and str(m) in r.output for m in models)  # no "..." at 60 columns


def test_inspect_reads_a_header_without_torch(tmp_path):
    """`medkit inspect` answers without importing torch or MONAI (seconds, not the 6-7 s torch costs)."""
    import subprocess
    import sys

    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((8, 8, 8), -200, np.int16), np.eye(4)), str(tmp_path / "ct.nii.gz"))
    code = ("import sys; sys.argv = ['medkit', 'inspect', sys.argv[1]]\n"
            "from medkit.cli import app\n"
            "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = [m for m in ('torch', 'monai', 'transformers') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ct.nii.gz")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout and "shape (X, Y, Z)      (8, 8, 8)" in r.stdout


def test_inspect_4d_nifti_and_dicom_seg(tmp_path, make_series):
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((6, 5, 4, 3), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_zooms((2.0, 2.0, 3.0, 0.5))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(tmp_path / "4d.nii.gz"))
    r = _invoke("inspect", tmp_path / "4d.nii.gz")
    assert r.exit_code == 0, r.output
    assert "(6, 5, 4, 3)" in r.output and "3: 0, 0.5, 1 (sec)" in r.output

    from medkit.segmentation import COUINAUD_NAMES
    from medkit.segmentation.dicom_seg import write_dicom_seg

    folder, arr, aff = make_series("ct", arr=np.full((12, 10, 6), 40.0))
    vol = load_volume(folder)
    labels = np.zeros(arr.shape, np.uint8)
    labels[2:6, 2:6, 1:4] = 3
    seg = write_dicom_seg(labels, np.asarray(vol.affine), folder, tmp_path / "x.seg.dcm", COUINAUD_NAMES)
    r = _invoke("inspect", seg)
    assert r.exit_code == 0, r.output
    assert "DICOM Segmentation" in r.output and "Couinaud III" in r.output and vol.meta["series_uid"] in r.output


def test_convert_formats_are_explicit_and_ct_is_int16(make_series, tmp_path):
    import nibabel as nib

    folder, arr, aff = make_series("ct")
    assert _invoke("convert", folder, tmp_path / "ct.nii.gz").exit_code == 0
    assert nib.load(str(tmp_path / "ct.nii.gz")).get_data_dtype() == np.int16  # whole HU: int16, lossless
    np.testing.assert_array_equal(load_volume(tmp_path / "ct.nii.gz")[0].numpy(), arr.astype(np.float32))
    assert _invoke("convert", folder, tmp_path / "ct.nrrd").exit_code == 0
    nrrd = load_volume(tmp_path / "ct.nrrd")
    np.testing.assert_allclose(np.asarray(nrrd.affine), aff, atol=1e-4)
    np.testing.assert_array_equal(nrrd[0].numpy(), arr.astype(np.float32))
    _one_error_line(_invoke("convert", folder, tmp_path / "ct.nrd"), "ct.nrd", "unknown output format")
    assert not (tmp_path / "ct.nrd").exists()
    _one_error_line(_invoke("convert", folder, tmp_path / "ct.nii.gz"), "ct.nii.gz", "exists", "--overwrite")
    assert _invoke("convert", folder, tmp_path / "ct.nii.gz", "--overwrite").exit_code == 0


def test_synth_refuses_a_used_folder_and_n_0(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.txt").write_text("x")
    _one_error_line(_invoke("synth", "cases", "-o", tmp_path / "data", "--n", "3"), "data", "not empty", "--overwrite")
    assert (tmp_path / "data" / "mine.txt").read_text() == "x"
    _one_error_line(_invoke("synth", "cases", "-o", tmp_path / "new", "--n", "0"), "--n 0")
    assert _invoke("synth", "cases", "-o", tmp_path / "data", "--n", "3", "--overwrite").exit_code == 0


def test_python_m_medkit_from_another_folder(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "medkit", "run", "convert", "--dry-run"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "pipeline convert" in r.stdout
