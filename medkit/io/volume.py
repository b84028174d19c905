"""Load and save 3D volumes with their geometry.

The contract (ARCHITECTURE.md, "One data contract"): a volume is a
``monai.data.MetaTensor`` of float32, shape ``(1, X, Y, Z)``, whose ``affine``
maps voxel indices to RAS world millimetres. Voxels keep the file's own order
(no resampling), so writing the same array back with the same affine overlays
the source in any viewer. CT values are Hounsfield units.

``meta`` holds, and only holds (no patient name, ID, birth date, accession or
institution):

=====================  =====================================================
``filename_or_obj``    source path as given (MONAI's key)
``format``             ``nifti`` | ``dicom`` | ``dicom-zip`` | ``nrrd`` | ``mha``
``modality``           DICOM Modality, or ``modality=`` argument, else ``unknown``
``series_uid``         DICOM SeriesInstanceUID (``None`` for other formats)
``original_orientation``  axis codes of the voxel axes, e.g. ``LPS``
``original_spacing``   voxel size (X, Y, Z) mm
``original_affine``    the same RAS affine, as MONAI keeps it
``spatial_shape``      (X, Y, Z)
=====================  =====================================================
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import dicom as _dcm
from .atomic import atomic_path
from .checks import SHEAR_TOL, check_affine, check_ct_values, check_values, nifti_affine  # noqa: F401 (re-exported)
from .errors import (
    CorruptFileError,
    DimensionalityError,
    EmptyInputError,
    ModalityError,
    SeriesNotFoundError,
    VolumeError,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
MAX_ZIP_BYTES = 16 * 2**30  # refuse zip bombs: 16 GiB uncompressed
WRITE_SUFFIXES = NIFTI_SUFFIXES + (".nrrd", ".mha")  # what save_volume writes, chosen by the name


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in NIFTI_SUFFIXES + SITK_SUFFIXES + (".zip", ".dcm"):
        if name.endswith(s):
            return s
    return path.suffix.lower()


def load_volume(path: str | Path, *, series_uid: str | None = None, modality: str | None = None):
    """Read a 3D image into a ``MetaTensor`` ``(1, X, Y, Z)`` with a RAS affine in mm.

    Args:
        path: a NIfTI file (``.nii``/``.nii.gz``), a DICOM folder (searched
            recursively; one image series, or choose with ``series_uid``), a single
            DICOM file (one slice or multi-frame), a ``.zip`` of DICOM files, or an
            ``.nrrd``/``.mha``/``.mhd`` file.
        series_uid: which series to read when a folder or zip holds several. A UID that
            names no series is an error (:class:`SeriesNotFoundError`), also for a single
            DICOM file of another series; NIfTI/NRRD/MHA carry no series UID and refuse it.
        modality: expected modality (``"CT"``, ``"MR"``...). DICOM is checked
            against its Modality tag; other formats, which carry none, are checked
            for CT by their values (:func:`medkit.io.checks.ct_value_problem`: HU
            volumes hold air or fat and have a median far below bone).

    Returns:
        ``monai.data.MetaTensor``, float32, ``(1, X, Y, Z)``; see the module doc for ``meta``.

    Raises:
        VolumeError: or a subclass, whose message names the file and the problem.
    """
    path = Path(path)
    arr, aff, meta = read_volume(path, series_uid=series_uid, modality=modality)
    return _to_metatensor(path, arr, aff, meta)


def read_volume(path: str | Path, *, series_uid: str | None = None,
                modality: str | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """:func:`load_volume` without torch: ``(array (X, Y, Z) float32, RAS affine (4, 4), meta)``.

    ``meta`` holds ``format``, ``modality``, ``series_uid`` and, from :func:`geometry_meta`,
    ``original_orientation``, ``original_spacing`` and ``spatial_shape``. ``medkit inspect``
    reads through this, so it answers without importing torch.
    """
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "no such file or folder")
    if path.is_dir():
        arr, aff, meta = _load_dicom_folder(path, path, series_uid, modality)
    else:
        suffix = _suffix(path)
        if path.stat().st_size == 0:
            raise EmptyInputError(path, "file is empty (0 bytes)")
        if series_uid is not None and suffix in NIFTI_SUFFIXES + SITK_SUFFIXES:
            raise SeriesNotFoundError(path, f"--series-uid {series_uid}: a {suffix} file has no DICOM series; "
                                            "series UIDs select a series inside a DICOM folder or zip")
        if suffix in NIFTI_SUFFIXES:
            arr, aff, meta = _load_nifti(path)
        elif suffix in SITK_SUFFIXES:
            arr, aff, meta = _load_sitk(path, suffix.lstrip(".").replace("nhdr", "nrrd").replace("mhd", "mha"))
        elif suffix == ".zip":
            arr, aff, meta = _load_zip(path, series_uid, modality)
        elif _dcm._is_dicom_file(path) or _dcm._looks_like_raw_dicom(path):
            arr, aff, meta = _load_dicom_file(path, series_uid)
        elif suffix in (".dcm", ".ima"):
            raise CorruptFileError(path, "not a DICOM file: no 'DICM' marker at byte 128 and no DICOM element at the start")
        else:
            raise VolumeError(
                path, "unknown format: expected .nii/.nii.gz, .nrrd/.mha, .zip, a DICOM file or a DICOM folder"
            )
    _check_values(path, arr)
    _check_modality(path, arr, meta, modality)
    meta.update(geometry_meta(aff, arr.shape))
    return arr, aff, meta


def geometry_meta(affine_ras: np.ndarray, shape) -> dict:
    """``original_orientation`` (axis codes, e.g. ``LPS``), ``original_spacing`` (mm) and
    ``spatial_shape`` of a RAS affine and an array shape ``(X, Y, Z)``."""
    import nibabel as nib

    aff = np.asarray(affine_ras, dtype=np.float64)
    return {"original_orientation": "".join(nib.orientations.aff2axcodes(aff)),
            "original_spacing": tuple(float(s) for s in np.linalg.norm(aff[:3, :3], axis=0)),
            "spatial_shape": tuple(int(s) for s in shape[:3])}


def _to_metatensor(path: Path, arr: np.ndarray, affine_ras: np.ndarray, meta: dict):
    import torch
    from monai.data import MetaTensor

    meta = dict(meta)
    meta.update(geometry_meta(affine_ras, arr.shape))
    meta.update(filename_or_obj=str(path), original_affine=torch.as_tensor(affine_ras, dtype=torch.float64))
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]
    return MetaTensor(t, affine=torch.as_tensor(affine_ras, dtype=torch.float64), meta=meta)


# ----------------------------------------------------------------------------- NIfTI


def _load_nifti(path: Path):
    import nibabel as nib

    try:
        img = nib.load(str(path))
        shape = img.shape
    except Exception as e:  # noqa: BLE001 - nibabel raises many types on bad headers
        raise CorruptFileError(path, f"unreadable NIfTI header ({type(e).__name__}: {e})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        # nibabel dispatches on content: a .nii may hold CIFTI-2 grayordinates (no voxel grid).
        raise DimensionalityError(path, f"{type(img).__name__} is not a voxel volume; a 3D NIfTI image is expected")
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise DimensionalityError(
            path, f"{len(img.shape)}D image of shape {tuple(img.shape)}; a 3D volume is expected"
            + (" (a 4D series: use the deformation reader)" if len(img.shape) == 4 else "")
        )
    if min(shape) == 0:
        raise DimensionalityError(path, f"zero-size dimension in shape {tuple(img.shape)}")
    dtype = img.get_data_dtype()
    if dtype.kind == "c" or dtype.names is not None:
        # Complex (MR phase/k-space) or RGB voxels: a float cast would silently keep one part.
        raise DimensionalityError(path, f"voxel type {dtype} is not a grey-level volume (complex or RGB data)")
    aff = nifti_affine(path, img)
    try:
        arr = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except Exception as e:  # noqa: BLE001 - truncated data, bad dtype, bad scaling
        raise CorruptFileError(path, f"voxel data could not be read ({type(e).__name__}: {e})") from None
    return arr, aff, {"format": "nifti", "modality": "unknown", "series_uid": None}


# ----------------------------------------------------------------------------- SimpleITK formats


def _load_sitk(path: Path, fmt: str):
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else "read failed"
        raise CorruptFileError(path, f"unreadable {fmt.upper()} file ({msg})") from None
    return _sitk_volume(path, img, {"format": fmt, "modality": "unknown", "series_uid": None})


def _sitk_volume(path: Path, img, meta: dict):
    import SimpleITK as sitk

    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DimensionalityError(path, f"{img.GetNumberOfComponentsPerPixel()} components per pixel; a grey-level volume is expected")
    dim = img.GetDimension()
    if dim == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
        dim = 3
    if dim not in (2, 3):
        raise DimensionalityError(path, f"{dim}D image of size {img.GetSize()}; a 3D volume is expected")
    arr = sitk.GetArrayFromImage(img)
    aff = _dcm.sitk_affine_lps(img)
    if dim == 2:
        arr = arr[None]
        aff3 = np.eye(4)
        aff3[:2, :2], aff3[:2, 3] = aff[:2, :2], aff[:2, 3]
        aff = aff3
    if min(arr.shape) == 0:
        raise DimensionalityError(path, f"zero-size dimension in size {img.GetSize()}")
    aff = LPS_TO_RAS @ aff
    check_affine(path, aff)
    return np.transpose(arr, (2, 1, 0)).astype(np.float32, copy=False), aff, meta


# ----------------------------------------------------------------------------- DICOM


def _load_dicom_folder(folder: Path, source: Path, series_uid: str | None, modality: str | None = None):
    series, _ = _dcm.scan_folder(folder)
    chosen = _dcm.choose_series(source, series, series_uid, modality)
    return _load_series(chosen)


def _load_dicom_file(path: Path, series_uid: str | None = None):
    return _load_series(_dcm.single_file_series(path, series_uid))


def _load_series(series: _dcm.DicomSeries):
    inst0 = series.instances[0]
    for inst in series.instances:
        _dcm.check_transfer_syntax(inst)
    geom = _dcm.validate_series(series)
    arr, img = _dcm.read_pixels(geom, inst0)
    if len(geom.files) == 1 and inst0.frames > 1:
        # Multi-frame object: GDCM knows the per-frame geometry; trust it.
        aff_lps = _dcm.sitk_affine_lps(img)
    else:
        aff_lps = geom.affine_lps
        if arr.shape != (inst0.cols, inst0.rows, len(geom.files)):
            raise CorruptFileError(
                inst0.path, f"decoded {arr.shape} voxels, headers promise {(inst0.cols, inst0.rows, len(geom.files))}"
            )
    aff = LPS_TO_RAS @ aff_lps
    check_affine(inst0.path, aff)
    meta = {
        "format": "dicom",
        "modality": inst0.modality,
        "series_uid": series.uid,
        "n_files": len(geom.files),
        "dicom": dict(inst0.safe),
    }
    return arr, aff, meta


def _load_zip(path: Path, series_uid: str | None, modality: str | None = None):
    tmp = Path(tempfile.mkdtemp(prefix="medkit-zip-"))
    try:
        try:
            with zipfile.ZipFile(path) as zf:
                infos = [i for i in zf.infolist() if not i.is_dir()]
                if not infos:
                    raise EmptyInputError(path, "zip archive holds no files")
                if sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
                    raise VolumeError(path, "zip archive expands to more than 16 GiB; unpack it yourself")
                for i in infos:
                    # Zip-slip guard: never write outside the temp folder.
                    target = (tmp / i.filename).resolve()
                    if not str(target).startswith(str(tmp.resolve())):
                        raise VolumeError(path, f"zip entry escapes the archive folder: {i.filename!r}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(i) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as e:
            raise CorruptFileError(path, f"unreadable zip archive ({type(e).__name__}: {e})") from None
        try:
            arr, aff, meta = _load_dicom_folder(tmp, path, series_uid, modality)
        except VolumeError as e:
            # Name the archive, and the member inside it, not our temp folder.
            inner = e.path.replace(str(tmp), "").lstrip("/") if e.path else ""
            where = f"{path}" + (f" [{inner}]" if inner else "")
            raise _rename_error(e, where) from None
        meta["format"] = "dicom-zip"
        return arr, aff, meta
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rename_error(e: VolumeError, where: str) -> VolumeError:
    new = VolumeError.__new__(type(e))
    VolumeError.__init__(new, where, e.problem.replace(str(e.path), where) if e.path else e.problem)
    if hasattr(e, "series"):
        new.series = e.series
    return new


# ----------------------------------------------------------------------------- checks


def _check_values(path: Path, arr: np.ndarray) -> None:
    if arr.size == 0:
        raise DimensionalityError(path, "volume has no voxels")
    check_values(path, arr)


def _check_modality(path: Path, arr: np.ndarray, meta: dict, modality: str | None) -> None:
    if modality is None:
        return
    want = modality.upper()
    have = str(meta.get("modality", "unknown")).upper()
    if have not in ("UNKNOWN", ""):
        if have != want:
            raise ModalityError(path, f"modality is {have}, {want} was expected")
        return
    meta["modality"] = want
    if want == "CT":
        # No Modality tag (NIfTI, NRRD, MHA): the values must be plausible Hounsfield units.
        check_ct_values(path, arr)


# ----------------------------------------------------------------------------- save


def save_volume(volume, path: str | Path, *, like=None, dtype=None) -> Path:
    """Write a volume in its source geometry, atomically; the format follows the name.

    Args:
        volume: ``MetaTensor``/tensor/array ``(1, X, Y, Z)``, ``(X, Y, Z)`` or
            ``(C, X, Y, Z)`` (C > 1 is written as a 4D NIfTI, NIfTI only).
        path: target ``.nii``/``.nii.gz`` (NIfTI-1, q/sform set), ``.nrrd`` or ``.mha``
            (SimpleITK, LPS direction/origin/spacing). Any other name is refused.
        like: a ``MetaTensor`` whose affine (and spatial shape) to use, e.g. the
            input image when ``volume`` is a bare prediction tensor.
        dtype: on-disk dtype. Default: for integer input the smallest of
            uint8/int16/int32 that holds it (label maps); for float input int16 when
            every value is a whole number in int16's range (CT in HU: half the size,
            lossless), else float32.

    Returns:
        The written path.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(f"{path}: save_volume writes {', '.join(WRITE_SUFFIXES)}; the name ends in "
                         f"{suffix or 'no suffix'}")
    arr = _as_numpy(volume)
    if arr.ndim == 4:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    if arr.ndim not in (3, 4):
        raise ValueError(f"{path}: expected (1, X, Y, Z), (X, Y, Z) or (C, X, Y, Z), got shape {arr.shape}")
    ref = like if like is not None else volume
    aff = getattr(ref, "affine", None)
    if aff is None:
        raise ValueError(f"{path}: no affine: pass a MetaTensor, or like=<the source volume>")
    aff = np.asarray(aff.detach().cpu() if hasattr(aff, "detach") else aff, dtype=np.float64)
    if like is not None and hasattr(like, "shape") and tuple(like.shape[-3:]) != tuple(arr.shape[:3]):
        raise ValueError(f"{path}: volume shape {arr.shape[:3]} does not match like= shape {tuple(like.shape[-3:])}")
    arr = arr.astype(_disk_dtype(arr, dtype), copy=False)
    if suffix in NIFTI_SUFFIXES:
        _save_nifti(arr, aff, path)
    else:
        _save_sitk(arr, aff, path)
    return path


