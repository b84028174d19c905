"""Shared pieces of the synthetic radiograph renderers: per-patient anatomy and
exposure, small 2D shape helpers (all in mm) and the film curve.

See :mod:`medkit.synth.cxr` for the projection model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MU_T, MU_L, MU_B, MU_M = 0.02, 0.005, 0.05, 0.4  # /mm: soft tissue, aerated lung, bone excess, metal
FOV_MM = 400.0


@dataclass
class Patient:
    """Per-patient anatomy and exposure (mm; v grows downwards, u to the viewer's right)."""

    W: float                 # half inner thoracic width
    apex: float              # v of the lung apices
    dome_r: float            # v of the right hemidiaphragm dome (viewer left)
    dome_l: float            # left dome, lower (under the heart)
    margin: float            # soft tissue lateral to the ribs
    depth: float             # AP thickness of the chest
    rotation_deg: float
    shift: tuple[float, float]
    ctr: float               # normal cardiothoracic ratio (cardiomegaly overrides)
    heart_angle: float
    rib_spacing: float
    mid: float               # film curve: attenuation at mid-grey
    width: float             # film curve: latitude
    noise: float
    female: bool
    tex_seed: int


def sample_patient(rng: np.random.Generator) -> Patient:
    """Draw size, inspiration depth, rotation, habitus and exposure for one patient."""
    s = rng.uniform(0.9, 1.07)
    apex = -150 * s + rng.uniform(-8, 8)
    dome_r = apex + s * rng.uniform(185, 225)   # inspiration depth: 9-11 posterior ribs above the dome
    return Patient(
        W=136 * s, apex=float(apex), dome_r=float(dome_r), dome_l=float(dome_r + rng.uniform(8, 22)),
        margin=float(rng.uniform(18, 45)), depth=float(rng.uniform(190, 250) * s),
        rotation_deg=float(np.clip(rng.normal(0, 1.8), -4, 4)),
        shift=(float(rng.uniform(-8, 8)), float(rng.uniform(-6, 10))), ctr=float(rng.uniform(0.39, 0.47)),
        heart_angle=float(rng.uniform(20, 32)), rib_spacing=float(21.5 * s * rng.uniform(0.95, 1.05)),
        mid=float(rng.uniform(2.8, 3.2)), width=float(rng.uniform(0.75, 0.95)),
        noise=float(rng.uniform(0.012, 0.025)), female=bool(rng.random() < 0.5),
        tex_seed=int(rng.integers(2**31)))


# --- small 2D helpers (all in mm) ---------------------------------------------

def _smooth(x, e0: float, e1: float):
    """Smoothstep 0 -> 1 between e0 and e1 (exactly 0 / 1 outside)."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _inside(d, soft: float):
    """1 inside (signed distance d < 0), 0 outside, a smooth ramp ``soft`` mm wide."""
    return 1.0 - _smooth(d, -soft / 2, soft / 2)


def _seg_dist(U, V, pts) -> np.ndarray:
    """Distance (mm) from every pixel to the polyline through ``pts`` [(u, v), ...]."""
    best = np.full(U.shape, np.inf)
    for (ua, va), (ub, vb) in zip(pts[:-1], pts[1:]):
        du, dv = ub - ua, vb - va
        t = np.clip(((U - ua) * du + (V - va) * dv) / max(du * du + dv * dv, 1e-9), 0, 1)
        np.minimum(best, np.hypot(U - ua - t * du, V - va - t * dv), out=best)
    return best


def _chord(d2, r: float):
    """Projected thickness of a sphere/cylinder of radius r at squared distance d2."""
    return 2 * np.sqrt(np.clip(r * r - d2, 0, None))


def _smooth_noise(shape, sigma_px: float, rng) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    return n / (n.std() + 1e-12)


def _side(side: str) -> list[int]:
    """Patient side -> viewer sign(s): left is +1 (viewer right) on a PA film."""
    return {"left": [1], "right": [-1], "bilateral": [-1, 1]}[side]



def _film(A: np.ndarray, p: Patient, noise: float) -> np.ndarray:
    """Quantum noise (from the patient's seed) and the film curve -> image in [0, 1]."""
    z = np.random.default_rng(p.tex_seed + 1).standard_normal(A.shape)
    z = ndimage.gaussian_filter(z, 0.5) * 1.8
    # monotone in A for |z| < 5: d/dA = 1 + sigma z e^(A/3)/3 > 0.6 at A <= 7
    An = A + noise * p.noise * np.exp(np.clip(A, 0, 7) / 3) * z
    lo = 1 / (1 + np.exp(p.mid / p.width))
    img = (1 / (1 + np.exp(-(An - p.mid) / p.width)) - lo) / (1 - lo)
    return np.clip(img, 0.0, 1.0)
