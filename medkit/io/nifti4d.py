"""A 4D NIfTI (X, Y, Z, T) read with the same checks as the 3D reader.

``medkit deform`` takes a respiratory 4D CT as one 4D NIfTI. The file passes
through the checks :func:`medkit.io.load_volume` applies to a 3D file (a header
nibabel can parse, a voxel volume rather than CIFTI, grey-level voxels, a finite,
non-singular, non-sheared affine, voxel data as long as the header says, no NaN
or infinite voxels) plus the sequence's own: at least two time points and a
volume at least ``min_extent`` voxels thick along each spatial axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checks import check_min_extent, check_values, nifti_affine
from .errors import CorruptFileError, DimensionalityError, EmptyInputError, GeometryError

MIN_EXTENT = 4  # voxels per spatial axis: finite differences (Jacobians, smoothness) need a neighbourhood


@dataclass
class Nifti4D:
    """``array`` ``(X, Y, Z, T)`` float32; ``affine`` RAS mm ``(4, 4)``; ``times`` in ``unit``
    (``pixdim[4]`` steps in the header's time unit, else frame indices with unit ``index``)."""

    array: np.ndarray
    affine: np.ndarray
    times: list[float]
    unit: str


def nifti_shape(path: str | Path) -> tuple[int, ...]:
    """The shape in a NIfTI header (no voxel data read); raises :class:`CorruptFileError`
    when nibabel cannot parse the header."""
    return tuple(int(n) for n in _open(Path(path)).shape)


def _open(path: Path):
    import nibabel as nib

    if not path.exists():
        raise EmptyInputError(path, "no such file or folder")
    if path.stat().st_size == 0:
        raise EmptyInputError(path, "file is empty (0 bytes)")
    try:
        img = nib.load(str(path))
        img.shape  # noqa: B018 - header parsed lazily by some image classes
    except Exception as e:  # noqa: BLE001 - nibabel raises many types on damaged or foreign files
        raise CorruptFileError(path, f"unreadable NIfTI header ({type(e).__name__}: {e})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DimensionalityError(path, f"{type(img).__name__} is not a voxel volume; a 4D NIfTI image is expected")
    return img


def read_nifti_4d(path: str | Path, *, min_extent: int = MIN_EXTENT,
                  needs: str = "ST-NeRP (medkit deform)") -> Nifti4D:
    """Read and check a 4D NIfTI (see the module doc).

    Raises:
        VolumeError: a subclass naming the file: unreadable or truncated, not 4D or one time
            point, complex/RGB voxels, a bad affine, NaN/inf voxels, a slab thinner than ``min_extent``.
    """
    path = Path(path)
    img = _open(path)
    shape = tuple(int(n) for n in img.shape)
    if len(shape) != 4:
        raise DimensionalityError(path, f"{len(shape)}D image of shape {shape}; a 4D NIfTI (X, Y, Z, T) is expected")
    if shape[3] < 2:
        raise DimensionalityError(path, f"4D image of shape {shape} holds one time point; a sequence needs at least 2")
    dtype = img.get_data_dtype()
    if dtype.kind == "c" or dtype.names is not None:
        raise DimensionalityError(path, f"voxel type {dtype} is not a grey-level volume (complex or RGB data)")
    check_min_extent(path, shape[:3], min_extent, needs)
    aff = nifti_affine(path, img)
    try:
        arr = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # noqa: BLE001 - truncated gzip stream, short file, bad scaling
        raise CorruptFileError(path, f"voxel data could not be read, truncated file? ({type(e).__name__}: {e})") \
            from None
    if arr.shape != shape:
        raise CorruptFileError(path, f"voxel data has shape {arr.shape}, the header says {shape}")
    check_values(path, arr)
    zooms = img.header.get_zooms()
    dt = float(zooms[3]) if len(zooms) > 3 else 0.0
    if not np.isfinite(dt) or dt < 0:
        raise GeometryError(path, f"time step pixdim[4] = {dt} is not a finite, non-negative number")
    unit = img.header.get_xyzt_units()[1] or "index"
    times = [k * dt for k in range(shape[3])] if dt > 0 else [float(k) for k in range(shape[3])]
    return Nifti4D(arr, aff, times, unit if dt > 0 else "index")
