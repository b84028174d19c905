"""Similarity and regularisers on sampled points: pure functions on tensors.

Finite differences on sampled points (not autograd double-backward): four to ten
extra evaluations of the field per point are much cheaper on a CPU than second
derivatives through the MLP, and the step ``h`` (mm) sets the scale the
regulariser sees (about one voxel).
"""

from __future__ import annotations

import torch


def ncc(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Global normalised cross-correlation along the last axis: ``(..., N) -> (...)``, in [-1, 1]."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / torch.sqrt((a * a).sum(-1) * (b * b).sum(-1) + eps)


def similarity_loss(warped: torch.Tensor, target: torch.Tensor, kind: str = "ncc") -> torch.Tensor:
    """Mean over phases of ``1 - NCC`` or MSE; ``warped``/``target`` ``(P, N)``."""
    if kind == "ncc":
        return (1 - ncc(warped, target)).mean()
    if kind == "mse":
        return ((warped - target) ** 2).mean()
    raise ValueError(f"similarity must be ncc | mse, got {kind!r}")


def offsets(h: float, device=None) -> torch.Tensor:
    """The 10 finite-difference offsets ``(10, 3)`` mm used by :func:`fd_jacobian` and
    :func:`fd_bending`: 0; +h e_i (3); -h e_i (3); h (e_i + e_j), i < j (3)."""
    e = torch.eye(3, device=device) * h
    mixed = torch.stack([e[0] + e[1], e[0] + e[2], e[1] + e[2]])
    return torch.cat([torch.zeros(1, 3, device=device), e, -e, mixed])


def fd_jacobian(u: torch.Tensor, h: float) -> torch.Tensor:
    """det of ``I + du/dx`` from central differences. ``u`` ``(10, N, 3)`` mm at the
    :func:`offsets` -> ``(N,)``."""
    grad = (u[1:4] - u[4:7]) / (2 * h)  # (3 [j], N, 3 [i]) = du_i / dx_j
    J = grad.permute(1, 2, 0) + torch.eye(3, device=u.device, dtype=u.dtype)  # (N, i, j)
    return torch.linalg.det(J)


def fd_bending(u: torch.Tensor, h: float) -> torch.Tensor:
    """Bending energy ``sum_ij (d2u/dx_i dx_j)^2`` per point (mm^-2, u in mm)
    from :func:`offsets` samples ``(10, N, 3)`` -> ``(N,)``. Mixed terms count twice."""
    u0 = u[0]
    second = (u[1:4] - 2 * u0 + u[4:7]) / h**2  # (3, N, 3)
    pairs = ((0, 1, 3), (0, 2, 4), (1, 2, 5))  # (i, j, index of the i+j sample - 7)
    mixed = torch.stack([(u[7 + m - 3] - u[1 + i] - u[1 + j] + u0) / h**2 for i, j, m in pairs])
    return (second**2).sum((0, 2)) + 2 * (mixed**2).sum((0, 2))


def time_acceleration(u3: torch.Tensor, h: float) -> torch.Tensor:
    """Squared temporal second difference ``|u(t-h) - 2u(t) + u(t+h)|^2 / h^4`` per point from
    ``(3, N, 3)`` samples at ``t - h, t, t + h`` -> ``(N,)`` (zero for motion linear in t)."""
    return (((u3[0] - 2 * u3[1] + u3[2]) / h**2) ** 2).sum(-1)


def antisymmetric_energy(u_phi: torch.Tensor, u_mirror: torch.Tensor) -> torch.Tensor:
    """``|u(phi) - u(1 - phi)|^2 / 4`` per point (mm^2) from ``(N, 3)`` fields at a breathing phase and at
    its mirror phase: the squared odd part of the motion about end exhale (the inhale/exhale
    difference, hysteresis). Zero for a breathing path that is the same in and out."""
    return ((u_phi - u_mirror) ** 2).sum(-1) / 4


def jacobian_loss(det: torch.Tensor) -> torch.Tensor:
    """IDIR's ``mean |1 - det J|`` plus a hinge that punishes folding (det < 0.1)."""
    return (1 - det).abs().mean() + 10 * torch.relu(0.1 - det).mean()
