"""ST-NeRP networks (arXiv 2410.19283): a reference INR and a deformation INR.

Coordinates. Both networks take *world* points in mm (RAS) and times in the
sequence's unit (s for 4D CT, days for longitudinal CT). Internally a point is
mapped to the reference grid's voxel frame (inverse affine, so oblique DICOM
grids work) and then to ``[-1, 1]`` per axis (``x_n = 2 i / (n - 1) - 1``); a time
to ``t_n = (t - t_ref) / t_span`` with ``t_span = max |t_k - t_ref|`` over the
observed times. Displacements are returned in mm.

Time. Two encodings (``DeformConfig.time_mode``):

- ``span`` (longitudinal series, or any series that is not one cycle):
  ``t_n = (t - t_ref) / t_span`` and ``u = t_n * f(x, t_n, sin(pi k t_n), cos(pi k t_n) - 1)``.
- ``periodic`` (a phase-sorted 4D CT: one breathing cycle of period ``T``): the breathing
  phase ``phi = (t - t_ref) / T`` (mod 1) and
  ``u = sum_k sin(2 pi k phi) A_k(x) + (1 - cos(2 pi k phi)) B_k(x)``, k = 1..K: a
  trigonometric polynomial in the phase whose coefficient fields the MLP outputs. Phases
  3 and 7 of a symmetric cycle are the same breathing state to the model, the motion is
  periodic, and unseen phases are interpolated with the smoothest K-harmonic curve.
  (``time_in_net`` also feeds ``sin/cos(2 pi k phi)`` to the MLP: non-separable;
  ``time_symmetric`` keeps the cosine terms only: the same path on inhale and exhale, a
  prior that lets 3 imaged phases pin the curve where 2K free coefficients cannot; the soft
  version is the fit's ``time_symmetry_weight`` on the odd part.)
  Each imaged frame of a periodic series also learns its own breathing-phase offset and
  log-amplitude (``frame_times``): a sorted 4D CT takes every phase bin from another
  breathing cycle, so no single smooth cycle passes through all of them. Unseen times use
  the mean cycle (offset 0, amplitude 1); the fit's prior keeps the offsets small.

``u(x, t_ref) = 0`` exactly in both: every time basis function is 0.0 in floating point at
``t == t_ref``. With ``svf=True`` the network is a velocity ``v(x, t)`` (same form)
integrated by scaling and squaring on a coarse grid, so each ``x -> x + u(x, t)`` is
diffeomorphic for smooth ``v``; ``exp(0)`` is the identity, so the reference stays exact.

Space. Random Fourier features of the normalised point (Tancik et al. 2020) plus the
point itself. With coarse-to-fine (``set_progress``), feature ``j`` of frequency norm
``|B_j|`` is faded in once training progress passes ``|B_j| / max |B|`` (BARF-style
windowing, Lin et al. ICCV 2021): smooth motion first, detail after, so the fit does
not lock into a high-frequency local minimum early.
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
                 svf: bool = False, svf_grid_factor: int = 4, svf_steps: int = 6, seed: int = 0,
                 period: float | None = None, time_in_net: bool = False, time_symmetric: bool = False,
                 frame_times: list[float] | None = None):
        super().__init__()
        self.frame = frame
        self.t_ref, self.t_span = float(t_ref), float(t_span) if t_span > 0 else 1.0
        self.period = float(period) if period else None
        self.time_in_net = bool(time_in_net)
        self.time_symmetric = bool(time_symmetric) and self.period is not None
        self.enc = FourierFeatures(3, fourier_features, sigma=fourier_sigma, seed=seed)
        # coarse-to-fine window over the features, 1 = all on (set_progress changes it)
        norms = self.enc.B.norm(dim=0)
        self.register_buffer("freq_rank", norms / norms.max().clamp_min(1e-12), persistent=False)
        self.register_buffer("window", torch.ones(fourier_features))
        self.harmonics = time_harmonics
        if self.period is None:  # span: u = t_n * f(x, time features)
            n_basis, t_dim = 1, 1 + 2 * time_harmonics
        else:  # periodic: u = sum over 2K basis functions of the phase (K cosine ones if symmetric)
            per = 1 if self.time_symmetric else 2
            n_basis, t_dim = per * time_harmonics, (per * time_harmonics if time_in_net else 0)
        self.n_basis = n_basis
        self.net = _mlp(self.enc.out_dim + 3 + t_dim, width, depth, 3 * n_basis)
        # Start at zero motion: the last layer is small, so early warps are near identity.
        nn.init.normal_(self.net[-1].weight, std=1e-3)
        nn.init.zeros_(self.net[-1].bias)
        # Output scale: the network's unit is one voxel-diagonal of motion per unit t_n.
        self.register_buffer("scale_mm", torch.tensor(10.0))
        self.svf, self.svf_grid_factor, self.svf_steps = svf, svf_grid_factor, svf_steps
        # Per-image breathing surrogate (periodic only): each imaged frame's own phase offset and
        # log-amplitude, learned; any other time gets (0, 0), the mean cycle.
        ft = [float(t) for t in (frame_times or [])] if self.period is not None else []
        self.register_buffer("frame_times", torch.tensor(ft, dtype=torch.float32))
        self.frame_dphase = nn.Parameter(torch.zeros(len(ft)))
        self.frame_logamp = nn.Parameter(torch.zeros(len(ft)))

    def frame_latents(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(phase offset, log-amplitude)`` ``(N,)`` at times ``t``: an imaged frame's own where ``t``
        is its time (to 1e-5 of the period), 0 elsewhere."""
        zero = torch.zeros_like(t, dtype=torch.float32)
        if len(self.frame_times) == 0:
            return zero, zero
        d = (t.float()[:, None] - self.frame_times[None]).abs()
        dmin, idx = d.min(1)
        hit = dmin <= 1e-5 * self.period
        return (torch.where(hit, self.frame_dphase[idx], zero), torch.where(hit, self.frame_logamp[idx], zero))

    def time_norm(self, t: torch.Tensor, dphase: torch.Tensor | None = None) -> torch.Tensor:
        """Span mode: ``(t - t_ref) / t_span``; periodic: the breathing phase in ``[0, 1)`` (plus an
        imaged frame's phase offset ``dphase``, ``(N,)``)."""
        if self.period is None:
            return (t - self.t_ref) / self.t_span
        phi = (t - self.t_ref) / self.period
        return torch.remainder(phi if dphase is None else phi + dphase.to(phi.dtype), 1.0)

    def set_progress(self, p: float, ramp: float = 0.1) -> None:
        """Coarse-to-fine: at training progress ``p`` (0..1 of the warm-up), features whose relative
        frequency is below ``p`` are fully on, fading to off over ``ramp`` above it."""
        self.window.copy_(((p - self.freq_rank) / ramp + 1.0).clamp(0.0, 1.0))

    def time_basis(self, t: torch.Tensor, dtype, dphase: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(basis (N, B), network time features)`` at times ``t`` ``(N,)``; every basis function is
        exactly 0 at ``t_ref`` (which is never an imaged frame with a latent)."""
        tn = self.time_norm(t.to(dtype), dphase)[:, None]
        k = torch.arange(1, self.harmonics + 1, device=t.device, dtype=dtype)
        if self.period is None:
            return tn, [tn, torch.sin(math.pi * k * tn), torch.cos(math.pi * k * tn) - 1]
        s, c = torch.sin(2 * math.pi * k * tn), torch.cos(2 * math.pi * k * tn)
        if self.time_symmetric:  # the same path in and out: u(phi) = u(1 - phi)
            return 1 - c, ([c] if self.time_in_net else [])
        # at phase 0: sin = 0.0 and 1 - cos = 0.0 exactly
        return torch.cat([s, 1 - c], dim=-1), ([s, c] if self.time_in_net else [])

    def forward(self, x_mm: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        xn = self.frame.normalise(x_mm)
        dphase, logamp = self.frame_latents(t)
        basis, tfeat = self.time_basis(t, x_mm.dtype, dphase)
        enc = self.enc(xn) * self.window.to(xn.dtype).repeat(2)  # (sin | cos) share one window
        out = self.net(torch.cat([enc, xn, *tfeat], dim=-1)).float().reshape(len(xn), self.n_basis, 3)
        amp = torch.exp(logamp)[:, None]
        return amp * (basis.float()[:, :, None] * out).sum(1) * self.scale_mm  # exactly 0 at t_ref

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
