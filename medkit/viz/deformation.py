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


#: Colours of propagated labels 1, 2, 3, ... (reference contours are white).
CONTOUR_COLOURS = [(255, 80, 80), (80, 220, 80), (80, 160, 255), (255, 200, 0), (230, 80, 230), (0, 220, 220)]
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def _axis_letters(affine) -> tuple[str, str, str]:
    """Axis codes (direction each voxel index grows towards, e.g. ``("R", "A", "S")``)."""
    import nibabel as nib

    if affine is None:
        return ("?", "?", "?")
    return tuple(nib.orientations.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def field_figure(image: np.ndarray, ddf_mm: np.ndarray, path: str | Path, *, labels: np.ndarray | None = None,
                 ref_labels: np.ndarray | None = None, y_index: int | None = None, scale: int = 4,
                 title: str = "", affine=None, label_names: dict[int, str] | None = None) -> Path:
    """Coronal PNG, labelled and keyed: the image (HU) with propagated contours (colour) and
    reference contours (white) | displacement magnitude ``|u|`` (mm) with its colour bar.

    Every edge carries its anatomical direction (from ``affine``'s axis codes: the side the
    voxel index grows towards, e.g. R/L, S/I), the colour bar runs from 0 to the largest
    ``|u|`` over the whole volume (the ``max_displacement_mm`` of ``summary.json``, so the
    figure and the table agree), and a key below names the contour colours.

    Args:
        image: ``(X, Y, Z)`` HU, e.g. the reference warped to time t.
        ddf_mm: ``(3, X, Y, Z)`` mm.
        labels, ref_labels: ``(X, Y, Z)`` integer maps (optional).
        affine: the voxel -> RAS mm affine (orientation letters; ``?`` without it).
        label_names: label value -> name for the key (default ``label k``).
    """
    from PIL import Image, ImageDraw

    y = image.shape[1] // 2 if y_index is None else y_index
    grey = (_window(image[:, y, :]) * 255).astype(np.uint8)  # coronal slice (x, z)
    rgb = np.repeat(grey[..., None], 3, -1)
    shown: list[int] = []
    for lab, col in ((ref_labels, (255, 255, 255)), (labels, None)):
        if lab is None:
            continue
        sl = lab[:, y, :].astype(int)
        for v in np.unique(sl[sl > 0]):
            rgb[_edges(sl == v)] = col or CONTOUR_COLOURS[(v - 1) % len(CONTOUR_COLOURS)]
            if col is None and int(v) not in shown:
                shown.append(int(v))
    mag_all = np.sqrt(np.sum(np.asarray(ddf_mm, dtype=np.float64) ** 2, axis=0))
    top = float(mag_all.max()) or 1.0
    cm = colormap(mag_all[:, y, :] / top)

    def up(a: np.ndarray) -> Image.Image:  # (x, z) -> rows z (high index on top), cols x
        a = np.flip(a.transpose(1, 0, 2), 0)
        return Image.fromarray(np.ascontiguousarray(a)).resize((a.shape[1] * scale, a.shape[0] * scale),
                                                               Image.NEAREST)

    left, right = up(rgb), up(cm)
    codes = _axis_letters(affine)
    pad, head, bar_w, foot = 16, 32, 60, 34 if (shown or ref_labels is not None) else 8
    w = pad + left.width + 2 * pad + right.width + bar_w + pad
    h = head + left.height + pad + foot
    canvas = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(canvas)
    d.text((pad, 3), f"{title}   coronal slice y = {y}", fill="black")
    d.text((pad, 17), "warped reference + contours", fill=(60, 60, 60))
    x_right = pad + left.width + 2 * pad
    d.text((x_right, 17), "displacement |u| (mm)", fill=(60, 60, 60))
    for x0, im in ((pad, left), (x_right, right)):
        canvas.paste(im, (x0, head))
        # Orientation: the index along x grows towards codes[0]; rows show z, high index on top.
        d.text((x0 - 11, head + im.height // 2 - 5), _OPPOSITE.get(codes[0], "?"), fill="black")
        d.text((x0 + im.width + 3, head + im.height // 2 - 5), codes[0], fill="black")
        d.text((x0 + im.width // 2 - 3, head - 11 + 0), codes[2], fill=(0, 0, 160))
        d.text((x0 + im.width // 2 - 3, head + im.height + 1), _OPPOSITE.get(codes[2], "?"), fill=(0, 0, 160))
    # Colour bar: 0 at the bottom, the volume's max |u| at the top.
    bx, by, bh = x_right + right.width + 14, head, right.height
    ramp = colormap(np.linspace(1, 0, max(bh, 2))[:, None].repeat(12, 1))
    canvas.paste(Image.fromarray(np.ascontiguousarray(ramp)), (bx, by))
    d.rectangle([bx, by, bx + 11, by + bh - 1], outline="black")
    d.text((bx + 15, by - 2), f"{top:.2f}", fill="black")
    d.text((bx + 15, by + bh // 2 - 5), f"{top / 2:.2f}", fill="black")
    d.text((bx + 15, by + bh - 10), "0 mm", fill="black")
    # Key of the contours.
    ky, kx = head + left.height + pad, pad
    names = {int(k): str(v) for k, v in (label_names or {}).items()}
    if ref_labels is not None:
        d.line([kx, ky + 6, kx + 18, ky + 6], fill=(0, 0, 0), width=3)
        d.line([kx, ky + 6, kx + 18, ky + 6], fill=(255, 255, 255), width=1)
        d.text((kx + 22, ky), "reference contours", fill="black")
        kx += 150
    for v in shown:
        d.line([kx, ky + 6, kx + 18, ky + 6], fill=CONTOUR_COLOURS[(v - 1) % len(CONTOUR_COLOURS)], width=3)
        text = f"propagated: {names.get(v, f'label {v}')}"
        d.text((kx + 22, ky), text, fill="black")
        kx += 34 + 6 * len(text)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
