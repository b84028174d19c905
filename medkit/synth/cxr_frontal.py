"""The PA (frontal) film of :mod:`medkit.synth.cxr`: the patient's anatomy as attenuation
line integrals (lungs, heart, mediastinum, ribs, clavicles, diaphragm, abdomen) and each
finding as an additive attenuation layer whose support is its mask (cardiomegaly scales the
heart to a target cardiothoracic ratio instead). The projection model and the film curve are
described in :mod:`medkit.synth.cxr`; the lateral view is :mod:`medkit.synth.cxr_lateral`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .cxr_anatomy import (
    FOV_MM,
    MU_B,
    MU_L,
    MU_M,
    MU_T,
    Patient,
    _chord,
    _film,
    _inside,
    _seg_dist,
    _side,
    _smooth,
    _smooth_noise,
)
from .cxr_reports import Finding, finding_observations

# --- the frontal anatomy ----------------------------------------------------

class _Frontal:
    """Coordinates, anatomy masks and base attenuation of one patient's PA film."""

    def __init__(self, p: Patient, size: int, ctr: float):
        self.p, self.size = p, size
        self.px = FOV_MM / size
        c = (np.arange(size) - (size - 1) / 2) * self.px
        v0, u0 = np.meshgrid(c, c, indexing="ij")
        a = np.radians(p.rotation_deg)
        self.U = np.cos(a) * u0 + np.sin(a) * v0 - p.shift[0]
        self.V = -np.sin(a) * u0 + np.cos(a) * v0 - p.shift[1]
        U, V, W = self.U, self.V, p.W
        self.H = p.dome_r - p.apex
        self.carina = p.apex + 0.40 * self.H
        ax = np.abs(U)
        self.dome = np.where(U < 0, p.dome_r, p.dome_l) + 35 * ((ax - 0.45 * W) / (0.55 * W)) ** 2
        top = p.apex + 55 * ((ax - 0.45 * W) / (0.45 * W)) ** 2
        lat = W * (0.94 + 0.06 * np.clip((V - p.apex) / self.H, 0, 1))
        self.cage = (V > top) & (ax < lat) & (V < self.dome)
        knob = p.apex + 0.30 * self.H
        self.mr = 24 + 6 * _smooth(V, self.carina, self.carina + 40)
        self.ml = 24 + 20 * np.exp(-(((V - knob) / 16) ** 2)) + 12 * _smooth(V, knob + 10, knob + 40)
        self.medias = (U > -self.mr) & (U < self.ml)
        self.heart_lvl, self.heart = self._heart(ctr)
        self.lung_env = self.cage & ~self.medias
        self.lungs = self.lung_env & ~self.heart
        env_edt = ndimage.distance_transform_edt(self.lung_env) * self.px
        self.cage_edt = ndimage.distance_transform_edt(self.cage) * self.px
        self.lung_edt = ndimage.distance_transform_edt(self.lungs) * self.px
        depth = p.depth * 0.78 * (0.55 + 0.45 * np.clip((V - p.apex) / self.H, 0, 1))
        heart_soft = _inside((self.heart_lvl - 1) * 60, 4.0) * (V < self.dome)
        self.t_lung = depth * np.sqrt(np.clip(env_edt / 18, 0, 1)) * (1 - 0.85 * heart_soft)
        self.hila = [(s * 0.30 * W, p.apex + 0.48 * self.H) for s in (-1, 1)]
        self.ctr = self.measure_ctr()

    def _heart(self, ctr: float):
        """Heart ellipse scaled until the measured cardiothoracic ratio hits ``ctr``."""
        p, U, V = self.p, self.U, self.V
        phi = np.radians(p.heart_angle)
        hw = ctr * p.W
        for _ in range(4):
            a = hw / np.sqrt(np.cos(phi) ** 2 + (0.78 * np.sin(phi)) ** 2)
            b = 0.78 * a
            uc, vc = 0.31 * ctr * p.W + 0.2 * (hw - ctr * p.W), (p.dome_r + p.dome_l) / 2 - 0.3 * b
            du, dv = U - uc, V - vc
            lvl = np.hypot((du * np.cos(phi) + dv * np.sin(phi)) / a, (-du * np.sin(phi) + dv * np.cos(phi)) / b)
            mask = (lvl < 1) & (V < self.dome)
            self.heart_geom = {"center_mm": [float(uc), float(vc)], "axes_mm": [float(a), float(b)]}
            self.heart, got = mask, None
            got = self.measure_ctr()
            if abs(got - ctr) < 0.004:
                break
            hw *= ctr / max(got, 1e-3)
        return lvl, mask

    def measure_ctr(self) -> float:
        """Max horizontal heart width / max inner thoracic width, both from the masks (pixels)."""
        return measure_ctr(self.heart, self.cage & ~self.medias | self.heart)

    # Ribs: posterior from the spine, curving down laterally; anterior from the
    # lateral wall sweeping down and medially to the costal cartilage.
    def rib(self, sign: int, k: int, dv: float = 0.0, part: str = "both") -> np.ndarray:
        p, W = self.p, self.p.W
        x = sign * self.U / W
        v0 = p.apex - 10 + (k - 1) * p.rib_spacing + dv
        out = np.zeros_like(self.U)
        if part in ("both", "posterior"):
            f = v0 - 14 * x + (30 + 2 * k) * x**2
            w = 7 + 0.3 * k
            d = np.abs(self.V - f)
            prof = _inside(d - w / 2, 1.4 * self.px) * (0.65 + 0.35 * np.clip(d / (w / 2), 0, 1) ** 2)
            out += MU_B * 6 * prof * _smooth(x, 0.07, 0.13) * (1 - _smooth(x, 1.02, 1.08))
        if part in ("both", "anterior"):
            vl = v0 - 14 * 1.04 + (30 + 2 * k) * 1.04**2
            s = np.clip((1.04 - x) / 0.64, 0, None)
            g = vl + 62 * s - 14 * s**2
            d = np.abs(self.V - g)
            out += MU_B * 3 * _inside(d - 5, 1.4 * self.px) * _smooth(x, 0.36, 0.44) * (1 - _smooth(x, 1.02, 1.08))
        return out

    def base(self) -> tuple[np.ndarray, np.ndarray]:
        """Anatomy attenuation A (no findings) and the lung-marking layer."""
        p, U, V, W = self.p, self.U, self.V, self.p.W
        rng = np.random.default_rng(p.tex_seed)
        # body: neck, shoulders, chest wall; path length of an elliptic cylinder
        hw = 0.38 * W + (0.62 * W + p.margin) * _smooth(V, p.apex - 70, p.apex - 10)
        hw = hw + 28 * np.exp(-(((V - p.apex + 5) / 28) ** 2))
        dep = p.depth * (0.6 + 0.4 * _smooth(V, p.apex - 70, p.apex))
        A = MU_T * dep * np.sqrt(np.clip(1 - (U / hw) ** 2, 0, None))
        A -= (MU_T - MU_L) * self.t_lung
        # lung markings: streaks radiating from the hila, thinning to the periphery
        theta_noise = rng.standard_normal((96, 12))
        marks = np.zeros_like(U)
        for hu, hv in self.hila:
            r = np.hypot(U - hu, V - hv)
            th = (np.arctan2(V - hv, U - hu) / (2 * np.pi) % 1) * 96
            rr = np.log1p(r / 20) * 3
            tex = ndimage.map_coordinates(theta_noise, [th, rr], order=1, mode="grid-wrap")
            marks += np.clip(tex - 0.6, 0, None) * np.exp(-r / (0.55 * W))
        marks += 0.25 * np.clip(_smooth_noise(U.shape, 1.2 / self.px * 2, rng), -2, 2) + 0.5
        marks = (MU_T - MU_L) * self.t_lung * 0.12 * np.clip(marks, 0, None) * self.lungs
        A += marks
        for hu, hv in self.hila:  # hilar vessels
            A += (MU_T - MU_L) * self.t_lung * 0.35 * _inside(np.hypot((U - hu) / 14, (V - hv) / 24) - 1, 0.5)
        # trachea and main bronchi (air column in the mediastinum)
        tr = _inside(np.abs(U) - 8, 2) * _inside(V - self.carina, 4)
        for s in (-1, 1):
            tr = np.maximum(tr, _inside(_seg_dist(U, V, [(0, self.carina), (s * 32, self.carina + 28)]) - 6, 2))
        A -= MU_T * 14 * tr
        # spine: vertebral bodies with disc spaces, pedicles
        sw = 17 + 0.04 * (V - p.apex)
        period = p.rib_spacing * 1.05
        ph = (V - p.apex) / period % 1.0
        body = _inside(np.abs(U) - sw, 2) * (1 - 0.4 * _inside(np.abs(ph - 0.95) - 0.06, 0.05))
        ped = sum(_inside(np.hypot((U - s * (sw - 5)) / 4, (ph - 0.35) * period / 6) - 1, 0.4) for s in (-1, 1))
        A += MU_B * 7 * body + MU_B * 4 * ped
        # ribs (1..12 each side) and clavicles
        rows = self._row_ranges()
        for s in (-1, 1):
            for k in range(1, 13):
                lo, hi = rows(p.apex - 40 + (k - 1) * p.rib_spacing, p.apex + 130 + (k - 1) * p.rib_spacing)
                sub = _Sub(self, lo, hi)
                A[lo:hi] += _Frontal.rib(sub, s, k)
            x = s * U / W
            f = p.apex + 6 - 20 * x + 10 * x**2 + 5 * np.sin(2 * np.pi * x)
            A += MU_B * 11 * _inside(np.abs(V - f) - 6.5, 1.4 * self.px) * _smooth(x, 0.06, 0.12) * (1 - _smooth(x, 1.05, 1.12))
        # gastric bubble under the left hemidiaphragm, breasts
        gu, gv = 0.45 * W, p.dome_l + 40
        A -= MU_T * 0.6 * _chord(((U - gu) / 1.6) ** 2 + (V - gv) ** 2, 18) * (V < gv) * (V > self.dome + 3)
        if p.female:
            for s in (-1, 1):
                d2 = ((U - s * 0.6 * W) / 1.5) ** 2 + (V - p.dome_r + 10) ** 2
                A += MU_T * 0.5 * _chord(d2, 55) * _smooth(V, p.dome_r - 70, p.dome_r - 40)
        return A, marks

    def _row_ranges(self):
        vmin, vmax = self.V.min(axis=1), self.V.max(axis=1)

        def rows(a, b):
            idx = np.nonzero((vmax >= a) & (vmin <= b))[0]
            return (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)
        return rows


