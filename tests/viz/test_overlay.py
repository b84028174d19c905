"""Overlay PNGs: written atomically, sized by the true spacing, carrying the label colours."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medkit.viz import label_color, render_overlay, save_overlay


def _phantom(shape=(40, 30, 12)):
    img = np.full(shape, -1000.0, np.float32)
    img[5:35, 5:25, :] = 40.0
    lab = np.zeros(shape, np.uint8)
    lab[8:18, 8:20, 3:9] = 1
    lab[20:30, 8:20, 3:9] = 2
    return img, lab


def test_png_written_with_label_colours(tmp_path):
    img, lab = _phantom()
    path = save_overlay(img[None], lab[None], tmp_path / "o.png", spacing=(1.0, 1.0, 4.0),
                        label_names={1: "I", 2: "II"}, title="test")
    assert path.exists() and path.stat().st_size > 500
    assert not list(tmp_path.glob(".*tmp*")), "temp file left behind"
    png = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    for k in (1, 2):
        # Legend swatch (pure colour) and blended overlay pixels (alpha 0.45 over the window grey).
        assert (np.abs(png - label_color(k)).sum(1) == 0).any()
    grey = 255 * (40 + 160) / 400  # 40 HU in the W400/L40 window
    blend = 0.55 * grey + 0.45 * np.asarray(label_color(1))
    assert (np.abs(png - blend).max(1) <= 2).sum() > 50


def test_aspect_ratio_follows_spacing():
    img, lab = _phantom((40, 40, 10))

    def coronal_rows(spacing):
        pic = np.asarray(render_overlay(img, lab, spacing=spacing, panel_px=100)).astype(int)
        band = pic[14:, 120:220]  # second panel, below its 14 px caption (x: 10 + 100 + 10 px)
        return int((band.max(axis=(1, 2)) > 0).sum())

    # 10 slices: 10 mm tall with 1 mm slices (25 px for a 40 mm wide panel), 40 mm with 4 mm.
    thin, thick = coronal_rows((1.0, 1.0, 1.0)), coronal_rows((1.0, 1.0, 4.0))
    assert abs(thick - 4 * thin) <= 4, (thin, thick)


def test_radiological_orientation_patient_right_on_image_left():
    """A label on the patient's right (low x in RAS) is drawn on the left of the axial panel."""
    img = np.zeros((40, 40, 5), np.float32)
    lab = np.zeros((40, 40, 5), np.uint8)
    lab[2:10, 15:25, 2] = 1  # patient's right (x small), mid AP
    lab[15:25, 32:38, 2] = 2  # anterior (y large), middle
    pic = np.asarray(render_overlay(img, lab, spacing=(1, 1, 1), panel_px=120, alpha=1.0)).astype(int)
    axial = pic[:, :130]
    ys1, xs1 = np.nonzero(np.abs(axial - label_color(1)).sum(2) == 0)
    ys2, xs2 = np.nonzero(np.abs(axial - label_color(2)).sum(2) == 0)
    assert xs1.mean() < axial.shape[1] / 3  # right -> image left
    assert ys2.mean() < ys1.mean()  # anterior -> up


def test_shape_mismatch_is_an_error(tmp_path):
    img, lab = _phantom()
    with pytest.raises(ValueError, match="differ"):
        save_overlay(img, lab[:-1], tmp_path / "x.png", spacing=(1, 1, 1))


def test_overlay_of_a_liver_case(tmp_path):
    from medkit.synth.liver_anatomy import COUINAUD_LABELS
    from medkit.synth.liver_ct import LiverCTConfig, render_case

    c = render_case(LiverCTConfig(shape=(64, 64, 40), spacing_xy_mm=(5.0, 5.0), spacing_z_mm=(6.0, 6.0)), 0)
    path = save_overlay(c.image, c.labels, tmp_path / "liver.png", spacing=c.meta["spacing_mm"],
                        label_names=COUINAUD_LABELS)
    png = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    for k in range(1, 9):
        assert (np.abs(png - label_color(k)).sum(1) == 0).any(), f"legend colour of segment {k} missing"


def test_centre_of_foreground_matches_the_index_mean_without_listing_indices():
    """The panel centre is the foreground's centre of mass, computed from projections
    (memory: one mask) and equal to the mean of the foreground indices."""
    from medkit.viz.overlay import _centre_of_foreground

    rng = np.random.default_rng(0)
    lab = np.zeros((20, 30, 12), dtype=np.uint8)
    lab[3:9, 10:25, 2:5] = 3
    lab[rng.random(lab.shape) < 0.02] = 7
    expect = tuple(int(round(v)) for v in np.argwhere(lab > 0).mean(0))
    assert _centre_of_foreground(lab) == expect
    assert _centre_of_foreground(np.zeros((5, 6, 7), np.uint8)) == (2, 2, 3)  # empty: the volume centre
