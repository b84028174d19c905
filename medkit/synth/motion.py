"""4D respiratory CT and longitudinal CT with exact motion ground truth.

A patient is the analytic phantom of :mod:`medkit.synth.thorax` moved by an
analytic, smooth, invertible map ``phi`` (reference -> phase). Each phase is
rendered exactly by pulling back through the inverse map,
``I_t(y) = phantom(phi_t^{-1}(y))``, on a fine grid, then block-averaged to the
output spacing (partial volume). Nothing is resampled from a rendered image.

Breathing model (peak-inhale displacement ``D``, scaled by the breathing signal
``s(t) = sin^(2n)(pi t / T)`` of Lujan et al., Med Phys 1999; ``s = 0`` at end
exhale, the reference, and 1 at peak inhale):

- superior-inferior: ``D_z = -A W(x, y) G(z - z_dome(x, y))``; ``A`` (5-25 mm,
  per patient) is the motion of the dome apex, ``G`` decays with height above the
  diaphragm (``decay_up_mm``) and depth below it (``decay_down_mm``);
- sliding: ``W`` is 1 inside the pleural/peritoneal cavity and ``wall_fraction``
  in the chest wall and spine, changing across a layer ``sliding_mm`` thick at
  the pleura: the lungs slide past the ribs;
- chest expansion: ``D_y`` (anterior, zero behind the spine) and ``D_x``
  (lateral), functions of y and x only.

``D_x`` depends on x only, ``D_y`` on y only and ``D_z`` is monotone in z at
fixed (x, y) (``A / decay < 1``), so the map is a triangular diffeomorphism:
globally invertible, Jacobian determinant > 0, and the inverse is three 1D
solves (closed form in x, Newton in y and z) accurate to ~1e-9 mm.

Ground-truth convention (the one medkit's registration code uses, and MONAI's
``Warp``/DDF): the field ``u_t`` stored for phase t lives on the phase-t grid and
``I_t(y) ~= I_ref(y + u_t(y))``, i.e. ``y + u_t(y) = phi_t^{-1}(y)``. The forward
field ``v_t(x) = phi_t(x) - x`` on the reference grid is stored too.

Longitudinal variant: scans weeks apart (times in days); per scan a breath-hold
level, a small rigid repositioning, tumour shrinkage and a change of
subcutaneous fat thickness (weight change). The field carries the anatomical
correspondence (breathing + repositioning); tumour shrinkage and fat change are
changes of the anatomy itself, visible in the images and labels, not in ``u``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .breathing import (  # noqa: F401  (public names of this module)
    BreathingMotion,
    RigidBreathing,
    _PhaseMap,
    breathing_signal,
    irregular_state,
)
from .shapes import downsample_labels, downsample_mean, grid_affine, rotation_matrix
from .thorax import (
    LABELS,
    N_LABELS,
    TextureField,
    ThoraxParams,
    sample_thorax,
    thorax_hu_labels,
)

LANDMARK_TOL_MM = 1e-3


# ----------------------------------------------------------------------------- configs


@dataclass
class Motion4DConfig:
    """4D respiratory CT (``medkit synth 4dct``). Ranges ``(lo, hi)`` are sampled per patient.

    Defaults are CPU-small (80x64x64 at 4 mm); realistic:
    ``--set shape=[128,128,96] --set spacing_mm=[2.5,2.5,2.5]``.
    """

    n_cases: int = 2
    seed: int = 0
    shape: tuple[int, int, int] = (80, 64, 64)
    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0)
    fine_factor: int = 2  # each output voxel averages fine_factor^3 exact samples
    texture_mm: float = 2.0  # spacing of the vessel/texture lattices
    noise_hu: float = 10.0  # CT noise, independent per phase (0: noiseless)
    # Per-phase noise: when > noise_hu, phase k's noise std is drawn from U(noise_hu, noise_hu_max)
    # (low-dose 4D CT phases; REALISTIC_4DCT uses 60-100 HU).
    noise_hu_max: float = 0.0
    # Irregular breathing (0 = the regular cycle). Each phase bin of a sorted 4D CT comes from a
    # different breathing cycle: its breathing state is scaled by (1 + e), e ~ N(0, amplitude_cv)
    # (clipped at +-2.5 sd), and its breathing phase is off by N(0, phase_jitter) cycles.
    amplitude_cv: float = 0.0
    phase_jitter: float = 0.0
    # Hysteresis: the AP and lateral states follow s(phi) (1 - eta sin(2 pi phi)), eta ~ U(range) per
    # patient: they lag the SI state on inhale and lead it on exhale (a loop, not a line).
    hysteresis: tuple[float, float] = (0.0, 0.0)
    n_phases: int = 10
    period_s: tuple[float, float] = (3.5, 4.5)
    signal_power: int = 2  # s(t) = sin^(2n)(pi t / T)
    diaphragm_mm: tuple[float, float] = (6.0, 24.0)  # SI amplitude of the dome apex
    ap_mm: tuple[float, float] = (3.0, 10.0)  # anterior chest-wall excursion
    lat_mm: tuple[float, float] = (1.0, 5.0)  # lateral excursion of each side
    decay_up_mm: float = 90.0
    decay_down_mm: float = 150.0
    sliding_mm: float = 10.0  # width of the sliding layer at the pleura
    wall_fraction: float = 0.1  # SI motion of chest wall / spine relative to the lungs
    n_landmarks: int = 300
    forward_fields: bool = True


@dataclass
class LongitudinalConfig:
    """Longitudinal CT weeks apart (``medkit synth longitudinal``), times in days."""

    n_cases: int = 2
    seed: int = 0
    shape: tuple[int, int, int] = (80, 64, 64)
    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0)
    fine_factor: int = 2
    texture_mm: float = 2.0
    noise_hu: float = 10.0
    noise_hu_max: float = 0.0  # > noise_hu: scan k's noise std ~ U(noise_hu, noise_hu_max)
    n_timepoints: int = 4
    interval_days: float = 21.0
    breath_hold: tuple[float, float] = (0.0, 0.3)  # breathing state s of each follow-up scan
    diaphragm_mm: tuple[float, float] = (6.0, 24.0)
    ap_mm: tuple[float, float] = (3.0, 10.0)
    lat_mm: tuple[float, float] = (1.0, 5.0)
    decay_up_mm: float = 90.0
    decay_down_mm: float = 150.0
    sliding_mm: float = 10.0
    wall_fraction: float = 0.1
    reposition_mm: float = 3.0  # std of the translation per axis
    reposition_deg: float = 1.5  # std of the rotation per axis
    tumour_shrink: tuple[float, float] = (0.4, 0.8)  # final volume loss fraction (response)
    shrink_tau_days: tuple[float, float] = (15.0, 40.0)
    fat_change_mm: tuple[float, float] = (3.0, 8.0)  # |change| of fat thickness by the last scan
    n_landmarks: int = 300
    forward_fields: bool = True


#: Realism of a clinical phase-sorted 4D CT (``Motion4DConfig(**REALISTIC_4DCT)``), used by
#: ``bench/deformation.py`` for every method alike. Sources and caveats: data_cards/synth-4dct.md.
REALISTIC_4DCT = {"noise_hu": 60.0, "noise_hu_max": 100.0, "amplitude_cv": 0.15, "phase_jitter": 0.03,
                  "hysteresis": (0.0, 0.3)}
#: The same noise for longitudinal scans (``LongitudinalConfig(**REALISTIC_LONGITUDINAL)``).
REALISTIC_LONGITUDINAL = {"noise_hu": 60.0, "noise_hu_max": 100.0}


def _check(cfg) -> None:
    if cfg.n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {cfg.n_cases}")
    if len(cfg.shape) != 3 or min(cfg.shape) < 4:
        raise ValueError(f"shape must be 3 sizes >= 4, got {cfg.shape}")
    if cfg.fine_factor < 1:
        raise ValueError(f"fine_factor must be >= 1, got {cfg.fine_factor}")
    lo, hi = cfg.diaphragm_mm
    peak = 1.0 + 2.5 * getattr(cfg, "amplitude_cv", 0.0)  # largest breathing state an irregular cycle reaches
    if not 0 <= lo <= hi or hi * peak >= 0.9 * min(cfg.decay_up_mm, cfg.decay_down_mm):
        # A / decay < 1 keeps d(phi_z)/dz > 0: the map must not fold.
        raise ValueError(f"diaphragm_mm {cfg.diaphragm_mm} must satisfy 0 <= lo <= hi < 0.9 x decay lengths")
    if cfg.sliding_mm <= 0:
        raise ValueError("sliding_mm must be > 0")
    if cfg.noise_hu < 0 or cfg.noise_hu_max < 0:
        raise ValueError("noise_hu and noise_hu_max must be >= 0")
    for key in ("amplitude_cv", "phase_jitter"):
        if not 0 <= getattr(cfg, key, 0.0) < 0.3:
            raise ValueError(f"{key} must be in [0, 0.3), got {getattr(cfg, key)}")
    h = getattr(cfg, "hysteresis", (0.0, 0.0))
    if not 0 <= h[0] <= h[1] < 0.9:
        raise ValueError(f"hysteresis {h} must satisfy 0 <= lo <= hi < 0.9")


# ----------------------------------------------------------------------------- motion
# (the breathing model lives in medkit.synth.breathing; re-exported here)

# ----------------------------------------------------------------------------- rendering


def fine_grid_origin(shape, spacing, factor: int) -> tuple[float, ...]:
    """Origin of the fine grid whose ``factor``^3 blocks tile the output voxels."""
    o = grid_affine(shape, spacing)[:3, 3]
    return tuple(float(oi - si / 2 + si / (2 * factor)) for oi, si in zip(o, spacing))


def _sparse_grid(shape, spacing, origin) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World mm of a grid's voxel centres as broadcastable axes ``(X,1,1), (1,Y,1), (1,1,Z)``."""
    ax = [o + np.arange(n, dtype=np.float64) * sp for n, sp, o in zip(shape, spacing, origin)]
    return ax[0][:, None, None], ax[1][None, :, None], ax[2][None, None, :]


