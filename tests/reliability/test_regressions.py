"""Regression tests for the crashes the fuzzers found (tests/reliability/fuzz).

Each test is the minimal input of one crash: before its fix in medkit/io the reader
raised something other than a MedkitInputError (or returned a wrong value).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from medkit.io import (
    CorruptFileError,
    DimensionalityError,
    ReportDatasetError,
    VolumeError,
    discover_cases,
    load_report_dataset,
    load_volume,
)


def test_dicom_cut_inside_a_long_element_header_is_corrupt(make_series, tmp_path):
    # Explicit VR: tag (4) + "OW" (2) + reserved (2) + 32-bit length (4). A copy cut after
    # the first 8 bytes made pydicom raise struct.error ("unpack requires a buffer of 4 bytes").
    folder, _, _ = make_series("s")
    f = sorted(folder.iterdir())[1]
    data = f.read_bytes()
    at = data.index(b"\xe0\x7f\x10\x00OW")
    f.write_bytes(data[: at + 9])
    with pytest.raises(CorruptFileError, match=f.name):
        load_volume(folder)


def test_annotation_with_a_huge_integer_is_a_dataset_error(tmp_path):
    # json raised ValueError (Python's 4300-digit int limit), not JSONDecodeError.
    p = tmp_path / "annotation.json"
    p.write_text('{"train": [' + "1" * 5000 + "]}")
    with pytest.raises(ReportDatasetError, match="annotation.json"):
        load_report_dataset(p)


def test_annotation_nested_too_deeply_is_a_dataset_error(tmp_path):
    p = tmp_path / "annotation.json"
    p.write_text("[" * 100_000 + "]" * 100_000)  # RecursionError inside json
    with pytest.raises(ReportDatasetError, match="nested too deeply"):
        load_report_dataset(p)


def test_annotation_that_is_a_folder_is_a_dataset_error(tmp_path):
    (tmp_path / "d" / "annotation.json").mkdir(parents=True)  # IsADirectoryError before
    with pytest.raises(ReportDatasetError, match="annotation.json"):
        load_report_dataset(tmp_path / "d")  # the folder form: reads d/annotation.json


def test_annotation_image_name_too_long_is_reported_missing(tmp_path):
    # Path.is_file() raised OSError(ENAMETOOLONG) for a 300-character file name.
    p = tmp_path / "annotation.json"
    p.write_text(json.dumps({"train": [{"id": "1", "report": "r", "image_path": ["x" * 300]}]}))
    with pytest.raises(ReportDatasetError, match="not found"):
        load_report_dataset(p)


def test_dataset_json_that_is_a_folder_is_a_volume_error(tmp_path):
    (tmp_path / "dataset.json").mkdir()  # IsADirectoryError before
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(VolumeError, match="dataset.json"):
        discover_cases(tmp_path)


def test_dataset_json_nested_too_deeply_is_a_volume_error(tmp_path):
    (tmp_path / "dataset.json").write_text("[" * 100_000)
    with pytest.raises(VolumeError, match="dataset.json"):
        discover_cases(tmp_path)


def _nifti(path, arr, aff=None):
    import nibabel as nib

    nib.save(nib.Nifti1Image(arr, np.eye(4) if aff is None else aff), str(path))
    return path


def test_dot_files_are_not_cases(tmp_path):
    # macOS leaves "._case1.nii.gz" (AppleDouble, not NIfTI) beside each file on a share;
    # ".nii.gz" alone gave the empty case id "" (and an output named ".nii.gz").
    arr = np.zeros((3, 3, 3), np.int16)
    _nifti(tmp_path / "case1.nii.gz", arr)
    (tmp_path / "._case1.nii.gz").write_bytes(b"\x00\x05\x16\x07" + b"\0" * 60)
    _nifti(tmp_path / ".nii.gz", arr)
    assert [c.case_id for c in discover_cases(tmp_path)] == ["case1"]
    (tmp_path / "imagesTr").mkdir()
    _nifti(tmp_path / "imagesTr" / "a_0000.nii.gz", arr)
    (tmp_path / "imagesTr" / "._a_0000.nii.gz").write_bytes(b"\0" * 64)
    assert [c.case_id for c in discover_cases(tmp_path)] == ["a"]
    assert [c.case_id for c in discover_cases(tmp_path / ".nii.gz")] == ["case"]


def test_complex_nifti_is_refused_not_cast(tmp_path):
    # np.asarray(dataobj, float32) silently dropped the imaginary part (MR phase data).
    import nibabel as nib

    arr = (np.ones((4, 4, 4)) + 2j * np.ones((4, 4, 4))).astype(np.complex64)
    p = tmp_path / "phase.nii.gz"
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(p))
    with pytest.raises(DimensionalityError, match="phase.nii.gz.*complex"):
        load_volume(p)


def test_last_slice_cut_between_two_elements_is_corrupt(make_series):
    # A copy cut exactly at an element boundary parses as a clean, shorter header without
    # PixelData: it was taken for a non-image object and skipped, so a series whose LAST
    # slice was cut loaded silently with one slice fewer.
    folder, _, _ = make_series("s")
    last = sorted(folder.iterdir())[-1]
    data = last.read_bytes()
    at = data.index(b"\x08\x00\x3e\x10LO")  # (0008,103E) SeriesDescription, explicit VR LO
    cut = at + 8 + int.from_bytes(data[at + 6:at + 8], "little")  # the end of that element
    last.write_bytes(data[:cut])
    with pytest.raises(CorruptFileError, match=f"{last.name}.*without pixel data"):
        load_volume(folder)


@pytest.mark.parametrize("keep", [0, 100])
def test_first_slice_emptied_by_a_broken_copy_is_corrupt(make_series, keep):
    # A .dcm slice left empty (or cut inside its preamble) has no 'DICM' marker: it was skipped
    # as "not DICOM", and with the first or last slice gone the series loaded one slice short.
    folder, _, _ = make_series("s")
    first = sorted(folder.iterdir())[0]
    first.write_bytes(first.read_bytes()[:keep])
    with pytest.raises(CorruptFileError, match=f"{first.name}.*no DICOM data"):
        load_volume(folder)


def test_case_ids_come_from_typed_names_never_from_header_text(make_series, tmp_path):
    # PHI: a SeriesDescription such as "CT ABD PHIMARK" named the case (medkit-CT-ABD-PHIMARK-1a2b3c4d),
    # so it reached file names, CSV rows, stdout and overlay titles. Ids now come from the names
    # the user typed: the file, or the folder (and never the slice files inside it).
    from medkit.io.convert import ConvertConfig, convert

    folder, _, _ = make_series("scan07", file_pattern="DOE_JOHN_MRN123_{index:04d}.dcm",
                               series_description="CT ABD PHIMARK")
    f = sorted(folder.iterdir())[0]
    (case,) = discover_cases(f)
    assert case.case_id == "DOE_JOHN_MRN123_0001" and "PHIMARK" not in case.case_id  # the typed file's name
    (case,) = discover_cases(folder)
    assert case.case_id == "scan07"
    rows = convert(ConvertConfig(str(folder), str(tmp_path / "out")))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cases.csv", "scan07_0000.nii.gz"]
    assert rows[0]["case_id"] == "scan07"
    uid = load_volume(folder).meta["series_uid"]
    convert(ConvertConfig(str(folder), str(tmp_path / "out2"), series_uid=uid))
    assert (tmp_path / "out2" / "scan07_0000.nii.gz").exists()
    text = (tmp_path / "out2" / "cases.csv").read_text()
    assert "PHIMARK" not in text and "DOE_JOHN" not in text and uid in text


def test_dicom_with_a_negative_number_of_frames_is_corrupt(make_series):
    # Found by the 10,000-input fuzz run (bench/results/fuzz.json): NumberOfFrames -1 made a
    # series report a negative length, and listing the series raised ValueError from len().
    import pydicom

    folder, _, _ = make_series("s")
    f = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(f)
    ds.NumberOfFrames = "-1"
    ds.save_as(f)
    with pytest.raises(CorruptFileError, match=f"{f.name}.*NumberOfFrames is -1"):
        load_volume(folder)
