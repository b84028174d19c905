"""Real files: pydicom's test files, pydicom-data and nibabel's test data.

Every CT/MR DICOM file and every nibabel NIfTI either loads correctly or raises a
medkit ``VolumeError`` subclass naming the file: never another exception type.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from medkit.io import (
    CorruptFileError,
    DimensionalityError,
    GeometryError,
    NonImageError,
    VolumeError,
    load_volume,
)


def _modality(path: str) -> str | None:
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=True, force=True).get("Modality")
    except Exception:  # noqa: BLE001 - not DICOM at all
        return None


def _ct_mr_files() -> list[str]:
    from pydicom.data import get_testdata_files

    return sorted(f for f in get_testdata_files() if os.path.isfile(f) and _modality(f) in ("CT", "MR"))


def _short(path: str) -> str:
    return path.split("site-packages" + os.sep)[-1]


CT_MR = _ct_mr_files()


def test_there_are_real_ct_and_mr_files():
    mods = [_modality(f) for f in CT_MR]
    # pydicom ships ~65 CT and ~25 MR files (with pydicom-data); both must be found.
    assert mods.count("CT") >= 10 and mods.count("MR") >= 10


def _pydicom_hu(path: str) -> np.ndarray | None:
    """pydicom's own decoding with the modality LUT (HU for CT); None when it cannot decode."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            if int(ds.get("NumberOfFrames", 1) or 1) != 1:
                return None
            return apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    except Exception:  # noqa: BLE001 - no pylibjpeg here: compressed files do not decode in pydicom
        return None


@pytest.mark.parametrize("path", CT_MR, ids=_short)
def test_real_ct_mr_file_loads_or_raises_volume_error(path):
    import pydicom

    try:
        vol = load_volume(path)
    except VolumeError as e:
        assert Path(path).name in str(e), str(e)
        return
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    arr = vol[0].numpy()
    assert np.isfinite(arr).all()
    spacing = vol.meta["original_spacing"]
    assert all(s > 0 for s in spacing)
    if "PixelSpacing" in ds and int(ds.get("NumberOfFrames", 1) or 1) == 1:
        # DICOM PixelSpacing is (between rows, between columns) = (Y, X).
        dy, dx = (float(v) for v in ds.PixelSpacing)
        np.testing.assert_allclose(spacing[:2], (dx, dy), rtol=1e-5)
    ref = _pydicom_hu(path)
    if ref is not None:
        # Same values as pydicom's independent decode; (X, Y) here vs (rows, cols) there.
        np.testing.assert_allclose(arr[:, :, 0], ref.T, atol=0.5)
    if vol.meta["modality"] == "CT":
        assert arr.max() > 0
        # Scanner padding goes down to about -4000 HU (693_UNCI: -3995); nothing sane exceeds 5000.
        assert -4100 <= arr.min() and arr.max() <= 5000, (arr.min(), arr.max())
        if min(arr.shape[:2]) >= 64:
            # A full-size CT slice always shows air or fat (< 0 HU). The 16x16
            # dicomdirtests thumbnails are crops from inside the body and may not.
            assert arr.min() < 0, (arr.min(), arr.max())


def _nibabel_niftis() -> list[str]:
    import nibabel.testing

    root = Path(nibabel.testing.data_path)
    return sorted(str(p) for p in root.iterdir() if p.name.endswith((".nii", ".nii.gz")))


@pytest.mark.parametrize("path", _nibabel_niftis(), ids=lambda p: Path(p).name)
def test_nibabel_nifti_loads_or_raises_volume_error(path):
    import nibabel as nib

    try:
        vol = load_volume(path)
    except VolumeError as e:
        assert Path(path).name in str(e)
        return
    img = nib.load(path)
    np.testing.assert_allclose(np.asarray(vol.affine), img.affine, atol=1e-4)
    np.testing.assert_allclose(vol[0].numpy(), np.squeeze(np.asarray(img.dataobj, dtype=np.float32)), rtol=1e-6)


# Regression: files that once ended in the wrong error (or none) in bench/io_survey.py.
REGRESSIONS = [
    # Preamble-less ("raw") DICOM was refused as a corrupt header instead of being read.
    ("rtstruct.dcm", NonImageError, "RT Structure Set"),
    ("ExplVR_LitEndNoMeta.dcm", NonImageError, "RT Ion Plan"),
    ("ExplVR_BigEndNoMeta.dcm", NonImageError, "RT Ion Plan"),
    # pydicom silently returned an empty dataset: was reported as "no pixel data".
    ("emri_small_jpeg_2k_lossless_too_short.dcm", CorruptFileError, "truncated"),
    # Short pixel data held as a converted DataElement escaped the length check.
    ("MR_truncated.dcm", CorruptFileError, "pixel data is 8130 bytes"),
    ("rtplan_truncated.dcm", CorruptFileError, "truncated"),
    # PALETTE COLOR indices were loaded as if they were intensities.
    ("OT-PAL-8-face.dcm", DimensionalityError, "PALETTE COLOR"),
    ("examples_palette.dcm", DimensionalityError, "PALETTE COLOR"),
    # PixelSpacing 0\0 on a single radiograph: now named instead of "singular affine".
    ("RG1_UNCR.dcm", GeometryError, "PixelSpacing"),
    ("rtplan.dcm", NonImageError, "RT Plan"),
    ("test-SR.dcm", NonImageError, "SR"),
]


@pytest.mark.parametrize("name,cls,word", REGRESSIONS, ids=[r[0] for r in REGRESSIONS])
def test_survey_regressions(name, cls, word):
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    with pytest.raises(cls) as ei:
        load_volume(path)
    assert name in str(ei.value) and word in str(ei.value)


def test_cifti_nii_is_not_a_volume():
    import nibabel.testing

    path = Path(nibabel.testing.data_path) / "row_major.dconn.nii"
    with pytest.raises(DimensionalityError, match="Cifti2Image is not a voxel volume"):
        load_volume(path)
