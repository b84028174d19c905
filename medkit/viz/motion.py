"""Figure of a 4D CT case: displacement magnitude over the phase image, with landmarks.

PIL + numpy only (no matplotlib). Coronal slices are shown in the radiological
convention: patient superior at the top, patient right on the viewer's left
(RAS x grows to the right of the picture).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# A few stops of a perceptually ordered colour map (dark purple -> yellow, viridis-like).
_STOPS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32)


def colormap(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] ``(...)`` -> RGB uint8 ``(..., 3)``."""
    v = np.clip(np.asarray(v, dtype=np.float32), 0, 1) * (len(_STOPS) - 1)
    i = np.minimum(v.astype(int), len(_STOPS) - 2)
    f = (v - i)[..., None]
    return ((1 - f) * _STOPS[i] + f * _STOPS[i + 1]).astype(np.uint8)


def _window(hu: np.ndarray, lo: float = -1000.0, hi: float = 300.0) -> np.ndarray:
    """HU -> grey [0, 1] (MONAI's ``ScaleIntensityRange``); -1000..300 shows lung vessels and
    soft tissue at once."""
    from monai.transforms import ScaleIntensityRange

    return np.asarray(ScaleIntensityRange(lo, hi, 0.0, 1.0, clip=True, dtype=np.float32)(np.asarray(hu)))


def displacement_figure(case_dir: str | Path, out_png: str | Path, phase: int | None = None,
                        y_index: int | None = None, scale: int = 4, max_mm: float | None = None) -> Path:
    """Write a PNG: coronal phase image | displacement magnitude overlay, landmarks on both.

    Args:
        case_dir: a ``medkit synth 4dct`` / ``longitudinal`` case folder.
        out_png: target PNG.
        phase: frame to show; default the one with the largest displacement (peak inhale).
        y_index: coronal slice (voxel j); default the median landmark j.
        scale: pixels per voxel (nearest; each voxel stays a visible block).
        max_mm: top of the colour scale; default the frame's 99.5th percentile.

    Returns:
        The PNG path.
    """
    import nibabel as nib
    from PIL import Image, ImageDraw

    case_dir = Path(case_dir)
    times = json.loads((case_dir / "times.json").read_text())
    lms = json.loads((case_dir / "landmarks.json").read_text())
    if phase is None:
        phase = int(np.argmax([f["max_ddf_mm"] for f in times["frames"]]))
    hu = np.asarray(nib.load(case_dir / f"phase_{phase:02d}.nii.gz").dataobj, dtype=np.float32)
    ddf = np.asarray(nib.load(case_dir / f"ddf_{phase:02d}.nii.gz").dataobj, dtype=np.float32)  # (X, Y, Z, 3)
    mag = np.linalg.norm(ddf, axis=-1)
    pts = np.asarray(lms["frames"][phase]["voxel"], dtype=np.float64).reshape(-1, 3)
    if y_index is None:
        y_index = int(np.round(np.median(pts[:, 1]))) if len(pts) else hu.shape[1] // 2
    top = max_mm if max_mm is not None else float(np.percentile(mag, 99.5)) or 1.0

    # (X, Z) slice -> picture rows = z descending, columns = x ascending.
    def pic(a):
        return np.flipud(a[:, y_index, :].T)

    grey = _window(pic(hu))
    base = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=-1)
    col = colormap(pic(mag) / top).astype(np.float32)
    over = (0.45 * base + 0.55 * col).astype(np.uint8)
    X, Z = hu.shape[0], hu.shape[2]
    bar_w = 14
    W, H = 2 * X * scale + 3 * 8 + bar_w + 40, Z * scale + 40
    canvas = Image.new("RGB", (W, H), (0, 0, 0))
    for k, img in enumerate((base, over)):
        im = Image.fromarray(img).resize((X * scale, Z * scale), Image.NEAREST)
        canvas.paste(im, (8 + k * (X * scale + 8), 24))
    draw = ImageDraw.Draw(canvas)
    near = pts[np.abs(pts[:, 1] - y_index) <= 1.0] if len(pts) else pts
    for k in range(2):
        ox = 8 + k * (X * scale + 8)
        for p in near:
            cx = ox + (p[0] + 0.5) * scale
            cy = 24 + (Z - 1 - p[2] + 0.5) * scale
            draw.ellipse([cx - 2.5, cy - 2.5, cx + 2.5, cy + 2.5], outline=(255, 40, 40), width=1)
    bx = 2 * (X * scale + 8) + 8
    ramp = colormap(np.linspace(1, 0, Z * scale))[:, None, :].repeat(bar_w, axis=1)
    canvas.paste(Image.fromarray(ramp), (bx, 24))
    draw.text((bx, 8), f"{top:.0f} mm", fill=(255, 255, 255))
    draw.text((bx, 26 + Z * scale), "0", fill=(255, 255, 255))
    t = times["times"][phase]
    draw.text((8, 6), f"{case_dir.name} frame {phase} (t={t:g} {times['unit']}), coronal j={y_index}, "
                      f"|u| max {mag.max():.1f} mm; {len(near)} landmarks within 1 slice", fill=(255, 255, 255))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_png)
    return out_png
