"""Write a volume as a DICOM series (one CT/MR Image Storage file per slice).

Used for the synthetic DICOM cases, round-trip tests and fuzzing. The series
reloads through :func:`medkit.io.load_volume` with the same affine and values
(to the rescale's integer quantisation: HU are stored as int16 with slope 1 by
default, so values are rounded to whole HU).

Geometry: the RAS affine of the ``(X, Y, Z)`` volume is turned into DICOM's LPS
frame; ``ImageOrientationPatient`` is the unit X and Y voxel axes,
``PixelSpacing`` is (Y spacing, X spacing) (DICOM: between rows, between
columns), ``ImagePositionPatient`` of slice k is the world position of voxel
(0, 0, k). Pixel arrays are stored row-major ``(Y, X)``.

Identifiers: only synthetic ones are written (``patient_name`` etc. default to
"SYNTHETIC"); callers that need PHI-laden inputs for privacy tests pass them.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from .atomic import atomic_path

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_dicom_series(
    volume,
    folder: str | Path,
    *,
    affine: np.ndarray | None = None,
    modality: str = "CT",
    series_description: str = "medkit synthetic",
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    patient: dict | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    series_number: int = 1,
    uid_seed: int | None = None,
    extra: dict | None = None,
    file_pattern: str = "IM{index:04d}.dcm",
) -> list[Path]:
    """Write ``volume`` ``(1, X, Y, Z)`` or ``(X, Y, Z)`` as a DICOM series in ``folder``.

    Args:
        volume: values in output units (HU for CT). ``MetaTensor`` or array.
        affine: RAS voxel->mm affine; default ``volume.affine``.
        modality: ``CT`` (CT Image Storage) or ``MR`` (MR Image Storage).
        rescale_slope, rescale_intercept: stored value = (value - intercept) / slope,
            rounded to uint16 (CT default intercept -1024, as scanners do).
        patient: header fields to set on every file (``PatientName``, ``PatientID``,
            ``PatientBirthDate``...); default synthetic placeholders.
        uid_seed: derive UIDs deterministically (same seed -> same files).
        extra: more header fields (keyword -> value) for every slice.

    Returns:
        The written file paths in slice order.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    arr = np.asarray(volume.detach().cpu() if hasattr(volume, "detach") else volume, dtype=np.float64)
    if arr.ndim == 4:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"expected (1, X, Y, Z) or (X, Y, Z), got {arr.shape}")
    if affine is None:
        affine = getattr(volume, "affine", None)
        if affine is None:
            raise ValueError("no affine: pass affine= or a MetaTensor")
    aff = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff
    sx, sy, sz = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / sx, lps[:3, 1] / sy

    def uid(tag: str) -> str:
        if uid_seed is None:
            return generate_uid()
        return generate_uid(entropy_srcs=[str(uid_seed), tag])

    study_uid = study_uid or uid("study")
    series_uid = series_uid or uid(f"series{series_number}")
    frame_uid = uid("frame")
    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    stored = np.round((arr - rescale_intercept) / rescale_slope)
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError(
            f"values {arr.min():.1f}..{arr.max():.1f} do not fit uint16 with slope {rescale_slope}, "
            f"intercept {rescale_intercept}"
        )
    stored = stored.astype(np.uint16)
    patient = {"PatientName": "SYNTHETIC^PHANTOM", "PatientID": "SYNTH0000", "PatientBirthDate": "",
               "PatientSex": "O", **(patient or {})}
    today = _dt.date(2026, 1, 1).strftime("%Y%m%d")  # fixed: same seed -> same bytes
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    nz = arr.shape[2]
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = uid(f"{series_uid}-{k}")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = modality
        ds.SeriesDescription = series_description
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.Manufacturer = "medkit"
        for key, val in patient.items():
            setattr(ds, key, val)
        pos = lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3]
        ds.ImagePositionPatient = [_ds(v) for v in pos]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.SliceThickness = _ds(sz)
        ds.SpacingBetweenSlices = _ds(sz)
        ds.SliceLocation = _ds(pos[2])
        ds.Rows, ds.Columns = arr.shape[1], arr.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = _ds(rescale_slope)
        ds.RescaleIntercept = _ds(rescale_intercept)
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = "120"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        for key, val in (extra or {}).items():
            setattr(ds, key, val)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # (Y, X) rows
        path = folder / file_pattern.format(index=k + 1)
        with atomic_path(path) as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def _ds(v: float) -> str:
    """A DICOM DS string (at most 16 characters)."""
    for digits in range(12, 4, -1):  # as precise as 16 characters allow
        s = f"{float(v):.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{float(v):.4e}"