def render(phase_map, anatomy: ThoraxParams, tex: TextureField, shape, spacing, factor: int,
           chunk_voxels: int = 1_500_000):
    """Render one phase exactly: phantom at ``phi^{-1}`` of a fine grid, block-averaged.

    Returns:
        ``(hu, labels, residual_mm)``: hu float32 ``(X, Y, Z)``, labels uint8 ``(X, Y, Z)``
        (majority of the fine samples), and the max ``|phi(phi^{-1}(y)) - y|`` (mm) seen.
    """
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    f = int(factor)
    fs = tuple(s / f for s in spacing)
    fo = fine_grid_origin(shape, spacing, f)
    X, Y, Z = shape
    hu = np.empty(shape, dtype=np.float32)
    lab = np.empty(shape, dtype=np.uint8)
    step = max(1, chunk_voxels // (Y * Z * f ** 3))
    resid = 0.0
    for i0 in range(0, X, step):
        i1 = min(X, i0 + step)
        org = (fo[0] + i0 * spacing[0], fo[1], fo[2])
        ys = _sparse_grid(((i1 - i0) * f, Y * f, Z * f), fs, org)
        # Sparse axes broadcast: for breathing alone x, y, the dome and the
        # sliding weight are solved on 1D/2D arrays and only z on the full grid.
        xs = np.broadcast_arrays(*phase_map.inverse(ys))
        # Round-trip check on every 3rd fine point each way (1/27: it costs a forward map).
        sub = (slice(None, None, 3),) * 3
        back = phase_map.forward(tuple(c[sub] for c in xs))
        resid = max(resid, float(max(np.max(np.abs(b - y[sub])) for b, y in zip(back, np.broadcast_arrays(*ys)))))
        h, lb = thorax_hu_labels(*xs, anatomy, tex)
        hu[i0:i1] = downsample_mean(h, (f, f, f))
        lab[i0:i1] = downsample_labels(lb, (f, f, f), N_LABELS) if f > 1 else lb
    return hu, lab, resid


def displacement_fields(phase_map, shape, spacing):
    """``(ddf, fwd)`` on the output grid, each float32 ``(3, X, Y, Z)`` mm:
    ``ddf(y) = phi^{-1}(y) - y`` (pull-back, phase grid), ``fwd(x) = phi(x) - x``."""
    g = np.broadcast_arrays(*_sparse_grid(shape, spacing, grid_affine(shape, spacing)[:3, 3]))
    inv = np.broadcast_arrays(*phase_map.inverse(g))
    fwd = np.broadcast_arrays(*phase_map.forward(g))
    ddf = np.stack([a - b for a, b in zip(inv, g)]).astype(np.float32)
    fw = np.stack([a - b for a, b in zip(fwd, g)]).astype(np.float32)
    return ddf, fw


def pick_landmarks(image: np.ndarray, lung: np.ndarray, n: int, min_dist_vox: float = 2.0) -> np.ndarray:
    """Up to ``n`` distinct, feature-rich voxels inside the lungs (DIR-Lab style).

    Score: the smallest eigenvalue proxy ``det(S) / trace(S)`` of the structure
    tensor ``S`` (large at vessel crossings and forks, where the image varies in
    all three directions, not along an edge or a tube only). Local maxima (then
    the remaining voxels by score) inside the lungs eroded by 2 voxels, greedily kept at least ``min_dist_vox`` apart.

    Returns:
        ``(K, 3)`` int voxel indices, strongest first.
    """
    # Flatten everything outside the lungs so the pleura, diaphragm and
    # mediastinum edges do not win: landmarks sit on the vessels, as in DIR-Lab.
    img = np.where(lung, image, np.median(image[lung]) if lung.any() else 0.0).astype(np.float32)
    img = ndimage.gaussian_filter(img, 0.7)
    g = np.gradient(img)
    s = {}
    for i in range(3):
        for j in range(i, 3):
            s[i, j] = ndimage.gaussian_filter(g[i] * g[j], 1.2)
    det = (s[0, 0] * (s[1, 1] * s[2, 2] - s[1, 2] ** 2) - s[0, 1] * (s[0, 1] * s[2, 2] - s[1, 2] * s[0, 2])
           + s[0, 2] * (s[0, 1] * s[1, 2] - s[1, 1] * s[0, 2]))
    score = det / (s[0, 0] + s[1, 1] + s[2, 2] + 1e-6)
    mask = ndimage.binary_erosion(lung, iterations=2)
    if mask.sum() < n:  # a coarse grid: fall back to a thinner margin
        mask = ndimage.binary_erosion(lung, iterations=1)
    peaks = (score == ndimage.maximum_filter(score, size=3)) & mask
    # Local maxima first (strongest first), then the other lung voxels by score,
    # so a coarse grid still yields n distinct points.
    order = np.lexsort((-score[mask], ~peaks[mask]))
    cand = np.argwhere(mask)[order]
    picked: list[np.ndarray] = []
    for c in cand:
        if len(picked) >= n:
            break
        if picked and np.min(np.sum((np.asarray(picked) - c) ** 2, axis=1)) < min_dist_vox ** 2:
            continue
        picked.append(c)
    return np.asarray(picked, dtype=np.int64).reshape(-1, 3)


# ----------------------------------------------------------------------------- writers


def _geometry(affine: np.ndarray, shape) -> object:
    """The ``like=`` argument of ``save_volume``: an affine and a spatial shape.
    (Writing plain arrays this way keeps MONAI's slow import out of generation.)"""
    from types import SimpleNamespace

    return SimpleNamespace(affine=np.asarray(affine, dtype=np.float64), shape=tuple(shape))


def _r(a, nd: int = 5) -> list:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def _patient(cfg, rng: np.random.Generator):
    anatomy = sample_thorax(rng)
    motion = BreathingMotion(
        anatomy=anatomy, amplitude_mm=float(rng.uniform(*cfg.diaphragm_mm)),
        ap_mm=float(rng.uniform(*cfg.ap_mm)), lat_mm=float(rng.uniform(*cfg.lat_mm)),
        decay_up_mm=cfg.decay_up_mm, decay_down_mm=cfg.decay_down_mm,
        sliding_mm=cfg.sliding_mm, wall_fraction=cfg.wall_fraction,
    )
    ext = [(n - 1) * s / 2 for n, s in zip(cfg.shape, cfg.spacing_mm)]
    m = 45.0  # lattice margin: covers breathing + repositioning pull-backs
    tex = TextureField(rng, [(-e - m, e + m) for e in ext], cfg.texture_mm)
    return anatomy, motion, tex


def _noise_sd(cfg, k: int, noise_rng: np.random.Generator) -> float:
    """Noise std (HU) of frame ``k``: ``noise_hu``, or U(noise_hu, noise_hu_max) per frame."""
    if cfg.noise_hu_max > cfg.noise_hu:
        return float(noise_rng.uniform(cfg.noise_hu, cfg.noise_hu_max))
    return float(cfg.noise_hu)


def _write_case(case_dir: Path, cfg, anatomy: ThoraxParams, tex: TextureField, frames: list[dict],
                rng: np.random.Generator, time_unit: str, noise_rng: np.random.Generator | None = None,
                period: float | None = None) -> dict:
    """Render and write every frame of one case; ``frames[k]`` holds ``map``, ``time``,
    ``anatomy`` (that scan's anatomy). Frame 0 is the reference (identity map).
    ``noise_rng`` draws per-frame noise levels (a stream of its own, so the default
    data stay bit-identical); ``period`` (one breathing cycle) goes into ``times.json``."""
    noise_rng = noise_rng if noise_rng is not None else np.random.default_rng(0)
    from ..io import save_volume

    shape, spacing = tuple(cfg.shape), tuple(cfg.spacing_mm)
    aff = grid_affine(shape, spacing)
    inv_aff = np.linalg.inv(aff)
    geom = _geometry(aff, shape)
    t0 = time.perf_counter()
    ref_pts = None
    lm = {"reference_index": 0, "units": {"mm": "RAS world mm", "voxel": "0-based (i, j, k) on the case grid"},
          "frames": []}
    max_res, max_lm_res = 0.0, 0.0
    per_frame = []
    for k, fr in enumerate(frames):
        hu, lab, res = render(fr["map"], fr["anatomy"], tex, shape, spacing, cfg.fine_factor)
        max_res = max(max_res, res)
        if k == 0:
            idx = pick_landmarks(hu, lab == 3, cfg.n_landmarks)
            ref_pts = (aff[:3, :3] @ idx.T + aff[:3, 3:4]).T  # (K, 3) mm
            lm["reference"] = {"mm": _r(ref_pts), "voxel": idx.tolist()}
        sd = _noise_sd(cfg, k, noise_rng)
        if sd > 0:
            hu = hu + rng.normal(0.0, sd, hu.shape).astype(np.float32)
            fr.setdefault("info", {})["noise_hu"] = round(sd, 3)
        ddf, fwd = displacement_fields(fr["map"], shape, spacing)
        pk = np.stack(fr["map"].forward(tuple(ref_pts.T.astype(np.float64)))).T  # (K, 3)
        back = np.stack(fr["map"].inverse(tuple(pk.T))).T
        lres = float(np.max(np.abs(back - ref_pts))) if len(ref_pts) else 0.0
        max_lm_res = max(max_lm_res, lres)
        vox = (inv_aff[:3, :3] @ pk.T + inv_aff[:3, 3:4]).T
        lm["frames"].append({"index": k, "time": fr["time"], "mm": _r(pk), "voxel": _r(vox, 4),
                             "inverse_residual_mm": lres})
        save_volume(hu.astype(np.float32), like=geom, path=case_dir / f"phase_{k:02d}.nii.gz")
        save_volume(lab, like=geom, path=case_dir / f"labels_{k:02d}.nii.gz")
        save_volume(ddf, like=geom, path=case_dir / f"ddf_{k:02d}.nii.gz")
        if cfg.forward_fields:
            save_volume(fwd, like=geom, path=case_dir / f"fwd_{k:02d}.nii.gz")
        vol = {int(v): float(np.sum(lab == v) * np.prod(spacing) / 1000.0) for v in (1, 2, 3)}
        per_frame.append({"index": k, "time": fr["time"], "label_volumes_ml": vol,
                          "max_ddf_mm": float(np.max(np.linalg.norm(ddf, axis=0))), **fr.get("info", {})})
    if max_res > LANDMARK_TOL_MM or max_lm_res > LANDMARK_TOL_MM:
        raise RuntimeError(f"{case_dir}: inverse map residual {max(max_res, max_lm_res):.2e} mm > {LANDMARK_TOL_MM}")
    lm["n_landmarks"] = len(ref_pts)
    lm["max_inverse_residual_mm"] = max_lm_res
    from ..io import write_json

    write_json(case_dir / "landmarks.json", lm)
    write_json(case_dir / "times.json", {
        "unit": time_unit, "reference_index": 0, "times": [fr["time"] for fr in frames],
        **({"period": period} if period is not None else {}), "frames": per_frame,
    })
    return {"seconds": time.perf_counter() - t0, "max_inverse_residual_mm": max(max_res, max_lm_res),
            "n_landmarks": len(ref_pts)}


def _anatomy_json(a: ThoraxParams) -> dict:
    import dataclasses

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(a).items()}


