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
    ddf = np.asarray(ddf_mm, dtype=np.float32)
    # The largest |u| over the volume, slab by slab (no full-size float copy of the field).
    top = max(float(np.sqrt((ddf[..., k:k + 16] ** 2).sum(0)).max()) for k in range(0, ddf.shape[-1], 16)) or 1.0
    cm = colormap(np.sqrt((ddf[:, :, y, :] ** 2).sum(0)) / top)

    codes = _axis_letters(affine)
    # Radiological convention, as medkit's overlays: the patient's right on the viewer's left.
    flip_x = codes[0] == "R"
    left_code, right_code = ((codes[0], _OPPOSITE[codes[0]]) if flip_x
                             else (_OPPOSITE.get(codes[0], "?"), codes[0]))

    def up(a: np.ndarray) -> Image.Image:  # (x, z) -> rows z (high index on top), cols x
        a = np.flip(a.transpose(1, 0, 2), 0)
        if flip_x:
            a = a[:, ::-1]
        return Image.fromarray(np.ascontiguousarray(a)).resize((a.shape[1] * scale, a.shape[0] * scale),
                                                               Image.NEAREST)

    left, right = up(rgb), up(cm)
    names = {int(k): str(v) for k, v in (label_names or {}).items()}
    keys = ([("reference contours", None)] if ref_labels is not None else []) + \
        [(f"propagated: {names.get(v, f'label {v}')}", CONTOUR_COLOURS[(v - 1) % len(CONTOUR_COLOURS)]) for v in shown]
    pad, head, bar_w = 16, 46, 60
    w = pad + left.width + 2 * pad + right.width + bar_w + pad
    per_row = max(1, (w - pad) // 170)
    foot = 8 + 16 * -(-len(keys) // per_row) if keys else 8
    h = head + left.height + pad + foot
    canvas = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(canvas)
    d.text((pad, 3), f"{title}   coronal slice y = {y}", fill="black")
    d.text((pad, 18), "warped reference + contours", fill=(60, 60, 60))
    x_right = pad + left.width + 2 * pad
    d.text((x_right, 18), "displacement |u| (mm)", fill=(60, 60, 60))
    for x0, im in ((pad, left), (x_right, right)):
        canvas.paste(im, (x0, head))
        # Orientation letters on every edge: rows show z (high index on top), columns x.
        d.text((x0 - 11, head + im.height // 2 - 5), left_code, fill=(0, 0, 160))
        d.text((x0 + im.width + 3, head + im.height // 2 - 5), right_code, fill=(0, 0, 160))
        d.text((x0 + im.width // 2 - 3, head - 12), codes[2], fill=(0, 0, 160))
        d.text((x0 + im.width // 2 - 3, head + im.height + 1), _OPPOSITE.get(codes[2], "?"), fill=(0, 0, 160))
    # Colour bar: 0 at the bottom, the volume's max |u| at the top.
    bx, by, bh = x_right + right.width + 14, head, right.height
    ramp = colormap(np.linspace(1, 0, max(bh, 2))[:, None].repeat(12, 1))
    canvas.paste(Image.fromarray(np.ascontiguousarray(ramp)), (bx, by))
    d.rectangle([bx, by, bx + 11, by + bh - 1], outline="black")
    d.text((bx + 15, by - 2), f"{top:.2f}", fill="black")
    d.text((bx + 15, by + bh // 2 - 5), f"{top / 2:.2f}", fill="black")
    d.text((bx + 15, by + bh - 10), "0 mm", fill="black")
    d.text((bx - 2, by + bh + 2), "max |u|", fill=(60, 60, 60))
    # Key of the contours, wrapped to the figure's width.
    for k, (text, colour) in enumerate(keys):
        kx = pad + 170 * (k % per_row)
        ky = head + left.height + pad + 16 * (k // per_row)
        if colour is None:  # reference: white line with a black border
            d.line([kx, ky + 6, kx + 18, ky + 6], fill=(0, 0, 0), width=4)
            d.line([kx + 1, ky + 6, kx + 17, ky + 6], fill=(255, 255, 255), width=2)
        else:
            d.line([kx, ky + 6, kx + 18, ky + 6], fill=colour, width=3)
        d.text((kx + 24, ky), text, fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