class _Sub:
    """A row band of a :class:`_Frontal` (fast ribs: each touches ~1/4 of the rows)."""

    def __init__(self, f: _Frontal, lo: int, hi: int):
        self.p, self.px, self.U, self.V = f.p, f.px, f.U[lo:hi], f.V[lo:hi]


def measure_ctr(heart: np.ndarray, thorax: np.ndarray) -> float:
    """Cardiothoracic ratio from masks: widest heart extent / widest thorax extent (columns)."""
    def width(m):
        cols = np.nonzero(m.any(axis=0))[0]
        return float(cols[-1] - cols[0] + 1) if cols.size else 0.0
    return width(heart) / max(width(thorax), 1.0)


# --- findings: additive attenuation layers -----------------------------------

def _zone_center(fr: _Frontal, s: int, zone: str, rng) -> tuple[float, float]:
    fx = {"upper": 0.5, "middle": 0.42, "lower": 0.6}[zone]
    fy = {"upper": 0.25, "middle": 0.62, "lower": 0.84}[zone]
    return s * fr.p.W * (fx + rng.uniform(-0.06, 0.06)), fr.p.apex + fr.H * (fy + rng.uniform(-0.04, 0.04))


def _finding_layer(fr: _Frontal, f: Finding, marks: np.ndarray) -> tuple[np.ndarray, dict]:
    """Attenuation added by one finding on the PA film, and where it is (mm)."""
    rng = np.random.default_rng(f.seed)
    U, V, p, W = fr.U, fr.V, fr.p, fr.p.W
    dA = np.zeros_like(U)
    geo: dict = {}
    fill = (MU_T - MU_L) * fr.t_lung   # lung air fully replaced by water density
    if f.kind == "effusion":
        h = {"small": 0.12, "moderate": 0.25, "large": 0.45}[f.severity] * fr.H
        for s in _side(f.side):
            v_cpa = (p.dome_r if s < 0 else p.dome_l) + 35
            level = v_cpa - h
            r = np.clip((s * U - 0.2 * W) / (0.8 * W), 0, 1)
            v_f = level + (0.35 * h + 10) * (1 - r) ** 2   # meniscus: higher against the lateral wall
            reg = _smooth(V - v_f, -3, 3) * (fr.lung_env & (s * U > 0))
            g = 0.45 + 0.55 * np.clip((V - v_f) / max(h, 30), 0, 1)   # layering: denser dependently
            dA += reg * (fill * g + MU_T * 10)
            geo.setdefault("fluid_level_mm", []).append(float(level))
    elif f.kind == "pneumothorax":
        s = _side(f.side)[0]
        d0 = {"small": 10, "moderate": 22, "large": 40}[f.severity]
        d = d0 * (1 - _smooth(V, p.apex + 0.25 * fr.H, p.apex + 0.8 * fr.H))
        side = fr.lungs & (s * U > 0)
        reg = (1 - _smooth(fr.cage_edt, d - 1.5, d + 1.5)) * side * (d > 1)
        line = _inside(np.abs(fr.cage_edt - d - 1.5) - 0.7, 1.2) * side * (d > 2)
        dA += -reg * (MU_L * fr.t_lung + marks) + MU_T * 4 * line
        geo["rim_mm"] = d0
    elif f.kind in ("consolidation", "pneumonia", "opacity"):
        s = _side(f.side)[0]
        uc, vc = _zone_center(fr, s, f.params["zone"], rng)
        R = {"small": 22, "moderate": 35, "large": 52}[f.severity]
        lvl = np.hypot((U - uc) / R, (V - vc) / (0.8 * R)) + 0.25 * _smooth_noise(U.shape, 6 / fr.px, rng)
        reg = (1 - _smooth(lvl, 0.6, 1.05)) * (fr.lungs & (s * U > 0))
        dens = 0.3 if f.kind == "opacity" else 0.55
        layer = reg * (fill * dens + MU_T * 3)
        if f.params.get("air_bronchograms"):
            hu, hv = fr.hila[0 if s < 0 else 1]
            ang = np.arctan2(vc - hv, uc - hu)
            tube = np.zeros_like(U)
            for _ in range(3):
                a = ang + rng.uniform(-0.5, 0.5)
                pts = [(uc - 0.6 * R * np.cos(a), vc - 0.6 * R * np.sin(a)), (uc + 0.6 * R * np.cos(a), vc + 0.6 * R * np.sin(a))]
                tube = np.maximum(tube, _inside(_seg_dist(U, V, pts) - 1.5, 1.0))
            layer *= 1 - 0.4 * tube * (lvl < 0.7)
        dA += layer
        geo["center_mm"] = [uc, vc]
    elif f.kind == "atelectasis":
        thick = {"mild": 4.5, "moderate": 7, "severe": 7}[f.severity]
        lift = {"mild": 0, "moderate": 14, "severe": 30}[f.severity]
        for s in _side(f.side):
            side = fr.lungs & (s * U > 0)
            uc = s * W * rng.uniform(0.45, 0.65)
            vc = (p.dome_r if s < 0 else p.dome_l) - rng.uniform(25, 45)
            a, ln = np.radians(rng.uniform(-12, 12)), rng.uniform(25, 40)
            pts = [(uc - ln * np.cos(a), vc - ln * np.sin(a)), (uc + ln * np.cos(a), vc + ln * np.sin(a))]
            dA += side * (fill * 0.45 + MU_T * 3) * _inside(_seg_dist(U, V, pts) - thick / 2, 3)
            if lift:  # volume loss: the hemidiaphragm rises into the lung base
                e = lift * np.clip(1 - ((s * U - 0.45 * W) / (0.6 * W)) ** 2, 0, 1)
                dA += side * _smooth(V - (fr.dome - e), -2, 2) * (e > 0) * (fill * 0.95 + MU_T * 3)
            if f.severity == "severe":  # collapsed lower lobe behind the heart: a triangular density
                tri = _inside(np.hypot((U - s * 0.22 * W) / 28, (V - fr.dome + 40) / 45) - 1, 0.3)
                dA += tri * (fr.lung_env & (s * U > 0)) * (fill * 0.8 + MU_T * 3)
            geo.setdefault("band_center_mm", []).append([float(uc), float(vc)])
    elif f.kind == "edema":
        R = {"mild": 0.45, "moderate": 0.6, "severe": 0.8}[f.severity] * W
        st = {"mild": 0.18, "moderate": 0.3, "severe": 0.45}[f.severity]
        upper = 1 - _smooth(V, p.apex + 0.2 * fr.H, p.apex + 0.55 * fr.H)   # vascular cephalization
        for hu, hv in fr.hila:
            w = np.clip(1 - np.hypot(U - hu, V - hv) / R, 0, 1) ** 1.5     # perihilar bat-wing haze
            dA += fr.lungs * fill * st * w
        dA += marks * st * 4 * upper
        if f.params.get("kerley_lines"):
            for s in (-1, 1):
                dome0 = (p.dome_r if s < 0 else p.dome_l) + 35
                for j in range(6):
                    vj = dome0 - 12 - 9 * j
                    seg = [(s * (W - 20), vj), (s * W, vj)]
                    dA += fr.lungs * MU_T * 8 * _inside(_seg_dist(U, V, seg) - 0.6, 0.8)
    elif f.kind == "lesion":
        s = _side(f.side)[0]
        r = f.params["size_mm"] / 2
        uc, vc = _zone_center(fr, s, f.params["zone"], rng)
        ok = (fr.lung_edt > r + 4) & (s * U > 0)
        if not ok.any():
            ok = (fr.lung_edt >= fr.lung_edt[s * U > 0].max()) & (s * U > 0)
        d2 = np.where(ok, (U - uc) ** 2 + (V - vc) ** 2, np.inf)
        i = np.unravel_index(np.argmin(d2), U.shape)
        uc, vc = float(U[i]), float(V[i])
        rr = r * (1 + (0.12 * _smooth_noise(U.shape, 5 / fr.px, rng) if r >= 15 else 0))  # masses lobulate
        dA += MU_T * 0.8 * 2 * np.sqrt(np.clip(rr**2 - ((U - uc) ** 2 + (V - vc) ** 2), 0, None))
        geo["center_mm"] = [uc, vc]
    elif f.kind == "wide_mediastinum":
        ex = f.params["extra_mm"]
        bump = _smooth(V, p.apex, p.apex + 30) * (1 - _smooth(V, fr.carina + 10, fr.carina + 50))
        reg = ((U > -fr.mr - ex * bump) & (U < fr.ml + ex * bump)) & fr.lung_env
        dA += reg * bump * (fill * 0.9 + MU_T * 5)
    elif f.kind == "fracture":
        s = _side(f.side)[0]
        k = f.params["rib"]
        uf = s * W * rng.uniform(0.62, 0.85)
        rib = fr.rib(s, k, part="posterior")
        gap = _inside(np.abs(U - uf) - 1.5, 1.2)
        dA -= rib * gap
        if f.params.get("displaced"):
            lat = _smooth(s * (U - uf), 0, 2) * (1 - _smooth(s * (U - uf), 25, 45)) * (1 - gap)
            dA += (fr.rib(s, k, dv=3.5, part="posterior") - rib) * lat
        geo["break_mm"] = [float(uf), float(p.apex - 10 + (k - 1) * p.rib_spacing - 14 * abs(uf) / W + (30 + 2 * k) * (uf / W) ** 2)]
    elif f.kind == "pleural_thickening":
        s = _side(f.side)[0]
        if f.params["location"] == "apical":
            t = 7 * (1 - _smooth(V, p.apex + 25, p.apex + 60))
        else:
            t = 5 * _smooth(V, p.apex + 0.35 * fr.H, p.apex + 0.45 * fr.H) * (1 - _smooth(V, p.apex + 0.7 * fr.H, p.apex + 0.8 * fr.H))
            t = t * (s * U > 0.5 * W)
        dA += MU_T * 15 * (1 - _smooth(fr.cage_edt, t - 1, t + 1)) * (fr.cage & (s * U > 0)) * (t > 0.5)
    elif f.kind == "ett":
        tip = fr.carina - 10 * f.params["tip_above_carina_cm"]
        along = _inside(V - tip, 2)
        dA += along * (MU_T * 6 * _inside(np.abs(np.abs(U) - 5.5) - 1.0, 0.8) + MU_M * 1.5 * _inside(np.abs(U - 4.5) - 0.6, 0.6))
        geo["tip_mm"] = [0.0, float(tip)]
    elif f.kind == "central_line":
        s = _side(f.side)[0]
        tip = (-16.0, fr.carina + 25)
        if f.params["route"] == "internal jugular":
            pts = [(s * 48, p.apex - 90), (s * 38, p.apex - 10), (s * 16 if s > 0 else -22, p.apex + 45), tip]
        else:
            pts = [(s * 0.9 * W, p.apex + 22), (s * 0.4 * W, p.apex + 32), (s * 20 if s > 0 else -22, p.apex + 50), tip]
        dA += MU_M * 1.2 * _inside(_seg_dist(U, V, pts) - 1.0, 0.8)
        geo["tip_mm"] = list(tip)
    elif f.kind == "pacemaker":
        s = _side(f.side)[0]
        gu, gv = s * 0.66 * W, p.apex + 38
        box = ((np.abs(U - gu) / 24) ** 4 + (np.abs(V - gv) / 19) ** 4) ** 0.25
        dA += MU_M * 5 * _inside(box - 1, 0.08)
        hc = fr.heart_geom["center_mm"]
        ab = fr.heart_geom["axes_mm"]
        for end in ((-0.35 * ab[0] + hc[0], hc[1] - 0.3 * ab[1]), (hc[0] + 0.45 * ab[0], hc[1] + 0.45 * ab[1])):
            pts = [(gu, gv), (s * 0.3 * W, p.apex + 30), (-14, fr.carina + 20), (-22, hc[1] - 0.6 * ab[1]), end]
            dA += MU_M * 1.3 * _inside(_seg_dist(U, V, pts) - 1.0, 0.8)
        geo["generator_mm"] = [float(gu), float(gv)]
    elif f.kind != "cardiomegaly":
        raise ValueError(f"unknown finding kind {f.kind!r}")
    return dA, geo


