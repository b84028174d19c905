"""medkit.metrics.deformation against hand-worked numbers."""

import numpy as np
import pytest

from medkit.metrics import deformation as M


def test_tre_known_offsets():
    true = np.zeros((4, 3))
    pred = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    r = M.tre(pred, true)  # errors 5, 0, 1, 2: mean 2, std sqrt(((3)^2+2^2+1+0)/4) = sqrt(3.5)
    assert r["mean"] == pytest.approx(2.0)
    assert r["std"] == pytest.approx(np.sqrt(3.5))
    assert r["max"] == 5.0 and r["n"] == 4
    assert r["p95"] == pytest.approx(np.percentile([5, 0, 1, 2], 95))


def test_tre_lost_landmark_counts_as_worst():
    r = M.tre(np.array([[1.0, 0, 0], [np.nan, 0, 0]]), np.zeros((2, 3)))
    assert r["mean"] == 1.0 and r["n"] == 2


def test_ncc_psnr_ssim_identical():
    a = np.random.default_rng(0).normal(size=(8, 8, 8))
    assert M.ncc(a, a) == pytest.approx(1.0)
    assert M.ncc(a, 2 * a + 3) == pytest.approx(1.0)
    assert M.ncc(a, -a) == pytest.approx(-1.0)
    assert M.psnr(a, a) == float("inf")
    assert M.ssim3d(a, a) == pytest.approx(1.0)
    assert M.ssim3d(a, a + np.random.default_rng(1).normal(size=a.shape)) < 0.9


def test_psnr_hand_worked():
    t = np.zeros((2, 2, 2))
    t[0, 0, 0] = 10.0  # data range 10
    p = t + 1.0  # MSE 1 -> PSNR = 10 log10(100 / 1) = 20 dB
    assert M.psnr(p, t) == pytest.approx(20.0)


def test_folding_and_dice():
    j = np.array([1.0, 0.5, 0.0, -0.2])
    assert M.folding_fraction(j) == 0.5
    a = np.array([1, 1, 0, 2])
    b = np.array([1, 0, 0, 0])
    d = M.dice(a, b, [1, 2, 3])  # label 1: 2*1/(2+1); 2: missing in truth -> 0; 3: absent in both -> 1
    assert d[1] == pytest.approx(2 / 3) and d[2] == 0.0 and d[3] == 1.0
