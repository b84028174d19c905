"""Segmentation metrics: arithmetic worked by hand."""

import math

import numpy as np
import pytest

from medkit.metrics.segmentation import (
    case_row,
    dice,
    image_diagonal_mm,
    segment_scores,
    spread,
    summarise,
)


def _cube(shape, lo, hi, value=1):
    a = np.zeros(shape, np.uint8)
    a[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
    return a


def test_two_cubes_known_overlap():
    # Truth: 4x4x4 cube (64 voxels). Prediction: the same cube shifted by 2 along x.
    # Overlap 2x4x4 = 32 voxels -> Dice = 2*32 / (64+64) = 0.5.
    t = _cube((12, 12, 12), (2, 2, 2), (6, 6, 6))
    p = _cube((12, 12, 12), (4, 2, 2), (8, 6, 6))
    assert dice(p, t) == pytest.approx(0.5)
    s = segment_scores(p, t, [1], spacing=(1.0, 1.0, 1.0))[1]
    assert s["dice"] == pytest.approx(0.5)
    # The x faces are 2 voxels apart; with 1 mm voxels no surface point is farther than 2 mm.
    assert 0 < s["hd95"] <= 2.0 + 1e-6
    assert 0 < s["assd"] <= s["hd95"]


def test_spacing_scales_distances():
    t = _cube((12, 12, 12), (2, 2, 2), (6, 6, 6))
    p = _cube((12, 12, 12), (4, 2, 2), (8, 6, 6))
    s1 = segment_scores(p, t, [1], spacing=(1.0, 1.0, 1.0))[1]
    s3 = segment_scores(p, t, [1], spacing=(3.0, 3.0, 3.0))[1]
    assert s3["hd95"] == pytest.approx(3 * s1["hd95"])


def test_missing_segment_scores_zero_and_diagonal():
    t = _cube((10, 20, 5), (1, 1, 1), (4, 4, 3), value=2)
    p = np.zeros_like(t)
    # Diagonal of a 10x20x5 grid at (2, 1, 4) mm: sqrt(20^2 + 20^2 + 20^2) = 34.641 mm.
    diag = image_diagonal_mm(t.shape, (2.0, 1.0, 4.0))
    assert diag == pytest.approx(math.sqrt(3 * 400.0))
    s = segment_scores(p, t, [1, 2], spacing=(2.0, 1.0, 4.0))
    assert s[2] == {"dice": 0.0, "hd95": pytest.approx(diag), "assd": pytest.approx(diag)}
    assert s[1] == {"dice": None, "hd95": None, "assd": None}  # absent in both: excluded
    row = case_row("c", s, {1: "I", 2: "II"})
    assert row["dice_mean"] == 0.0 and row["dice_I"] is None  # the miss is counted, the absent is not


def test_spread_and_summary():
    sp = spread([0.5, 1.0, None])
    # mean 0.75, std(ddof=1) = sqrt(((0.25)^2 * 2) / 1) = 0.35355
    assert sp["mean"] == pytest.approx(0.75) and sp["std"] == pytest.approx(0.353553, abs=1e-5) and sp["n"] == 2
    summ = summarise([{"case_id": "a", "dice_mean": 0.5}, {"case_id": "b", "dice_mean": 1.0}])
    assert summ["aggregate"]["dice_mean"]["mean"] == pytest.approx(0.75)
