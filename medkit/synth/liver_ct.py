"""Synthetic abdominal CT with Couinaud segments I-VIII (nnU-Net layout, optional DICOM).

Each case is a torso phantom in Hounsfield units: air, subcutaneous and
visceral fat, abdominal wall and paraspinal muscle, spine and ribs, aorta and
IVC, kidneys, spleen, stomach and bowel with gas, gallbladder, and a liver
whose size, pose, boundary angles and shape vary by case (see
:mod:`medkit.synth.liver_anatomy` for the template and the Couinaud partition).
Hepatic and portal veins are contrast-filled tubes lying in the segment
boundary surfaces, so, as in real scans, the boundaries are visible only
through the vessels.

Rendering: tissue classes are painted on a fine grid (``fine_xy`` x finer
in-plane, slices at most ``fine_z_max_mm`` thick), turned into HU for the
contrast phase, and block-averaged to the output spacing (partial-volume
effects); labels take the majority of each output voxel. Gaussian noise
(optionally slightly smoothed) is added at the output resolution, then HU are
rounded and clipped to the scanner range -1024..3071 and stored as int16.

Sizes: the default (96 x 96 x 64 at ~3.6 x 3.6 x 4 mm, a whole torso) renders
in about a second for tests and demos. The realistic size is
``--set shape=[192,192,160] --set spacing_xy_mm=[1.7,1.9] --set spacing_z_mm=[1.25,2.0]``
(a 512 x 512 scan at 0.6-0.9 mm resampled to 192 x 192). Native 0.6-0.9 mm
in-plane spacing works too (``spacing_xy_mm=[0.6,0.9]``), but a 192-voxel
field of view then spans only 115-173 mm: use ``fov_center=liver`` (a
liver-targeted reconstruction) or a larger ``shape``.

Layout written by :func:`generate_dataset`::

    out/dataset.json                    nnU-Net v2 (labels background, I..VIII) + a "medkit" block
    out/imagesTr/{case}_0000.nii.gz     int16 HU
    out/labelsTr/{case}.nii.gz          uint8 Couinaud 0..8
    out/tumoursTr/{case}.nii.gz         uint8 1 = hypodense tumour (inside the liver; Couinaud labels unchanged)
    out/metadata/{case}.json            ground truth: spacing, boundary angles, tumour centres, HU used
    out/dicom/{case}/IM0001.dcm ...     with dicom=True: CT Image Storage series, same geometry and HU
    out/summary.json                    per-case summary (also returned)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from .liver_anatomy import COUINAUD_LABELS, LiverAnatomy, sample_anatomy
from .shapes import (
    distance_to_polyline,
    downsample_labels,
    downsample_mean,
    ellipsoid_level,
    rotation_matrix,
    smooth_noise,
)

Phase = Literal["portal-venous", "arterial", "non-contrast"]

# Tissue classes painted on the fine grid.
(AIR, FAT, VFAT, MUSCLE, BONE, CORTEX, RIB, CSF, DISC, LIVER, HEPATIC_VEIN, PORTAL_BRANCH, IVC,
 PORTAL_TRUNK, AORTA, KIDNEY, SPLEEN, GUT_WALL, FLUID, GAS, GALLBLADDER, TUMOUR) = range(22)
_LIVER_TISSUES = (LIVER, HEPATIC_VEIN, PORTAL_BRANCH, TUMOUR)

#: HU per tissue that does not depend on the contrast phase.
HU_FIXED = {AIR: -1000.0, FAT: -100.0, VFAT: -95.0, MUSCLE: 40.0, BONE: 400.0, CORTEX: 1000.0,
            RIB: 700.0, CSF: 15.0, DISC: 80.0, GUT_WALL: 40.0, FLUID: 15.0, GAS: -1000.0,
            GALLBLADDER: 10.0}

#: HU of the enhancing tissues per contrast phase. Portal-venous: parenchyma ~60,
#: portal and hepatic veins 160-185 (the 150-200 HU of contrast-filled vessels).
#: Arterial: aorta bright, hepatic veins not yet opacified. Non-contrast: blood ~40.
HU_PHASE = {
    "portal-venous": {"liver": 60.0, "hepatic_vein": 165.0, "portal": 185.0, "ivc": 150.0, "aorta": 170.0,
                      "kidney": 170.0, "spleen": 115.0, "tumour": 25.0},
    "arterial": {"liver": 68.0, "hepatic_vein": 50.0, "portal": 120.0, "ivc": 80.0, "aorta": 300.0,
                 "kidney": 220.0, "spleen": 110.0, "tumour": 40.0},
    "non-contrast": {"liver": 56.0, "hepatic_vein": 40.0, "portal": 40.0, "ivc": 40.0, "aorta": 42.0,
                     "kidney": 32.0, "spleen": 46.0, "tumour": 30.0},
}

#: Vessel ids of the optional vessel map (render_case(keep_vessels=True)).
VESSEL_IDS = {"RHV": 1, "MHV": 2, "LHV": 3, "UPV": 4, "RPV": 5, "RPVp": 6, "LPV": 7, "IVC": 8, "PV": 9}


@dataclass
class LiverCTConfig:
    """Knobs of :func:`generate_dataset` (``--set key=value`` on the command line).

    Ranges ``(lo, hi)`` are sampled uniformly per case.
    """

    n_cases: int = 4
    seed: int = 0
    dicom: bool = False
    shape: tuple[int, int, int] = (96, 96, 64)  # output voxels (X, Y, Z)
    spacing_xy_mm: tuple[float, float] = (3.4, 3.8)  # in-plane spacing range
    spacing_z_mm: tuple[float, float] = (3.5, 5.0)  # slice spacing range
    fine_xy: int = 2  # fine-grid subdivisions per output voxel in-plane (partial volume)
    fine_z_max_mm: float = 2.0  # fine-grid slices are at most this thick
    fov_center: Literal["body", "liver"] = "body"
    phase: Phase = "portal-venous"
    noise_hu: float = 10.0  # std of the image noise
    noise_smooth_vox: float = 0.6  # Gaussian smoothing of the noise (0: white)
    liver_scale: tuple[float, float] = (0.88, 1.12)  # global liver size factor
    liver_rotation_deg: float = 8.0  # max rotation about each axis
    angle_jitter_deg: float = 10.0  # max change of each boundary angle from the template
    deform_mm: float = 4.0  # std of the smooth random displacement of the template
    max_tumours: int = 2  # 0..max_tumours hypodense tumours per case
    tumour_radius_mm: tuple[float, float] = (6.0, 15.0)
    case_prefix: str = "liver"
    extra: dict = field(default_factory=dict)  # free-form note stored in dataset.json


@dataclass
class LiverCase:
    """One rendered case. Arrays are ``(X, Y, Z)`` in output voxels; ``affine`` is RAS mm."""

    case_id: str
    image: np.ndarray  # int16 HU
    labels: np.ndarray  # uint8 Couinaud 0..8
    tumour: np.ndarray  # uint8 0/1
    affine: np.ndarray
    meta: dict
    vessels: np.ndarray | None = None  # uint8 VESSEL_IDS, when asked for
    anatomy: LiverAnatomy | None = None


# ----------------------------------------------------------------------------- grid helpers


def _span(axis: np.ndarray, lo: float, hi: float) -> slice:
    """Index slice of the sorted 1D ``axis`` within [lo, hi] mm."""
    return slice(int(np.searchsorted(axis, lo, "left")), int(np.searchsorted(axis, hi, "right")))


def _open(axes, box):
    """Broadcastable world coordinates of a sub-box."""
    return (axes[0][box[0]][:, None, None], axes[1][box[1]][None, :, None], axes[2][box[2]][None, None, :])


def _paint_ellipsoid(tissue, axes, center, radii, rot, value, where=None, shell=None):
    """Paint ``value`` inside an ellipsoid (only in its bounding box); returns (box, level)."""
    ext = float(max(radii)) + 2.0
    box = tuple(_span(a, c - ext, c + ext) for a, c in zip(axes, center))
    if any(s.stop <= s.start for s in box):
        return box, None
    lv = ellipsoid_level(_open(axes, box), center, radii, rot)
    m = lv < 1.0
    if where is not None:
        m &= where(tissue[box])
    tissue[box][m] = value
    return box, lv


# ----------------------------------------------------------------------------- body


def _sample_body(rng: np.random.Generator, hub: list[float]) -> dict:
    u = rng.uniform
    hub_z = hub[2]
    r_vb = float(u(17, 21))
    ys = hub[1] - r_vb - 16.0  # vertebral body centre: behind the IVC
    ra = float(u(10, 13))
    return {
        "half_width_mm": float(u(140, 160)), "half_depth_mm": float(u(100, 118)), "exponent": float(u(2.1, 2.6)),
        "subcutaneous_fat_mm": float(u(10, 28)), "wall_mm": float(u(10, 15)),
        "vertebra_radius_mm": r_vb, "vertebra_y_mm": ys, "disc_pitch_mm": float(u(28, 34)), "disc_phase_mm": float(u(0, 30)),
        "rib_pitch_mm": float(u(30, 36)), "rib_phase_mm": float(u(0, 30)), "rib_lowest_mm": float(hub_z - u(45, 70)),
        "aorta_mm": [float(u(12, 18)), ys + r_vb + ra + 1.0, ra],  # x, y, radius: left-anterior of the spine
        "kidneys": [[s * float(u(68, 78)), ys + float(u(-8, 0)), float(hub_z - u(65, 85)), float(u(-15, 15))]
                    for s in (-1, 1)],
        "spleen": [float(u(80, 95)), ys + float(u(5, 20)), float(hub_z + u(20, 40)), float(u(0.85, 1.15))],
        "stomach": [float(u(40, 60)), float(u(10, 30)), float(hub_z + u(25, 45)), float(u(0.8, 1.15))],
        "bowel": [[float(u(-90, 90)), float(u(-5, 65)), float(hub_z - u(60, 160)), float(u(12, 22)),
                   bool(u() < 0.4)] for _ in range(10)],
        "colon_z_mm": float(hub_z - u(50, 65)),
    }


def _paint_body(tissue, axes, body: dict, hub_z: float) -> np.ndarray:
    """Torso outline, fat, abdominal organs outside the liver's region. Returns the 2D cavity mask."""
    ax, ay, az = axes
    a, b, p = body["half_width_mm"], body["half_depth_mm"], body["exponent"]

    def lvl(shrink_mm: float):
        return ((np.abs(ax[:, None]) / (a - shrink_mm)) ** p + (np.abs(ay[None, :]) / (b - shrink_mm)) ** p) ** (1 / p)

    body2d = lvl(0.0) < 1
    cavity2d = lvl(body["subcutaneous_fat_mm"] + body["wall_mm"]) < 1
    tissue[body2d] = FAT
    tissue[cavity2d] = VFAT
    # Bowel loops (gas or fluid inside a thin wall) and the transverse colon, below the liver.
    for x, y, z, r, gas in body["bowel"]:
        box, lv = _paint_ellipsoid(tissue, axes, (x, y, z), (r, r * 0.8, r * 1.4), None, GUT_WALL)
        if lv is not None:
            tissue[box][lv < 1 - 3.0 / r] = GAS if gas else FLUID
    cz = body["colon_z_mm"]
    pts = np.array([[-95, 25, cz - 20], [-60, 45, cz], [0, 55, cz - 10], [60, 45, cz + 5], [90, 20, cz + 15]])
    box = (_span(ax, -120, 120), _span(ay, 0, 80), _span(az, cz - 45, cz + 40))
    if all(s.stop > s.start for s in box):
        xx, yy, zz = np.meshgrid(ax[box[0]], ay[box[1]], az[box[2]], indexing="ij")
        d = distance_to_polyline((xx, yy, zz), pts)
        sub = tissue[box]
        sub[d < 16] = GUT_WALL
        sub[d < 13] = GAS
        sub[(d < 13) & (yy < 40)] = FLUID  # supine: fluid settles posteriorly, gas rises anteriorly
    # Stomach: gas cap anteriorly, fluid posteriorly.
    x, y, z, s = body["stomach"]
    rot = rotation_matrix((0.0, 0.0, 30.0))
    radii = (45 * s, 32 * s, 40 * s)
    box, lv = _paint_ellipsoid(tissue, axes, (x, y, z), radii, rot, GUT_WALL)
    if lv is not None:
        inner = lv < 1 - 4.0 / min(radii)
        yy = np.broadcast_to(ay[box[1]][None, :, None], inner.shape)
        tissue[box][inner] = FLUID
        tissue[box][inner & (yy > y + 0.3 * radii[1])] = GAS
    # Aorta, left-anterior of the spine, the whole length.
    xa, ya, ra = body["aorta_mm"]
    tissue[((ax[:, None] - xa) ** 2 + (ay[None, :] - ya) ** 2) < ra**2] = AORTA
    return cavity2d