def render_frontal(p: Patient, findings: list[Finding], size: int = 256, noise: float = 1.0) -> dict:
    """Render the PA film of patient ``p`` with ``findings``.

    Returns:
        ``{"image": (X, Y) float64 in [0, 1] (row = caudal, column = viewer right),
        "masks": {"heart", "lungs", <observation>: (X, Y) bool}, "ctr": float,
        "geometry": [per-finding dict (centroid_px, area_px, kind-specific mm)]}``.
        Observation masks are the support of each finding's attenuation layer
        (the heart mask for cardiomegaly); observations not rendered get no key.
    """
    cm = [f for f in findings if f.kind == "cardiomegaly"]
    fr = _Frontal(p, size, cm[0].params["ctr"] if cm else p.ctr)
    A, marks = fr.base()
    masks: dict[str, np.ndarray] = {"heart": fr.heart, "lungs": fr.lungs}
    geometry = []
    for f in findings:
        dA, geo = _finding_layer(fr, f, marks)
        m = fr.heart.copy() if f.kind == "cardiomegaly" else dA != 0
        if f.kind == "cardiomegaly":
            geo["ctr"] = round(fr.ctr, 4)
        A += dA
        for o in finding_observations(f):
            masks[o] = masks[o] | m if o in masks else m
        ys, xs = np.nonzero(m)
        geo.update(kind=f.kind, area_px=int(m.sum()),
                   centroid_px=[round(float(ys.mean()), 1), round(float(xs.mean()), 1)] if ys.size else None)
        geometry.append(geo)
    kids = [masks[o] for o in ("Consolidation", "Pneumonia", "Edema", "Atelectasis", "Lung Lesion", "Lung Opacity") if o in masks]
    if kids:
        masks["Lung Opacity"] = np.logical_or.reduce(kids)
    return {"image": _film(A, p, noise), "masks": masks, "ctr": fr.ctr, "geometry": geometry}
