"""medkit.nn.warp: pure-math tests with the arithmetic worked out in comments."""

import math

import pytest
import torch

from medkit.nn import warp as W


def _blob(shape=(16, 12, 10), c=(6.0, 6.0, 5.0), s=1.5):
    g = W.identity_grid(shape)[0]
    d2 = sum((g[i] - c[i]) ** 2 for i in range(3))
    return torch.exp(-d2 / (2 * s * s))[None, None]


def _com(img):  # centre of mass in voxel indices
    g = W.identity_grid(img.shape[2:])[0]
    return torch.stack([(g[i] * img[0, 0]).sum() / img[0, 0].sum() for i in range(3)])


def test_zero_field_is_identity():
    img = torch.rand(1, 2, 6, 5, 4)
    assert torch.allclose(W.warp(img, torch.zeros(1, 3, 6, 5, 4)), img, atol=1e-6)


def test_translation_2mm_moves_blob():
    # Spacing 2 mm along x, so +2 mm is +1 voxel. Pull-back: warped(x) = moving(x + 1 voxel),
    # so the blob at i=6 appears at i=5: the image moves by -2 mm (-1 voxel) along x.
    aff = torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0]))
    img = _blob()
    u = torch.zeros(1, 3, *img.shape[2:])
    u[:, 0] = 2.0
    out = W.warp_mm(img, u, aff)
    shift_vox = _com(out) - _com(img)
    assert shift_vox[0].item() == pytest.approx(-1.0, abs=0.02)
    assert shift_vox[1:].abs().max().item() < 1e-3
    assert (shift_vox[0] * 2.0).item() == pytest.approx(-2.0, abs=0.04)  # in mm


def test_mm_voxel_roundtrip_anisotropic_rotated():
    # A = R @ diag(0.7, 1.2, 3.0), R = 30 degrees about z. u_vox = A^-1 u_mm.
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    aff = torch.eye(4)
    aff[:3, :3] = R @ torch.diag(torch.tensor([0.7, 1.2, 3.0]))
    aff[:3, 3] = torch.tensor([5.0, -3.0, 10.0])
    u_mm = torch.zeros(1, 3, 2, 2, 2)
    u_mm[:, 0] = c * 0.7  # = A @ (1, 0, 0): one voxel along i
    u_mm[:, 1] = s * 0.7
    u_vox = W.ddf_mm_to_voxel(u_mm, aff)
    assert torch.allclose(u_vox[:, 0], torch.ones(1, 2, 2, 2), atol=1e-5)
    assert u_vox[:, 1:].abs().max() < 1e-5
    assert torch.allclose(W.ddf_voxel_to_mm(u_vox, aff), u_mm, atol=1e-5)
    p = torch.tensor([[1.0, 2.0, 3.0]])
    p_mm = p @ aff[:3, :3].T + aff[:3, 3]
    assert torch.allclose(W.points_mm_to_voxel(p_mm, aff), p, atol=1e-5)


def test_compose_two_translations():
    # (1, 0, 0) then (0, 2, 0) voxels: w(x) = u2 + u1(x + u2) = (1, 2, 0).
    sh = (8, 8, 8)
    u1, u2 = torch.zeros(1, 3, *sh), torch.zeros(1, 3, *sh)
    u1[:, 0], u2[:, 1] = 1.0, 2.0
    w = W.compose(u1, u2)
    assert torch.allclose(w[:, :, 2:-2, 2:-2, 2:-2][:, 0], torch.ones(1, 4, 4, 4))
    assert torch.allclose(w[:, :, 2:-2, 2:-2, 2:-2][:, 1], torch.full((1, 4, 4, 4), 2.0))


def test_integrate_constant_velocity_is_translation():
    # exp of a constant v is the translation by v (every squaring adds u + u).
    v = torch.zeros(1, 3, 10, 10, 10)
    v[:, 2] = 1.5
    u = W.integrate_svf(v, steps=6)
    assert torch.allclose(u[:, :, 3:-3, 3:-3, 3:-3], v[:, :, 3:-3, 3:-3, 3:-3], atol=1e-5)


def test_jacobian_identity_and_linear_map():
    sh = (6, 6, 6)
    assert torch.allclose(W.jacobian_determinant(torch.zeros(1, 3, *sh)), torch.ones(1, *sh))
    # u(x) = M x, J = I + M, det = (1.2)(0.9)(1.1) - 0.1 * 0.05 * 1.1... use triangular M:
    # M = [[0.2, 0.1, 0], [0, -0.1, 0.3], [0, 0, 0.1]] -> det(I + M) = 1.2 * 0.9 * 1.1 = 1.188
    M = torch.tensor([[0.2, 0.1, 0.0], [0.0, -0.1, 0.3], [0.0, 0.0, 0.1]])
    g = W.identity_grid(sh)
    u = torch.einsum("ij,bj...->bi...", M, g)
    assert torch.allclose(W.jacobian_determinant(u), torch.full((1, *sh), 1.188), atol=1e-5)


def test_sample_points_trilinear():
    vol = W.identity_grid((5, 4, 3)).float()  # value = coordinate
    p = torch.tensor([[[1.5, 2.25, 0.5]]])
    assert torch.allclose(W.sample_points(vol, p)[0, :, 0], p[0, 0], atol=1e-5)
