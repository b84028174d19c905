"""`medkit segment` end to end, bad inputs, and the resampling back to the input grid."""

import csv

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medkit.cli import app
from medkit.segmentation.predict import resample_to_grid

from .conftest import render_small


def _text(result) -> str:
    out = result.output
    try:
        out += result.stderr
    except (ValueError, AttributeError):
        pass
    return out


def test_resample_to_grid_identity_and_shift():
    vol = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(1, 4, 5, 6)
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    assert torch.allclose(resample_to_grid(vol, aff, aff, (4, 5, 6)), vol)
    # destination grid starts one source voxel (2 mm) further along x
    dst = aff.copy()
    dst[0, 3] = 2.0
    out = resample_to_grid(vol, aff, dst, (3, 5, 6))
    assert torch.allclose(out, vol[:, 1:])


def test_resample_argmax_matches_full_resample_then_argmax():
    """The chunked argmax path (bounded memory on big CTs) gives the same labels as
    resampling all class probabilities first, across chunk boundaries."""
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(9, 6, 7, 8, generator=g), 0)
    src = np.diag([3.0, 3.0, 4.0, 1.0])
    dst = np.diag([1.5, 1.5, 1.0, 1.0])
    dst[:3, 3] = [0.7, -0.4, 1.3]
    full = resample_to_grid(probs, src, dst, (12, 14, 30)).argmax(0)
    chunked = resample_to_grid(probs, src, dst, (12, 14, 30), chunk=7, argmax=True)
    assert chunked.dtype == torch.uint8
    assert torch.equal(chunked.long(), full)


def test_segment_dicom_series_end_to_end(tmp_path, tiny_model_dir):
    from medkit.io import load_volume
    from medkit.io.dicom_write import write_dicom_series

    case = render_small(3)
    # An LPS-style affine (as DICOM series come), so the output must undo the reorientation.
    write_dicom_series(case.image.astype(np.float64), tmp_path / "dcm", affine=case.affine)
    src = load_volume(tmp_path / "dcm")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["segment", "-i", str(tmp_path / "dcm"), "-o", str(out),
                                 "--model", str(tiny_model_dir), "--device", "cpu", "--fast"])
    assert r.exit_code == 0, _text(r)
    niis = list(out.glob("*.nii.gz"))
    assert len(niis) == 1
    img = nib.load(str(niis[0]))
    assert img.shape == tuple(src.shape[1:])
    assert np.allclose(img.affine, np.asarray(src.affine), atol=1e-4)
    assert set(np.unique(np.asarray(img.dataobj))) <= set(range(9))
    rows = list(csv.DictReader((out / "statistics.csv").open()))
    assert [r_["segment"] for r_ in rows] == ["I", "II", "III", "IV", "V", "VI", "VII", "VIII"]
    assert (out / "overlays" / f"{niis[0].name[:-7]}.png").stat().st_size > 1000


def test_single_slice_ct_small_is_refused(tmp_path, tiny_model_dir):
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    r = CliRunner().invoke(app, ["segment", "-i", path, "-o", str(tmp_path / "o"), "--model", str(tiny_model_dir)])
    assert r.exit_code == 2
    assert "CT_small.dcm" in _text(r) and "a single slice" in _text(r) and "needs a 3D volume" in _text(r)
    assert not (tmp_path / "o").exists()  # nothing written


def test_missing_model_is_a_clear_error(tmp_path):
    r = CliRunner().invoke(app, ["segment", "-i", str(tmp_path), "-o", str(tmp_path / "o"),
                                 "--model", str(tmp_path / "no-such-model")])
    assert r.exit_code == 2
    assert "no-such-model" in _text(r) and "model folder not found" in _text(r) and "--model" in _text(r)


def test_folder_without_model_files_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    r = CliRunner().invoke(app, ["segment", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "m")])
    assert r.exit_code == 2 and "not a model folder" in _text(r)


