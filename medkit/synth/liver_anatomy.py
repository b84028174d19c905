"""Liver template with Couinaud segments and the vessels that bound them.

Everything here lives in a *template frame* ``q`` (mm): origin on the IVC axis
at the height of the portal bifurcation, ``q_x`` to the patient's left, ``q_y``
anterior, ``q_z`` superior (RAS, like the world). A case maps world points
``p`` to the template by

    q = S^-1 R^T (p - c) + d(p)

(rotation ``R``, per-axis scale ``S``, hub position ``c``, smooth random
displacement ``d``), and every structure is evaluated at ``q``. The liver
shape, the segment partition and the vessel centrelines are therefore all
warped by the *same* map, so a vein drawn in a boundary plane of the template
lies in the warped boundary surface of the case, exactly, whatever the
deformation.

Couinaud partition (Couinaud 1957; Bismuth 1982), in the template:

- Three *half-planes* hang from the IVC axis (vertical, azimuth ``alpha``
  measured in the axial plane from anterior towards the patient's right):
  right hepatic vein (RHV, ``theta_r`` ~ 72 deg), middle hepatic vein (MHV,
  ``theta_m`` ~ 15 deg, Cantlie's line) and the umbilical fissure (``theta_l``
  ~ -32 deg). They cut the liver into four sectors: right posterior
  (VI/VII), right anterior (V/VIII), left medial (IV), left lateral (II/III).
- The portal plane (nearly horizontal, tilted per case) splits the right
  sectors and IV into superior (VII, VIII, IVa) and inferior (VI, V, IVb).
- In the left lateral sector an oblique plane containing the left hepatic
  vein (LHV) separates II (superior-posterior-lateral) from III
  (inferior-anterior-medial).
- Segment I (caudate) is a box beside the IVC: left of its right wall,
  posterior to the portal hilum, below the hepatic-vein confluence.

Vessels are polylines in ``q``: RHV / MHV in their half-planes, LHV in the
II/III plane, right and transverse-left portal branches in the portal plane,
the umbilical portion of the left portal vein in the umbilical half-plane.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .shapes import rotation_matrix, smooth_displacement, warp_points_field

#: Couinaud label values (ARCHITECTURE.md: 0 background, 1..8 segments I..VIII).
COUINAUD_LABELS = {0: "background", 1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII"}

#: Which segments each boundary vessel separates (above / below the portal plane).
VESSEL_SEPARATES = {
    "RHV": [(7, 8), (6, 5)],
    "MHV": [(8, 4), (5, 4)],
    "LHV": [(2, 3)],
    "UPV": [(4, 2), (4, 3)],  # umbilical portion of the left portal vein
    # Right portal vein (hilum -> anterior sector) and its posterior branch (fork -> posterior
    # sector); both run in the portal plane and cross the RHV plane. Near the hilum they may
    # run in IV, where the portal plane parts IVa from IVb: one label, so no label boundary.
    "RPV": [(8, 5), (7, 6)],
    "RPVp": [(7, 6), (8, 5)],
    "LPV": [(4, 4)],  # transverse left portal vein: IVa / IVb (same label)
}

# Template ellipsoids (centre, semi-axes), mm in q. The left lobe tapers to the left.
_RIGHT_LOBE = ((-52.0, 10.0, 8.0), (60.0, 70.0, 78.0))
_RIGHT_TIP = ((-68.0, 5.0, -40.0), (42.0, 52.0, 42.0))  # inferior-lateral tip of the right lobe
_LEFT_LOBE = ((35.0, 30.0, 35.0), (80.0, 42.0, 32.0))
_MEDIAL = ((0.0, 25.0, 5.0), (38.0, 50.0, 45.0))
_LEFT_TAPER = 0.6
_UNION_SOFTNESS = 0.1


@dataclass
class LiverAnatomy:
    """Per-case parameters of the liver (all mm / degrees; JSON-able via :meth:`to_json`).

    ``field`` (the displacement lattice) is kept out of the JSON: it is
    re-created from the seed.
    """

    hub_mm: list[float]  # world position of the template origin (IVC axis at the portal plane)
    rotation_deg: list[float]
    scale: list[float]
    theta_r: float
    theta_m: float
    theta_l: float
    portal_z: float
    portal_tilt_deg: list[float]  # plane slope about q_y (x tilt) and q_x (y tilt)
    confluence_z: float
    lhv_azimuth: float
    lhv_descent_deg: float
    lhv_pitch_deg: float
    caudate_box: list[float]  # x_max, y_max, z_min, z_max (x_min is the IVC's right wall)
    ivc_radius: float
    hv_radius: float
    pv_radius: float
    trunk_radius: float
    lobes: dict  # name -> [centre(3), radii(3)], jittered template ellipsoids
    field_spacing_mm: float = 8.0
    field_origin_mm: list[float] = field(default_factory=list)
    field: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("field")
        return d

    def set_displacement(self, rng: np.random.Generator, lo, hi, amplitude_mm: float) -> None:
        """Draw the smooth displacement ``d`` on a lattice over world box [lo, hi] mm
        (each component's std ``amplitude_mm``, correlated over ~30 mm: invertible)."""
        if amplitude_mm <= 0:
            self.field = None
            return
        sp = self.field_spacing_mm
        shape = tuple(int(np.ceil((h - l_) / sp)) + 1 for l_, h in zip(lo, hi))
        self.field = smooth_displacement(shape, 30.0 / sp, amplitude_mm, rng)
        self.field_origin_mm = [float(v) for v in lo]

    # ------------------------------------------------------------------ frames

    @property
    def rot(self) -> np.ndarray:
        return rotation_matrix(tuple(self.rotation_deg))

    def to_template(self, x, y, z):
        """World mm ``(x, y, z)`` (broadcastable arrays) -> template ``q`` (full arrays)."""
        r = self.rot.astype(np.float32)
        c = np.asarray(self.hub_mm, dtype=np.float32)
        s = np.asarray(self.scale, dtype=np.float32)
        d = (x - c[0], y - c[1], z - c[2])
        q = [(r[0, i] * d[0] + r[1, i] * d[1] + r[2, i] * d[2]) / s[i] for i in range(3)]
        q = [np.broadcast_to(qi, np.broadcast_shapes(*(np.shape(a) for a in (x, y, z)))) for qi in q]
        if self.field is not None:
            q = [qi + di for qi, di in zip(q, self.displacement(x, y, z))]
        return tuple(np.ascontiguousarray(qi, dtype=np.float32) for qi in q)

    def displacement(self, x, y, z) -> list[np.ndarray]:
        """``d(p)`` (trilinear in the lattice) at world points; open grids (``x`` of shape
        ``(n, 1, 1)``, ``y`` ``(1, m, 1)``, ``z`` ``(1, 1, k)``) take a fast separable path."""
        sp, org = self.field_spacing_mm, self.field_origin_mm
        shapes = [np.shape(a) for a in (x, y, z)]
        if all(len(sh) == 3 and sum(v > 1 for v in sh) <= 1 and (sh[i] == max(sh)) for i, sh in enumerate(shapes)):
            # Tensor-product linear interpolation = trilinear, at a fraction of map_coordinates' cost.
            w = [_lin_weights(np.ravel(a), o, sp, n) for a, o, n in zip((x, y, z), org, self.field.shape[1:])]
            out = []
            for comp in self.field:
                t = np.tensordot(w[0], comp, axes=(1, 0))
                t = np.tensordot(w[1], t, axes=(1, 1)).transpose(1, 0, 2)
                t = np.tensordot(t, w[2], axes=(2, 1))
                out.append(t.astype(np.float32))
            return out
        full = np.broadcast_shapes(*shapes)
        pts = tuple(np.broadcast_to(a, full) for a in (x, y, z))
        warped = warp_points_field(pts, self.field, (sp,) * 3, org)
        return [w_ - p_ for w_, p_ in zip(warped, pts)]

    def to_world(self, q: np.ndarray) -> np.ndarray:
        """Template points ``(N, 3)`` -> world mm, ignoring the small displacement ``d``."""
        return (self.rot @ (np.asarray(q) * np.asarray(self.scale)).T).T + np.asarray(self.hub_mm)

    # ------------------------------------------------------------------ shape

    def liver_level(self, qx, qy, qz) -> np.ndarray:
        """Soft union of the template ellipsoids: < 1 inside the liver."""
        levels = []
        for name, (c, r) in self.lobes.items():
            dx, dy, dz = qx - c[0], qy - c[1], qz - c[2]
            if name == "left":
                # Taper: the left lobe thins (in y and z) towards its lateral tip.
                t = np.clip(1.0 - _LEFT_TAPER * (dx / r[0] + 1.0) / 2.0, 0.25, None)
                lv = np.sqrt((dx / r[0]) ** 2 + (dy / (r[1] * t)) ** 2 + (dz / (r[2] * t)) ** 2)
            else:
                lv = np.sqrt((dx / r[0]) ** 2 + (dy / r[1]) ** 2 + (dz / r[2]) ** 2)
            levels.append(lv)
        k = _UNION_SOFTNESS
        m = np.minimum.reduce(levels)
        acc = sum(np.exp(-(lv - m) / k) for lv in levels)
        level = m - k * np.log(acc)
        # The IVC runs in a groove on the posterior surface: no liver directly behind it.
        groove = (qy < 0) & (np.abs(qx) < self.ivc_radius + 3.0)
        return np.where(groove, np.float32(9.0), level).astype(np.float32)

    # ------------------------------------------------------------------ segments

    def azimuth(self, qx, qy) -> np.ndarray:
        """Axial angle about the IVC axis, degrees: 0 anterior, +90 patient right, -90 left."""
        return np.degrees(np.arctan2(-qx, qy))

    def portal_height(self, qx, qy):
        """z (q) of the portal plane above the point (qx, qy)."""
        tx, ty = np.tan(np.radians(self.portal_tilt_deg))
        return self.portal_z + tx * qx + ty * qy

    def lhv_frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(point, direction, normal) of the II/III plane; the LHV runs along ``direction``."""
        a = np.radians(self.lhv_azimuth)
        u = np.array([-np.sin(a), np.cos(a), 0.0])  # horizontal unit vector at that azimuth
        dlt = np.radians(self.lhv_descent_deg)
        d = np.array([np.cos(dlt) * u[0], np.cos(dlt) * u[1], -np.sin(dlt)])
        b = np.radians(self.lhv_pitch_deg)
        n0 = np.array([0.0, -np.sin(b), np.cos(b)])  # posterior-superior
        n = n0 - (n0 @ d) * d
        n /= np.linalg.norm(n)
        p0 = np.array([u[0] * (self.ivc_radius + 1.0), u[1] * (self.ivc_radius + 1.0), self.confluence_z])
        return p0, d, n

    def segments(self, qx, qy, qz) -> np.ndarray:
        """Couinaud label 1..8 of template points (defined everywhere; mask with the liver)."""
        alpha = self.azimuth(qx, qy)
        sup = qz >= self.portal_height(qx, qy)
        p0, _, n = self.lhv_frame()
        above23 = (qx - p0[0]) * n[0] + (qy - p0[1]) * n[1] + (qz - p0[2]) * n[2] >= 0
        seg = np.where(sup, 7, 6).astype(np.uint8)  # right posterior sector: alpha > theta_r
        seg = np.where(alpha <= self.theta_r, np.where(sup, 8, 5), seg)
        seg = np.where(alpha <= self.theta_m, 4, seg)
        seg = np.where(alpha <= self.theta_l, np.where(above23, 2, 3), seg)
        xm, ym, z0, z1 = self.caudate_box
        caud = (qx >= -self.ivc_radius - 2.0) & (qx <= xm) & (qy <= ym) & (qz >= z0) & (qz <= z1)
        return np.where(caud, 1, seg).astype(np.uint8)

    # ------------------------------------------------------------------ vessels

    def _ray(self, theta: float, rz: list[tuple[float, float]]) -> np.ndarray:
        a = np.radians(theta)
        return np.array([[-r * np.sin(a), r * np.cos(a), z] for r, z in rz])

    def _on_portal(self, xy: list[tuple[float, float]]) -> np.ndarray:
        return np.array([[x, y, float(self.portal_height(x, y))] for x, y in xy])

    def vessels(self) -> dict[str, tuple[np.ndarray, float, bool]]:
        """name -> (centreline points ``(N, 3)`` in q, radius in q-mm, intrahepatic only).

        Boundary vessels lie exactly in their boundary surfaces (see
        :data:`VESSEL_SEPARATES`); the IVC and the portal trunk are extrahepatic.
        """
        zc, r0 = self.confluence_z, self.ivc_radius + 1.0
        out: dict[str, tuple[np.ndarray, float, bool]] = {}
        out["RHV"] = (self._ray(self.theta_r, [(r0, zc), (35, zc - 12), (65, zc - 35), (105, zc - 75)]),
                      self.hv_radius, True)
        out["MHV"] = (self._ray(self.theta_m, [(r0, zc), (35, zc - 15), (65, zc - 42), (100, zc - 80)]),
                      self.hv_radius, True)
        p0, d, n = self.lhv_frame()
        e = np.cross(n, d)  # in-plane, perpendicular to the vein: a gentle bend stays in the plane
        out["LHV"] = (np.array([p0, p0 + 35 * d + 3 * e, p0 + 70 * d + 4 * e, p0 + 105 * d]),
                      self.hv_radius * 0.9, True)
        # Portal hilum: anterior to the IVC and the caudate, on the portal plane.
        hilum = (-5.0, self.caudate_box[1] + 12.0)
        a_ant = np.radians((self.theta_m + self.theta_r) / 2)
        a_post = np.radians(min(self.theta_r + 35.0, 150.0))
        fork = (-30.0, hilum[1] - 6.0)
        out["RPV"] = (self._on_portal([hilum, fork, (-58 * np.sin(a_ant), 58 * np.cos(a_ant)),
                                       (-95 * np.sin(a_ant), 95 * np.cos(a_ant))]), self.pv_radius, True)
        out["RPVp"] = (self._on_portal([fork, (-95 * np.sin(a_post), 95 * np.cos(a_post))]),
                       self.pv_radius * 0.9, True)
        rl = 30.0
        al = np.radians(self.theta_l)
        umb0 = (-rl * np.sin(al), rl * np.cos(al))
        out["LPV"] = (self._on_portal([hilum, umb0]), self.pv_radius, True)
        z_u = float(self.portal_height(*umb0))
        out["UPV"] = (self._ray(self.theta_l, [(rl, z_u), (55, z_u - 6), (85, z_u - 18)]), self.pv_radius * 0.9, True)
        out["IVC"] = (np.array([[0.0, 0.0, -400.0], [0.0, 0.0, 400.0]]), self.ivc_radius, False)
        hz = float(self.portal_height(*hilum))
        out["PV"] = (np.array([[hilum[0], hilum[1], hz], [5.0, hilum[1] + 6, hz - 40], [25.0, hilum[1] + 2, hz - 100]]),
                     self.trunk_radius, False)
        return out

    def vessel_on_boundary(self) -> None:
        """Self-check: every boundary-vessel point lies in its surface (raises if not)."""
        p0, _, n = self.lhv_frame()
        for name, (pts, _, _) in self.vessels().items():
            if name in ("RHV", "MHV", "UPV"):
                th = {"RHV": self.theta_r, "MHV": self.theta_m, "UPV": self.theta_l}[name]
                ok = np.allclose(self.azimuth(pts[:, 0], pts[:, 1]), th, atol=1e-6)
            elif name in ("RPV", "RPVp", "LPV"):
                ok = np.allclose(pts[:, 2], self.portal_height(pts[:, 0], pts[:, 1]), atol=1e-6)
            elif name == "LHV":
                ok = np.allclose((pts - p0) @ n, 0.0, atol=1e-6)
            else:
                ok = True
            if not ok:
                raise AssertionError(f"{name} centreline leaves its boundary surface")


def _lin_weights(coords: np.ndarray, origin: float, spacing: float, n: int) -> np.ndarray:
    """(len(coords), n) linear-interpolation weights on a lattice (clamped at the ends)."""
    t = np.clip((np.asarray(coords, np.float64) - origin) / spacing, 0, n - 1)
    i0 = np.minimum(np.floor(t).astype(int), n - 2)
    f = t - i0
    w = np.zeros((t.size, n))
    w[np.arange(t.size), i0] = 1 - f
    w[np.arange(t.size), i0 + 1] += f
    return w


def sample_anatomy(rng: np.random.Generator, *, scale_range=(0.88, 1.12), rotation_deg: float = 8.0,
                   angle_jitter_deg: float = 10.0, deform_mm: float = 4.0,
                   region_lo=(-200.0, -150.0, -200.0), region_hi=(200.0, 150.0, 200.0)) -> LiverAnatomy:
    """Draw one case's liver: size, pose, boundary angles, vessel calibres, deformation.

    ``region_lo/hi`` (world mm) bound the displacement lattice; ``deform_mm`` is the
    standard deviation of each displacement component (smooth over ~30 mm, so the
    map stays invertible).
    """
    u = rng.uniform
    jit = angle_jitter_deg
    s = u(*scale_range)
    scale = [float(s * u(0.94, 1.06)) for _ in range(3)]
    lobes = {}
    for name, (c, r) in (("right", _RIGHT_LOBE), ("right_tip", _RIGHT_TIP), ("left", _LEFT_LOBE),
                         ("medial", _MEDIAL)):
        lobes[name] = [[float(ci + u(-4, 4)) for ci in c], [float(ri * u(0.92, 1.08)) for ri in r]]
    a = LiverAnatomy(
        hub_mm=[float(-22 + u(-6, 6)), float(-5 + u(-5, 5)), float(u(-8, 8))],
        rotation_deg=[float(u(-rotation_deg, rotation_deg)) for _ in range(3)],
        scale=scale,
        theta_r=float(72 + u(-jit, jit)),
        theta_m=float(15 + u(-jit, jit)),
        theta_l=float(-32 + u(-jit, jit)),
        portal_z=float(u(-5, 5)),
        portal_tilt_deg=[float(u(-8, 8)), float(u(-8, 8))],
        confluence_z=float(45 + u(-5, 5)),
        lhv_azimuth=float(-58 + u(-jit / 2, jit / 2)),
        lhv_descent_deg=float(u(15, 28)),
        lhv_pitch_deg=float(u(32, 48)),
        caudate_box=[float(u(28, 36)), float(u(14, 19)), float(-40 + u(-4, 4)), float(28 + u(-4, 4))],
        ivc_radius=float(u(10, 12)),
        hv_radius=float(u(3.5, 4.5)),
        pv_radius=float(u(4.5, 5.5)),
        trunk_radius=float(u(6.5, 7.5)),
        lobes=lobes,
    )
    if deform_mm > 0:
        a.set_displacement(rng, region_lo, region_hi, deform_mm)
    return a
