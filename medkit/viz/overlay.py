"""Label-map overlays on CT: three orthogonal panels through the labels' centre of mass.

Drawn with numpy + PIL only (matplotlib is not a dependency of medkit), so an
overlay can be written anywhere the package installs.

Display convention (stated in the PNG's subtitles too):

- The volume is first reoriented to the closest RAS axes (nibabel
  ``io_orientation``), so any affine, LPS DICOM included, is shown the same way.
- Axial: radiological convention, as read at a workstation: the patient's
  right on the image left, anterior up (viewed from the feet).
- Coronal: patient's right on the image left, superior up (viewed from the front).
- Sagittal: anterior on the image left, superior up (viewed from the patient's left).
- Pixels are resampled to square millimetres, so anisotropic spacing (thick
  slices) keeps the true aspect ratio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Default colours (RGB) for labels 1..; label k uses ``PALETTE[(k - 1) % len(PALETTE)]``.
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (170, 110, 40),
]


def label_color(k: int) -> tuple[int, int, int]:
    """RGB colour of label ``k`` (>= 1) in the overlay."""
    return PALETTE[(int(k) - 1) % len(PALETTE)]


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if hasattr(x, "as_tensor"):
            x = x.as_tensor()
        x = x.numpy()
    a = np.asarray(x)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ValueError(f"expected one channel (1, X, Y, Z), got shape {a.shape}")
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"expected (1, X, Y, Z) or (X, Y, Z), got shape {a.shape}")
    return a


def _affine_of(image, labels, spacing) -> np.ndarray:
    for src in (image, labels):
        aff = getattr(src, "affine", None)
        if aff is not None:
            aff = aff.detach().cpu().numpy() if hasattr(aff, "detach") else np.asarray(aff)
            return np.asarray(aff, dtype=np.float64)
    aff = np.eye(4)
    if spacing is not None:
        aff[:3, :3] = np.diag([float(s) for s in spacing])
    return aff


def _to_ras(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient voxel axes to the closest RAS+ order; returns (array, spacing (3,))."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    out = nib.orientations.apply_orientation(arr, ornt)
    sp = np.linalg.norm(affine[:3, :3], axis=0)
    spacing = np.empty(3)
    for src_axis, (dst_axis, _) in enumerate(ornt):
        spacing[int(dst_axis)] = sp[src_axis]
    return out, spacing


def _centre_of_foreground(lab: np.ndarray) -> tuple[int, int, int]:
    """Voxel index of the foreground's centre of mass (the volume centre if empty), from
    per-axis projections: memory is one boolean mask, not an (N, 3) index list."""
    fg = lab > 0
    total = int(fg.sum())
    if total == 0:
        return tuple(int(round((n - 1) / 2)) for n in lab.shape)
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        counts = fg.sum(axis=other, dtype=np.int64)
        out.append(int(round(float((counts * np.arange(lab.shape[axis])).sum()) / total)))
    return tuple(out)


def _panels(vol: np.ndarray, idx: tuple[int, int, int]) -> list[tuple[str, np.ndarray, tuple[float, float]]]:
    """(name, 2D (rows, cols) slice, (row axis, col axis)) in display orientation, for RAS volumes."""
    i, j, k = idx
    axial = vol[:, :, k].T[::-1, :]  # rows: anterior (top) -> posterior; cols: right -> left
    coronal = vol[:, j, :].T[::-1, :]  # rows: superior -> inferior; cols: right -> left
    sagittal = vol[i, :, :].T[::-1, ::-1]  # rows: superior -> inferior; cols: anterior -> posterior
    return [("axial", axial, (1, 0)), ("coronal", coronal, (2, 0)), ("sagittal", sagittal, (2, 1))]


def _window(img: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """HU -> uint8 grey through the display window (MONAI's ``ScaleIntensityRange``)."""
    from monai.transforms import ScaleIntensityRange

    lo, hi = window
    grey = ScaleIntensityRange(lo, max(hi, lo + 1e-6), 0.0, 255.0, clip=True, dtype=np.float32)(img)
    return np.asarray(grey).astype(np.uint8)


def render_overlay(image, labels, *, spacing=None, label_names: dict | None = None,
                   window: tuple[float, float] = (-160.0, 240.0), title: str | None = None,
                   alpha: float = 0.45, panel_px: int = 320):
    """The overlay as a ``PIL.Image`` (RGB); see :func:`save_overlay`."""
    from PIL import Image, ImageDraw, ImageFont

    # No widening copies: a 512x512x800 CT is 800 MiB as float32, and its labels as int64
    # would be 1.6 GiB (the old int64 cast and argwhere took a whole-body CT to 13 GiB).
    img = np.asarray(_as_array(image), dtype=np.float32)
    lab = _as_array(labels)
    if lab.dtype.kind not in "iu":
        lab = np.rint(lab).astype(np.int32)
    if img.shape != lab.shape:
        raise ValueError(f"image shape {img.shape} and label shape {lab.shape} differ")
    aff = _affine_of(image, labels, spacing)
    img, sp = _to_ras(img, aff)
    lab, _ = _to_ras(lab, aff)
    if spacing is not None and getattr(image, "affine", None) is None and getattr(labels, "affine", None) is None:
        sp = np.asarray(spacing, dtype=float)
    idx = _centre_of_foreground(lab)
    present = sorted({int(v) for z in range(0, lab.shape[2], 16) for v in np.unique(lab[..., z:z + 16]) if v > 0})
    names = {int(k): str(v) for k, v in (label_names or {}).items()}
    font = ImageFont.load_default()
    tiles = []
    for (name, im2, (ra, ca)), (_, lb2, _) in zip(_panels(img, idx), _panels(lab, idx)):
        gray = _window(im2, window)
        rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
        for k in present:
            m = lb2 == k
            if m.any():
                rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(label_color(k), np.float32)
        tile = Image.fromarray(rgb.astype(np.uint8))
        # Square millimetres: each axis scaled by its spacing, then to a common height.
        h_mm, w_mm = im2.shape[0] * sp[ra], im2.shape[1] * sp[ca]
        scale = panel_px / max(h_mm, w_mm)
        tile = tile.resize((max(1, round(w_mm * scale)), max(1, round(h_mm * scale))), Image.NEAREST)
        tiles.append((name, tile))
    head = 18 if title else 0
    sub = 14
    legend_w = 130
    width = sum(t.width for _, t in tiles) + 10 * (len(tiles) + 1) + legend_w
    height = head + sub + max(t.height for _, t in tiles) + 20
    canvas = Image.new("RGB", (width, max(height, 40 + 16 * len(present))), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((10, 3), title, fill=(255, 255, 255), font=font)
    captions = {"axial": "axial (R on left, A up)", "coronal": "coronal (R on left, S up)",
                "sagittal": "sagittal (A on left, S up)"}
    x = 10
    for name, tile in tiles:
        draw.text((x, head + 1), captions[name], fill=(200, 200, 200), font=font)
        canvas.paste(tile, (x, head + sub))
        x += tile.width + 10
    y = head + sub
    draw.text((x, y), f"W{window[1] - window[0]:.0f}/L{(window[0] + window[1]) / 2:.0f}", fill=(200, 200, 200),
              font=font)
    for k in present:
        y += 16
        draw.rectangle([x, y + 2, x + 10, y + 12], fill=label_color(k))
        draw.text((x + 16, y), f"{k}: {names.get(k, str(k))}", fill=(255, 255, 255), font=font)
    return canvas


def save_overlay(image, labels, path: str | Path, *, spacing=None, label_names: dict | None = None,
                 window: tuple[float, float] = (-160.0, 240.0), title: str | None = None,
                 alpha: float = 0.45, panel_px: int = 320) -> Path:
    """Write a PNG of ``labels`` over ``image``: axial, coronal and sagittal panels
    through the labels' centre of mass, with a legend; atomic write.

    Args:
        image: CT ``MetaTensor``/array ``(1, X, Y, Z)`` or ``(X, Y, Z)``, HU.
        labels: integer label map of the same shape (0 = background, drawn clear).
        path: target ``.png``.
        spacing: voxel size (X, Y, Z) mm when neither input carries an affine.
        label_names: label value -> name for the legend (e.g. Couinaud I..VIII).
        window: (low, high) HU; default -160..240 (W400/L40, abdomen soft tissue).
        title: text above the panels.
        alpha: label opacity.
        panel_px: longest side of each panel in pixels.

    Returns:
        The written path.
    """
    from ..io.atomic import atomic_path

    canvas = render_overlay(image, labels, spacing=spacing, label_names=label_names, window=window,
                            title=title, alpha=alpha, panel_px=panel_px)
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