@pytest.mark.slow
def test_train_cli_on_generated_synthetic_set(tmp_path):
    """`medkit train segmentation` on a generated set, then --resume continues the count."""
    args = ["train", "segmentation", "pipelines/couinaud_synthetic.yaml", "--out", str(tmp_path / "run"),
            "--device", "cpu", "--set", f"data.root={tmp_path / 'data'}", "--set", "data.synth.n_cases=4",
            "--set", "data.synth.shape=[48,48,24]", "--set", "data.n_test=1", "--set", "data.n_val=1",
            "--set", "optim.steps=2", "--set", "optim.val_every=1", "--set", "augment.max_targets=1",
            "--set", "augment.registration.affine_iters=2", "--set", "augment.registration.deform_iters=2",
            "--set", "preprocess.grid_shape=[32,32,32]", "--set", "preprocess.patch=[16,16,16]",
            "--set", "preprocess.spacing_mm=[10.0,10.0,10.0]",
            "--set", "model.liverformer={channels: [4, 8], embed_dim: 8, depth: 1, heads: 2}"]
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    import os

    cwd = os.getcwd()
    os.chdir(root)
    try:
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, _text(r)
        r = CliRunner().invoke(app, args + ["--set", "optim.steps=3", "--resume"])
        assert r.exit_code == 0, _text(r)
    finally:
        os.chdir(cwd)
    import json

    summ = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summ["step"] == 3 and "test" in summ


# ----------------------------------------------------------------------------- bookkeeping


def _ct_files(folder, n):
    import torch
    from monai.data import MetaTensor

    from medkit.io import save_volume

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = render_small(i)
        save_volume(MetaTensor(torch.from_numpy(c.image[None].astype(np.float32)), affine=torch.as_tensor(c.affine)),
                    folder / f"patient{i + 1}.nii.gz")
    return sorted(folder.iterdir())


def _seg(*args):
    r = CliRunner().invoke(app, ["segment", *map(str, args), "--device", "cpu", "--fast"],
                           env={"MEDKIT_NO_PROGRESS": "1"})
    return r.exit_code, _text(r)


def test_three_patients_one_after_another_into_one_folder(tmp_path, tiny_model_dir):
    """Each run adds its case: labels, overlay, its rows in statistics.csv and cases.csv; a
    repeated case is refused unless --overwrite, which replaces that case only."""
    files = _ct_files(tmp_path / "in", 3)
    out = tmp_path / "out"
    for f in files:
        code, text = _seg("-i", f, "-o", out, "--model", tiny_model_dir)
        assert code == 0, text
    cases = list(csv.DictReader((out / "cases.csv").open()))
    assert [r["case_id"] for r in cases] == ["patient1", "patient2", "patient3"]
    assert [r["source"] for r in cases] == [str(f) for f in files]
    assert cases[1]["outputs"] == "patient2.nii.gz;overlays/patient2.png"
    stats = list(csv.DictReader((out / "statistics.csv").open()))
    assert [r["case_id"] for r in stats] == [f"patient{k}" for k in (1, 2, 3) for _ in range(8)]
    for k in (1, 2, 3):
        assert (out / f"patient{k}.nii.gz").exists() and (out / "overlays" / f"patient{k}.png").exists()
    import json

    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "completed" and list(m["inputs"]) == ["patient3"] and len(m["previous_runs"]) == 2
    assert m["model"]["sha256"] and m["device"] == "cpu"
    # The same patient again: refused, nothing touched.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    code, text = _seg("-i", files[1], "-o", out, "--model", tiny_model_dir)
    assert code == 2 and "patient2.nii.gz: exists" in text and "--overwrite" in text
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    # --overwrite replaces patient2's files and rows only.
    code, text = _seg("-i", files[1], "-o", out, "--model", tiny_model_dir, "--overwrite")
    assert code == 0, text
    for p, t in before.items():
        changed = p.stat().st_mtime_ns != t
        assert changed == (p.name in ("patient2.nii.gz", "patient2.png", "statistics.csv", "cases.csv",
                                      "manifest.json", "config.yaml")), p
    assert [r["case_id"] for r in csv.DictReader((out / "statistics.csv").open())].count("patient2") == 8


def test_folder_headers_are_checked_before_anything_is_written(tmp_path, tiny_model_dir):
    """Streaming: a bad third case (a 2D slice) stops the run before case 1 is written."""
    import nibabel as nib

    folder = tmp_path / "in"
    _ct_files(folder, 2)
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 1), np.int16), np.eye(4)), str(folder / "zz_slice.nii.gz"))
    code, text = _seg("-i", folder, "-o", tmp_path / "out", "--model", tiny_model_dir)
    assert code == 2 and "zz_slice.nii.gz" in text and "single slice" in text
    assert not (tmp_path / "out").exists()


