"""Pairwise registration in torch (CPU or GPU): affine, then a smooth free-form field.

Used to build the fields of registration-based augmentation (LiverFormer,
arXiv 2411.02815; Zhao et al. CVPR 2019). The paper does not say which
registration it used; this is the standard two-stage choice:

1. Affine: 12 parameters about the grid centre, initialised by matching the
   intensity centres of mass, Adam on the mean squared difference of the
   (windowed, [0, 1]) images, on the coarsest level.
2. Deformable, coarse to fine (``downsample``, then halving down to the full grid):
   at each level a displacement on a control grid (every ``control_spacing_vox``
   voxels of that level) upsampled trilinearly (a linear free-form deformation, a
   cheap stand-in for SimpleITK's cubic B-spline) is composed before the previous
   levels' transform and optimised for MSE + ``smooth_weight`` x diffusion energy.
   With ``moving_mask`` (the atlas liver), the MSE inside the warped mask (dilated by
   ``mask_margin_vox``) is added with weight ``mask_weight``: the whole body keeps
   the global alignment, the liver term pulls its vessels (which carry the Couinaud
   boundaries) into line instead of letting fat and muscle dominate the sum.

Registration quality (measured on 6 mm synthetic phantoms, 3 atlases x 4 targets, atlas
labels warped onto the target's, mean Couinaud Dice I-VIII): identity 0.52; the old
single-level setting (``multilevel=False``, 60 deformable iterations, ``smooth_weight=0.5``)
0.56, which is why it looked as if registration added no anatomy; the defaults (two
levels, 100 iterations each, ``smooth_weight=0.1``, liver mask) 0.69, liver Dice 0.91 vs 0.80.

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

from ..nn.warp import compose, ddf_voxel_to_mm, identity_grid, jacobian_determinant, warp


@dataclass
class RegistrationConfig:
    """Knobs of :func:`register_pair`."""

    affine_iters: int = 100
    deform_iters: int = 100  # per level
    affine_lr: float = 0.01
    deform_lr: float = 0.5  # control-point displacement, voxels per Adam step (scale)
    control_spacing_vox: int = 3
    smooth_weight: float = 0.1  # diffusion regulariser on the working-resolution field (voxel units)
    downsample: int = 2  # the coarsest level (affine + first deformable pass) is this many times coarser
    multilevel: bool = True  # then refine at half that factor, and so on down to the full grid
    mask_weight: float = 1.0  # weight of the masked (liver) MSE when a moving mask is given
    mask_margin_vox: int = 2  # dilation of the moving mask, voxels of the full grid
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


def _level(img: torch.Tensor, shape) -> torch.Tensor:
    """``img`` smoothed (3^3 box) and resampled to ``shape`` (align_corners: voxel ``i`` of the
    level sits at ``i * (n_full - 1) / (n_level - 1)`` of the full grid)."""
    if tuple(img.shape[2:]) == tuple(shape):
        return img
    return F.interpolate(F.avg_pool3d(img, 3, 1, 1, count_include_pad=False), size=shape, mode="trilinear",
                         align_corners=True)


def _resize_field(u: torch.Tensor, shape) -> torch.Tensor:
    """A voxel-unit displacement resampled to ``shape`` and rescaled per axis (align_corners)."""
    if tuple(u.shape[2:]) == tuple(shape):
        return u
    ratio = torch.tensor([(n1 - 1) / max(n0 - 1, 1) for n1, n0 in zip(shape, u.shape[2:])], device=u.device)
    return F.interpolate(u, size=tuple(shape), mode="trilinear", align_corners=True) * ratio.view(1, 3, 1, 1, 1)


def _masked_mse(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    return ((a - b) ** 2 * w).sum() / w.sum().clamp_min(1.0) if w is not None else a.new_zeros(())


def register_pair(fixed: torch.Tensor, moving: torch.Tensor, affine, cfg: RegistrationConfig | None = None,
                  moving_mask: torch.Tensor | None = None):
    """Register ``moving`` onto ``fixed`` (both ``(1, X, Y, Z)``, intensities in [0, 1]).

    Args:
        fixed, moving: channel-first volumes on one grid.
        affine: the grid's voxel->mm matrix (4, 4) (only the linear part matters).
        cfg: :class:`RegistrationConfig`.
        moving_mask: optional ``(1, X, Y, Z)`` region of ``moving`` whose alignment matters
            most (the atlas liver, ``label > 0``); see the module docstring.

    Returns:
        ``(ddf_mm, info)``: the displacement ``(3, X, Y, Z)`` in mm (float32, CPU) and
        a dict with the MSE of the unregistered, affine-only and final images, all on
        the full grid (``mse_initial``, ``mse_affine``, ``mse_deformable``), and the
        Jacobian statistics of the final field.
    """
    from ..runs import pick_device

    cfg = cfg or RegistrationConfig()
    if tuple(fixed.shape) != tuple(moving.shape):
        raise ValueError(f"fixed {tuple(fixed.shape)} and moving {tuple(moving.shape)} must share one grid")
    dev = pick_device(cfg.device)
    f_full = torch.as_tensor(fixed).float().to(dev)[None]
    m_full = torch.as_tensor(moving).float().to(dev)[None]
    full_shape = tuple(f_full.shape[2:])
    levels = [max(1, int(cfg.downsample))]
    while cfg.multilevel and levels[-1] > 1:
        levels.append(max(1, levels[-1] // 2))
    shapes = [tuple(max(2, -(-n // k)) for n in full_shape) for k in levels]
    mask_full = None
    if moving_mask is not None:
        mask_full = (torch.as_tensor(moving_mask).float().to(dev)[None] > 0).float()
        r = int(cfg.mask_margin_vox)
        if r > 0:
            mask_full = F.max_pool3d(mask_full, 2 * r + 1, 1, r)

    # Stage 1: affine on the coarsest level, started from the centre-of-mass shift.
    shape = shapes[0]
    f, m = _level(f_full, shape), _level(m_full, shape)
    center = (torch.tensor(shape, dtype=torch.float32, device=dev) - 1) / 2
    dA = torch.zeros(3, 3, device=dev, requires_grad=True)
    t = (_com(m) - _com(f)).detach().clone().requires_grad_(True)
    scale_t = float(max(shape)) / 2  # so one lr suits both the matrix and the shift
    opt = torch.optim.Adam([{"params": [dA]}, {"params": [t], "lr": cfg.affine_lr * scale_t}], lr=cfg.affine_lr)
    eye = torch.eye(3, device=dev)
    for _ in range(cfg.affine_iters):
        opt.zero_grad()
        loss = F.mse_loss(warp(m, affine_field(eye + dA, t, shape, center)), f)
        loss.backward()
        opt.step()
    with torch.no_grad():
        u = affine_field((eye + dA).detach(), t.detach(), shape, center)  # the transform so far, this level
    info: dict = {"mse_initial": float(F.mse_loss(m_full, f_full)),
                  "mse_affine": float(F.mse_loss(warp(m_full, _resize_field(u, full_shape)), f_full)),
                  "affine_matrix_vox": (eye + dA).detach().cpu().tolist(), "affine_shift_vox": t.detach().cpu().tolist(),
                  "levels": levels}

    # Stage 2: coarse to fine free-form displacements, each composed before the transform so far.
    cs = max(1, int(cfg.control_spacing_vox))
    for shape in shapes:
        f, m = _level(f_full, shape), _level(m_full, shape)
        w = None if mask_full is None else (_level(mask_full, shape) > 0.5).float()
        u_prev = _resize_field(u, shape).detach()
        coarse = [max(2, -(-int(n) // cs) + 1) for n in shape]
        ctrl = torch.zeros(1, 3, *coarse, device=dev, requires_grad=True)
        opt = torch.optim.Adam([ctrl], lr=cfg.deform_lr * 0.1)
        for _ in range(cfg.deform_iters):
            opt.zero_grad()
            d = F.interpolate(ctrl * 10.0, size=tuple(shape), mode="trilinear", align_corners=True)
            uu = compose(u_prev, d)
            moved = warp(m, uu)
            loss = F.mse_loss(moved, f) + cfg.smooth_weight * _diffusion(d)
            if w is not None and cfg.mask_weight > 0:
                loss = loss + cfg.mask_weight * _masked_mse(moved, f, warp(w, uu))
            loss.backward()
            opt.step()
        with torch.no_grad():
            d = F.interpolate(ctrl * 10.0, size=tuple(shape), mode="trilinear", align_corners=True)
            u = compose(u_prev, d)
    with torch.no_grad():
        u = _resize_field(u, full_shape)
        info["mse_deformable"] = float(F.mse_loss(warp(m_full, u), f_full))
        jac = jacobian_determinant(u)
        info["jacobian_min"] = float(jac.min())
        info["folding_fraction"] = float((jac <= 0).float().mean())
        ddf_mm = ddf_voxel_to_mm(u, affine)[0].float().cpu()
    return ddf_mm, info
