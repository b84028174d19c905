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
    a = np.random.default_rng(0).normal(size=(16, 16, 16))
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


def _pair(shape=(20, 18, 16)):
    rng = np.random.default_rng(3)
    true = rng.normal(size=shape).cumsum(0).cumsum(1)  # structured, not white noise
    return true + rng.normal(scale=2.0, size=shape), true


@pytest.mark.parametrize("data_range", [None, 50.0])
def test_ssim3d_equals_monai_ssim_metric(data_range):
    import torch
    from monai.metrics import SSIMMetric

    pred, true = _pair()
    L = float(true.max() - true.min()) if data_range is None else data_range
    theirs = SSIMMetric(spatial_dims=3, data_range=L, win_size=11, kernel_sigma=1.5)(
        torch.as_tensor(pred)[None, None].float(), torch.as_tensor(true)[None, None].float())
    ours = M.ssim3d(pred, true, data_range=data_range)
    assert ours == pytest.approx(float(theirs.mean()), abs=2e-4)  # float32 convolutions in MONAI
    assert 0.0 < ours < 0.99


def test_ssim3d_refuses_an_image_smaller_than_the_window():
    with pytest.raises(ValueError, match="window"):
        M.ssim3d(np.zeros((10, 30, 30)), np.ones((10, 30, 30)))


def test_psnr_equals_monai_psnr_metric():
    import torch
    from monai.metrics import PSNRMetric

    pred, true = _pair()
    L = float(true.max() - true.min())
    theirs = PSNRMetric(max_val=L)(torch.as_tensor(pred)[None, None], torch.as_tensor(true)[None, None])
    assert M.psnr(pred, true) == pytest.approx(float(theirs.mean()), rel=1e-6)
    assert M.psnr(pred, true, data_range=1500.0) == pytest.approx(
        float(PSNRMetric(max_val=1500.0)(torch.as_tensor(pred)[None, None], torch.as_tensor(true)[None, None]).mean()),
        rel=1e-6)
