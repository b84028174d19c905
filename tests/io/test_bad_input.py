"""Bad input: each case raises the right VolumeError subclass, naming the path and the problem."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest

from medkit.io import (
    CorruptFileError,
    DimensionalityError,
    EmptyInputError,
    GantryTiltError,
    GeometryError,
    ModalityError,
    MultipleSeriesError,
    NoDicomError,
    NonImageError,
    SeriesNotFoundError,
    SliceSpacingError,
    UnsupportedTransferSyntaxError,
    load_volume,
)
from medkit.io.dicom_write import write_dicom_series

AXIAL = np.diag([-0.8, -0.8, 2.5, 1.0])  # identity DICOM direction, 2.5 mm slices


def _raises(cls, path, *words, **kw):
    with pytest.raises(cls) as ei:
        load_volume(path, **kw)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    return ei.value


def _edit(path, **fields):
    ds = pydicom.dcmread(path)
    for k, v in fields.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)


def _save_nifti(path, arr, aff):
    import nibabel as nib

    # sform only (qform code 0): nibabel cannot build a qform from a singular matrix.
    img = nib.Nifti1Image(arr.astype(np.float32), None)
    img.header.set_sform(aff, code=1)
    nib.save(img, str(path))
    return path


def test_nonexistent_path(tmp_path):
    _raises(EmptyInputError, tmp_path / "nope.nii.gz", "no such")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _raises(EmptyInputError, tmp_path / "empty", "empty")


def test_folder_without_dicom(tmp_path):
    d = tmp_path / "notes"
    d.mkdir()
    (d / "readme.txt").write_text("hello")
    (d / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    _raises(NoDicomError, d, "DICOM", "2 file(s)")


def test_two_series_need_a_choice(tmp_path):
    study = tmp_path / "study"
    arr = np.zeros((6, 5, 4))
    write_dicom_series(arr, study / "a", affine=AXIAL, series_description="AX T1", uid_seed=1, series_number=1)
    write_dicom_series(arr[:, :, :3], study / "b", affine=AXIAL, series_description="COR STIR", uid_seed=2,
                       series_number=2)
    e = _raises(MultipleSeriesError, study, "2 image series", "series 1, 4 slices, in a", "series 2, 3 slices, in b")
    assert "AX T1" not in str(e) and "COR STIR" not in str(e)  # free text (may hold names) is not echoed
    uids = {desc: uid for uid, desc, _, _ in e.series}
    assert len(e.series) == 2 and uids["AX T1"] != uids["COR STIR"]
    vol = load_volume(study, series_uid=uids["COR STIR"])
    assert vol.shape == (1, 6, 5, 3) and vol.meta["series_uid"] == uids["COR STIR"]
    # A wrong UID is its own error (inspect/segment must refuse it, not list the series and exit 0),
    # and the message lists every series with its UID whole.
    e = _raises(SeriesNotFoundError, study, "series UID 1.2.3.4 not found", series_uid="1.2.3.4")
    assert not isinstance(e, MultipleSeriesError) and all(uid in str(e) for uid in uids.values())


def test_missing_slice(make_series):
    folder, _, _ = make_series("gap", affine=AXIAL)
    (folder / "IM0003.dcm").unlink()
    _raises(SliceSpacingError, folder, "1 missing slice", "IM0002.dcm", "IM0004.dcm")


def test_non_uniform_spacing(make_series):
    folder, _, _ = make_series("nonuni", affine=AXIAL)
    # Slices 4..6 move 1 mm further each: gaps 2.5, 2.5, 2.5, 3.5, 3.5 (median 2.5).
    for k in (4, 5, 6):
        p = folder / f"IM{k:04d}.dcm"
        x, y, z = (float(v) for v in pydicom.dcmread(p).ImagePositionPatient)
        _edit(p, ImagePositionPatient=[x, y, z + (k - 3) * 1.0])
    _raises(SliceSpacingError, folder, "non-uniform slice spacing")


def test_duplicated_position(make_series):
    folder, _, _ = make_series("dup", affine=AXIAL)
    copy = folder / "IM9999.dcm"
    shutil.copy(folder / "IM0002.dcm", copy)
    _edit(copy, SOPInstanceUID=pydicom.uid.generate_uid())
    _raises(SliceSpacingError, folder, "same position")


def test_gantry_tilt(make_series):
    folder, _, _ = make_series("tilt", affine=AXIAL)
    # Shift each slice 1 mm along y per 2.5 mm step: atan(1 / 2.5) = 21.8 deg off the normal.
    for k in range(1, 7):
        p = folder / f"IM{k:04d}.dcm"
        x, y, z = (float(v) for v in pydicom.dcmread(p).ImagePositionPatient)
        _edit(p, ImagePositionPatient=[x, y + (k - 1) * 1.0, z])
    _raises(GantryTiltError, folder, "21.8 deg", "tilt")


@pytest.mark.parametrize("name,kind", [("rtplan.dcm", "RT Plan"), ("rtstruct.dcm", "RT Structure Set"),
                                       ("test-SR.dcm", "Comprehensive SR")])
def test_non_image_sop(tmp_path, name, kind):
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    _raises(NonImageError, path, "not an image", kind)
    d = tmp_path / "rt"
    d.mkdir()
    shutil.copy(path, d / name)
    _raises(NonImageError, d, "no image series", kind)


def test_unsupported_transfer_syntax(make_series):
    from pydicom.encaps import encapsulate

    folder, _, _ = make_series("htj2k", affine=AXIAL)
    p = folder / "IM0002.dcm"
    ds = pydicom.dcmread(p)
    ds.PixelData = encapsulate([ds.PixelData])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"  # HTJ2K lossless: GDCM cannot decode it
    ds.save_as(p, enforce_file_format=True)
    _raises(UnsupportedTransferSyntaxError, p, "High-Throughput JPEG 2000", "1.2.840.10008.1.2.4.201")
    with pytest.raises(UnsupportedTransferSyntaxError, match="IM0002.dcm"):
        load_volume(folder)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75, 0.95])
def test_truncated_dicom(make_series, fraction):
    # 0.25 / 0.5 cut the header (pydicom alone would return a dataset without PixelData),
    # 0.75 / 0.95 cut the pixel data.
    folder, _, _ = make_series("cut", affine=AXIAL)
    p = folder / "IM0003.dcm"
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * fraction)])
    _raises(CorruptFileError, p, "truncated")
    with pytest.raises(CorruptFileError, match="IM0003.dcm.*truncated"):
        load_volume(folder)


def test_random_bytes_with_dcm_suffix(tmp_path):
    p = tmp_path / "noise.dcm"
    p.write_bytes(b"\x42" + np.random.default_rng(0).bytes(4095))  # cannot start like a DICOM element
    _raises(CorruptFileError, p, "not a DICOM file")


def test_4d_nifti(tmp_path):
    p = _save_nifti(tmp_path / "fmri.nii.gz", np.zeros((4, 4, 3, 5)), np.eye(4))
    _raises(DimensionalityError, p, "4D", "3D volume is expected")


def test_sheared_nifti(tmp_path):
    aff = np.eye(4)
    aff[0, 1] = 0.3  # voxel Y axis leans 16.7 deg towards X
    p = _save_nifti(tmp_path / "shear.nii.gz", np.zeros((4, 4, 3)), aff)
    _raises(GeometryError, p, "sheared")


def test_singular_nifti(tmp_path):
    aff = np.diag([1.0, 1.0, 0.0, 1.0])
    p = _save_nifti(tmp_path / "flat.nii.gz", np.zeros((4, 4, 3)), aff)
    _raises(GeometryError, p, "singular")


def test_nan_voxels(tmp_path):
    arr = np.zeros((4, 4, 3))
    arr[1, 2, 0] = np.nan
    arr[0, 0, 2] = np.inf
    p = _save_nifti(tmp_path / "nan.nii.gz", arr, np.eye(4))
    _raises(CorruptFileError, p, "2 voxel(s) are NaN or infinite")


def test_mr_dicom_when_ct_expected(make_series):
    folder, _, _ = make_series("mr", arr=np.full((5, 4, 3), 300.0), affine=AXIAL, modality="MR",
                               rescale_intercept=0.0)
    assert load_volume(folder).meta["modality"] == "MR"
    _raises(ModalityError, folder, "modality is MR", "CT was expected", modality="CT")


def test_all_positive_nifti_when_ct_expected(tmp_path):
    p = _save_nifti(tmp_path / "t1.nii.gz", np.full((4, 4, 3), 250.0), np.eye(4))
    load_volume(p)  # no modality asked: fine
    _raises(ModalityError, p, "not CT", modality="CT")
    ct = _save_nifti(tmp_path / "ct.nii.gz", np.full((4, 4, 3), -1000.0), np.eye(4))
    assert load_volume(ct, modality="CT").meta["modality"] == "CT"


def test_error_inside_zip_names_the_archive(make_series, tmp_path):
    import zipfile

    folder, _, _ = make_series("zgap", affine=AXIAL)
    (folder / "IM0003.dcm").unlink()
    z = tmp_path / "gap.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in folder.iterdir():
            zf.write(p, p.name)
    e = _raises(SliceSpacingError, z, "missing slice")
    assert "medkit-zip-" not in str(e)  # the temp folder is not leaked into the message


def test_bad_zip(tmp_path):
    z = tmp_path / "broken.zip"
    z.write_bytes(b"PK\x03\x04" + bytes(50))
    _raises(CorruptFileError, z, "zip")
