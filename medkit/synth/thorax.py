"""Analytic thorax + upper-abdomen CT phantom for 4D and longitudinal motion data.

The phantom is a *function of world coordinates* (RAS mm): :func:`thorax_hu_labels`
returns HU and labels at any points, so a deformed phase is rendered exactly by
evaluating it at the inverse-mapped points of a fine grid (see
:mod:`medkit.synth.motion`). Anatomy, from outside in: air, subcutaneous fat
(thickness ``fat_mm``, the knob weight change turns), a muscle wall with ribs,
then the cavity: lungs (about -850 HU, with a random tubular vessel network and
parenchymal texture so registration has features), mediastinum with heart,
aorta, trachea and spine, the two diaphragm domes, and below them the liver
(right, under the higher dome) with a tumour, stomach (with a gas cap) and spleen.

Fine texture comes from two noise lattices built once per patient
(:class:`TextureField`) and sampled trilinearly: still a deterministic function
of world coordinates, so "analytic" in the sense that matters here (every phase
is rendered from the same function, with no resampling of a rendered image).

Axes are RAS: x to the patient's left, y posterior->anterior, z inferior->superior.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .shapes import ellipsoid_level, smooth_noise

#: Label values of the phantom (the data cards' ``labels`` map).
LABELS = {0: "background", 1: "liver", 2: "tumour", 3: "lung"}
N_LABELS = len(LABELS)

HU = {
    "air": -1000.0, "fat": -100.0, "muscle": 50.0, "rib": 500.0, "abdomen": 25.0,
    "mediastinum": -40.0, "lung": -855.0, "vessel": 40.0, "heart": 40.0, "aorta": 45.0,
    "bone": 300.0, "cortex": 700.0, "csf": 15.0, "liver": 60.0, "tumour": 25.0,
    "stomach": 15.0, "spleen": 50.0,
}


@dataclass
class ThoraxParams:
    """One patient's anatomy, all in mm (RAS world).

    ``a_m, b_m`` are the outer semi-axes (x, y) of the muscle wall; the skin is
    ``fat_mm`` further out; the cavity (pleura / peritoneum) is ``wall_mm`` inside.
    The diaphragm is two paraboloid domes (right one higher, as usual).
    """

    a_m: float
    b_m: float
    fat_mm: float
    wall_mm: float
    dome_r: tuple[float, float, float]  # right dome apex (x, y, z)
    dome_l: tuple[float, float, float]  # left dome apex
    dome_curv_mm: float  # radius of curvature of the domes
    heart_c: tuple[float, float, float]
    heart_r: tuple[float, float, float]
    liver_c: tuple[float, float, float]
    liver_r: tuple[float, float, float]
    tumour_c: tuple[float, float, float]
    tumour_mm: float  # tumour radius
    stomach_c: tuple[float, float, float]
    spleen_c: tuple[float, float, float]
    y_spine: float  # vertebral-body centre (y)

    @property
    def a_c(self) -> float:
        return self.a_m - self.wall_mm

    @property
    def b_c(self) -> float:
        return self.b_m - self.wall_mm

    def replace(self, **kw) -> ThoraxParams:
        return dataclasses.replace(self, **kw)


def sample_thorax(rng: np.random.Generator) -> ThoraxParams:
    """Draw one patient's anatomy (sizes in adult ranges)."""
    a_m, b_m = rng.uniform(122, 138), rng.uniform(84, 96)
    wall = rng.uniform(13, 17)
    a_c, b_c = a_m - wall, b_m - wall
    z_r = rng.uniform(-15, -5)
    z_l = z_r - rng.uniform(6, 16)
    dome_r = (-0.45 * a_c, 5.0, z_r)
    dome_l = (0.45 * a_c, 0.0, z_l)
    liver_c = (dome_r[0] + 12, 8.0, z_r - rng.uniform(50, 60))
    liver_r = (0.78 * a_c, 0.85 * b_c, rng.uniform(70, 80))
    p = ThoraxParams(
        a_m=a_m, b_m=b_m, fat_mm=rng.uniform(8, 22), wall_mm=wall,
        dome_r=dome_r, dome_l=dome_l, dome_curv_mm=rng.uniform(85, 100),
        heart_c=(0.18 * a_c, 0.35 * b_c, z_l + 48), heart_r=(0.42 * a_c, 0.5 * b_c, 55.0),
        liver_c=liver_c, liver_r=liver_r, tumour_c=(0.0, 0.0, 0.0), tumour_mm=rng.uniform(12, 20),
        stomach_c=(0.5 * a_c, 0.3 * b_c, z_l - 45), spleen_c=(0.75 * a_c, -0.45 * b_c, z_l - 40),
        y_spine=-b_c + 26,
    )
    # Tumour: a random spot well inside the liver (checked on the analytic liver).
    for _ in range(200):
        c = np.array(liver_c) + rng.uniform([-35, -30, -15], [25, 25, 20])
        offs = np.array([[0, 0, 0]] + [list(v) for v in np.eye(3) * (p.tumour_mm + 6)]
                        + [list(v) for v in -np.eye(3) * (p.tumour_mm + 6)])
        pts = c[None] + offs
        lab = thorax_hu_labels(pts[:, 0], pts[:, 1], pts[:, 2], p.replace(tumour_mm=0.0), None)[1]
        if np.all(lab == 1):
            return p.replace(tumour_c=tuple(float(v) for v in c))
    raise RuntimeError("could not place the tumour inside the liver")  # pragma: no cover


