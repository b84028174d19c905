"""Geometric primitives shared by the synthetic phantoms.

Everything works on world coordinates in millimetres, as arrays of shape
``(X, Y, Z)`` per axis (from :func:`grid_mm`), so a phantom is described in mm
and rendered at any resolution. Volumes are rendered on a fine grid and then
block-averaged (:func:`downsample_mean`) to the output spacing, which gives real
partial-volume effects at boundaries, as a CT's finite voxel does.

All randomness comes from a ``numpy.random.Generator`` passed in: same seed,
same phantom.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def grid_mm(shape: tuple[int, int, int], spacing: tuple[float, float, float],
            origin: tuple[float, float, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World coordinates (mm) of voxel centres, each of shape ``shape``.

    Default ``origin`` centres the grid on (0, 0, 0). Axes are RAS: x to the
    patient's left, y posterior->anterior, z inferior->superior.
    """
    if origin is None:
        origin = tuple(-(n - 1) * s / 2 for n, s in zip(shape, spacing))
    axes = [o + np.arange(n, dtype=np.float32) * s for n, s, o in zip(shape, spacing, origin)]
    return np.meshgrid(*axes, indexing="ij")


def grid_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float],
                origin: tuple[float, float, float] | None = None) -> np.ndarray:
    """The RAS voxel->mm affine matching :func:`grid_mm` with the same arguments."""
    if origin is None:
        origin = tuple(-(n - 1) * s / 2 for n, s in zip(shape, spacing))
    aff = np.eye(4)
    aff[:3, :3] = np.diag(spacing)
    aff[:3, 3] = origin
    return aff


def rotation_matrix(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation about x, then y, then z (degrees), as a (3, 3) matrix."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def ellipsoid_level(coords, center, radii, rotation: np.ndarray | None = None) -> np.ndarray:
    """Normalised ellipsoid radius: < 1 inside, 1 on the surface, > 1 outside.

    Args:
        coords: ``(x, y, z)`` world-mm arrays.
        center: (3,) mm. radii: (3,) semi-axes in mm, along the rotated axes.
        rotation: (3, 3) matrix whose columns are the ellipsoid's axes in world.
    """
    d = [c - float(m) for c, m in zip(coords, center)]
    if rotation is not None:
        r = np.asarray(rotation, dtype=np.float32)
        d = [r[0, i] * d[0] + r[1, i] * d[1] + r[2, i] * d[2] for i in range(3)]
    return np.sqrt(sum((di / float(ri)) ** 2 for di, ri in zip(d, radii)))


def distance_to_polyline(coords, points: np.ndarray) -> np.ndarray:
    """Distance (mm) from every voxel centre to a polyline through ``points`` ``(N, 3)`` mm."""
    x, y, z = coords
    best = np.full(x.shape, np.inf, dtype=np.float32)
    pts = np.asarray(points, dtype=np.float32)
    for a, b in zip(pts[:-1], pts[1:]):
        ab = b - a
        denom = float(ab @ ab) or 1e-12
        t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / denom
        t = np.clip(t, 0.0, 1.0)
        d2 = (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2
        np.minimum(best, np.sqrt(d2), out=best)
    return best


def smooth_noise(shape: tuple[int, ...], sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-smoothed white noise, rescaled to unit standard deviation."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    return n / (n.std() + 1e-8)


def smooth_displacement(shape: tuple[int, int, int], sigma_vox: float, amplitude_mm: float,
                        rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement field ``(3, X, Y, Z)`` in mm, each component
    with standard deviation ``amplitude_mm``; keep ``amplitude_mm`` well below
    ``sigma_vox`` x spacing so the map stays invertible (no folding)."""
    return np.stack([smooth_noise(shape, sigma_vox, rng) * amplitude_mm for _ in range(3)])


def warp_points_field(coords, field_mm: np.ndarray, spacing, origin) -> tuple[np.ndarray, ...]:
    """Sample a displacement field ``(3, X, Y, Z)`` (on the grid given by spacing,
    origin) at world points ``coords`` (linear), returning coords + field."""
    idx = [(c - o) / s for c, o, s in zip(coords, origin, spacing)]
    return tuple(
        c + ndimage.map_coordinates(field_mm[i], idx, order=1, mode="nearest").astype(np.float32)
        for i, c in enumerate(coords)
    )


def downsample_mean(arr: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Block-average by integer ``factors`` (partial-volume rendering); trailing
    voxels that do not fill a block are dropped."""
    fx, fy, fz = factors
    X, Y, Z = (arr.shape[0] // fx) * fx, (arr.shape[1] // fy) * fy, (arr.shape[2] // fz) * fz
    a = arr[:X, :Y, :Z].reshape(X // fx, fx, Y // fy, fy, Z // fz, fz)
    return a.mean(axis=(1, 3, 5))


def downsample_labels(labels: np.ndarray, factors: tuple[int, int, int], n_labels: int) -> np.ndarray:
    """Majority vote of integer labels in each block (the label of most of the voxel)."""
    votes = np.stack([downsample_mean((labels == k).astype(np.float32), factors) for k in range(n_labels)])
    return votes.argmax(0).astype(np.uint8)