def test_folder_cases_are_loaded_one_at_a_time(tmp_path, tiny_model_dir, monkeypatch):
    """Pixels of case k are loaded only after case k-1 is written (peak memory: one case)."""
    import medkit.io.header as header

    _ct_files(tmp_path / "in", 3)
    events = []
    real = header.load_case

    def spy(case, **kw):
        events.append(("load", case.case_id, sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz"))))
        return real(case, **kw)

    monkeypatch.setattr(header, "load_case", spy)
    code, text = _seg("-i", tmp_path / "in", "-o", tmp_path / "out", "--model", tiny_model_dir)
    assert code == 0, text
    assert events == [("load", "patient1", []), ("load", "patient2", ["patient1.nii.gz"]),
                      ("load", "patient3", ["patient1.nii.gz", "patient2.nii.gz"])]


def test_progress_lines_when_not_on_a_terminal(tmp_path, tiny_model_dir, monkeypatch):
    """A log (no TTY) gets plain progress lines for the sliding-window passes."""
    monkeypatch.setenv("MEDKIT_PROGRESS_EVERY_S", "0")
    monkeypatch.delenv("MEDKIT_NO_PROGRESS", raising=False)
    f = _ct_files(tmp_path / "in", 1)[0]
    r = CliRunner().invoke(app, ["segment", "-i", str(f), "-o", str(tmp_path / "o"), "--model", str(tiny_model_dir),
                                 "--device", "cpu"])
    assert r.exit_code == 0, _text(r)
    assert "patient1: find the liver: 1/" in _text(r) and "patient1: segments:" in _text(r)
    assert "Warning" not in _text(r)  # third-party warnings are hidden without --verbose


def _nii(path, arr, aff):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, aff), str(path))


def test_segment_a_task03_liver_folder(tmp_path, tiny_model_dir):
    """A Decathlon Task03_Liver folder as released (imagesTr/liver_N.nii.gz, no _0000): every image
    of imagesTr and imagesTs is a case named as the dataset names it."""
    task = tmp_path / "Task03_Liver"
    for k, (sub, n) in enumerate((("imagesTr", 0), ("imagesTr", 1), ("imagesTs", 132))):
        c = render_small(k)
        _nii(task / sub / f"liver_{n}.nii.gz", c.image.astype(np.int16), c.affine)
        if sub == "imagesTr":
            _nii(task / "labelsTr" / f"liver_{n}.nii.gz", c.labels.astype(np.uint8), c.affine)
    code, text = _seg("-i", task, "-o", tmp_path / "out", "--model", tiny_model_dir)
    assert code == 0, text
    rows = list(csv.DictReader((tmp_path / "out" / "cases.csv").open()))
    assert [r["case_id"] for r in rows] == ["liver_0", "liver_1", "liver_132"]
    assert rows[2]["source"] == str(task / "imagesTs" / "liver_132.nii.gz")


@pytest.mark.slow
def test_segment_the_genuine_task08_listing(realformat, tmp_path, tiny_model_dir):
    """`medkit segment -i Task08_HepaticVessel` over the genuine dataset.json (303 training + 139 test
    images, small stand-in volumes at the listed paths): 442 cases, named hepaticvessel_XXX."""
    import json
    import shutil

    task = tmp_path / "Task08_HepaticVessel"
    task.mkdir()
    shutil.copyfile(realformat / "msd" / "Task08_HepaticVessel_dataset.json", task / "dataset.json")
    meta = json.loads((task / "dataset.json").read_text())
    vol = render_small(0)
    img = vol.image[::4, ::4, ::2].astype(np.int16)  # 12 x 12 x 12: at least 8 slices
    aff = vol.affine @ np.diag([4, 4, 2, 1])
    for rel in [e["image"] for e in meta["training"]] + meta["test"]:
        _nii(task / rel, img, aff)
    code, text = _seg("-i", task, "-o", tmp_path / "out", "--model", tiny_model_dir)
    assert code == 0, text[-2000:]
    ids = [r["case_id"] for r in csv.DictReader((tmp_path / "out" / "cases.csv").open())]
    assert len(ids) == 442 and ids[0] == "hepaticvessel_001" and "hepaticvessel_003" in ids