class TextureField:
    """Two noise lattices sampled trilinearly: a lung vessel network in [0, 1]
    and a unit-variance tissue texture.

    Vessels are the tubes where two independent smooth noise fields are both
    near zero (the intersection of two random surfaces is a random curve), at
    two scales: thick central vessels and thinner ones. That gives crossings,
    forks and curvature everywhere in the lungs, features a registration can lock
    onto, as real vessel trees do.

    Args:
        rng: the patient's generator.
        bounds: ``((x0, x1), (y0, y1), (z0, z1))`` mm the lattice must cover.
        spacing_mm: lattice spacing.
    """

    def __init__(self, rng: np.random.Generator, bounds, spacing_mm: float = 2.0):
        self.spacing = float(spacing_mm)
        self.origin = np.array([b[0] for b in bounds], dtype=np.float64)
        shape = tuple(int(np.ceil((b[1] - b[0]) / self.spacing)) + 1 for b in bounds)
        h = self.spacing
        vessels = np.zeros(shape, dtype=np.float32)
        for corr_mm, eps, weight in ((16.0, 0.24, 1.0), (8.0, 0.18, 0.8)):
            n1 = smooth_noise(shape, corr_mm / h / 2, rng)
            n2 = smooth_noise(shape, corr_mm / h / 2, rng)
            v = weight * np.exp(-(n1 ** 2 + n2 ** 2) / (2 * eps ** 2))
            np.maximum(vessels, v, out=vessels)
        self.vessels = vessels.astype(np.float32)
        self.texture = smooth_noise(shape, 4.0 / h, rng)  # ~4 mm grain: parenchyma, not CT noise

    def _idx(self, x, y, z):
        return [(np.asarray(c, dtype=np.float32) - np.float32(o)) / np.float32(self.spacing)
                for c, o in zip((x, y, z), self.origin)]

    def sample(self, x, y, z) -> tuple[np.ndarray, np.ndarray]:
        """(vessel fraction in [0, 1], texture ~N(0, 1)) at world points."""
        idx = self._idx(x, y, z)
        v = ndimage.map_coordinates(self.vessels, idx, order=1, mode="nearest")
        t = ndimage.map_coordinates(self.texture, idx, order=1, mode="nearest")
        return v, t


def _smax(a, b, w: float):
    """Smooth maximum (log-sum-exp with width ``w`` mm)."""
    m = np.maximum(a, b)
    return m + w * np.log1p(np.exp(-np.abs(a - b) / w))


def dome_height(x, y, p: ThoraxParams):
    """z (mm) of the diaphragm surface above ``(x, y)``: a smooth max of two domes."""
    r = p.dome_curv_mm
    zr = p.dome_r[2] - ((x - p.dome_r[0]) ** 2 + (y - p.dome_r[1]) ** 2) / (2 * r)
    zl = p.dome_l[2] - ((x - p.dome_l[0]) ** 2 + (y - p.dome_l[1]) ** 2) / (2 * r)
    return _smax(zr, zl, 4.0)


def cavity_depth(x, y, p: ThoraxParams):
    """Approximate depth (mm) inside the cavity ellipse (negative in the wall and outside)."""
    rho = np.sqrt((x / p.a_c) ** 2 + (y / p.b_c) ** 2)
    return (1.0 - rho) * (0.5 * (p.a_c + p.b_c))


