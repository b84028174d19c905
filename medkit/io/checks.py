"""Checks every image reader runs: the 3D volume reader, the 4D sequence reader and the
radiograph reader share them, so a NaN voxel or a singular affine is refused the same
way whichever path the file came in by.

Pure NumPy; each raises a :class:`~medkit.io.errors.VolumeError` subclass naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import CorruptFileError, DimensionalityError, GeometryError, ModalityError

SHEAR_TOL = 1e-3  # |cos| between voxel axes above which an affine counts as sheared
# At most this many voxels go into the CT percentile check: a strided view of a
# 512 x 512 x 800 CT, so the check costs milliseconds and no full-size copy.
CT_SAMPLE_VOXELS = 4_000_000


def check_affine(path: str | Path, aff: np.ndarray) -> None:
    """Refuse affines that are non-finite, singular or sheared (non-orthogonal axes)."""
    aff = np.asarray(aff, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise GeometryError(path, "voxel-to-world affine contains NaN/inf")
    m = aff[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    if np.any(norms < 1e-6) or abs(np.linalg.det(m)) < 1e-9:
        raise GeometryError(path, f"singular voxel-to-world affine (voxel sizes {np.round(norms, 6).tolist()} mm)")
    u = m / norms
    gram = u.T @ u
    off = np.abs(gram - np.eye(3)).max()
    if off > SHEAR_TOL:
        raise GeometryError(
            path, f"sheared voxel-to-world affine (axes {np.degrees(np.arccos(np.clip(1 - off, -1, 1))):.2f} deg "
            "from orthogonal); resample to an orthogonal grid first"
        )


def check_values(path: str | Path, arr: np.ndarray, what: str = "voxel") -> None:
    """Refuse an empty array or one holding NaN/inf (a float NIfTI written by a failed
    registration, a radiograph with undefined pixels). Checked in slabs along the last
    axis so a large volume needs no full-size boolean copy."""
    if arr.size == 0:
        raise DimensionalityError(path, f"image has no {what}s")
    if np.issubdtype(arr.dtype, np.integer):
        return
    bad = 0
    flat = arr.reshape(-1, arr.shape[-1]) if arr.ndim > 1 else arr[None]
    step = max(1, 2**22 // max(1, flat.shape[0]))
    for k in range(0, flat.shape[1], step):
        bad += int((~np.isfinite(flat[:, k:k + step])).sum())
    if bad:
        raise CorruptFileError(path, f"{bad} {what}(s) are NaN or infinite")


def check_min_extent(path: str | Path, shape: tuple[int, ...], minimum: int, needs: str) -> None:
    """Refuse an image with fewer than ``minimum`` voxels along a spatial axis (a slab
    two voxels thick is not a volume). ``needs`` says who needs it, for the message."""
    small = [n for n in shape if n < minimum]
    if small:
        dims = "x".join(str(n) for n in shape)
        raise DimensionalityError(path, f"only {min(small)} voxel(s) along one axis ({dims}); {needs} needs at "
                                        f"least {minimum} along each axis")


def _sample(arr: np.ndarray, n: int = CT_SAMPLE_VOXELS) -> np.ndarray:
    """A strided view holding at most about ``n`` voxels (no copy of the volume)."""
    if arr.size <= n:
        return arr
    step = int(np.ceil((arr.size / n) ** (1 / arr.ndim)))
    return arr[(slice(None, None, step),) * arr.ndim]


def ct_value_problem(arr: np.ndarray) -> str | None:
    """Why ``arr`` cannot be a CT in Hounsfield units, or ``None`` when it can.

    HU is a physical scale: air -1000, fat about -100, water 0, soft tissue 20-80,
    bone up to about 2000 (metal higher, in few voxels). A body CT therefore always has
    air or fat in more than 1 % of its voxels (1st percentile below -50 HU) and a
    median far below bone. MR has no such scale: raw MR is non-negative (or slightly
    negative after processing), z-scored MR sits within a few units of 0, and a T1
    brain's median is thousands of scanner units. Those fail one test or the other.
    """
    s = np.asarray(_sample(arr), dtype=np.float32)
    p1, p50, p99 = (float(v) for v in np.percentile(s, [1, 50, 99]))
    if p1 > -50.0:
        return (f"values {p1:.0f} (1st percentile) .. {p99:.0f} (99th): fewer than 1 % of voxels below -50, so no "
                "air or fat: not CT in Hounsfield units (an MR, a normalised image, or CT saved without its "
                "rescale intercept?)")
    if p50 > 1500.0 or p99 > 4000.0:
        return (f"median {p50:.0f}, 99th percentile {p99:.0f}: far above CT's range (soft tissue 0-100 HU, bone "
                "up to about 2000 HU): not CT in Hounsfield units (an MR in scanner units?)")
    return None


def check_ct_values(path: str | Path, arr: np.ndarray) -> None:
    """Raise :class:`ModalityError` when ``arr`` cannot be CT in HU (see :func:`ct_value_problem`)."""
    problem = ct_value_problem(arr)
    if problem:
        raise ModalityError(path, problem)


def nifti_affine(path: Path, img) -> np.ndarray:
    """A NIfTI image's voxel-to-world affine: the sform if set, else the qform (nibabel's choice),
    else the pixdim fallback; checked for shear/singularity. The 3D and the 4D readers both use it."""
    hdr = img.header
    try:
        sform, scode = hdr.get_sform(coded=True)
        qform, qcode = hdr.get_qform(coded=True)
    except Exception as e:  # noqa: BLE001
        raise GeometryError(path, f"invalid qform/sform ({type(e).__name__}: {e})") from None
    if scode and scode > 0 and sform is not None:
        aff = np.asarray(sform, dtype=np.float64)
    elif qcode and qcode > 0 and qform is not None:
        aff = np.asarray(qform, dtype=np.float64)
    else:
        # Neither set (ANALYZE-style): nibabel's fallback is pixdim scaling.
        aff = np.asarray(img.affine, dtype=np.float64)
    check_affine(path, aff)
    return aff
