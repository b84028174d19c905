"""ST-NeRP networks (arXiv 2410.19283): a reference INR and a deformation INR.

Coordinates. Both networks take *world* points in mm (RAS) and times in the
sequence's unit (s for 4D CT, days for longitudinal CT). Internally a point is
mapped to the reference grid's voxel frame (inverse affine, so oblique DICOM
grids work) and then to ``[-1, 1]`` per axis (``x_n = 2 i / (n - 1) - 1``); a time
to ``t_n = (t - t_ref) / t_span`` with ``t_span = max |t_k - t_ref|`` over the
observed times. Displacements are returned in mm.

``u(x, t_ref) = 0`` exactly: the network output is multiplied by ``t_n``, which
is 0.0 in floating point when ``t == t_ref``. With ``svf=True`` the network is a
velocity ``v(x, t)`` (same factor) integrated by scaling and squaring on a coarse
grid, so each ``x -> x + u(x, t)`` is diffeomorphic for smooth ``v``; ``exp(0)`` is
the identity, so the reference stays exact.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nn import warp as W
from ..nn.encodings import FourierFeatures, HashGridEncoding, SineLayer


class GridFrame(nn.Module):
    """World mm <-> normalised ``[-1, 1]`` coordinates of one voxel grid.

    Args:
        affine: voxel -> mm ``(4, 4)`` of the reference grid.
        shape: ``(X, Y, Z)`` of that grid.
    """

    def __init__(self, affine, shape: tuple[int, int, int]):
        super().__init__()
        a = torch.as_tensor(affine, dtype=torch.float64)
        self.register_buffer("affine", a.float())
        self.register_buffer("inv", torch.linalg.inv(a).float())
        self.register_buffer("size", torch.tensor([max(n - 1, 1) for n in shape], dtype=torch.float32))
        self.shape = tuple(int(n) for n in shape)

    def mm_to_vox(self, x_mm: torch.Tensor) -> torch.Tensor:
        return x_mm @ self.inv[:3, :3].T.to(x_mm.dtype) + self.inv[:3, 3].to(x_mm.dtype)

    def vox_to_mm(self, x_vox: torch.Tensor) -> torch.Tensor:
        return x_vox @ self.affine[:3, :3].T.to(x_vox.dtype) + self.affine[:3, 3].to(x_vox.dtype)

    def normalise(self, x_mm: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.mm_to_vox(x_mm) / self.size - 1.0


def _mlp(in_dim: int, width: int, depth: int, out_dim: int, act=nn.SiLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), act()]
        d = width
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class ReferenceINR(nn.Module):
    """Prior embedding: world point ``(N, 3)`` mm -> reference intensity ``(N,)`` (window-scaled).

    ``encoding``: ``"hashgrid"`` (multiresolution hash grid + 2-layer MLP, fast to
    fit), ``"fourier"`` (Fourier features + MLP) or ``"siren"`` (SIREN, omega 30).
    The fitted weights are the prior embedding of the reference image.
    """

    def __init__(self, frame: GridFrame, encoding: str = "hashgrid", width: int = 64, seed: int = 0):
        super().__init__()
        self.frame = frame
        self.kind = encoding
        if encoding == "hashgrid":
            max_res = int(max(frame.shape))  # about one cell per voxel at the finest level
            self.enc = HashGridEncoding(n_levels=8, n_feat=2, log2_table=16, base_res=4, max_res=max_res)
            self.net = _mlp(self.enc.out_dim, width, 2, 1, nn.ReLU)
        elif encoding == "fourier":
            self.enc = FourierFeatures(3, 128, sigma=float(max(frame.shape)) / 8, seed=seed)
            self.net = _mlp(self.enc.out_dim, 2 * width, 3, 1, nn.ReLU)
        elif encoding == "siren":
            self.enc = nn.Identity()
            self.net = nn.Sequential(SineLayer(3, 2 * width, first=True), SineLayer(2 * width, 2 * width),
                                     SineLayer(2 * width, 2 * width), nn.Linear(2 * width, 1))
        else:
            raise ValueError(f"ref_encoding must be hashgrid | fourier | siren, got {encoding!r}")

    def forward(self, x_mm: torch.Tensor) -> torch.Tensor:
        return self.net(self.enc(self.frame.normalise(x_mm))).squeeze(-1)


class DeformationINR(nn.Module):
    """``(x, t) -> u(x, t)`` mm: ``x`` ``(N, 3)`` world mm, ``t`` ``(N,)`` -> ``(N, 3)``.

    Pull-back convention of :mod:`medkit.nn.warp`: ``I_t(x) ~= I_ref(x + u(x, t))``.
    With ``svf=True`` use :meth:`displacement` (grid integration); :meth:`forward`
    then returns the velocity.
    """

    def __init__(self, frame: GridFrame, t_ref: float, t_span: float, *, fourier_features: int = 48,
                 fourier_sigma: float = 1.5, time_harmonics: int = 1, width: int = 128, depth: int = 3,
                 svf: bool = False, svf_grid_factor: int = 4, svf_steps: int = 6, seed: int = 0):
        super().__init__()
        self.frame = frame
        self.t_ref, self.t_span = float(t_ref), float(t_span) if t_span > 0 else 1.0
        self.enc = FourierFeatures(3, fourier_features, sigma=fourier_sigma, seed=seed)
        self.harmonics = time_harmonics
        in_dim = self.enc.out_dim + 3 + 1 + 2 * time_harmonics
        self.net = _mlp(in_dim, width, depth, 3)
        # Start at zero motion: the last layer is small, so early warps are near identity.
        nn.init.normal_(self.net[-1].weight, std=1e-3)
        nn.init.zeros_(self.net[-1].bias)
        # Output scale: the network's unit is one voxel-diagonal of motion per unit t_n.
        self.register_buffer("scale_mm", torch.tensor(10.0))
        self.svf, self.svf_grid_factor, self.svf_steps = svf, svf_grid_factor, svf_steps

    def time_norm(self, t: torch.Tensor) -> torch.Tensor:
        return (t - self.t_ref) / self.t_span

    def forward(self, x_mm: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xn = self.frame.normalise(x_mm)
        tn = self.time_norm(t.to(x_mm.dtype))[:, None]
        k = torch.arange(1, self.harmonics + 1, device=x_mm.device, dtype=x_mm.dtype)
        feats = [self.enc(xn), xn, tn, torch.sin(math.pi * k * tn), torch.cos(math.pi * k * tn) - 1]
        out = self.net(torch.cat(feats, dim=-1)).float()
        return tn.float() * out * self.scale_mm  # exactly 0 at t_ref

    # ------------------------------------------------------------------ SVF
    def coarse_shape(self) -> tuple[int, int, int]:
        return tuple(max(2, math.ceil(n / self.svf_grid_factor)) for n in self.frame.shape)

    def _coarse_affine(self, shape_c) -> torch.Tensor:
        # coarse voxel j <-> fine voxel i = j (n - 1) / (m - 1): scale the linear part.
        s = torch.tensor([(n - 1) / max(m - 1, 1) for n, m in zip(self.frame.shape, shape_c)],
                         dtype=torch.float32, device=self.frame.affine.device)
        a = self.frame.affine.clone()
        a[:3, :3] = a[:3, :3] * s[None, :]
        return a

    def svf_field_vox(self, t: float) -> torch.Tensor:
        """Integrated displacement on the coarse grid, coarse-voxel units ``(1, 3, x, y, z)``."""
        shape_c = self.coarse_shape()
        aff_c = self._coarse_affine(shape_c)
        dev = self.frame.affine.device
        grid = W.identity_grid(shape_c, dev)[0].reshape(3, -1).T  # (M, 3) coarse voxel
        x_mm = grid @ aff_c[:3, :3].T + aff_c[:3, 3]
        v = self.forward(x_mm, torch.full((len(x_mm),), float(t), device=dev))  # (M, 3) mm
        v = v.T.reshape(1, 3, *shape_c)
        return W.integrate_svf(W.ddf_mm_to_voxel(v, aff_c), self.svf_steps), aff_c

    def displacement(self, x_mm: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``u(x, t)`` mm ``(N, 3)`` for any mode (direct, or SVF integrated per distinct ``t``)."""
        if not self.svf:
            return self.forward(x_mm, t)
        out = torch.empty_like(x_mm, dtype=torch.float32)
        for tv in torch.unique(t):
            sel = t == tv
            u_c, aff_c = self.svf_field_vox(float(tv))
            u_mm_c = W.ddf_voxel_to_mm(u_c, aff_c)
            pts = W.points_mm_to_voxel(x_mm[sel], aff_c)[None]
            out[sel] = W.sample_points(u_mm_c, pts)[0].T
        return out
