"""`medkit report` (shipped models/cofe-synthetic) on DICOM and NIfTI radiographs, and on bad inputs.

Images are written to tmp_path: DICOM with pydicom (DX MONOCHROME2, CR MONOCHROME1, a
suffix-less UID-named file, a multi-frame CT), NIfTI with nibabel (2D, 3D of depth 1,
3D of 5 slices). Bad inputs must exit 2 with one line naming the file and the problem,
and leave no reports.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medkit.cli import app
from medkit.report_generation.data import load_image

ENV = {"MEDKIT_NO_PROGRESS": "1"}
DX_SOP = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CR_SOP = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
ENHANCED_CT_SOP = "1.2.840.10008.5.1.4.1.1.2.1"


def _chest(size: int = 64, seed: int = 0) -> np.ndarray:
    """A 12-bit 'radiograph' that is not symmetric under inversion: dark lungs, bright spine and ribs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size
    img = 600 + 2500 * np.exp(-((x - 0.5) / 0.08) ** 2)  # mediastinum / spine
    img += 1200 * ((np.sin(y * 40) > 0.7) & (np.abs(x - 0.5) > 0.1))  # ribs
    img += 300 * (y > 0.85)  # diaphragm
    return np.clip(img + rng.normal(0, 20, img.shape), 0, 4095).astype(np.uint16)