def thorax_hu_labels(x, y, z, p: ThoraxParams, tex: TextureField | None):
    """HU and labels of the phantom at world points.

    Args:
        x, y, z: arrays of any (equal) shape, RAS mm.
        p: the patient's anatomy.
        tex: texture lattices; ``None`` gives the untextured phantom.

    Returns:
        ``(hu, labels)``: float32 HU and uint8 labels (:data:`LABELS`), shaped like ``x``.
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.float32)
    z = np.asarray(z, dtype=np.float32)
    if tex is not None:
        ves, tx = tex.sample(x, y, z)
    else:
        ves, tx = np.zeros_like(x), np.zeros_like(x)
    hu = np.full(x.shape, HU["air"], dtype=np.float32)
    lab = np.zeros(x.shape, dtype=np.uint8)

    skin = np.sqrt((x / (p.a_m + p.fat_mm)) ** 2 + (y / (p.b_m + p.fat_mm)) ** 2) < 1
    hu[skin] = HU["fat"] + 8 * tx[skin]
    muscle = np.sqrt((x / p.a_m) ** 2 + (y / p.b_m) ** 2) < 1
    hu[muscle] = HU["muscle"] + 6 * tx[muscle]

    depth = cavity_depth(x, y, p)
    zd = dome_height(x, y, p)
    # Ribs: oblique bands in the wall (descending anteriorly), not at the
    # anterior midline (costal cartilage), down to the lower costal margin.
    phase = (z + 0.35 * (y + p.b_m)) / 24.0
    band = np.abs(phase - np.floor(phase) - 0.5) < 0.17
    rib = muscle & (depth < -3) & (depth > -p.wall_mm + 4) & band & (z > p.dome_r[2] - 75)
    rib &= ~((np.abs(x) < 25) & (y > 0))
    hu[rib] = HU["rib"]

    cavity = depth > 0
    above = z > zd
    below = z < zd - 4  # 4 mm diaphragm muscle between lung and abdomen
    abd = cavity & ~above
    hu[abd] = HU["abdomen"] + 8 * tx[abd]
    med = cavity & above
    hu[med] = HU["mediastinum"] + 10 * tx[med]

    heart = ellipsoid_level((x, y, z), p.heart_c, p.heart_r, _rot_z(30.0)) < 1
    q_spine = np.sqrt((x / 40.0) ** 2 + ((y - p.y_spine) / 36.0) ** 2)
    aorta_d = np.sqrt((x - 24.0) ** 2 + (y - p.y_spine - 12.0) ** 2)
    trachea_d = np.sqrt((x - 2.0) ** 2 + (y - 10.0) ** 2)
    heart_margin = ellipsoid_level((x, y, z), p.heart_c, [r + 6 for r in p.heart_r], _rot_z(30.0)) < 1
    mediastinum = (np.abs(x - 4.0) < 20) & (y > p.y_spine)
    lung = (cavity & above & (depth > 2) & ~heart_margin & ~mediastinum & (q_spine > 1)
            & (aorta_d > 17) & (trachea_d > 14))
    hu[lung] = HU["lung"] + 12 * tx[lung] + (HU["vessel"] - HU["lung"]) * ves[lung]
    lab[lung] = 3

    sel = heart & cavity & above
    hu[sel] = HU["heart"] + 6 * tx[sel]
    sel = aorta_d < 12
    sel &= cavity
    hu[sel] = HU["aorta"]
    sel = (trachea_d < 9) & (z > p.dome_r[2] + 85) & cavity
    hu[sel] = HU["air"]
    # Spine: vertebral body (cortex + trabecular bone, discs every 28 mm),
    # spinal canal, posterior elements.
    vb = np.sqrt(x ** 2 + (y - p.y_spine) ** 2)
    disc = np.abs(((z + 7.0) / 28.0) % 1.0 - 0.5) > 0.39
    sel = vb < 17
    hu[sel] = np.where(disc[sel], 80.0, np.where(vb[sel] > 14.5, HU["cortex"], HU["bone"]))
    post = ellipsoid_level((x, y, z), (0.0, p.y_spine - 33, 0.0), (26.0, 11.0, 1e6)) < 1
    hu[post] = HU["bone"] + 150
    canal = np.sqrt(x ** 2 + (y - (p.y_spine - 25)) ** 2) < 8
    hu[canal] = HU["csf"]

    # Upper abdomen below the diaphragm.
    spleen = cavity & below & (ellipsoid_level((x, y, z), p.spleen_c, (28.0, 42.0, 40.0), _rot_z(-35.0)) < 1)
    hu[spleen] = HU["spleen"] + 6 * tx[spleen]
    stomach = cavity & below & (ellipsoid_level((x, y, z), p.stomach_c, (42.0, 36.0, 36.0)) < 1)
    hu[stomach] = np.where(z[stomach] > p.stomach_c[2] + 14, HU["air"], HU["stomach"] + 4 * tx[stomach])
    liver = cavity & below & (ellipsoid_level((x, y, z), p.liver_c, p.liver_r) < 1) & (q_spine > 1.05)
    liver &= ~stomach
    hu[liver] = HU["liver"] + 8 * tx[liver] + 60 * ves[liver] * (ves[liver] > 0.5)  # portal veins
    lab[liver] = 1
    if p.tumour_mm > 0:
        td = np.sqrt((x - p.tumour_c[0]) ** 2 + (y - p.tumour_c[1]) ** 2 + (z - p.tumour_c[2]) ** 2)
        tum = liver & (td < p.tumour_mm)
        # Hypodense core, slightly enhancing rim (2 mm).
        hu[tum] = np.where(td[tum] > p.tumour_mm - 2, HU["tumour"] + 20, HU["tumour"]) + 5 * tx[tum]
        lab[tum] = 2
    return hu, lab


def _rot_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
