"""Dense displacement fields: unit conversion, warping, composition, SVF integration.

Shared by registration-based augmentation (segmentation) and ST-NeRP
(deformation), hence one floor down.

Convention (the same as MONAI's ``Warp`` and the data contract's ``ddf``): a
displacement field ``u`` is defined on the *fixed* grid and pulls the moving
image back::

    warped(x) = moving(x + u(x))

Fields are ``(B, 3, X, Y, Z)``. "mm" fields are RAS world millimetres (what
files store); "voxel" fields are in voxel-index units of the grid (what
``grid_sample`` needs). Both images share one grid (same affine): resample
first if they do not. For voxel index ``i`` and affine ``A`` (voxel -> mm),
``u_vox = A[:3, :3]^-1 u_mm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _linear_part(affine, like: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(affine, dtype=torch.float64)
    if a.ndim == 3:
        a = a[0]
    return a[:3, :3].to(device=like.device, dtype=torch.float32)


def ddf_mm_to_voxel(ddf_mm: torch.Tensor, affine) -> torch.Tensor:
    """``(B, 3, X, Y, Z)`` mm -> voxel units for a grid with voxel->mm ``affine`` (4, 4)."""
    inv = torch.linalg.inv(_linear_part(affine, ddf_mm).double()).float()
    return torch.einsum("ij,bj...->bi...", inv, ddf_mm)


def ddf_voxel_to_mm(ddf_vox: torch.Tensor, affine) -> torch.Tensor:
    """``(B, 3, X, Y, Z)`` voxel units -> mm."""
    return torch.einsum("ij,bj...->bi...", _linear_part(affine, ddf_vox), ddf_vox)


def identity_grid(shape: tuple[int, int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel indices ``(1, 3, X, Y, Z)``."""
    axes = [torch.arange(n, device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def _to_grid(pos_vox: torch.Tensor) -> torch.Tensor:
    """Voxel positions ``(B, 3, X, Y, Z)`` -> ``grid_sample`` grid ``(B, X, Y, Z, 3)``
    in [-1, 1] (align_corners=True), last axis ordered (z, y, x) as torch wants."""
    sizes = pos_vox.shape[2:]
    norm = [2.0 * pos_vox[:, i] / max(n - 1, 1) - 1.0 for i, n in enumerate(sizes)]
    return torch.stack(norm[::-1], dim=-1)


def warp(image: torch.Tensor, ddf_vox: torch.Tensor, mode: str = "bilinear",
         padding_mode: str = "border") -> torch.Tensor:
    """Pull ``image`` ``(B, C, X, Y, Z)`` back through ``ddf_vox`` ``(B, 3, X, Y, Z)``.

    ``mode="bilinear"`` is trilinear in 3D; use ``"nearest"`` for label maps.
    """
    pos = identity_grid(image.shape[2:], image.device, ddf_vox.dtype) + ddf_vox
    grid = _to_grid(pos).to(image.dtype)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def warp_mm(image: torch.Tensor, ddf_mm: torch.Tensor, affine, mode: str = "bilinear") -> torch.Tensor:
    """:func:`warp` with a field in mm on a grid with voxel->mm ``affine``."""
    return warp(image, ddf_mm_to_voxel(ddf_mm, affine), mode=mode)


def compose(u_first: torch.Tensor, u_second: torch.Tensor) -> torch.Tensor:
    """Field of "pull back through ``u_first``, then through ``u_second``", voxel units.

    ``warp(warp(img, u_first), u_second) == warp(img, compose(u_first, u_second))`` up to
    interpolation: ``w(x) = u_second(x) + u_first(x + u_second(x))``.
    """
    return u_second + warp(u_first, u_second, mode="bilinear")


def integrate_svf(velocity_vox: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """Scaling and squaring: the displacement of ``exp(v)`` for a stationary velocity
    field ``v`` (voxel units). Diffeomorphic for smooth ``v`` (Arsigny et al. 2006)."""
    u = velocity_vox / (2**steps)
    for _ in range(steps):
        u = compose(u, u)
    return u


def jacobian_determinant(ddf_vox: torch.Tensor) -> torch.Tensor:
    """det of the Jacobian of ``x -> x + u(x)`` by central differences, ``(B, X, Y, Z)``
    (one-sided at the border). ``<= 0`` marks folding.

    Pass a field in **voxel** units (:func:`ddf_mm_to_voxel`). The determinant is
    frame-independent (``det(I + A dU A^-1) = det(I + dU)``), so the voxel-unit value
    is the world-mm Jacobian for any affine ``A``. A mm field differentiated by voxel
    index is *not*: it equals the voxel one only for 1 mm isotropic spacing (the old
    docstring's "unit-free" claim was wrong for anisotropic or non-1 mm grids)."""
    grads = []
    for d in range(3):
        g = torch.gradient(ddf_vox, dim=2 + d)[0]  # d u / d x_d, (B, 3, X, Y, Z)
        grads.append(g)
    # J[i][j] = delta_ij + d u_i / d x_j
    J = torch.stack(grads, dim=2)  # (B, 3 (i), 3 (j), X, Y, Z)
    eye = torch.eye(3, device=ddf_vox.device, dtype=ddf_vox.dtype).view(1, 3, 3, 1, 1, 1)
    J = J + eye
    return torch.linalg.det(J.permute(0, 3, 4, 5, 1, 2))


def points_mm_to_voxel(points_mm: torch.Tensor, affine) -> torch.Tensor:
    """World mm points ``(..., 3)`` -> voxel indices ``(..., 3)`` for voxel->mm ``affine`` (4, 4)."""
    a = torch.as_tensor(affine, dtype=torch.float64)
    a = a[0] if a.ndim == 3 else a
    inv = torch.linalg.inv(a).to(device=points_mm.device, dtype=points_mm.dtype)
    return points_mm @ inv[:3, :3].T + inv[:3, 3]


def sample_points(volume: torch.Tensor, points_vox: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Trilinear samples of ``volume`` ``(B, C, X, Y, Z)`` at ``points_vox`` ``(B, N, 3)``
    (voxel indices) -> ``(B, C, N)``. Use it to move landmarks with a field:
    ``p + sample_points(u, p)``."""
    sizes = volume.shape[2:]
    norm = [2.0 * points_vox[..., i] / max(n - 1, 1) - 1.0 for i, n in enumerate(sizes)]
    grid = torch.stack(norm[::-1], dim=-1)[:, :, None, None, :]  # (B, N, 1, 1, 3)
    out = F.grid_sample(volume, grid.to(volume.dtype), mode=mode, padding_mode="border", align_corners=True)
    return out[:, :, :, 0, 0]
