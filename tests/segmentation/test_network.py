"""LiverFormer shapes: tiny config, odd sizes, deep supervision, positional encoding."""

import pytest
import torch

from medkit.segmentation.network import LiverFormer, sincos_position_3d
from medkit.segmentation.network_config import LiverFormerConfig


def test_tiny_forward_shape_on_anisotropic_input():
    net = LiverFormer(LiverFormerConfig.tiny()).eval()
    x = torch.randn(2, 1, 8, 12, 20)  # multiples of 4 (two strides), not cubes
    assert net(x).shape == (2, 9, 8, 12, 20)


def test_odd_size_is_refused_clearly():
    net = LiverFormer(LiverFormerConfig.tiny())
    with pytest.raises(ValueError, match=r"\(9, 12, 20\) must be a multiple of 4"):
        net(torch.randn(1, 1, 9, 12, 20))


def test_patch_size_enters_the_multiple():
    cfg = LiverFormerConfig(channels=(4, 8), embed_dim=12, depth=1, heads=2, patch_size=2)
    net = LiverFormer(cfg).eval()
    assert net.size_multiple == 4
    assert net(torch.randn(1, 1, 4, 8, 12)).shape == (1, 9, 4, 8, 12)
    with pytest.raises(ValueError):
        net(torch.randn(1, 1, 6, 8, 12))  # 6 / 2 = 3 deep voxels: not a whole patch


def test_deep_supervision_outputs_in_training_only():
    cfg = LiverFormerConfig(channels=(4, 8, 16), embed_dim=16, depth=1, heads=2, deep_supervision=True)
    net = LiverFormer(cfg).train()
    outs = net(torch.randn(1, 1, 16, 16, 8))
    assert [tuple(o.shape) for o in outs] == [(1, 9, 16, 16, 8), (1, 9, 8, 8, 4)]
    net.eval()
    assert net(torch.randn(1, 1, 16, 16, 8)).shape == (1, 9, 16, 16, 8)


def test_positional_encoding_distinguishes_tokens():
    pe = sincos_position_3d((2, 3, 4), 24)
    assert pe.shape == (24, 24)
    # every token gets its own code, so the transformer can tell where a patch lies
    assert torch.cdist(pe, pe).fill_diagonal_(1.0).min() > 0


def test_gradients_reach_the_encoder():
    net = LiverFormer(LiverFormerConfig.tiny())
    net(torch.randn(1, 1, 8, 8, 8)).mean().backward()
    assert net.stem[0].weight.grad.abs().sum() > 0
    assert net.bottleneck.embed.weight.grad.abs().sum() > 0
