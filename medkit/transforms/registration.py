"""Pairwise registration in torch (CPU or GPU): affine, then a smooth free-form field.

Used to build the fields of registration-based augmentation (LiverFormer,
arXiv 2411.02815; Zhao et al. CVPR 2019). The paper does not say which
registration it used; this is the standard two-stage choice:

1. Affine: 12 parameters about the grid centre, initialised by matching the
   intensity centres of mass, Adam on the mean squared difference of the
   (windowed, [0, 1]) images.
2. Deformable: a displacement on a coarse control grid (every
   ``control_spacing_vox`` voxels) upsampled trilinearly to the full grid (a
   linear free-form deformation, a cheap stand-in for SimpleITK's cubic
   B-spline), optimised for MSE + ``smooth_weight`` x diffusion energy.

Both images must lie on one grid (same shape and voxel->mm ``affine``):
resample them first. The result is a displacement ``u`` in RAS mm on the fixed
grid with ``warped(x) = moving(x + u(x))`` (:mod:`medkit.nn.warp`), so
``warp_mm(moving, u)`` looks like ``fixed``; with the atlas as ``moving`` the
same field carries the atlas labels onto the fixed scan's anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..nn.warp import ddf_voxel_to_mm, identity_grid, jacobian_determinant, warp


@dataclass
class RegistrationConfig:
    """Knobs of :func:`register_pair`."""

    affine_iters: int = 50
    deform_iters: int = 60
    affine_lr: float = 0.01
    deform_lr: float = 0.5  # control-point displacement, voxels per Adam step (scale)
    control_spacing_vox: int = 3
    smooth_weight: float = 0.5  # diffusion regulariser on the working-resolution field (voxel units)
    downsample: int = 2  # register on a grid this many times coarser, then upsample the field (speed)
    device: str = "auto"


def _com(img: torch.Tensor) -> torch.Tensor:
    """Intensity centre of mass ``(3,)`` in voxels of ``(1, 1, X, Y, Z)``."""
    grid = identity_grid(img.shape[2:], img.device)[0]
    w = img[0, 0].clamp_min(0)
    return (grid * w).flatten(1).sum(1) / w.sum().clamp_min(1e-6)


def affine_field(A: torch.Tensor, t: torch.Tensor, shape, center: torch.Tensor,
                 pre: torch.Tensor | None = None) -> torch.Tensor:
    """Voxel displacement ``(1, 3, X, Y, Z)`` of ``x -> A (x + pre(x) - c) + c + t``.

    ``A`` (3, 3), ``t`` (3,), ``center`` (3,) voxels; ``pre`` an optional
    displacement applied before the affine (the deformable stage)."""
    x = identity_grid(shape, A.device)
    p = x if pre is None else x + pre
    c = center.view(1, 3, 1, 1, 1)
    pos = torch.einsum("ij,bj...->bi...", A, p - c) + c + t.view(1, 3, 1, 1, 1)
    return pos - x


def _diffusion(u: torch.Tensor) -> torch.Tensor:
    return sum(((u.diff(dim=d)) ** 2).mean() for d in (2, 3, 4))


def register_pair(fixed: torch.Tensor, moving: torch.Tensor, affine, cfg: RegistrationConfig | None = None):
    """Register ``moving`` onto ``fixed`` (both ``(1, X, Y, Z)``, intensities in [0, 1]).

    Args:
        fixed, moving: channel-first volumes on one grid.
        affine: the grid's voxel->mm matrix (4, 4) (only the linear part matters).
        cfg: :class:`RegistrationConfig`.

    Returns:
        ``(ddf_mm, info)``: the displacement ``(3, X, Y, Z)`` in mm (float32, CPU) and
        a dict with the MSE before/after each stage and the Jacobian statistics.
    """
    from ..runs import pick_device

    cfg = cfg or RegistrationConfig()
    if tuple(fixed.shape) != tuple(moving.shape):
        raise ValueError(f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} must share one grid")
    dev = pick_device(cfg.device)
    f_full = torch.as_tensor(fixed).float().to(dev)[None]
    m_full = torch.as_tensor(moving).float().to(dev)[None]
    full_shape = tuple(f_full.shape[2:])
    k = max(1, int(cfg.downsample))
    shape = tuple(max(2, -(-n // k)) for n in full_shape)
    # Smooth, then resample with align_corners=True so voxel i of the coarse grid sits
    # at i * (n_full - 1) / (n_coarse - 1) of the full one (used to scale the field back).
    f = F.interpolate(F.avg_pool3d(f_full, 3, 1, 1, count_include_pad=False), size=shape, mode="trilinear",
                      align_corners=True) if k > 1 else f_full
    m = F.interpolate(F.avg_pool3d(m_full, 3, 1, 1, count_include_pad=False), size=shape, mode="trilinear",
                      align_corners=True) if k > 1 else m_full
    center = (torch.tensor(shape, dtype=torch.float32, device=dev) - 1) / 2
    info: dict = {"mse_initial": float(F.mse_loss(m, f))}

    # Stage 1: affine, started from the centre-of-mass shift (moving position = fixed + t).
    dA = torch.zeros(3, 3, device=dev, requires_grad=True)
    t = (_com(m) - _com(f)).detach().clone().requires_grad_(True)
    scale_t = float(max(shape)) / 2  # so one lr suits both the matrix and the shift
    opt = torch.optim.Adam([{"params": [dA]}, {"params": [t], "lr": cfg.affine_lr * scale_t}], lr=cfg.affine_lr)
    eye = torch.eye(3, device=dev)
    for _ in range(cfg.affine_iters):
        opt.zero_grad()
        u = affine_field(eye + dA, t, shape, center)
        loss = F.mse_loss(warp(m, u), f)
        loss.backward()
        opt.step()
    A, t = (eye + dA).detach(), t.detach()
    info["mse_affine"] = float(F.mse_loss(warp(m, affine_field(A, t, shape, center)), f))

    # Stage 2: free-form displacement on a control grid, composed before the affine.
    cs = max(1, int(cfg.control_spacing_vox))
    coarse = [max(2, -(-int(n) // cs) + 1) for n in shape]
    ctrl = torch.zeros(1, 3, *coarse, device=dev, requires_grad=True)
    opt = torch.optim.Adam([ctrl], lr=cfg.deform_lr * 0.1)
    for _ in range(cfg.deform_iters):
        opt.zero_grad()
        d = F.interpolate(ctrl * 10.0, size=tuple(shape), mode="trilinear", align_corners=True)
        u = affine_field(A, t, shape, center, pre=d)
        loss = F.mse_loss(warp(m, u), f) + cfg.smooth_weight * _diffusion(d)
        loss.backward()
        opt.step()
    with torch.no_grad():
        d = F.interpolate(ctrl * 10.0, size=tuple(shape), mode="trilinear", align_corners=True)
        u = affine_field(A, t, shape, center, pre=d)
        if k > 1:  # back to the full grid: resample, and rescale voxel units per axis
            ratio = torch.tensor([(nf - 1) / max(nc - 1, 1) for nf, nc in zip(full_shape, shape)], device=dev)
            u = F.interpolate(u, size=full_shape, mode="trilinear", align_corners=True) * ratio.view(1, 3, 1, 1, 1)
        info["mse_deformable"] = float(F.mse_loss(warp(m_full, u), f_full))
        jac = jacobian_determinant(u)
        info["jacobian_min"] = float(jac.min())
        info["folding_fraction"] = float((jac <= 0).float().mean())
        info["affine_matrix_vox"] = A.cpu().tolist()
        info["affine_shift_vox"] = t.cpu().tolist()
        ddf_mm = ddf_voxel_to_mm(u, affine)[0].float().cpu()
    return ddf_mm, info
