"""Coordinate encodings for implicit neural representations (INRs).

Inputs are coordinates already normalised to about ``[-1, 1]`` (the caller owns
the world-mm -> normalised mapping). Shapes: ``(N, D)`` in, ``(N, F)`` out.

- :class:`FourierFeatures`: random Gaussian Fourier features (Tancik et al.,
  NeurIPS 2020), ``[sin(2 pi B x), cos(2 pi B x)]``; ``sigma`` sets the bandwidth.
- :class:`SineLayer`: a SIREN layer (Sitzmann et al., NeurIPS 2020) with its
  initialisation, ``sin(omega (W x + b))``.
- :class:`HashGridEncoding`: multiresolution hash encoding (Mueller et al.,
  "Instant NGP", SIGGRAPH 2022) in plain torch: per level a table of
  ``2**log2_table`` feature vectors indexed by a spatial hash of the integer grid
  corner (dense indexing when the level's grid fits the table), trilinear
  interpolation of the 8 corners. No CUDA kernel: slower than tiny-cuda-nn but
  runs anywhere and is differentiable in the inputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_PRIMES = (1, 2654435761, 805459861)


class FourierFeatures(nn.Module):
    """``(N, D) -> (N, 2 * n_features)`` random Fourier features, frozen ``B ~ N(0, sigma^2)``."""

    def __init__(self, in_dim: int, n_features: int = 64, sigma: float = 2.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("B", torch.randn(in_dim, n_features, generator=g) * sigma)
        self.out_dim = 2 * n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = 2 * math.pi * x @ self.B.to(x.dtype)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class SineLayer(nn.Module):
    """SIREN layer ``sin(omega * (W x + b))`` with the SIREN init (first layer U(-1/n, 1/n))."""

    def __init__(self, in_dim: int, out_dim: int, omega: float = 30.0, first: bool = False):
        super().__init__()
        self.omega = omega
        self.linear = nn.Linear(in_dim, out_dim)
        bound = 1.0 / in_dim if first else math.sqrt(6.0 / in_dim) / omega
        nn.init.uniform_(self.linear.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega * self.linear(x))


class HashGridEncoding(nn.Module):
    """Multiresolution hash grid, 3D: ``(N, 3)`` in ``[-1, 1]`` -> ``(N, n_levels * n_feat)``.

    Args:
        n_levels: resolutions from ``base_res`` to ``max_res`` in a geometric series.
        n_feat: features per level.
        log2_table: entries per level's table (hash collisions above it).
        base_res, max_res: grid cells across ``[-1, 1]`` at the coarsest / finest level.
    """

    def __init__(self, n_levels: int = 8, n_feat: int = 2, log2_table: int = 15,
                 base_res: int = 8, max_res: int = 64):
        super().__init__()
        growth = math.exp((math.log(max_res) - math.log(base_res)) / max(n_levels - 1, 1))
        self.res = [int(round(base_res * growth**lvl)) for lvl in range(n_levels)]
        self.size = 2**log2_table
        self.n_feat = n_feat
        self.out_dim = n_levels * n_feat
        # Instant-NGP init: U(-1e-4, 1e-4), so the encoding starts near zero.
        self.tables = nn.Parameter(torch.empty(n_levels, self.size, n_feat).uniform_(-1e-4, 1e-4))
        corners = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
        self.register_buffer("corners", corners, persistent=False)  # (8, 3)

    def _index(self, ijk: torch.Tensor, res: int) -> torch.Tensor:
        if (res + 1) ** 3 <= self.size:  # dense: no collisions at coarse levels
            return (ijk[..., 0] * (res + 1) + ijk[..., 1]) * (res + 1) + ijk[..., 2]
        h = ijk[..., 0] * _PRIMES[0] ^ ijk[..., 1] * _PRIMES[1] ^ ijk[..., 2] * _PRIMES[2]
        return h % self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = ((x.float().clamp(-1, 1) + 1) / 2)  # (N, 3) in [0, 1]
        out = []
        for lvl, res in enumerate(self.res):
            pos = u * res
            base = pos.floor().long().clamp(max=res - 1)
            frac = pos - base  # (N, 3)
            ijk = base[:, None, :] + self.corners[None]  # (N, 8, 3)
            feats = self.tables[lvl][self._index(ijk, res)]  # (N, 8, F)
            c = self.corners[None].to(frac.dtype)
            w = torch.prod(c * frac[:, None, :] + (1 - c) * (1 - frac[:, None, :]), dim=-1)  # (N, 8)
            out.append((w[..., None] * feats).sum(1))
        return torch.cat(out, dim=-1)
