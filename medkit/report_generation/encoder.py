"""Image encoder: a MONAI 2D DenseNet / ResNet trunk, patch tokens and a CheXpert diagnosis head.

DenseNet: Huang et al. CVPR 2017 (``block_config=(6, 12, 24, 16)``,
``init_features=64``, ``growth_rate=32`` is DenseNet121, R2Gen's and CoFE's
ResNet-101 / ViT stand-ins); ResNet: He et al. CVPR 2016. The CPU default is
a three-block DenseNet of ~12k parameters on 64 px images.

Shapes: input ``(B, 1, H, W)``; trunk map ``(B, C, h, w)``; ``tokens``
``(B, h*w, C)`` (row-major patch order); ``pooled`` ``(B, C)``; ``logits``
``(B, 14)`` over :data:`medkit.metrics.clinical.OBSERVATIONS`.
"""

from __future__ import annotations

import torch
from torch import nn

from .cofe_config import EncoderConfig


class ImageEncoder(nn.Module):
    """MONAI trunk -> ``{"tokens", "pooled", "logits"}`` (shapes in the module doc)."""

    def __init__(self, cfg: EncoderConfig, n_labels: int = 14):
        super().__init__()
        self.cfg = cfg
        if cfg.arch == "densenet":
            from monai.networks.nets import DenseNet

            net = DenseNet(spatial_dims=2, in_channels=1, out_channels=n_labels, init_features=cfg.init_features,
                           growth_rate=cfg.growth_rate, block_config=tuple(cfg.block_config), bn_size=2)
            self.trunk = net.features  # ends with norm5; MONAI applies ReLU + pool in class_layers
            self.post = nn.ReLU()
        else:
            from monai.networks.nets import ResNet

            net = ResNet(block="basic", layers=list(cfg.resnet_layers), block_inplanes=list(cfg.resnet_planes),
                         spatial_dims=2, n_input_channels=1, num_classes=n_labels, conv1_t_stride=2)
            self.trunk = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool, net.layer1, net.layer2, net.layer3,
                                       net.layer4)
            self.post = nn.Identity()
        with torch.no_grad():
            self.channels = int(self.post(self.trunk(torch.zeros(1, 1, 64, 64))).shape[1])
        self.head = nn.Linear(self.channels, n_labels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fmap = self.post(self.trunk(x))
        tokens = fmap.flatten(2).transpose(1, 2)
        pooled = tokens.mean(1)
        return {"tokens": tokens, "pooled": pooled, "logits": self.head(pooled)}

    def diagnose(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 14)`` probabilities (sigmoid of the diagnosis head)."""
        return torch.sigmoid(self.forward(x)["logits"])
