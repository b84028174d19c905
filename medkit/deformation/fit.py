"""ST-NeRP fitting: the reference INR, then the deformation INR on all observed times at once.

A loop you can read top to bottom. Memory is bounded by the point batches
(``points_per_phase`` x phases), never by whole volumes, except for dense
prediction, which runs in chunks of ``chunk`` points.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..nn import warp as W
from .deform_config import DeformConfig
from .losses import (
    antisymmetric_energy,
    fd_bending,
    fd_jacobian,
    jacobian_loss,
    offsets,
    similarity_loss,
    time_acceleration,
)
from .model import DeformationINR, GridFrame, ReferenceINR


@dataclass
class Sequence:
    """Images of one patient on one grid: ``images`` ``(T, X, Y, Z)`` HU, ``times`` ``(T,)``."""

    images: torch.Tensor
    times: list[float]
    affine: torch.Tensor  # (4, 4) voxel -> RAS mm
    reference: int = 0
    names: list[str] = field(default_factory=list)
    period: float | None = None  # one breathing cycle (same unit as times) when the series is one cycle


def resolve_period(seq: Sequence, cfg: DeformConfig) -> float | None:
    """The period the time encoding uses: None = span-normalised time (see :mod:`.model`).

    ``time_mode``: ``auto`` = periodic when the series knows its cycle (``seq.period``, from
    ``times.json`` or phases in %) or ``cfg.period`` is set, span otherwise; ``periodic``
    requires a period; ``span`` ignores it."""
    if cfg.time_mode == "span":
        return None
    period = cfg.period if cfg.period else seq.period
    if cfg.time_mode == "periodic" and not period:
        raise ValueError("time_mode=periodic needs the breathing period: a 'period' in times.json, phases in %, "
                         "or --set period=SECONDS")
    if period is not None and period <= 0:
        raise ValueError(f"period must be > 0, got {period}")
    return float(period) if period else None


def scale_hu(x: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    """HU -> [0, 1] in ``window`` (lung..soft tissue), clipped, so NCC/MSE see comparable ranges
    (MONAI's ``ScaleIntensityRange``)."""
    from monai.transforms import ScaleIntensityRange

    lo, hi = window
    return ScaleIntensityRange(lo, hi, 0.0, 1.0, clip=True, dtype=None)(x)


def _autocast(device: torch.device, on: bool):
    # bf16 only on CUDA: CPU autocast is slow and the fit is small there anyway.
    if on and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _random_vox(n: int, shape, g: torch.Generator, device) -> torch.Tensor:
    """``(n, 3)`` continuous voxel positions uniform inside the grid."""
    s = torch.tensor([d - 1 for d in shape], dtype=torch.float32)
    return (torch.rand(n, 3, generator=g) * s).to(device)


def edge_weights(img: torch.Tensor, uniform: float, smooth_vox: float = 0.0) -> torch.Tensor:
    """Sampling probabilities ``(X*Y*Z,)`` for a ``(1, 1, X, Y, Z)`` image: a ``uniform``
    share everywhere plus the rest proportional to the gradient magnitude. Registration
    signal lives at edges (vessels, diaphragm, chest wall); uniform points land mostly in
    air and flat tissue where any displacement looks equally good (IDIR samples a mask).
    ``smooth_vox``: Gaussian sigma (voxels) applied first, so that on a noisy low-dose phase
    the weights follow anatomy, not the noise (whose gradients are everywhere)."""
    vol = img[0, 0]
    if smooth_vox > 0:
        from scipy.ndimage import gaussian_filter

        vol = torch.as_tensor(gaussian_filter(vol.cpu().numpy(), smooth_vox))
    g = torch.stack(torch.gradient(vol), 0).norm(dim=0).flatten()
    g = g / g.sum().clamp_min(1e-12)
    return uniform / g.numel() + (1 - uniform) * g


def _sample_vox(w: torch.Tensor, n: int, shape, g: torch.Generator, device) -> torch.Tensor:
    """``n`` voxel positions drawn from cumulative weights ``w`` (float64) with +-0.5 voxel jitter, clamped to the grid."""
    # inverse-CDF sampling: torch.multinomial caps at 2**24 categories (a 512x512x128 CT has 33M)
    cdf = w  # cumulative weights, precomputed once per phase
    idx = torch.searchsorted(cdf, torch.rand(n, generator=g, dtype=torch.float64) * cdf[-1]).clamp(max=len(w) - 1)
    X, Y, Z = shape
    ijk = torch.stack([idx // (Y * Z), (idx // Z) % Y, idx % Z], -1).float()
    ijk = ijk + torch.rand(n, 3, generator=g) - 0.5
    hi = torch.tensor([X - 1, Y - 1, Z - 1], dtype=torch.float32)
    return torch.minimum(ijk.clamp_min(0), hi).to(device)


def build_models(seq: Sequence, cfg: DeformConfig, observed: list[int], device) -> tuple[ReferenceINR, DeformationINR]:
    frames = [seq.times[k] for k in observed if k != seq.reference] if cfg.frame_latents else None
    shape = tuple(seq.images.shape[1:])
    frame = GridFrame(seq.affine, shape)
    t_ref = seq.times[seq.reference]
    span = max([abs(seq.times[k] - t_ref) for k in observed] + [1e-6])
    ref = ReferenceINR(frame, cfg.ref_encoding, seed=cfg.seed)
    dfm = DeformationINR(GridFrame(seq.affine, shape), t_ref, span, fourier_features=cfg.fourier_features,
                         fourier_sigma=cfg.fourier_sigma, width=cfg.width,
                         time_harmonics=cfg.time_harmonics if resolve_period(seq, cfg) else cfg.span_harmonics,
                         depth=cfg.depth, svf=cfg.svf, svf_grid_factor=cfg.svf_grid_factor,
                         svf_steps=cfg.svf_steps, seed=cfg.seed, period=resolve_period(seq, cfg),
                         time_in_net=cfg.time_in_net, time_symmetric=cfg.time_symmetric, frame_times=frames)
    return ref.to(device), dfm.to(device)


def fit(seq: Sequence, cfg: DeformConfig, observed: list[int], device, *, state: dict | None = None,
        save: Callable[[dict], None] | None = None, progress: Callable | None = None,
        log: Callable[[str], None] = lambda m: None, monitor: Callable[[int, DeformationINR], None] | None = None,
        monitor_every: int = 100, reference_state: dict | None = None) -> dict:
    """Fit the reference INR, then the deformation INR on ``observed`` frame indices.

    Args:
        state: a checkpoint dict to resume from (what ``save`` received last).
        save: called with a checkpoint dict every ``cfg.checkpoint_every`` iterations and at the end.
        progress: wraps an iterable (e.g. :func:`medkit.runs.track`).
        monitor: called as ``monitor(iteration, model)`` every ``monitor_every`` motion iterations
            and after the last (learning curves: landmark TRE during the fit).
        reference_state: the state dict of an already fitted reference INR of the same reference
            image (a previous fit's ``state["ref"]``): stage 1 is skipped (per-pair fits share
            one prior embedding, as they would in practice).

    Returns:
        dict with ``ref``, ``model`` (modules), ``losses`` (list of per-iteration
        floats for each stage), ``seconds`` (both stages), ``seconds_reference``, ``seconds_motion``.
    """
    device = torch.device(device)
    wrap = progress or (lambda it, desc: it)
    ref, dfm = build_models(seq, cfg, observed, device)
    imgs = scale_hu(seq.images.float(), cfg.window_hu)[:, None].to(device)  # (T, 1, X, Y, Z)
    shape = tuple(seq.images.shape[1:])
    g = torch.Generator().manual_seed(cfg.seed)
    moving = [k for k in observed if k != seq.reference]  # u(., t_ref) = 0: nothing to learn there
    opt_r = torch.optim.Adam(ref.parameters(), lr=cfg.ref_lr)
    opt_d = torch.optim.Adam(dfm.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt_d, T_max=max(cfg.iters, 1), eta_min=cfg.lr * 0.05)
    hist = {"reference": [], "motion": []}
    it_ref = it_mot = 0
    if state is not None:
        ref.load_state_dict(state["ref"])
        dfm.load_state_dict(state["model"])
        opt_r.load_state_dict(state["opt_ref"])
        opt_d.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        hist, it_ref, it_mot = copy.deepcopy(state["losses"]), state["it_ref"], state["it_motion"]
        g.set_state(state["rng"])
        log(f"resumed at reference iter {it_ref}, motion iter {it_mot}")

    def checkpoint(done_ref: int, done_mot: int) -> dict:
        # deep copy: state_dict() shares storage with the live parameters, which keep training
        return copy.deepcopy({"ref": ref.state_dict(), "model": dfm.state_dict(), "opt_ref": opt_r.state_dict(),
                "opt": opt_d.state_dict(), "sched": sched.state_dict(), "losses": hist, "it_ref": done_ref,
                "it_motion": done_mot, "rng": g.get_state(), "observed": observed, "times": seq.times,
                "reference": seq.reference})

    t0 = time.perf_counter()
    ref_img = imgs[seq.reference : seq.reference + 1]
    # ---- stage 1: the prior embedding (reference INR fitted to the reference image)
    if reference_state is not None:
        ref.load_state_dict(reference_state)
        it_ref = cfg.ref_iters
    if cfg.similarity_source == "inr":
        for it in wrap(range(it_ref, cfg.ref_iters), "reference INR"):
            vox = _random_vox(cfg.ref_points, shape, g, device)
            target = W.sample_points(ref_img, vox[None])[0, 0]
            with _autocast(device, cfg.bf16):
                pred = ref(dfm.frame.vox_to_mm(vox))
            loss = ((pred.float() - target) ** 2).mean()
            opt_r.zero_grad(set_to_none=True)
            loss.backward()
            opt_r.step()
            hist["reference"].append(loss.item())
            if save and (it + 1) % cfg.checkpoint_every == 0:
                save(checkpoint(it + 1, 0))
    ref.requires_grad_(False)
    t_ref_done = time.perf_counter()

    def ref_intensity(x_mm: torch.Tensor) -> torch.Tensor:
        if cfg.similarity_source == "inr":  # (DeformConfig admits inr | image only)
            return ref(x_mm).float()
        return W.sample_points(ref_img, dfm.frame.mm_to_vox(x_mm)[None])[0, 0]

    # ---- stage 2: the deformation INR on every observed time at once
    times = torch.tensor([seq.times[k] for k in moving], dtype=torch.float32, device=device)
    t_lo, t_hi = min(seq.times[k] for k in observed), max(seq.times[k] for k in observed)
    if dfm.period is not None:  # periodic: regularise the whole cycle, every phase is predictable
        t_lo, t_hi = seq.times[seq.reference], seq.times[seq.reference] + dfm.period
    off = offsets(cfg.fd_step_mm, device)
    n = cfg.points_per_phase
    weights = [edge_weights(imgs[k : k + 1].cpu(), 1 - cfg.edge_sampling, cfg.edge_smooth_vox).double().cumsum(0)
               for k in moving]
    smooth = cfg.time_smooth_weight > 0 and not cfg.svf and t_hi > t_lo
    # symmetry prior (periodic only): penalise the part of u that differs between phi and 1 - phi
    mirror = cfg.time_symmetry_weight > 0 and dfm.period is not None and not cfg.svf
    h_t = cfg.time_smooth_step * (t_hi - t_lo)
    for it in wrap(range(it_mot, cfg.iters), "deformation INR"):
        if cfg.coarse_to_fine > 0:
            dfm.set_progress(min(1.0, it / (cfg.coarse_to_fine * cfg.iters)))
        vox = torch.stack([_sample_vox(w, n, shape, g, device) for w in weights])  # (P, N, 3)
        target = torch.stack([W.sample_points(imgs[k : k + 1], vox[i : i + 1])[0, 0] for i, k in enumerate(moving)])
        x = dfm.frame.vox_to_mm(vox.reshape(-1, 3))
        t = times.repeat_interleave(n)
        # Regulariser points: anywhere in the volume, at times anywhere in the observed
        # span (not only the imaged ones), so unseen times are smooth too.
        xr = dfm.frame.vox_to_mm(_random_vox(cfg.reg_points, shape, g, device))
        tr = (t_lo + (t_hi - t_lo) * torch.rand(cfg.reg_points, generator=g)).to(device)
        if cfg.svf or cfg.reg_times == "imaged":  # SVF: the grid integration is per distinct time
            tr = times[torch.randint(len(times), (cfg.reg_points,), generator=g).to(device)]
        xr_all = (xr[None] + off[:, None]).reshape(-1, 3)
        xs, ts = [], []
        if smooth:  # (x, t - h), (x, t), (x, t + h) triplets for the temporal second difference
            xq = dfm.frame.vox_to_mm(_random_vox(cfg.reg_points, shape, g, device))
            tq = (t_lo + h_t + (t_hi - t_lo - 2 * h_t) * torch.rand(cfg.reg_points, generator=g)).to(device)
            xs, ts = [xq.repeat(3, 1)], [torch.cat([tq - h_t, tq, tq + h_t])]
        if mirror:  # u(x, 1 - phi) beside u(x, phi) = u_reg[0] at the offset-0 regulariser points
            t0_ = seq.times[seq.reference]
            xs, ts = xs + [xr], ts + [t0_ + dfm.period - torch.remainder(tr - t0_, dfm.period)]
        with _autocast(device, cfg.bf16):
            u_all = dfm.displacement(torch.cat([x, xr_all, *xs]), torch.cat([t, tr.repeat(len(off)), *ts]))
            warped = ref_intensity(x + u_all[: len(x)]).reshape(len(moving), n)
        n_reg = len(off) * cfg.reg_points
        u_reg = u_all[len(x): len(x) + n_reg].reshape(len(off), cfg.reg_points, 3).float()
        sim = similarity_loss(warped, target, cfg.similarity)
        det = fd_jacobian(u_reg, cfg.fd_step_mm)
        loss = sim + cfg.jacobian_weight * jacobian_loss(det) + cfg.bending_weight * fd_bending(u_reg, cfg.fd_step_mm).mean()
        n_smooth = 3 * cfg.reg_points if smooth else 0
        if smooth:
            u3 = u_all[len(x) + n_reg: len(x) + n_reg + n_smooth].reshape(3, cfg.reg_points, 3).float()
            loss = loss + cfg.time_smooth_weight * time_acceleration(u3, cfg.time_smooth_step).mean()
        if mirror:
            u_m = u_all[len(x) + n_reg + n_smooth:].float()
            loss = loss + cfg.time_symmetry_weight * antisymmetric_energy(u_reg[0], u_m).mean()
        if len(dfm.frame_times) and cfg.frame_latent_weight > 0:  # the surrogate prior: near the mean cycle
            loss = loss + cfg.frame_latent_weight * ((dfm.frame_dphase / 0.05) ** 2
                                                     + (dfm.frame_logamp / 0.15) ** 2).mean()
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        sched.step()
        hist["motion"].append(loss.item())
        if save and (it + 1) % cfg.checkpoint_every == 0 and it + 1 < cfg.iters:
            save(checkpoint(cfg.ref_iters, it + 1))
        if monitor and (it + 1) % monitor_every == 0 and it + 1 < cfg.iters:
            monitor(it + 1, dfm)
    dfm.set_progress(1.0)
    if monitor:
        monitor(cfg.iters, dfm)
    out = checkpoint(cfg.ref_iters, cfg.iters)
    if save:
        save(out)
    log(f"fit: reference loss {hist['reference'][-1] if hist['reference'] else float('nan'):.4g}, "
        f"motion loss {hist['motion'][-1] if hist['motion'] else float('nan'):.4g}")
    t1 = time.perf_counter()
    return {"ref": ref, "model": dfm, "losses": hist, "seconds": t1 - t0, "seconds_reference": t_ref_done - t0,
            "seconds_motion": t1 - t_ref_done, "state": out}


@torch.no_grad()
def predict_field(model: DeformationINR, t: float, shape, affine, chunk: int = 65536) -> torch.Tensor:
    """Dense ``u(., t)`` in mm on the grid ``(shape, affine)``: ``(1, 3, X, Y, Z)``."""
    model.eval()
    dev = model.frame.affine.device
    aff = torch.as_tensor(affine, dtype=torch.float32, device=dev)
    if model.svf and tuple(shape) == model.frame.shape:
        u_c, aff_c = model.svf_field_vox(t)
        grid = W.identity_grid(tuple(shape), dev)[0].reshape(3, -1).T
        pts = W.points_mm_to_voxel(grid @ aff[:3, :3].T + aff[:3, 3], aff_c)[None]
        return W.sample_points(W.ddf_voxel_to_mm(u_c, aff_c), pts)[0].reshape(1, 3, *shape)
    grid = W.identity_grid(tuple(shape), dev)[0].reshape(3, -1).T
    out = []
    for s in range(0, len(grid), chunk):
        x = grid[s : s + chunk] @ aff[:3, :3].T + aff[:3, 3]
        out.append(model.displacement(x, torch.full((len(x),), float(t), device=dev)))
    return torch.cat(out).T.reshape(1, 3, *shape)
