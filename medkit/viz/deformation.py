"""Figures for ST-NeRP runs: the fit-loss curve, and a coronal panel of the warped
reference with propagated contours beside the displacement magnitude. PIL only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from .motion import _window, colormap


def loss_plot(curves: dict[str, list[float]], path: str | Path, size: tuple[int, int] = (640, 360)) -> Path:
    """PNG of each loss curve (log10 y axis, own colour), iteration on x."""
    from PIL import Image, ImageDraw

    w, h = size
    pad = 44
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    vals = [v for c in curves.values() for v in c if v > 0 and np.isfinite(v)]
    if not vals:
        vals = [1.0]
    lo, hi = np.log10(min(vals)), np.log10(max(vals))
    hi = hi if hi > lo else lo + 1
    n = max((len(c) for c in curves.values()), default=1)
    d.rectangle([pad, 10, w - 10, h - pad], outline="black")
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    for ci, (name, c) in enumerate(curves.items()):
        pts = [(pad + (w - pad - 10) * i / max(n - 1, 1),
                h - pad - (h - pad - 10) * (np.log10(max(v, 1e-12)) - lo) / (hi - lo)) for i, v in enumerate(c)]
        if len(pts) > 1:
            d.line(pts, fill=colours[ci % 4], width=2)
        d.text((pad + 8, 14 + 14 * ci), f"{name} (last {c[-1]:.4g})" if c else name, fill=colours[ci % 4])
    d.text((4, 10), f"1e{hi:.1f}", fill="black")
    d.text((4, h - pad - 10), f"1e{lo:.1f}", fill="black")
    d.text((w // 2 - 30, h - pad + 8), f"iteration (0..{n - 1})", fill="black")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def _edges(lab: np.ndarray) -> np.ndarray:
    e = np.zeros(lab.shape, bool)
    e[1:] |= lab[1:] != lab[:-1]
    e[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    return e & (lab > 0)


def field_figure(image: np.ndarray, ddf_mm: np.ndarray, path: str | Path, *, labels: np.ndarray | None = None,
                 ref_labels: np.ndarray | None = None, y_index: int | None = None, scale: int = 4,
                 title: str = "") -> Path:
    """Coronal PNG: image (HU) with propagated contours (colour) and reference contours
    (white) | displacement magnitude (mm, colour bar max in the title).

    Args:
        image: ``(X, Y, Z)`` HU, e.g. the reference warped to time t.
        ddf_mm: ``(3, X, Y, Z)`` mm.
        labels, ref_labels: ``(X, Y, Z)`` integer maps (optional).
    """
    from PIL import Image, ImageDraw

    y = image.shape[1] // 2 if y_index is None else y_index
    # coronal slice (x, z), shown with superior up
    grey = (_window(image[:, y, :]) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, -1)
    for lab, col in ((ref_labels, (255, 255, 255)), (labels, None)):
        if lab is None:
            continue
        sl = lab[:, y, :].astype(int)
        for v in np.unique(sl[sl > 0]):
            e = _edges(sl == v)
            rgb[e] = col or [(255, 80, 80), (80, 220, 80), (80, 160, 255), (255, 200, 0)][(v - 1) % 4]
    mag = np.linalg.norm(ddf_mm[:, :, y, :], axis=0)
    top = float(np.percentile(mag, 99.5)) or 1.0
    cm = colormap(mag / top)
    panel = np.concatenate([rgb, np.full((2, rgb.shape[1], 3), 255, np.uint8), cm], axis=0)  # side by side
    panel = np.flip(panel.transpose(1, 0, 2), 0)  # rows = z (superior up), cols = x
    im = Image.fromarray(np.ascontiguousarray(panel)).resize((panel.shape[1] * scale, panel.shape[0] * scale),
                                                            Image.NEAREST)
    canvas = Image.new("RGB", (im.width, im.height + 18), "white")
    canvas.paste(im, (0, 18))
    ImageDraw.Draw(canvas).text((4, 3), f"{title}  |u| max colour {top:.1f} mm (coronal y={y})", fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