def _save_nifti(arr: np.ndarray, aff: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(arr, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _save_sitk(arr: np.ndarray, aff_ras: np.ndarray, path: Path) -> None:
    """NRRD/MHA through SimpleITK: (X, Y, Z) array, LPS direction, origin and spacing."""
    import SimpleITK as sitk

    if arr.ndim != 3:
        raise ValueError(f"{path}: NRRD/MHA output is 3D only (got shape {arr.shape}); write a .nii.gz")
    check_affine(path, aff_ras)
    lps = LPS_TO_RAS @ aff_ras  # the same sign flip turns RAS back into LPS
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))))
    img.SetSpacing([float(v) for v in spacing])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), True)


def _as_numpy(volume) -> np.ndarray:
    if hasattr(volume, "detach"):
        volume = volume.detach().cpu()
        if hasattr(volume, "as_tensor"):
            volume = volume.as_tensor()
        return volume.numpy()
    return np.asarray(volume)


def _whole_int16(arr: np.ndarray) -> bool:
    """Every value a whole number in int16's range (checked in slabs: no full-size temporaries)."""
    info = np.iinfo(np.int16)
    flat = arr.reshape(-1, arr.shape[-1])
    step = max(1, 2**22 // max(1, flat.shape[0]))
    for k in range(0, flat.shape[1], step):
        part = flat[:, k:k + step]
        if not (np.all(np.isfinite(part)) and part.min() >= info.min and part.max() <= info.max
                and np.array_equal(part, np.rint(part))):
            return False
    return True


def _disk_dtype(arr: np.ndarray, dtype) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    if arr.dtype == np.bool_:
        return np.dtype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        for dt in (np.uint8, np.int16, np.int32):
            info = np.iinfo(dt)
            if info.min <= lo and hi <= info.max:
                return np.dtype(dt)
        return np.dtype(np.int64)
    if arr.size and arr.ndim >= 1 and _whole_int16(arr):
        return np.dtype(np.int16)
    return np.dtype(np.float32)
