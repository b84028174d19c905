"""Every failure of issue 16 ("tracebacks instead of one-line errors", wrong series UIDs, misleading
diagnoses) through the command line: exit code 2, one error line on stderr (the last; progress lines
may precede it) that starts with ``error:``, names the file and says the problem, no traceback, and
no output or run folder left behind.

``python tests/reliability/test_failures.py`` prints the same cases as a table (for the closing note).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
AXIAL = np.diag([-0.8, -0.8, 2.5, 1.0])


def _nii(path: Path, arr, aff=None, zooms=None) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(arr), np.eye(4) if aff is None else aff)
    if zooms is not None:
        img.header.set_zooms(zooms)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _seq(shape=(12, 10, 8, 3)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(0, 50, shape) - 500).astype(np.float32)


def _readonly_location(tmp: Path) -> Path:
    """A folder no one can write in: a chmod-ed folder, or (as root, who ignores permissions) /sys."""
    if os.geteuid() == 0:
        return Path("/sys/medkit-read-only-test/out")
    ro = tmp / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "out"


def _unreadable(path: Path) -> None:
    """A file that cannot be read: chmod 000, or (as root) a link to /proc/self/mem (EIO at offset 0)."""
    if os.geteuid() == 0:
        path.symlink_to("/proc/self/mem")
    else:
        path.write_bytes(b"x" * 200)
        path.chmod(0)


# Each case: (issue wording, setup(tmp, model) -> (argv, words the error line must hold, paths that must not exist)).
def _ro_segment(t, m):
    return ["segment", "-i", str(t / "ct.nii.gz"), "-o", str(_readonly_location(t)), "--model", str(m),
            "--device", "cpu"], ["cannot", "output folder"], []


def _ro_convert(t, m):
    out = _readonly_location(t)
    return ["convert", str(t / "ct.nii.gz"), str(out)], [str(out)], []


def _ro_report(t, m):
    return ["report", "-i", str(t / "chest.png"), "-o", str(_readonly_location(t)), "--device", "cpu"], \
        ["cannot", "output folder"], []


def _ro_deform(t, m):
    return ["deform", "-i", str(t / "seq.nii.gz"), "-o", str(_readonly_location(t)), "--device", "cpu"], \
        ["cannot", "run folder"], []


def _ro_synth(t, m):
    return ["synth", "cases", "-o", str(_readonly_location(t)), "--n", "2"], ["cannot", "output folder"], []


def _ro_run(t, m):
    return ["run", "convert", "--set", f"input={t / 'ct.nii.gz'}", "--out", str(_readonly_location(t))], \
        ["cannot"], []


def _cuda(cmd):
    def setup(t, m):
        base = {"segment": ["segment", "-i", str(t / "ct.nii.gz"), "-o", str(t / "o"), "--model", str(m)],
                "report": ["report", "-i", str(t / "chest.png"), "-o", str(t / "o")],
                "deform": ["deform", "-i", str(t / "seq.nii.gz"), "-o", str(t / "o")],
                "run": ["run", "deform_synthetic", "--out", str(t / "o"), "--set", f"input={t / 'seq.nii.gz'}"]}[cmd]
        return base + ["--device", "cuda"], ["--device cuda", "CUDA is not available"], [t / "o"]
    return setup


def _synth_n0(t, m):
    return ["synth", "liver-ct", "-o", str(t / "o"), "--n", "0"], ["--n 0", "at least 1"], [t / "o"]


def _deform_truncated(t, m):
    full = _nii(t / "full.nii.gz", _seq()).read_bytes()
    bad = t / "cut.nii.gz"
    bad.write_bytes(full[: len(full) // 2])
    return ["deform", "-i", str(bad), "-o", str(t / "o"), "--device", "cpu"], [str(bad), "truncated"], [t / "o"]


def _deform_random_bytes(t, m):
    bad = t / "noise.nii.gz"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    return ["deform", "-i", str(bad), "-o", str(t / "o"), "--device", "cpu"], [str(bad), "unreadable NIfTI"], [t / "o"]


def _deform_singular(t, m):
    import nibabel as nib

    img = nib.Nifti1Image(_seq(), None)
    img.header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # sform only: nibabel cannot build a qform
    bad = t / "flat.nii.gz"
    nib.save(img, str(bad))
    return ["deform", "-i", str(bad), "-o", str(t / "o"), "--device", "cpu"], [str(bad), "singular"], [t / "o"]


def _deform_nan(t, m):
    arr = _seq()
    arr[2, 3, 4, 1] = np.nan
    arr[0, 0, 0, 2] = np.inf
    bad = _nii(t / "nan.nii.gz", arr)
    return ["deform", "-i", str(bad), "-o", str(t / "o"), "--device", "cpu"], [str(bad), "2 voxel(s) are NaN"], \
        [t / "o"]


def _deform_thin(t, m):
    bad = _nii(t / "thin.nii.gz", _seq((12, 10, 2, 3)))
    return ["deform", "-i", str(bad), "-o", str(t / "o"), "--device", "cpu"], [str(bad), "only 2 voxel(s)"], \
        [t / "o"]


def _report_nan(t, m):
    arr = np.random.default_rng(0).uniform(0, 1, (64, 64)).astype(np.float32)
    arr[10, 10] = np.nan
    bad = _nii(t / "cxr-nan.nii.gz", arr)
    return ["report", "-i", str(bad), "-o", str(t / "o"), "--device", "cpu"], [str(bad), "NaN"], [t / "o"]


def _two_series(t):
    from medkit.io.dicom_write import write_dicom_series

    arr = np.full((10, 10, 9), -500.0)
    write_dicom_series(arr, t / "study" / "a", affine=AXIAL, uid_seed=1, series_number=1, study_uid="1.2.3.44")
    write_dicom_series(arr, t / "study" / "b", affine=AXIAL, uid_seed=2, series_number=2, study_uid="1.2.3.44")
    return t / "study"


def _inspect_wrong_uid(t, m):
    s = _two_series(t)
    return ["inspect", str(s), "--series-uid", "1.2.3.999"], [str(s), "series UID 1.2.3.999 not found"], []


def _segment_wrong_uid(t, m):
    s = _two_series(t)
    return ["segment", "-i", str(s), "-o", str(t / "o"), "--model", str(m), "--series-uid", "1.2.3.999",
            "--device", "cpu"], [str(s), "series UID 1.2.3.999 not found"], [t / "o"]


def _mr_brain(t, m):
    import nibabel.testing

    mr = Path(nibabel.testing.data_path) / "anatomical.nii"  # a T1 brain (values -610 .. 30393)
    return ["segment", "-i", str(mr), "-o", str(t / "o"), "--model", str(m), "--device", "cpu"], \
        [str(mr), "not CT in Hounsfield units"], [t / "o"]


def _interleaved(t, m):
    import pydicom

    from medkit.io.dicom_write import write_dicom_series

    files = write_dicom_series(np.full((10, 10, 12), 40.0), t / "inter", affine=AXIAL, uid_seed=3)
    for k, f in enumerate(files):  # two stacks 2.5 mm apart, the second shifted by 1 mm
        if k % 2:
            ds = pydicom.dcmread(f)
            ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + \
                                      [float(ds.ImagePositionPatient[2]) + 1.0]
            ds.save_as(f)
    return ["convert", str(t / "inter"), str(t / "o.nii.gz")], \
        [str(t / "inter"), "non-uniform slice spacing", "interleaved"], [t / "o.nii.gz"]


def _unreadable_slice(t, m):
    from medkit.io.dicom_write import write_dicom_series

    write_dicom_series(np.full((10, 10, 9), 40.0), t / "ct", affine=AXIAL, uid_seed=4)
    _unreadable(t / "ct" / "IM0099.dcm")
    return ["convert", str(t / "ct"), str(t / "o.nii.gz")], [str(t / "ct" / "IM0099.dcm"), "cannot read the file"], \
        [t / "o.nii.gz"]


def _ct_with_mr_slice(t, m):
    from medkit.io.dicom_write import write_dicom_series

    write_dicom_series(np.full((10, 10, 9), -500.0), t / "ct", affine=AXIAL, uid_seed=5, study_uid="1.2.3.55")
    mr = write_dicom_series(np.full((10, 10, 1), 300.0), t / "tmp-mr", affine=AXIAL, uid_seed=6, modality="MR",
                            series_number=9, study_uid="1.2.3.55", rescale_intercept=0.0)[0]
    mr.rename(t / "ct" / "stray.dcm")
    return ["segment", "-i", str(t / "ct"), "-o", str(t / "o"), "--model", str(m), "--device", "cpu"], \
        [str(t / "ct" / "stray.dcm"), "MR series", "not CT"], [t / "o"]


CASES = {
    "read-only output: segment": _ro_segment,
    "read-only output: convert": _ro_convert,
    "read-only output: report": _ro_report,
    "read-only output: deform": _ro_deform,
    "read-only output: synth": _ro_synth,
    "read-only output: run": _ro_run,
    "--device cuda without CUDA: segment": _cuda("segment"),
    "--device cuda without CUDA: report": _cuda("report"),
    "--device cuda without CUDA: deform": _cuda("deform"),
    "--device cuda without CUDA: run": _cuda("run"),
    "synth --n 0": _synth_n0,
    "deform: truncated 4D NIfTI": _deform_truncated,
    "deform: random bytes named .nii.gz": _deform_random_bytes,
    "deform: 4D NIfTI with a singular affine": _deform_singular,
    "deform: 4D NIfTI with NaN/inf voxels": _deform_nan,
    "deform: 2-voxel-thick 4D series": _deform_thin,
    "report: NaN radiograph": _report_nan,
    "inspect: wrong --series-uid": _inspect_wrong_uid,
    "segment: wrong --series-uid": _segment_wrong_uid,
    "segment: MR brain volume (NIfTI)": _mr_brain,
    "convert: interleaved slices": _interleaved,
    "convert: unreadable slice": _unreadable_slice,
    "segment: CT folder with one MR slice": _ct_with_mr_slice,
}


def _fixtures(t: Path) -> None:
    from PIL import Image

    _nii(t / "ct.nii.gz", (np.random.default_rng(1).integers(-1000, 400, (16, 16, 12))).astype(np.int16))
    _nii(t / "seq.nii.gz", _seq(), zooms=(4.0, 4.0, 4.0, 0.5))
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64), dtype=np.uint8)).save(t / "chest.png")


def run_case(name: str, tmp: Path, model: Path) -> tuple[int, str, list[str], list[Path]]:
    """``(exit code, stderr, words, paths that must not exist)`` of one case, run in process."""
    from typer.testing import CliRunner

    from medkit.cli import app

    _fixtures(tmp)
    argv, words, absent = CASES[name](tmp, model)
    r = CliRunner().invoke(app, argv, env={"MEDKIT_NO_PROGRESS": "1", "COLUMNS": "200", "CUDA_VISIBLE_DEVICES": ""})
    return r.exit_code, r.stderr, words, absent


@pytest.mark.parametrize("name", list(CASES))
def test_failure_is_one_line_exit_2(name, tmp_path, tiny_model_dir):
    import torch

    if "cuda" in name and torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    code, err, words, absent = run_case(name, tmp_path, tiny_model_dir)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"exit {code}: {err}"
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for w in words:
        assert w in errors[0], (w, errors[0])
    assert "Traceback" not in err
    for p in absent:
        assert not p.exists(), f"{p} was left behind"


if __name__ == "__main__":  # the table for the closing note
    import tempfile

    sys.path.insert(0, str(HERE.parents[1]))
    from medkit.runs import save_model_folder
    from medkit.segmentation.models import build_model
    from tests.reliability.conftest import tiny_train_cfg

    with tempfile.TemporaryDirectory() as d:
        model = Path(d) / "model"
        save_model_folder(model, config=tiny_train_cfg(), weights=build_model(tiny_train_cfg().model).state_dict(),
                          component="segmentation")
        print("| failure | exit | the one line on stderr |\n|---|---|---|")
        for k, name in enumerate(CASES):
            t = Path(d) / f"case{k}"
            t.mkdir()
            code, err, _, _ = run_case(name, t, model)
            err = [ln for ln in err.splitlines() if ln.startswith("error:")][-1]
            line = " ".join(err.split()).replace(str(t), "…").replace("|", "\\|")
            print(f"| {name} | {code} | `{line}` |")