def _paint_organs_over_liver(tissue, axes, body: dict) -> None:
    """Kidneys and spleen indent the liver (painted after it)."""
    for x, y, z, ang in body["kidneys"]:
        rot = rotation_matrix((0.0, ang * 0.6, ang))
        box, lv = _paint_ellipsoid(tissue, axes, (x, y, z), (24, 18, 50), rot, KIDNEY)
        if lv is not None:
            # Renal sinus fat on the medial side.
            sinus = ellipsoid_level(_open(axes, box), (x * 0.88, y + 2, z), (8, 9, 22), rot) < 1
            tissue[box][sinus] = VFAT
    x, y, z, s = body["spleen"]
    _paint_ellipsoid(tissue, axes, (x, y, z), (26 * s, 48 * s, 50 * s), rotation_matrix((0, 0, -35)), SPLEEN)


def _paint_wall_and_skeleton(tissue, axes, body: dict, cavity2d: np.ndarray) -> None:
    """Abdominal wall, ribs, spine and back muscles: painted last, so they clip the organs."""
    ax, ay, az = axes
    a, b, p = body["half_width_mm"], body["half_depth_mm"], body["exponent"]
    fat, wall = body["subcutaneous_fat_mm"], body["wall_mm"]

    def lvl(shrink_mm: float):
        return ((np.abs(ax[:, None]) / (a - shrink_mm)) ** p + (np.abs(ay[None, :]) / (b - shrink_mm)) ** p) ** (1 / p)

    body2d = lvl(0.0) < 1
    wall2d = (lvl(fat) < 1) & ~cavity2d
    tissue[body2d & ~(lvl(fat) < 1)] = FAT
    tissue[~body2d] = AIR
    tissue[wall2d] = MUSCLE
    # Ribs: in the middle of the wall, lateral (not the anterior midline or the spine),
    # sloping down anteriorly, above the costal margin.
    ring2d = wall2d & (lvl(fat + 0.3 * wall) >= 1) & (lvl(fat + 0.75 * wall) < 1)
    ang = np.degrees(np.arctan2(ax[:, None], ay[None, :]))
    ring2d &= (np.abs(ang) > 30) & (np.abs(ang) < 150)
    phase = np.mod(az[None, :] + 0.35 * ay[:, None] - body["rib_phase_mm"], body["rib_pitch_mm"]) < 10.0
    phase &= az[None, :] > body["rib_lowest_mm"] + 0.35 * ay[:, None]
    rib = ring2d[:, :, None] & phase[None, :, :]
    tissue[rib] = RIB
    # Spine: vertebral bodies (cancellous core, cortex rim) with discs; canal; arch; back muscles.
    r = body["vertebra_radius_mm"]
    ys = body["vertebra_y_mm"]
    d_vb = np.sqrt(ax[:, None] ** 2 + (ay[None, :] - ys) ** 2)
    disc_z = np.mod(az - body["disc_phase_mm"], body["disc_pitch_mm"]) < 7.0
    yc = ys - r - 9
    d_canal = np.sqrt(ax[:, None] ** 2 + (ay[None, :] - yc) ** 2)
    spinous = ((ax[:, None] / 6.0) ** 2 + ((ay[None, :] - (yc - 18)) / 13.0) ** 2) < 1
    back = sum(((ax[:, None] - sx) / 24.0) ** 2 + ((ay[None, :] - (yc - 12)) / 20.0) ** 2 < 1 for sx in (-34, 34))
    tissue[back.astype(bool) & ~spinous] = MUSCLE
    tissue[((d_canal < 13) | spinous)[:, :, None] & ~disc_z[None, None, :]] = CORTEX
    tissue[(d_vb < r)[:, :, None] & disc_z[None, None, :]] = DISC
    tissue[(d_vb < r)[:, :, None] & ~disc_z[None, None, :]] = CORTEX
    tissue[(d_vb < r - 2.5)[:, :, None] & ~disc_z[None, None, :]] = BONE
    tissue[d_canal < 8] = CSF


