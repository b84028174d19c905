"""Deterministic registration augmentation: warp an atlas and its labels with a given field.

Zhao et al., CVPR 2019 ("Data augmentation using learned transforms for
one-shot medical image segmentation") and LiverFormer (arXiv 2411.02815):
register a labelled atlas to other scans, then warp the atlas image and its
labels with those (scaled, composed) fields to make new labelled examples
that carry real anatomical variation. This file applies one given field;
:mod:`.rand_registration_augment` samples which.

Convention (:mod:`medkit.nn.warp`): ``warped(x) = atlas(x + u(x))``, ``u`` in
RAS mm on the atlas grid, ``(3, X, Y, Z)``. Images are resampled linearly,
labels by nearest neighbour, so they stay integers from the atlas' label set.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.transforms import MapTransform, Transform

from ..nn.warp import compose, ddf_mm_to_voxel, ddf_voxel_to_mm, warp


def combine_fields_mm(fields_mm: Sequence[torch.Tensor], scales: Sequence[float], affine) -> torch.Tensor:
    """Scale each ``(3, X, Y, Z)`` mm field and compose them in order (first applied first
    to the atlas, i.e. ``warp(warp(atlas, s1 u1), s2 u2)``); returns one mm field."""
    if len(fields_mm) != len(scales) or not fields_mm:
        raise ValueError("need one scale per field and at least one field")
    total = None
    for f, s in zip(fields_mm, scales):
        u = ddf_mm_to_voxel(torch.as_tensor(f, dtype=torch.float32)[None] * float(s), affine)
        total = u if total is None else compose(total, u)
    return ddf_voxel_to_mm(total, affine)[0]


class RegistrationAugment(Transform):
    """Warp ``(C, X, Y, Z)`` by a mm field ``(3, X, Y, Z)`` on a grid with voxel->mm ``affine``.

    Args:
        mode: ``"bilinear"`` (trilinear) for images, ``"nearest"`` for label maps.
    """

    def __init__(self, mode: str = "bilinear"):
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode must be bilinear or nearest, got {mode!r}")
        self.mode = mode

    def __call__(self, img: torch.Tensor, ddf_mm: torch.Tensor, affine) -> torch.Tensor:
        x = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)
        if tuple(ddf_mm.shape) != (3, *x.shape[1:]):
            raise ValueError(f"field shape {tuple(ddf_mm.shape)} does not match image {tuple(x.shape)}: "
                             "register on the same grid (or resample the field) first")
        u = ddf_mm_to_voxel(torch.as_tensor(ddf_mm, dtype=torch.float32)[None], affine)
        # medkit.nn.warp.warp pads with the border value: labels at the border stay
        # whatever the atlas had there (background for a body CT), never a new value.
        out = warp(x.float()[None], u, mode=self.mode)[0]
        if self.mode == "nearest":
            out = out.round().to(x.dtype)
        if hasattr(img, "affine"):
            from monai.data import MetaTensor

            out = MetaTensor(out, affine=img.affine, meta=dict(img.meta))
        return out


class RegistrationAugmentd(MapTransform):
    """Dictionary wrapper: warp ``image_key`` (linear) and ``label_key`` (nearest) by ``d[ddf_key]``
    (mm, ``(3, X, Y, Z)``); the affine comes from the image's ``affine``."""

    def __init__(self, keys: Sequence[Hashable] = ("image", "label"), label_keys: Sequence[Hashable] = ("label",),
                 ddf_key: str = "ddf", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.label_keys = set(label_keys)
        self.ddf_key = ddf_key
        self.linear, self.nearest = RegistrationAugment("bilinear"), RegistrationAugment("nearest")

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        ddf = d[self.ddf_key]
        affine = getattr(d[self.first_key(d)], "affine", None)
        if affine is None:
            raise ValueError("RegistrationAugmentd needs MetaTensors (with an affine) to read mm fields")
        for k in self.key_iterator(d):
            d[k] = (self.nearest if k in self.label_keys else self.linear)(d[k], ddf, affine)
        return d
