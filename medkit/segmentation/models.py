"""Build the segmenter named by a :class:`~.train_config.ModelConfig`: LiverFormer or a MONAI peer.

The peers are what a user would pick instead (MONAI's DynUNet, the nnU-Net
architecture; SwinUNETR; BasicUNet), built here so the benchmark and ``medkit train`` share one code path.
"""

from __future__ import annotations

from torch import nn

from .network import LiverFormer
from .train_config import ModelConfig


def build_model(cfg: ModelConfig, in_channels: int = 1, out_channels: int = 9) -> nn.Module:
    """``(B, 1, X, Y, Z) -> (B, 9, X, Y, Z)`` logits (LiverFormer with deep supervision returns a
    list in training mode)."""
    if cfg.arch == "liverformer":
        lf = cfg.liverformer
        if (lf.in_channels, lf.out_channels) != (in_channels, out_channels):
            from dataclasses import replace

            lf = replace(lf, in_channels=in_channels, out_channels=out_channels)
        return LiverFormer(lf)
    if cfg.arch == "swinunetr":
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=cfg.swin_feature_size,
                         spatial_dims=3, use_checkpoint=False)
    if cfg.arch == "basicunet":
        from monai.networks.nets import BasicUNet

        return BasicUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                         features=tuple(cfg.basicunet_features))
    if cfg.arch == "dynunet":
        from monai.networks.nets import DynUNet

        n = len(cfg.dynunet_filters)
        return DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                       kernel_size=[3] * n, strides=[1] + [2] * (n - 1), upsample_kernel_size=[2] * (n - 1),
                       filters=list(cfg.dynunet_filters), norm_name="instance", deep_supervision=False,
                       res_block=False)
    raise ValueError(f"unknown arch {cfg.arch!r}")


def size_multiple(cfg: ModelConfig) -> int:
    """Every input axis of the model must be a multiple of this."""
    if cfg.arch == "liverformer":
        return 2 ** (len(cfg.liverformer.channels) - 1) * cfg.liverformer.patch_size
    if cfg.arch == "dynunet":
        return 2 ** (len(cfg.dynunet_filters) - 1)
    return 32 if cfg.arch == "swinunetr" else 16
