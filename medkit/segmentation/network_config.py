"""Sizes of :class:`medkit.segmentation.network.LiverFormer` (tiny for tests, full for GPUs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LiverFormerConfig:
    """LiverFormer sizes. ``channels[i]`` is encoder stage ``i``'s width; stage ``i``
    works at ``1 / 2**i`` of the input resolution, so inputs must be multiples of
    ``2**(len(channels)-1) * patch_size`` along every axis."""

    in_channels: int = 1
    out_channels: int = 9  # background + Couinaud I..VIII
    channels: tuple[int, ...] = (16, 32, 64, 128)
    blocks_per_stage: int = 1  # residual blocks per encoder stage
    patch_size: int = 1  # 3D patch edge (in deepest-feature voxels) cut into one token
    embed_dim: int = 128
    depth: int = 2  # transformer blocks
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    deep_supervision: bool = False
    transformer: bool = True  # False: the bottleneck is the identity (the mechanism ablation)

    @classmethod
    def tiny(cls) -> LiverFormerConfig:
        """For tests: a few thousand parameters, runs on CPU in milliseconds."""
        return cls(channels=(4, 8, 16), embed_dim=16, depth=1, heads=2)

    @classmethod
    def full(cls) -> LiverFormerConfig:
        """For a GPU: 128^3 patches at ~1.5 mm."""
        return cls(channels=(32, 64, 128, 256, 320), blocks_per_stage=2, patch_size=1, embed_dim=384,
                   depth=8, heads=8, mlp_ratio=4.0, dropout=0.1, deep_supervision=True)
