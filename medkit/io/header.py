"""Image headers without pixels: what a folder run checks for every case before it
loads any case's voxels.

``medkit segment -i FOLDER`` reads every case's header first (shape, affine,
modality, series geometry), so a bad case is refused before any output is written,
then loads and segments the cases one at a time: memory holds one volume whatever
the number of cases. The checks here are the header half of
:func:`medkit.io.load_volume`'s; value checks (NaN, HU plausibility) need the voxels
and run when each case is loaded.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import dicom as _dcm
from .checks import check_affine, nifti_affine
from .errors import (
    CorruptFileError,
    DimensionalityError,
    EmptyInputError,
    GeometryError,
    VolumeError,
)
from .volume import LPS_TO_RAS, NIFTI_SUFFIXES, SITK_SUFFIXES, _suffix


@dataclass
class VolumeHeader:
    """What a header says: ``shape`` (X, Y, Z[, T]) or ``None`` (a zip, read later), the RAS
    ``affine`` (or ``None``), ``format``, ``modality`` (``unknown`` for NIfTI/NRRD/MHA),
    ``series_uid`` (DICOM) and ``extra`` (time step, data type, ...)."""

    path: Path
    format: str
    shape: tuple[int, ...] | None
    affine: np.ndarray | None
    modality: str = "unknown"
    series_uid: str | None = None
    extra: dict = field(default_factory=dict)


def case_header(case) -> VolumeHeader:
    """The header of a :class:`medkit.io.cases.Case` (its scanned DICOM series when it has one)."""
    if case.series is not None:
        return _series_header(case.images[0], case.series)
    return read_header(case.images[0], series_uid=case.series_uid)


def read_header(path: str | Path, *, series_uid: str | None = None) -> VolumeHeader:
    """Read and check the header of ``path`` (the formats :func:`medkit.io.load_volume` reads).

    Raises:
        VolumeError: a subclass naming the file (unreadable header, truncated uncompressed
            NIfTI, not a voxel volume, complex/RGB voxels, bad affine, bad DICOM series
            geometry, unknown series UID).
    """
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "no such file or folder")
    if path.is_dir():
        series, _ = _dcm.scan_folder(path)
        return _series_header(path, _dcm.choose_series(path, series, series_uid))
    if path.stat().st_size == 0:
        raise EmptyInputError(path, "file is empty (0 bytes)")
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return _nifti_header(path)
    if suffix in SITK_SUFFIXES:
        return _sitk_header(path, suffix)
    if suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as e:
            raise CorruptFileError(path, f"unreadable zip archive ({type(e).__name__}: {e})") from None
        if bad is not None:
            raise CorruptFileError(path, f"zip member {bad!r} is damaged (CRC mismatch)")
        return VolumeHeader(path, "dicom-zip", None, None)
    if _dcm._is_dicom_file(path) or _dcm._looks_like_raw_dicom(path):
        return _series_header(path, _dcm.single_file_series(path, series_uid))
    if suffix in (".dcm", ".ima"):
        raise CorruptFileError(path, "not a DICOM file: no 'DICM' marker at byte 128 and no DICOM element at the start")
    raise VolumeError(path, "unknown format: expected .nii/.nii.gz, .nrrd/.mha, .zip, a DICOM file or a DICOM folder")


def _series_header(where: Path, series) -> VolumeHeader:
    for inst in series.instances:
        _dcm.check_transfer_syntax(inst)
    geom = _dcm.validate_series(series)
    inst0 = series.instances[0]
    n = inst0.frames if len(geom.files) == 1 else len(geom.files)
    aff = LPS_TO_RAS @ geom.affine_lps
    if not (len(geom.files) == 1 and inst0.frames > 1):  # multi-frame geometry is GDCM's, checked on load
        check_affine(inst0.path, aff)
    return VolumeHeader(Path(where), "dicom", (inst0.cols, inst0.rows, n), aff, inst0.modality, series.uid,
                        {"n_files": len(geom.files), "description": inst0.description,
                         "transfer_syntax": inst0.transfer_syntax})


def _nifti_header(path: Path) -> VolumeHeader:
    import nibabel as nib

    from .nifti4d import _open

    img = _open(path)
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if min(shape) == 0:
        raise DimensionalityError(path, f"zero-size dimension in shape {shape}")
    dtype = img.get_data_dtype()
    if dtype.kind == "c" or dtype.names is not None:
        raise DimensionalityError(path, f"voxel type {dtype} is not a grey-level volume (complex or RGB data)")
    aff = nifti_affine(path, img)
    if path.name.lower().endswith(".nii"):
        # Uncompressed: the file must hold every voxel the header promises.
        need = int(img.header.get_data_offset()) + int(np.prod(img.shape)) * dtype.itemsize
        have = path.stat().st_size
        if have < need:
            raise CorruptFileError(path, f"truncated file: the header promises {need} bytes of voxel data and "
                                         f"offset, the file has {have}")
    zooms = img.header.get_zooms()
    extra = {"dtype": str(dtype), "time_step": float(zooms[3]) if len(shape) == 4 and len(zooms) > 3 else None,
             "time_unit": img.header.get_xyzt_units()[1] if len(shape) == 4 else None,
             "nifti": "NIfTI-2" if isinstance(img, nib.Nifti2Image) else "NIfTI-1"}
    return VolumeHeader(path, "nifti", shape, aff, extra=extra)


def _sitk_header(path: Path, suffix: str) -> VolumeHeader:
    import SimpleITK as sitk

    fmt = suffix.lstrip(".").replace("nhdr", "nrrd").replace("mhd", "mha")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else "read failed"
        raise CorruptFileError(path, f"unreadable {fmt.upper()} header ({msg})") from None
    if reader.GetNumberOfComponents() != 1:
        raise DimensionalityError(path, f"{reader.GetNumberOfComponents()} components per pixel; a grey-level "
                                        "volume is expected")
    size = tuple(int(n) for n in reader.GetSize())
    dim = len(size)
    if dim == 4 and size[3] == 1:
        size, dim = size[:3], 3
    if dim not in (2, 3):
        raise DimensionalityError(path, f"{dim}D image of size {size}; a 3D volume is expected")
    d = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(len(reader.GetSize()), -1)[:dim, :dim]
    sp = np.asarray(reader.GetSpacing(), dtype=np.float64)[:dim]
    org = np.asarray(reader.GetOrigin(), dtype=np.float64)[:dim]
    aff = np.eye(4)
    aff[:dim, :dim] = d * sp[None, :]
    aff[:dim, 3] = org
    if dim == 2:
        size = (*size, 1)
    aff = LPS_TO_RAS @ aff
    try:
        check_affine(path, aff)
    except GeometryError:
        raise
    return VolumeHeader(path, fmt, size, aff)


def load_case(case, *, modality: str | None = None):
    """The case's volume (``MetaTensor`` ``(1, X, Y, Z)``), read from its scanned DICOM series
    when it has one (no second folder scan), else with :func:`medkit.io.load_volume`."""
    from .volume import _check_modality, _check_values, _load_series, _to_metatensor, load_volume

    if case.series is None:
        return load_volume(case.images[0], series_uid=case.series_uid, modality=modality)
    where = Path(case.images[0])
    arr, aff, meta = _load_series(case.series)
    _check_values(where, arr)
    _check_modality(where, arr, meta, modality)
    return _to_metatensor(where, arr, aff, meta)