# ----------------------------------------------------------------------------- liver


def _liver_box(anat: LiverAnatomy, axes, factors, margin_mm: float) -> tuple[slice, slice, slice]:
    """Fine-grid box (whole z, block aligned) holding the liver, IVC and portal trunk."""
    pts = []
    for c, r in anat.lobes.values():
        for sx in (-1, 1):
            for sy in (-1, 1):
                for sz in (-1, 1):
                    pts.append([c[0] + sx * r[0], c[1] + sy * r[1], c[2] + sz * r[2]])
    w = anat.to_world(np.array(pts))
    lo, hi = w.min(0) - margin_mm, w.max(0) + margin_mm
    out = []
    for i in range(2):
        s = _span(axes[i], lo[i], hi[i])
        f = factors[i]
        out.append(slice((s.start // f) * f, min(-(-s.stop // f) * f, (len(axes[i]) // f) * f)))
    out.append(slice(0, (len(axes[2]) // factors[2]) * factors[2]))
    return tuple(out)


def _paint_liver(tissue, axes, box, anat: LiverAnatomy, rng, cfg: LiverCTConfig):
    """Liver, intrahepatic vessels, IVC, portal trunk and tumours inside ``box``.

    Returns (q coordinates of the box, vessel-id map of the box, tumour list, tumour mask of the box).
    """
    sub = tissue[box]
    q = anat.to_template(*_open(axes, box))
    liver = anat.liver_level(*q) < 1.0
    sub[liver] = LIVER
    ves = np.zeros(sub.shape, np.uint8)
    # IVC: the template's z axis, the whole length (cheap: distance to the axis).
    ivc = (q[0] ** 2 + q[1] ** 2) < anat.ivc_radius**2
    margin = 3 * 4.0 + 6.0
    smax = max(anat.scale)
    for name, (pts, rad, intra) in anat.vessels().items():
        if name == "IVC":
            continue
        w = anat.to_world(pts)
        lo, hi = w.min(0) - rad * smax - margin, w.max(0) + rad * smax + margin
        vb = tuple(_span(a[s], l_, h_) for a, s, l_, h_ in zip(axes, box, lo, hi))
        if any(s.stop <= s.start for s in vb):
            continue
        d = distance_to_polyline(tuple(qi[vb] for qi in q), pts)
        m = d < rad
        if intra:
            m &= liver[vb]
            sub[vb][m] = HEPATIC_VEIN if name.endswith("HV") else PORTAL_BRANCH
        else:
            sub[vb][m & ~ivc[vb]] = PORTAL_TRUNK
        ves[vb][m] = VESSEL_IDS[name]
    sub[ivc] = IVC
    ves[ivc] = VESSEL_IDS["IVC"]
    # Hypodense tumours in the parenchyma (vessels pass through them).
    tumours = []
    tmask = np.zeros(sub.shape, bool)
    n_t = int(rng.integers(0, cfg.max_tumours + 1)) if cfg.max_tumours > 0 else 0
    coarse = ndimage.binary_erosion((sub == LIVER)[::4, ::4, ::2], iterations=2)
    cand = np.flatnonzero(coarse)
    for _ in range(n_t if cand.size else 0):
        i = np.unravel_index(cand[int(rng.integers(cand.size))], coarse.shape)
        cen = [float(axes[k][box[k]][i[k] * (4, 4, 2)[k]]) for k in range(3)]
        rad = float(rng.uniform(*cfg.tumour_radius_mm))
        radii = [rad * float(rng.uniform(0.8, 1.2)) for _ in range(3)]
        rot = rotation_matrix(tuple(float(v) for v in rng.uniform(-90, 90, 3)))
        ext = max(radii) + 2
        tb = tuple(_span(a[s], c - ext, c + ext) for a, s, c in zip(axes, box, cen))
        lv = ellipsoid_level(_open(tuple(a[s] for a, s in zip(axes, box)), tb), cen, radii, rot)
        m = (lv < 1) & (sub[tb] == LIVER)
        sub[tb][m] = TUMOUR
        tmask[tb] |= m
        tumours.append({"center_mm": cen, "radii_mm": radii})
    # Gallbladder under the liver on Cantlie's line (the MHV plane), painted over the liver.
    a_m = np.radians(anat.theta_m)
    gq = np.array([[-62 * np.sin(a_m), 62 * np.cos(a_m), anat.portal_z - 42]])
    gw = anat.to_world(gq)[0]
    grot = anat.rot @ rotation_matrix((0.0, 0.0, -anat.theta_m))
    _paint_ellipsoid(sub, tuple(a[s] for a, s in zip(axes, box)), gw, (13, 28, 14), grot, GALLBLADDER)
    return q, ves, tumours, tmask


# ----------------------------------------------------------------------------- case


def _keep_connected(labels: np.ndarray) -> int:
    """Give each segment one 6-connected component, in place; returns voxels relabelled.

    Majority-vote downsampling and organs painted over the liver can leave a few
    voxels of a segment cut off from it; those islands take the most common
    neighbouring liver label (background if they touch no liver).
    """
    moved = 0
    for _ in range(4):
        changed = False
        for k in range(1, 9):
            cc, n = ndimage.label(labels == k)
            if n <= 1:
                continue
            sizes = np.bincount(cc.ravel())[1:]
            keep = int(np.argmax(sizes)) + 1
            for j in range(1, n + 1):
                if j == keep:
                    continue
                isl = cc == j
                ring = ndimage.binary_dilation(isl) & ~isl
                nb = labels[ring]
                nb = nb[(nb > 0) & (nb != k)]
                labels[isl] = np.bincount(nb).argmax() if nb.size else 0
                moved += int(isl.sum())
                changed = True
        if not changed:
            break
    return moved


def render_case(cfg: LiverCTConfig, index: int, *, keep_vessels: bool = False) -> LiverCase:
    """Render case ``index`` of the dataset with seed ``cfg.seed`` (independent of ``n_cases``)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([cfg.seed, index])
    shape = tuple(int(s) for s in cfg.shape)
    sxy = float(rng.uniform(*cfg.spacing_xy_mm))
    sz = float(rng.uniform(*cfg.spacing_z_mm))
    spacing = (sxy, sxy, sz)
    factors = (cfg.fine_xy, cfg.fine_xy, max(1, int(np.ceil(sz / cfg.fine_z_max_mm - 1e-6))))
    anat = sample_anatomy(rng, scale_range=cfg.liver_scale, rotation_deg=cfg.liver_rotation_deg,
                          angle_jitter_deg=cfg.angle_jitter_deg, deform_mm=0.0)
    body = _sample_body(rng, anat.hub_mm)
    if cfg.fov_center == "liver":
        center = anat.to_world(np.array([[-20.0, 20.0, 5.0]]))[0]
    else:
        center = np.array([0.0, 0.0, anat.hub_mm[2] + 10.0])
    origin = np.array([c - (n - 1) * s / 2 for c, n, s in zip(center, shape, spacing)])
    fine_sp = [s / f for s, f in zip(spacing, factors)]
    axes = tuple((o - s / 2 + fs / 2 + np.arange(n * f) * fs).astype(np.float32)
                 for o, s, fs, n, f in zip(origin, spacing, fine_sp, shape, factors))
    # The displacement lattice covers the field of view (drawn after the pose: the FOV depends on it).
    anat.set_displacement(rng, [float(a[0]) - 20 for a in axes], [float(a[-1]) + 20 for a in axes], cfg.deform_mm)

    hu_tab = dict(HU_PHASE[cfg.phase])
    hu_tab["liver"] += float(rng.uniform(-3, 3))
    tissue = np.full(tuple(n * f for n, f in zip(shape, factors)), AIR, np.uint8)
    cavity2d = _paint_body(tissue, axes, body, anat.hub_mm[2])
    box = _liver_box(anat, axes, factors, margin_mm=25.0)
    q, ves, tumours, tmask = _paint_liver(tissue, axes, box, anat, rng, cfg)
    _paint_organs_over_liver(tissue, axes, body)
    _paint_wall_and_skeleton(tissue, axes, body, cavity2d)

    # Couinaud labels of every liver voxel left after the other organs were painted.
    sub = tissue[box]
    in_liver = np.isin(sub, _LIVER_TISSUES)
    seg = np.zeros(sub.shape, np.uint8)
    seg[in_liver] = anat.segments(q[0][in_liver], q[1][in_liver], q[2][in_liver])
    ob = tuple(slice(s.start // f, s.stop // f) for s, f in zip(box, factors))
    labels = np.zeros(shape, np.uint8)
    labels[ob] = downsample_labels(seg, factors, 9)
    moved = _keep_connected(labels)
    tumour = np.zeros(shape, np.uint8)
    # Tumour voxels are liver voxels: organs painted later cut the mask, as they cut the labels.
    tumour[ob] = (downsample_mean((tmask & in_liver).astype(np.float32), factors) >= 0.5) & (labels[ob] > 0)
    vessels = None
    if keep_vessels:
        vessels = np.zeros(shape, np.uint8)
        vessels[ob] = downsample_labels(ves, factors, len(VESSEL_IDS) + 1)

    lut = np.zeros(256, np.float32)
    for k, v in HU_FIXED.items():
        lut[k] = v
    for k, key in ((LIVER, "liver"), (HEPATIC_VEIN, "hepatic_vein"), (PORTAL_BRANCH, "portal"),
                   (PORTAL_TRUNK, "portal"), (IVC, "ivc"), (AORTA, "aorta"), (KIDNEY, "kidney"),
                   (SPLEEN, "spleen")):
        lut[k] = hu_tab[key]
    lut[TUMOUR] = hu_tab["liver"] + (hu_tab["tumour"] - HU_PHASE[cfg.phase]["liver"])
    img = downsample_mean(lut[tissue], factors)
    if cfg.noise_hu > 0:
        if cfg.noise_smooth_vox > 0:
            img += smooth_noise(shape, cfg.noise_smooth_vox, rng) * cfg.noise_hu
        else:
            img += rng.standard_normal(shape).astype(np.float32) * cfg.noise_hu
    image = np.clip(np.round(img), -1024, 3071).astype(np.int16)

    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = origin
    vox_ml = float(np.prod(spacing)) / 1000.0
    case_id = f"{cfg.case_prefix}_{index:03d}"
    meta = {
        "case_id": case_id, "index": index, "seed": cfg.seed, "shape": list(shape),
        "spacing_mm": list(spacing), "affine": affine.tolist(), "fine_factors": list(factors),
        "phase": cfg.phase, "hu": {k: round(v, 3) for k, v in hu_tab.items()}, "noise_hu": cfg.noise_hu,
        "labels": {str(k): v for k, v in COUINAUD_LABELS.items()},
        "boundary_angles_deg": {"right_hepatic_vein": anat.theta_r, "middle_hepatic_vein": anat.theta_m,
                                "umbilical_fissure": anat.theta_l, "portal_plane_tilt": anat.portal_tilt_deg,
                                "left_hepatic_vein_pitch": anat.lhv_pitch_deg},
        "tumours": tumours, "liver_volume_ml": float((labels > 0).sum() * vox_ml),
        "segment_volumes_ml": {COUINAUD_LABELS[k]: float((labels == k).sum() * vox_ml) for k in range(1, 9)},
        "relabelled_voxels": moved, "anatomy": anat.to_json(), "body": body,
        "vessel_ids": VESSEL_IDS, "render_seconds": round(time.perf_counter() - t0, 3),
    }
    return LiverCase(case_id, image, labels, tumour, affine, meta, vessels, anat)


# ----------------------------------------------------------------------------- dataset


def _metatensor(arr: np.ndarray, affine: np.ndarray):
    import torch
    from monai.data import MetaTensor

    return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr))[None], affine=torch.as_tensor(affine))


def generate_dataset(cfg: LiverCTConfig, out: Path, progress: Callable | None = None) -> dict:
    """Write ``cfg.n_cases`` cases to ``out`` (layout in the module doc); returns the summary."""
    from ..config import to_dict
    from ..io.atomic import write_json
    from ..io.dicom_write import write_dicom_series
    from ..io.volume import save_volume

    if cfg.n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {cfg.n_cases}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    indices = range(cfg.n_cases)
    it = progress(indices, "liver CT") if progress is not None else indices
    cases = []
    for i in it:
        c = render_case(cfg, i)
        img = _metatensor(c.image, c.affine)
        save_volume(img, out / "imagesTr" / f"{c.case_id}_0000.nii.gz", dtype=np.int16)
        save_volume(_metatensor(c.labels, c.affine), out / "labelsTr" / f"{c.case_id}.nii.gz", dtype=np.uint8)
        save_volume(_metatensor(c.tumour, c.affine), out / "tumoursTr" / f"{c.case_id}.nii.gz", dtype=np.uint8)
        if cfg.dicom:
            write_dicom_series(c.image.astype(np.float64), out / "dicom" / c.case_id, affine=c.affine,
                               series_description=f"medkit synth liver CT {cfg.phase}",
                               uid_seed=cfg.seed * 100003 + i,
                               patient={"PatientName": "SYNTHETIC^LIVER", "PatientID": c.case_id})
        write_json(out / "metadata" / f"{c.case_id}.json", c.meta)
        cases.append({k: c.meta[k] for k in ("case_id", "spacing_mm", "liver_volume_ml", "render_seconds")}
                     | {"n_tumours": len(c.meta["tumours"])})
    dataset = {
        "name": "medkit-synth-liver-ct",
        "description": "Synthetic abdominal CT with Couinaud segments (medkit.synth.liver_ct)",
        "channel_names": {"0": "CT"},
        "labels": {name: k for k, name in COUINAUD_LABELS.items()},
        "numTraining": cfg.n_cases,
        "file_ending": ".nii.gz",
        "medkit": {"generator": "medkit.synth.liver_ct", "seed": cfg.seed, "config": to_dict(cfg),
                   "extra_outputs": {"tumoursTr": "uint8 hypodense tumour mask", "metadata": "per-case ground truth"}},
    }
    write_json(out / "dataset.json", dataset)
    summary = {"n_cases": cfg.n_cases, "seed": cfg.seed, "phase": cfg.phase, "out": str(out), "cases": cases}
    write_json(out / "summary.json", summary)
    return summary
