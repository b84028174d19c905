"""LiverFormer: a hybrid 3D CNN-Transformer for Couinaud segmentation.

Paper: "LiverFormer: a hybrid CNN-Transformer network for Couinaud liver
segment segmentation", arXiv 2411.02815. No code or exact sizes are public;
what the paper describes is kept, the gaps are filled with standard choices:

- Encoder: residual 3D CNN stages (two 3x3x3 convs + instance norm + LeakyReLU
  with an identity/1x1 shortcut, nnU-Net/ResNet style); stage ``i`` is strided
  by 2 and has ``channels[i]`` features. Local, low-level features (vessels,
  the liver outline) come from here.
- Transformer: the deepest feature map is cut into non-overlapping 3D patches
  (``patch_size``^3 voxels -> one token by a strided conv), a fixed 3D
  sinusoidal positional encoding is added (computed for any grid, so any
  input size that the strides divide works, which a learned table would not
  allow in sliding-window inference), then ``depth`` pre-norm blocks
  (multi-head self-attention + MLP). Couinaud boundaries are planes through
  the whole liver, so global context is what the transformer is for.
- Decoder: transposed-conv upsampling with a skip connection from every
  encoder stage and a residual block per level; a 1x1x1 head per level when
  ``deep_supervision`` is on.

Shapes: input ``(B, C_in, X, Y, Z)`` with X, Y, Z multiples of
``2**(n_stages-1) * patch_size``; output logits ``(B, C_out, X, Y, Z)``. In
training mode with deep supervision the output is a list
``[(B, C_out, X, Y, Z), (B, C_out, X/2, Y/2, Z/2), ...]`` (full resolution first).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .network_config import LiverFormerConfig


class ResBlock(nn.Module):
    """Two 3x3x3 convs with instance norm; shortcut is identity or a strided 1x1x1 conv."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.n1 = nn.InstanceNorm3d(c_out, affine=True)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, padding=1, bias=False)
        self.n2 = nn.InstanceNorm3d(c_out, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out
                     else nn.Sequential(nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False),
                                        nn.InstanceNorm3d(c_out, affine=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.n1(self.conv1(x)))
        y = self.n2(self.conv2(y))
        return self.act(y + self.skip(x))


def sincos_position_3d(grid: tuple[int, int, int], dim: int, device=None) -> torch.Tensor:
    """Fixed 3D sinusoidal positional encoding ``(X*Y*Z, dim)`` (token order x-major,
    as ``flatten(2)`` gives). A third of the (even) channels per axis; zero-padded."""
    per_axis = (dim // 6) * 2  # sin + cos pairs per axis
    out = torch.zeros(math.prod(grid), dim, device=device)
    if per_axis == 0:
        return out
    coords = torch.meshgrid(*[torch.arange(n, device=device, dtype=torch.float32) for n in grid], indexing="ij")
    freqs = 1.0 / (10000 ** (torch.arange(per_axis // 2, device=device, dtype=torch.float32) / max(per_axis // 2, 1)))
    for a, c in enumerate(coords):
        ang = c.reshape(-1, 1) * freqs[None]
        out[:, a * per_axis:(a + 1) * per_axis] = torch.cat([ang.sin(), ang.cos()], dim=1)
    return out


class TransformerBottleneck(nn.Module):
    """Tokens from 3D patches of the deepest features -> transformer -> back, residual.

    ``(B, C, x, y, z) -> (B, C, x, y, z)``; x, y, z multiples of ``patch``.
    """

    def __init__(self, channels: int, cfg: LiverFormerConfig):
        super().__init__()
        p = cfg.patch_size
        self.patch = p
        self.embed = nn.Conv3d(channels, cfg.embed_dim, p, stride=p)
        layer = nn.TransformerEncoderLayer(cfg.embed_dim, cfg.heads, int(cfg.embed_dim * cfg.mlp_ratio),
                                           dropout=cfg.dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.unembed = nn.ConvTranspose3d(cfg.embed_dim, channels, p, stride=p)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        t = self.embed(f)  # (B, D, gx, gy, gz)
        b, d, *grid = t.shape
        tokens = t.flatten(2).transpose(1, 2)  # (B, N, D)
        tokens = tokens + sincos_position_3d(tuple(grid), d, f.device).to(tokens.dtype)[None]
        tokens = self.norm(self.blocks(tokens))
        t = tokens.transpose(1, 2).reshape(b, d, *grid)
        return f + self.unembed(t)


class LiverFormer(nn.Module):
    """Hybrid CNN-Transformer segmenter; see the module docstring for the paper and shapes.

    Args:
        cfg: sizes (:class:`LiverFormerConfig`); ``LiverFormerConfig.tiny()`` for tests.
    """

    def __init__(self, cfg: LiverFormerConfig | None = None):
        super().__init__()
        cfg = cfg or LiverFormerConfig()
        if len(cfg.channels) < 2:
            raise ValueError("LiverFormer needs at least two encoder stages (channels)")
        self.cfg = cfg
        ch = list(cfg.channels)
        self.stem = nn.Sequential(nn.Conv3d(cfg.in_channels, ch[0], 3, padding=1, bias=False),
                                  nn.InstanceNorm3d(ch[0], affine=True), nn.LeakyReLU(0.01, inplace=True))
        self.enc = nn.ModuleList()
        for i, c in enumerate(ch):
            c_prev = ch[max(i - 1, 0)]
            blocks = [ResBlock(c_prev, c, stride=1 if i == 0 else 2)]
            blocks += [ResBlock(c, c) for _ in range(cfg.blocks_per_stage - 1)]
            self.enc.append(nn.Sequential(*blocks))
        # ``transformer=False`` keeps every convolution and drops only the global-context
        # path: the ablation that asks whether the transformer earns its cost.
        self.bottleneck = TransformerBottleneck(ch[-1], cfg) if cfg.transformer else nn.Identity()
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        self.heads = nn.ModuleList()
        for i in range(len(ch) - 1, 0, -1):
            self.up.append(nn.ConvTranspose3d(ch[i], ch[i - 1], 2, stride=2))
            self.dec.append(ResBlock(2 * ch[i - 1], ch[i - 1]))
            self.heads.append(nn.Conv3d(ch[i - 1], cfg.out_channels, 1))
        # heads[-1] is the full-resolution head; the others serve deep supervision.

    @property
    def size_multiple(self) -> int:
        """Every input axis must be a multiple of this."""
        return 2 ** (len(self.cfg.channels) - 1) * self.cfg.patch_size

    def check_shape(self, shape) -> None:
        """Raise a clear ``ValueError`` if a spatial shape ``(X, Y, Z)`` does not fit the patch grid."""
        m = self.size_multiple
        bad = [int(s) for s in shape if int(s) % m]
        if bad:
            raise ValueError(
                f"LiverFormer input spatial shape {tuple(int(s) for s in shape)} must be a multiple of {m} on every "
                f"axis (2**{len(self.cfg.channels) - 1} strides x patch {self.cfg.patch_size}); pad or crop first"
            )

    def forward(self, x: torch.Tensor):
        self.check_shape(x.shape[2:])
        skips = []
        h = self.stem(x)
        for stage in self.enc:
            h = stage(h)
            skips.append(h)
        h = self.bottleneck(skips[-1])
        outs = []
        for up, dec, head, skip in zip(self.up, self.dec, self.heads, reversed(skips[:-1])):
            h = dec(torch.cat([up(h), skip], dim=1))
            outs.append(head(h) if (self.cfg.deep_supervision and self.training) else None)
        main = self.heads[-1](h)
        if self.cfg.deep_supervision and self.training:
            aux = [o for o in outs[:-1] if o is not None]
            return [main] + aux[::-1]  # full resolution first, then 1/2, 1/4, ...
        return main