def _dataset_json(out: Path, name: str, cfg, cases: list[str], time_unit: str, n_frames: int) -> None:
    from ..config import to_dict
    from ..io import write_json

    write_json(out / "dataset.json", {
        "name": name, "seed": cfg.seed, "config": to_dict(cfg), "cases": cases,
        "labels": {str(k): v for k, v in LABELS.items()}, "time_unit": time_unit, "n_frames": n_frames,
        "files": {"image": "{case}/phase_{k:02d}.nii.gz (HU)", "labels": "{case}/labels_{k:02d}.nii.gz",
                  "ddf": "{case}/ddf_{k:02d}.nii.gz (mm, vector last; I_k(y) = I_0(y + u_k(y)))",
                  "forward": "{case}/fwd_{k:02d}.nii.gz (mm, on the reference grid: phi_k(x) = x + v_k(x))",
                  "landmarks": "{case}/landmarks.json", "times": "{case}/times.json",
                  "case": "{case}/case.json"},
        "reference_index": 0,
    })


def generate_4dct_dataset(cfg: Motion4DConfig, out: Path, progress: Callable | None = None) -> dict:
    """Write ``cfg.n_cases`` 4D respiratory CT patients under ``out`` (see the module doc)."""
    from ..io import write_json

    _check(cfg)
    if cfg.n_phases < 2:
        raise ValueError(f"n_phases must be >= 2, got {cfg.n_phases}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = [f"4dct_{i:03d}" for i in range(cfg.n_cases)]
    it = progress(list(enumerate(ids)), "4D CT") if progress else enumerate(ids)
    rows = []
    for i, cid in it:
        rng = np.random.default_rng([cfg.seed, i])
        anatomy, motion, tex = _patient(cfg, rng)
        period = float(rng.uniform(*cfg.period_s))
        times = [k * period / cfg.n_phases for k in range(cfg.n_phases)]
        # Irregularity draws come from their own stream: with them off the data are unchanged.
        irr = np.random.default_rng([cfg.seed, i, 1])
        eta = float(irr.uniform(*cfg.hysteresis))
        frames = []
        for k, t in enumerate(times):
            st = irregular_state(k * 1.0 / cfg.n_phases, cfg, eta, irr, reference=k == 0)
            frames.append({"map": _PhaseMap(motion, st["states"]), "time": round(t, 6), "anatomy": anatomy,
                           "info": {"breathing_state": st["states"][2], "state_lat_ap_si": _r(st["states"], 6),
                                    "cycle_phase": round(st["phase"], 6), "cycle_amplitude": round(st["amp"], 6)}})
        stats = _write_case(out / cid, cfg, anatomy, tex, frames, rng, "s", noise_rng=irr, period=round(period, 6))
        write_json(out / cid / "case.json", {
            "case_id": cid, "period_s": period, "diaphragm_amplitude_mm": motion.amplitude_mm,
            "ap_mm": motion.ap_mm, "lat_mm": motion.lat_mm, "hysteresis_eta": eta,
            "anatomy": _anatomy_json(anatomy), **stats})
        rows.append({"case_id": cid, "diaphragm_amplitude_mm": motion.amplitude_mm, **stats})
    _dataset_json(out, "synth-4dct", cfg, ids, "s", cfg.n_phases)
    return {"n_cases": len(rows), "out": str(out), "cases": rows,
            "max_inverse_residual_mm": max(r["max_inverse_residual_mm"] for r in rows)}


def generate_longitudinal_dataset(cfg: LongitudinalConfig, out: Path, progress: Callable | None = None) -> dict:
    """Write ``cfg.n_cases`` longitudinal patients (baseline + follow-ups, days) under ``out``."""
    from ..io import write_json

    _check(cfg)
    if cfg.n_timepoints < 2:
        raise ValueError(f"n_timepoints must be >= 2, got {cfg.n_timepoints}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = [f"long_{i:03d}" for i in range(cfg.n_cases)]
    it = progress(list(enumerate(ids)), "longitudinal CT") if progress else enumerate(ids)
    rows = []
    for i, cid in it:
        rng = np.random.default_rng([cfg.seed, i])
        anatomy, motion, tex = _patient(cfg, rng)
        days = [k * cfg.interval_days for k in range(cfg.n_timepoints)]
        shrink = float(rng.uniform(*cfg.tumour_shrink))
        tau = float(rng.uniform(*cfg.shrink_tau_days))
        dfat = float(rng.uniform(*cfg.fat_change_mm)) * float(rng.choice([-1.0, 1.0]))
        frames = []
        for k, d in enumerate(days):
            vol_frac = 1.0 - shrink * (1.0 - np.exp(-d / tau))
            fat = max(2.0, anatomy.fat_mm + dfat * d / days[-1])
            a_k = anatomy.replace(tumour_mm=float(anatomy.tumour_mm * vol_frac ** (1 / 3)), fat_mm=float(fat))
            if k == 0:
                s, rot, tr = 0.0, np.eye(3), np.zeros(3)
            else:
                s = float(rng.uniform(*cfg.breath_hold))
                ang = rng.normal(0.0, cfg.reposition_deg, 3)
                rot, tr = rotation_matrix(tuple(ang)), rng.normal(0.0, cfg.reposition_mm, 3)
            frames.append({"map": RigidBreathing(motion, s, rot, tr), "time": float(d), "anatomy": a_k,
                           "info": {"breathing_state": s, "tumour_radius_mm": a_k.tumour_mm,
                                    "fat_mm": a_k.fat_mm, "translation_mm": _r(tr, 4),
                                    "rotation": _r(rot, 6)}})
        stats = _write_case(out / cid, cfg, anatomy, tex, frames, rng, "days",
                            noise_rng=np.random.default_rng([cfg.seed, i, 1]))
        write_json(out / cid / "case.json", {
            "case_id": cid, "diaphragm_amplitude_mm": motion.amplitude_mm, "tumour_volume_loss": shrink,
            "shrink_tau_days": tau, "fat_change_mm": dfat, "anatomy": _anatomy_json(anatomy), **stats})
        rows.append({"case_id": cid, **stats})
    _dataset_json(out, "synth-longitudinal", cfg, ids, "days", cfg.n_timepoints)
    return {"n_cases": len(rows), "out": str(out), "cases": rows,
            "max_inverse_residual_mm": max(r["max_inverse_residual_mm"] for r in rows)}