def write_dicom(path: Path, pixels: np.ndarray, *, modality: str = "DX", photometric: str = "MONOCHROME2",
                sop_class: str = DX_SOP, description: str = "CHEST PA", uid: str | None = None) -> str:
    """One uncompressed DICOM file; ``pixels`` ``(rows, cols)`` or ``(frames, rows, cols)`` uint16.
    Returns the SOPInstanceUID."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    uid = uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.SeriesDescription = modality, description
    ds.PatientName, ds.PatientID = "ZZTEST^PATIENT", "MRN0001"  # file names below must not leak into ids
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return uid


def write_nifti(path: Path, arr: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(arr.astype(np.float32), np.eye(4)), str(path))
    return path


def _report(inp: Path, out: Path):
    return CliRunner().invoke(app, ["report", "-i", str(inp), "-o", str(out), "--device", "cpu",
                                    "--max-new-tokens", "8"], env=ENV)


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "reports.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- DICOM


def test_monochrome1_is_inverted(tmp_path):
    """A CR stored MONOCHROME1 (white = 0) with the inverted pixels of a MONOCHROME2 DX reads
    as the same image; read without inversion it would be the negative (1 - image)."""
    px = _chest()
    write_dicom(tmp_path / "m2.dcm", px)
    write_dicom(tmp_path / "m1.dcm", (4095 - px).astype(np.uint16), modality="CR", photometric="MONOCHROME1",
                sop_class=CR_SOP)
    m2, m1 = load_image(tmp_path / "m2.dcm", 64), load_image(tmp_path / "m1.dcm", 64)
    assert m2.shape == (1, 64, 64) and float(m2.min()) == 0.0 and float(m2.max()) == 1.0
    assert torch.allclose(m1, m2, atol=1e-5)
    assert not torch.allclose(m2, 1 - m2, atol=0.1)  # the test image is not its own negative
    # the spine (middle columns) is bright, the lungs dark, in both
    assert m1[0, :, 30:34].mean() > m1[0, :, 5:15].mean() + 0.3


def test_report_on_a_dicom_folder(tmp_path):
    """Case ids are the file names given (a UID-named file keeps its whole UID), never header text."""
    src = tmp_path / "in"
    src.mkdir()
    px = _chest()
    write_dicom(src / "pa.dcm", px)
    write_dicom(src / "cr.dcm", (4095 - px).astype(np.uint16), modality="CR", photometric="MONOCHROME1",
                sop_class=CR_SOP, description="")
    write_dicom(src / "1.2.826.0.1.3680043.8.498.1", _chest(seed=1))  # UID-named, no suffix
    (src / "notes.txt").write_text("not an image")  # skipped
    r = _report(src, tmp_path / "out")
    assert r.exit_code == 0, r.output
    rows = _rows(tmp_path / "out")
    assert [r["case_id"] for r in rows] == ["1.2.826.0.1.3680043.8.498.1", "cr", "pa"]
    assert not any("CHEST" in r["case_id"] for r in rows)  # SeriesDescription never names a case
    assert all(isinstance(r["report"], str) and r["report"] and isinstance(r["findings"], dict) for r in rows)
    by_id = {r["case_id"]: r["report"] for r in rows}
    # MONOCHROME1 inverted: the CR is the same picture as the DX, so the same (greedy) report
    assert by_id["cr"] == by_id["pa"]
    listed = (tmp_path / "out" / "cases.csv").read_text()
    assert str(src / "pa.dcm") in listed and (tmp_path / "out" / "manifest.json").exists()


# ----------------------------------------------------------------------------- NIfTI


def test_report_on_nifti_2d_and_depth_one(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    arr = _chest().astype(np.float32).T  # NIfTI (x, y)
    write_nifti(src / "case_a.nii.gz", arr)
    write_nifti(src / "case_b.nii", arr[:, :, None])  # 3D, depth 1
    a, b = load_image(src / "case_a.nii.gz", 64), load_image(src / "case_b.nii", 64)
    assert a.shape == (1, 64, 64) and torch.equal(a, b)
    r = _report(src, tmp_path / "out")
    assert r.exit_code == 0, r.output
    rows = _rows(tmp_path / "out")
    assert [x["case_id"] for x in rows] == ["case_a", "case_b"]
    assert rows[0]["report"] == rows[1]["report"]
    r = _report(src / "case_b.nii", tmp_path / "one")  # a single file as input
    assert r.exit_code == 0, r.output
    assert [x["case_id"] for x in _rows(tmp_path / "one")] == ["case_b"]


# ----------------------------------------------------------------------------- bad inputs


def _truncated(d: Path) -> tuple[Path, str]:
    write_dicom(d / "good.dcm", _chest())
    write_dicom(d / "cut.dcm", _chest(seed=2))
    data = (d / "cut.dcm").read_bytes()
    (d / "cut.dcm").write_bytes(data[: len(data) - 3000])  # cut inside the pixel data
    return d / "cut.dcm", "pixel data is 5192 bytes"  # 64 x 64 x 2 bytes = 8192 needed


def _garbage(d: Path) -> tuple[Path, str]:
    write_dicom(d / "good.dcm", _chest())
    (d / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    return d / "junk.dcm", "without pixel data"


def _ct_multiframe(d: Path) -> tuple[Path, str]:
    write_dicom(d / "good.dcm", _chest())
    write_dicom(d / "ct.dcm", np.stack([_chest(seed=s) for s in range(5)]), modality="CT",
                sop_class=ENHANCED_CT_SOP, description="ABDOMEN")
    return d / "ct.dcm", "modality CT"


def _dx_multiframe(d: Path) -> tuple[Path, str]:
    write_dicom(d / "good.dcm", _chest())
    write_dicom(d / "cine.dcm", np.stack([_chest(seed=s) for s in range(5)]), description="CINE")
    return d / "cine.dcm", "5 frames"


def _ct_slice(d: Path) -> tuple[Path, str]:
    write_dicom(d / "good.dcm", _chest())
    write_dicom(d / "slice.dcm", _chest(seed=3), modality="CT", description="ABDOMEN")
    return d / "slice.dcm", "not a radiograph"


def _nifti_volume(d: Path) -> tuple[Path, str]:
    write_nifti(d / "good.nii.gz", _chest().T)
    write_nifti(d / "ct.nii.gz", np.stack([_chest(seed=s).T for s in range(5)], -1))
    return d / "ct.nii.gz", "3D volume of 5 slices"


def _empty(d: Path) -> tuple[Path, str]:
    return d, "no radiographs"


def _only_other_files(d: Path) -> tuple[Path, str]:
    (d / "readme.txt").write_text("x")
    return d, "no radiographs"


def _same_name(d: Path) -> tuple[Path, str]:
    write_dicom(d / "a.dcm", _chest())
    Image.fromarray((_chest() // 16).astype(np.uint8)).save(d / "a.png")  # two images, one case id "a"
    return d / "a.png", "same case id"


def _nan_pixels(d: Path) -> tuple[Path, str]:
    write_nifti(d / "good.nii.gz", _chest().T)
    arr = _chest().T.astype(np.float32)
    arr[3, 4] = np.nan
    write_nifti(d / "nan.nii.gz", arr)
    return d / "nan.nii.gz", "1 pixel(s) are NaN or infinite"


@pytest.mark.parametrize("make", [_truncated, _garbage, _ct_multiframe, _dx_multiframe, _ct_slice, _nifti_volume,
                                  _empty, _only_other_files, _same_name, _nan_pixels],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_input_is_a_clear_error_and_writes_nothing(make, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    bad, problem = make(src)
    out = tmp_path / "out"
    r = _report(src, out)
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error:") and str(bad) in line and problem in line, line
    assert "Traceback" not in r.output
    assert not (out / "reports.jsonl").exists()
    assert not out.exists() or not any(out.iterdir())  # no temp file left behind either


def test_references_write_metrics_and_reports_accumulate(tmp_path):
    """--references: metrics.json (NLG + CE over every case of the folder with a reference); a later
    run adds its cases; the same case again is refused unless --overwrite; a case without a
    reference is an error before anything is written."""
    src = tmp_path / "in"
    src.mkdir()
    for name, seed in (("a", 0), ("b", 1)):
        Image.fromarray((_chest(seed=seed) // 16).astype(np.uint8)).save(src / f"{name}.png")
    refs = tmp_path / "refs.jsonl"
    refs.write_text("\n".join(json.dumps({"case_id": c, "report": t}) for c, t in (
        ("a", "The heart is normal. No pleural effusion."), ("b", "Mild cardiomegaly. Small left effusion."))))
    out = tmp_path / "out"

    def run(*args):
        return CliRunner().invoke(app, ["report", "-i", *map(str, args), "-o", str(out), "--device", "cpu",
                                        "--max-new-tokens", "8", "--references", str(refs)], env=ENV)

    r = run(src / "a.png")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 1 and 0 <= m["BLEU_4"] <= 1 and 0 <= m["micro_f1"] <= 1 and "METEOR" in m["notes"]
    assert _rows(out)[0]["reference"] == "The heart is normal. No pleural effusion."
    assert run(src / "b.png").exit_code == 0
    assert [x["case_id"] for x in _rows(out)] == ["a", "b"]
    assert json.loads((out / "metrics.json").read_text())["n"] == 2  # over the folder's cases
    again = run(src / "b.png")
    assert again.exit_code == 2 and "case b is already listed" in again.output
    assert run(src / "b.png", "--overwrite").exit_code == 0 and len(_rows(out)) == 2
    refs.write_text(json.dumps({"case_id": "a", "report": "x"}) + "\n")
    bad = CliRunner().invoke(app, ["report", "-i", str(src), "-o", str(tmp_path / "o2"), "--device", "cpu",
                                   "--references", str(refs)], env=ENV)
    assert bad.exit_code == 2 and "no reference for 1 case(s) (first: 'b')" in bad.output
    assert not (tmp_path / "o2").exists()
