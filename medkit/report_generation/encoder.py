"""Image encoder: a MONAI 2D DenseNet / ResNet / ViT trunk, patch tokens and a CheXpert diagnosis head.

DenseNet: Huang et al. CVPR 2017 (``block_config=(6, 12, 24, 16)``,
``init_features=64``, ``growth_rate=32`` is DenseNet121, R2Gen's and CoFE's
ResNet-101 / ViT stand-ins); ResNet: He et al. CVPR 2016; ViT: Dosovitskiy et
al. ICLR 2021 (``monai.networks.nets.ViT``, 2D, no class token: CoFE's ViT
image encoder option). The CPU default is a three-block DenseNet of ~12k
parameters on 64 px images; the CPU ViT (patch 8, width 64, 2 blocks) has ~75k.

Shapes: input ``(B, 1, H, W)`` with ``H = W = image_size``; token grid
``(h, w)`` (:attr:`ImageEncoder.token_grid`: the trunk map for the CNNs, ``(H / p, W / p)``
patches of side ``p = vit_patch`` for the ViT); ``tokens`` ``(B, h*w, C)`` (row-major
patch order); ``pooled`` ``(B, C)`` (mean of the tokens); ``logits`` ``(B, 14)`` over
:data:`medkit.metrics.clinical.OBSERVATIONS`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError
from .cofe_config import EncoderConfig


def _check_vit(cfg: EncoderConfig, image_size: int) -> None:
    """Refuse ViT settings MONAI would reject with a less helpful message (or not at all); the
    per-key ranges (each >= 1) are :class:`EncoderConfig`'s own check."""
    if image_size % cfg.vit_patch:
        raise ConfigError(f"encoder.arch=vit: data.image_size ({image_size}) must be a multiple of "
                          f"encoder.vit_patch ({cfg.vit_patch})")
    if cfg.vit_hidden % cfg.vit_heads:
        raise ConfigError(f"encoder.arch=vit: encoder.vit_hidden ({cfg.vit_hidden}) must be a multiple of "
                          f"encoder.vit_heads ({cfg.vit_heads})")


class ImageEncoder(nn.Module):
    """MONAI trunk -> ``{"tokens", "pooled", "logits"}`` (shapes in the module doc).

    Args:
        cfg: the trunk's settings.
        n_labels: outputs of the diagnosis head.
        image_size: side ``S`` of the square input in pixels (``data.image_size``); the ViT's
            position embedding is built for it, the CNNs accept other sizes.

    Raises:
        ConfigError: (a ``ValueError``) ViT settings that do not fit ``image_size``.
    """

    def __init__(self, cfg: EncoderConfig, n_labels: int = 14, image_size: int = 64):
        super().__init__()
        self.cfg = cfg
        self.image_size = int(image_size)
        self.is_vit = cfg.arch == "vit"
        if cfg.arch == "densenet":
            from monai.networks.nets import DenseNet

            net = DenseNet(spatial_dims=2, in_channels=1, out_channels=n_labels, init_features=cfg.init_features,
                           growth_rate=cfg.growth_rate, block_config=tuple(cfg.block_config), bn_size=2)
            self.trunk = net.features  # ends with norm5; MONAI applies ReLU + pool in class_layers
            self.post = nn.ReLU()
        elif cfg.arch == "resnet":
            from monai.networks.nets import ResNet

            net = ResNet(block="basic", layers=list(cfg.resnet_layers), block_inplanes=list(cfg.resnet_planes),
                         spatial_dims=2, n_input_channels=1, num_classes=n_labels, conv1_t_stride=2)
            self.trunk = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool, net.layer1, net.layer2, net.layer3,
                                       net.layer4)
            self.post = nn.Identity()
        elif cfg.arch == "vit":
            from monai.networks.nets import ViT

            _check_vit(cfg, self.image_size)
            # classification=False: no class token, ViT.forward returns (normed patch tokens
            # (B, N, C) in the conv patch embedding's row-major order, per-block hidden states).
            self.trunk = ViT(in_channels=1, img_size=(self.image_size,) * 2, patch_size=cfg.vit_patch,
                             hidden_size=cfg.vit_hidden, mlp_dim=cfg.vit_mlp, num_layers=cfg.vit_layers,
                             num_heads=cfg.vit_heads, classification=False, spatial_dims=2)
            self.post = nn.Identity()
        else:
            raise ConfigError(f"encoder.arch must be densenet, resnet or vit, got {cfg.arch!r}")
        if self.is_vit:
            g = self.image_size // cfg.vit_patch
            self.token_grid: tuple[int, int] = (g, g)
            self.channels = int(cfg.vit_hidden)
        else:
            with torch.no_grad():
                fmap = self.post(self.trunk(torch.zeros(1, 1, self.image_size, self.image_size)))
            self.token_grid = (int(fmap.shape[2]), int(fmap.shape[3]))
            self.channels = int(fmap.shape[1])
        self.head = nn.Linear(self.channels, n_labels)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> ``(B, h*w, C)`` patch tokens, row-major over the token grid."""
        if self.is_vit:
            if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
                raise ValueError(f"ViT encoder built for {self.image_size} x {self.image_size} px images "
                                 f"(data.image_size), got {tuple(x.shape[-2:])}")
            return self.trunk(x)[0]
        return self.post(self.trunk(x)).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.tokens(x)
        pooled = tokens.mean(1)
        return {"tokens": tokens, "pooled": pooled, "logits": self.head(pooled)}

    def diagnose(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 14)`` probabilities (sigmoid of the diagnosis head)."""
        return torch.sigmoid(self.forward(x)["logits"])
