"""medkit's warping and resampling against MONAI's own: the same numbers, so the copies earn their keep.

- :func:`medkit.nn.warp.warp` (voxel-unit pull-back field) vs ``monai.networks.blocks.Warp``;
- :func:`medkit.segmentation.predict.resample_to_grid` vs ``monai.transforms.SpatialResample``
  (align_corners=True: voxel centres map to voxel centres, as the affines say).
"""

import math

import numpy as np
import pytest
import torch

from medkit.nn import warp as W

# MONAI says which grid_sample it used; that is the point of the comparison, not a problem.
pytestmark = pytest.mark.filterwarnings("ignore:monai.networks.blocks.Warp")


def _smooth_field(shape, amp, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, 3, 3, 3, generator=g) * amp
    return torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_warp_matches_monai_warp(mode):
    from monai.networks.blocks import Warp

    shape = (14, 11, 9)
    img = torch.rand(2, 2, *shape, generator=torch.Generator().manual_seed(1))
    ddf = torch.cat([_smooth_field(shape, 2.5, 3), _smooth_field(shape, 2.5, 4)])  # voxels, some past the border
    ours = W.warp(img, ddf, mode=mode)
    theirs = Warp(mode=mode, padding_mode="border")(img, ddf)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    # and the mm version on an anisotropic, rotated grid equals MONAI on the voxel field
    c, s = math.cos(0.4), math.sin(0.4)
    aff = torch.eye(4)
    aff[:3, :3] = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ torch.diag(torch.tensor([0.8, 1.3, 2.5]))
    ddf_mm = W.ddf_voxel_to_mm(ddf, aff)
    torch.testing.assert_close(W.warp_mm(img, ddf_mm, aff, mode=mode), theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("argmax", [False, True])
def test_resample_to_grid_matches_monai_spatial_resample(argmax):
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    from medkit.segmentation.predict import resample_to_grid

    g = torch.Generator().manual_seed(0)
    vol = torch.rand(3, 12, 10, 8, generator=g)
    src = np.diag([1.5, 1.5, 3.0, 1.0])
    src[:3, 3] = [-8.0, -7.0, -12.0]
    # destination: finer, shifted, rotated 20 degrees about z, a different shape
    c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
    dst = np.eye(4)
    dst[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.0, 1.2, 2.0])
    dst[:3, 3] = [-6.0, -9.0, -10.0]
    shape = (15, 13, 11)
    ours = resample_to_grid(vol, src, dst, shape, chunk=4, argmax=argmax)
    theirs = SpatialResample(mode="bilinear", padding_mode="border", align_corners=True, dtype=torch.float64)(
        MetaTensor(vol.double(), affine=torch.as_tensor(src)), dst_affine=torch.as_tensor(dst), spatial_size=shape)
    theirs = torch.as_tensor(np.asarray(theirs), dtype=torch.float64)
    if argmax:
        assert ours.dtype == torch.uint8
        # ties are measure-zero for random data: the class maps agree everywhere but at float noise
        assert (ours.long() == theirs.argmax(0)).float().mean() > 0.999
    else:
        torch.testing.assert_close(ours.double(), theirs, atol=1e-5, rtol=1e-5)
