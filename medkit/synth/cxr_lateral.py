"""The lateral radiograph renderer (simpler than the PA one: no masks, findings drawn approximately)."""

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
    _film,
    _inside,
    _seg_dist,
    _smooth,
    _smooth_noise,
)
from .cxr_reports import Finding

# --- the lateral view (simpler: no masks, findings drawn approximately) -------

def render_lateral(p: Patient, findings: list[Finding], size: int = 256, noise: float = 1.0) -> np.ndarray:
    """Left lateral film ``(X, Y)`` in [0, 1]: anterior to the viewer's left, spine on the right.

    Both lungs superimpose, so a unilateral finding adds half the density it
    would on the PA film. Pneumothorax, fracture, pleural thickening and
    mediastinal widening are not drawn on this view.
    """
    px = FOV_MM / size
    c = (np.arange(size) - (size - 1) / 2) * px
    V, Wc = np.meshgrid(c, c, indexing="ij")
    V, Wc = V - p.shift[1], Wc - 0.4 * p.shift[0]
    Dh, H = p.depth / 2, p.dome_r - p.apex
    carina = p.apex + 0.40 * H
    front = -Dh * (0.55 + 0.45 * _smooth(V, p.apex - 60, p.apex + 10))
    back = Dh * (0.75 + 0.25 * _smooth(V, p.apex - 60, p.apex + 10))
    hd, wc = (back - front) / 2, (back + front) / 2
    path = 2 * (p.W + p.margin) * (0.45 + 0.55 * _smooth(V, p.apex - 70, p.apex - 10))
    A = MU_T * path * np.sqrt(np.clip(1 - ((Wc - wc) / hd) ** 2, 0, None))
    dome = (p.dome_r + p.dome_l) / 2 - 8 + 45 * np.clip((Wc + 0.3 * Dh) / (1.2 * Dh), 0, 1) ** 2
    top = p.apex + 30 * ((Wc - 0.15 * Dh) / (0.6 * Dh)) ** 2
    lung = (Wc > front + 16) & (Wc < back - 20) & (V > top) & (V < dome)
    edt = ndimage.distance_transform_edt(lung) * px
    cm = [f for f in findings if f.kind == "cardiomegaly"]
    k = (cm[0].params["ctr"] if cm else p.ctr) / 0.43
    ha, hb = 0.42 * Dh * k, 0.36 * Dh * (1 + 0.5 * (k - 1))
    hu, hv = -Dh + 18 + ha * 0.9, (p.dome_r + p.dome_l) / 2 - 0.45 * hb
    hl = np.hypot((Wc - hu) / ha, (V - hv) / hb)
    heart = _inside((hl - 1) * 40, 4) * (V < dome + 5)
    t_lung = 2 * 0.75 * p.W * (0.55 + 0.45 * np.clip((V - p.apex) / H, 0, 1)) * np.sqrt(np.clip(edt / 20, 0, 1))
    t_lung *= 1 - 0.55 * heart
    A -= (MU_T - MU_L) * t_lung
    rng = np.random.default_rng(p.tex_seed + 2)
    A += (MU_T - MU_L) * t_lung * 0.06 * np.clip(_smooth_noise(V.shape, 1.5, rng) + 0.5, 0, None) * lung
    # spine (vertebral bodies with discs), sternum, trachea
    sp0, sp1 = back - 0.45 * Dh, back - 0.2 * Dh
    ph = (V - p.apex) / (p.rib_spacing * 1.05) % 1.0
    A += MU_B * 10 * _inside(np.abs(Wc - (sp0 + sp1) / 2) - (sp1 - sp0) / 2, 2) * (1 - 0.4 * _inside(np.abs(ph - 0.95) - 0.06, 0.05))
    A += MU_B * 12 * _inside(np.abs(Wc - front - 9) - 5, 2) * _smooth(V, p.apex + 10, p.apex + 20) * (1 - _smooth(V, p.apex + 0.7 * H, p.apex + 0.75 * H))
    tw = -0.05 * Dh + (V - (p.apex - 100)) / (carina - p.apex + 100) * 0.13 * Dh
    A -= MU_T * 14 * _inside(np.abs(Wc - tw) - 8, 2) * _inside(V - carina, 4)
    fill = (MU_T - MU_L) * t_lung
    zone_w = {"upper": -0.05, "middle": -0.45, "lower": 0.45}
    zone_v = {"upper": 0.25, "middle": 0.62, "lower": 0.84}
    for f in findings:
        r = np.random.default_rng(f.seed + 7)
        half = 0.5 if f.side in ("left", "right") else 1.0
        if f.kind == "effusion":
            h = {"small": 0.12, "moderate": 0.25, "large": 0.45}[f.severity] * H
            v_f = dome.max() - h + 0.6 * h * np.clip((0.8 * Dh - Wc) / (1.6 * Dh), 0, 1)   # rises posteriorly
            A += half * lung * _smooth(V - v_f, -3, 3) * (fill * 0.8 + MU_T * 10)
        elif f.kind in ("consolidation", "pneumonia", "opacity", "lesion"):
            z = f.params["zone"]
            uc, vc = zone_w[z] * Dh + r.uniform(-10, 10), p.apex + zone_v[z] * H + r.uniform(-8, 8)
            if f.kind == "lesion":
                rr = f.params["size_mm"] / 2
                A += MU_T * 0.8 * 2 * np.sqrt(np.clip(rr**2 - (Wc - uc) ** 2 - (V - vc) ** 2, 0, None))
            else:
                R = {"small": 22, "moderate": 35, "large": 52}[f.severity]
                reg = (1 - _smooth(np.hypot((Wc - uc) / R, (V - vc) / (0.8 * R)), 0.85, 1.05)) * lung
                A += half * reg * fill * (0.45 if f.kind == "opacity" else 0.8)
        elif f.kind == "atelectasis":
            seg = [(0.1 * Dh, dome.max() - 45), (0.6 * Dh, dome.max() - 35)]
            A += half * lung * fill * 0.6 * _inside(_seg_dist(Wc, V, seg) - 3, 2)
        elif f.kind == "edema":
            st = {"mild": 0.18, "moderate": 0.3, "severe": 0.45}[f.severity]
            A += lung * fill * st * np.clip(1 - np.hypot(Wc - 0.05 * Dh, V - p.apex - 0.48 * H) / (0.7 * Dh), 0, 1) ** 1.5
        elif f.kind == "ett":
            tip = carina - 10 * f.params["tip_above_carina_cm"]
            A += MU_M * 1.5 * _inside(np.abs(Wc - tw + 4) - 0.6, 0.6) * _inside(V - tip, 2)
        elif f.kind == "central_line":
            pts = [(-0.1 * Dh, p.apex - 90), (-0.2 * Dh, p.apex + 20), (-0.25 * Dh, carina + 25)]
            A += MU_M * 1.2 * _inside(_seg_dist(Wc, V, pts) - 1.0, 0.8)
        elif f.kind == "pacemaker":
            gw, gv = -Dh + 14, p.apex + 38
            A += MU_M * 5 * _inside(((np.abs(Wc - gw) / 8) ** 4 + (np.abs(V - gv) / 19) ** 4) ** 0.25 - 1, 0.1)
            pts = [(gw, gv), (-0.2 * Dh, carina + 20), (hu - 0.3 * ha, hv + 0.5 * hb)]
            A += MU_M * 1.3 * _inside(_seg_dist(Wc, V, pts) - 1.0, 0.8)
    return _film(A, p, noise)
