"""The breathing model of :mod:`medkit.synth.motion`: an analytic, smooth, invertible map per
breathing state, and the per-phase states of an irregular, hysteretic cycle.

See :mod:`medkit.synth.motion` for the model (Lujan breathing signal, diaphragm SI motion with
sliding, chest expansion) and ``data_cards/synth-4dct.md`` for the realism and its sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .thorax import ThoraxParams, cavity_depth, dome_height


def breathing_signal(t, period_s: float, power: int = 2):
    """Breathing state ``s(t) = sin^(2n)(pi t / T)`` in [0, 1]: 0 end exhale, 1 peak inhale."""
    return np.sin(np.pi * np.asarray(t, dtype=np.float64) / period_s) ** (2 * power)


def _states(s) -> tuple[float, float, float]:
    """A breathing state as ``(s_lat, s_ap, s_si)``: a float is the same state on every axis."""
    if np.ndim(s) == 0:
        return float(s), float(s), float(s)
    sx, sy, sz = (float(v) for v in s)
    return sx, sy, sz


def _softplus(u, w: float):
    return w * np.logaddexp(0.0, u / w)


def _sigmoid(u):
    return 0.5 * (1.0 + np.tanh(0.5 * u))


def _softplus_sigmoid(u, w: float):
    """``(softplus_w(u), sigmoid(u / w))`` from one exp and one log1p (the hot loop)."""
    e = np.exp(-np.abs(u) / w)
    sp = np.maximum(u, 0.0) + w * np.log1p(e)
    sig = np.where(u >= 0, 1.0, e) / (1.0 + e)
    return sp, sig


def irregular_state(phase: float, cfg, eta: float, rng: np.random.Generator, reference: bool = False) -> dict:
    """Per-axis breathing state of one phase bin of a sorted 4D CT.

    Args:
        phase: the bin's nominal breathing phase (cycle fraction, 0 = end exhale).
        cfg: ``amplitude_cv``, ``phase_jitter``, ``signal_power``.
        eta: hysteresis of this patient (see :class:`Motion4DConfig`).
        reference: the reference bin is exactly end exhale (identity map), with no draws.

    Returns:
        ``{"states": (s_lat, s_ap, s_si), "phase": actual phase, "amp": cycle amplitude factor}``.
    """
    if reference:
        return {"states": (0.0, 0.0, 0.0), "phase": 0.0, "amp": 1.0}
    ph = phase + (float(rng.normal(0.0, cfg.phase_jitter)) if cfg.phase_jitter > 0 else 0.0)
    amp = 1.0
    if cfg.amplitude_cv > 0:
        amp += float(np.clip(rng.normal(0.0, cfg.amplitude_cv), -2.5 * cfg.amplitude_cv, 2.5 * cfg.amplitude_cv))
    s = amp * float(breathing_signal(ph, 1.0, cfg.signal_power))
    lagged = s * (1.0 - eta * float(np.sin(2 * np.pi * ph)))
    return {"states": (lagged, lagged, s), "phase": ph, "amp": amp}


@dataclass
class BreathingMotion:
    """Peak-inhale displacement model of one patient, scaled by the state ``s``.

    ``forward``/``inverse`` take and return ``(x, y, z)`` world-mm arrays (float64).
    """

    anatomy: ThoraxParams
    amplitude_mm: float
    ap_mm: float
    lat_mm: float
    decay_up_mm: float = 90.0
    decay_down_mm: float = 150.0
    sliding_mm: float = 10.0
    wall_fraction: float = 0.1

    _W_SP = 8.0  # softness (mm) of the kinks in G and D_y

    def _g(self, h):
        """G(h) and dG/dh: decay with height h above the dome, G(0) = 1."""
        w = self._W_SP
        sp, sig = _softplus_sigmoid(h, w)  # softplus(-h) = softplus(h) - h
        e = -sp / self.decay_up_mm - (sp - h) / self.decay_down_mm
        e0 = -w * np.log(2.0) * (1 / self.decay_up_mm + 1 / self.decay_down_mm)
        g = np.exp(e - e0)
        dg = g * (-sig / self.decay_up_mm + (1.0 - sig) / self.decay_down_mm)
        return g, dg

    def weight(self, x, y):
        """W(x, y): 1 in the cavity, ``wall_fraction`` in the chest wall and spine."""
        p = self.anatomy
        inside = _sigmoid(cavity_depth(x, y, p) * (4.4 / self.sliding_mm))
        spine = np.exp(-((x / 35.0) ** 2 + ((y - p.y_spine) / 28.0) ** 2) ** 2)
        return self.wall_fraction + (1 - self.wall_fraction) * inside * (1 - spine)

    def _ap_height(self) -> float:
        p = self.anatomy
        return p.b_m + p.fat_mm - p.y_spine

    def _dx(self, x):
        p = self.anatomy
        return self.lat_mm * x / (p.a_m + p.fat_mm)

    def _dy(self, y):
        return self.ap_mm * _softplus(y - self.anatomy.y_spine, 15.0) / self._ap_height()

    def forward(self, pts, s):
        """``phi_s(x) = x + s D(x)`` at reference points ``(x, y, z)``; ``s`` a float or per-axis
        ``(s_lat, s_ap, s_si)`` (hysteresis: the axes at different states; still triangular)."""
        x, y, z = (np.asarray(c, dtype=np.float64) for c in pts)
        sx, sy, sz = _states(s)
        if sx == sy == sz == 0:
            return x.copy(), y.copy(), z.copy()
        h = z - dome_height(x, y, self.anatomy)
        g, _ = self._g(h)
        dz = -self.amplitude_mm * self.weight(x, y) * g
        return x + sx * self._dx(x), y + sy * self._dy(y), z + sz * dz

    def inverse(self, pts, s, iters: int = 30, tol: float = 1e-7):
        """``phi_s^{-1}(y)``: x in closed form, y and z by 1D Newton (monotone)."""
        yx, yy, yz = (np.asarray(c, dtype=np.float64) for c in pts)
        sx, sy, sz = _states(s)
        if sx == sy == sz == 0:
            return yx.copy(), yy.copy(), yz.copy()
        p = self.anatomy
        x = yx / (1.0 + sx * self.lat_mm / (p.a_m + p.fat_mm))
        y = yy.copy()
        hgt = self._ap_height()
        for _ in range(iters):
            sp, sig = _softplus_sigmoid(y - p.y_spine, 15.0)
            f = y + sy * self.ap_mm * sp / hgt - yy
            y -= f / (1.0 + sy * self.ap_mm * sig / hgt)
            if np.max(np.abs(f)) < tol:
                break
        zd = dome_height(x, y, p)
        aw = self.amplitude_mm * self.weight(x, y)
        z = yz + sz * aw * self._g(yz - zd)[0]  # one fixed-point step as the first guess
        for _ in range(iters):
            g, dg = self._g(z - zd)
            f = z - sz * aw * g - yz
            z -= f / (1.0 - sz * aw * dg)
            if np.max(np.abs(f)) < tol:
                break
        return x, y, z


@dataclass
class RigidBreathing:
    """Breathing state ``s`` then a rigid repositioning: ``y = Q phi_s(x) + c`` (mm)."""

    breathing: BreathingMotion
    s: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    def forward(self, pts):
        b = self.breathing.forward(pts, self.s)
        q, c = self.rotation, self.translation
        return tuple(q[i, 0] * b[0] + q[i, 1] * b[1] + q[i, 2] * b[2] + c[i] for i in range(3))

    def inverse(self, pts):
        q, c = self.rotation, self.translation
        d = [np.asarray(pts[i], dtype=np.float64) - c[i] for i in range(3)]
        r = tuple(q[0, i] * d[0] + q[1, i] * d[1] + q[2, i] * d[2] for i in range(3))  # Q^T d
        return self.breathing.inverse(r, self.s)


class _PhaseMap:
    """Adapter: forward/inverse of one breathing state."""

    def __init__(self, motion: BreathingMotion, s):
        self.motion, self.s = motion, s

    def forward(self, pts):
        return self.motion.forward(pts, self.s)

    def inverse(self, pts):
        return self.motion.inverse(pts, self.s)
