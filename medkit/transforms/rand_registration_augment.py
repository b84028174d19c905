"""Random registration augmentation: sample fields from a bank, scale/compose, warp the atlas.

A sampled example is ``warp(atlas, s1 u1 [o s2 u2])`` for fields ``u`` that
registered this atlas to other training scans (:class:`~.field_bank.FieldBank`),
scales ``s ~ U(scale_range)`` (interpolating between the atlas' own anatomy
and the target's), and, with probability ``compose_prob``, a second field
composed after the first (shapes no single scan has). Parameters are drawn
first (:meth:`randomize`), then the deterministic
:class:`~.registration_augment.RegistrationAugment` runs, so a seed fixes the output.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.transforms import MapTransform, RandomizableTransform

from .field_bank import FieldBank
from .registration_augment import RegistrationAugment, combine_fields_mm


class RandRegistrationAugment(RandomizableTransform):
    """Warp an atlas image and its labels by a random field of ``bank`` for that atlas.

    Args:
        bank: fields by atlas id.
        prob: chance to augment at all (otherwise the atlas passes unchanged).
        scale_range: ``(lo, hi)`` for the field scale.
        compose_prob: chance to compose a second field of the same atlas.
    """

    def __init__(self, bank: FieldBank, prob: float = 0.5, scale_range: tuple[float, float] = (0.5, 1.0),
                 compose_prob: float = 0.25):
        RandomizableTransform.__init__(self, prob)
        self.bank, self.scale_range, self.compose_prob = bank, tuple(scale_range), float(compose_prob)
        self.linear, self.nearest = RegistrationAugment("bilinear"), RegistrationAugment("nearest")
        self.params: dict | None = None

    def randomize(self, atlas_id: str) -> None:  # type: ignore[override]
        super().randomize(None)
        recs = self.bank.for_atlas(atlas_id)
        if not self._do_transform or not recs:
            self.params = None
            return
        n = 2 if (len(recs) > 1 and self.R.rand() < self.compose_prob) else 1
        idx = self.R.choice(len(recs), size=n, replace=False)
        self.params = {"records": [recs[int(i)] for i in idx],
                       "scales": [float(self.R.uniform(*self.scale_range)) for _ in range(n)]}

    def __call__(self, img: torch.Tensor, label: torch.Tensor | None, atlas_id: str, affine,
                 randomize: bool = True):
        """``(C, X, Y, Z)`` image and label -> warped pair (unchanged when not drawn)."""
        if randomize:
            self.randomize(atlas_id)
        if self.params is None:
            return img, label
        ddf = combine_fields_mm([self.bank.load(r) for r in self.params["records"]], self.params["scales"], affine)
        out_img = self.linear(img, ddf, affine)
        out_lab = self.nearest(label, ddf, affine) if label is not None else None
        return out_img, out_lab


class RandRegistrationAugmentd(RandomizableTransform, MapTransform):
    """Dictionary wrapper: the sample's ``case_id`` names the atlas; ``image`` and ``label`` are warped.

    Samples whose case has no field in the bank (unlabelled scans, or atlases
    never registered) pass unchanged.
    """

    def __init__(self, bank: FieldBank, keys: Sequence[Hashable] = ("image", "label"), id_key: str = "case_id",
                 prob: float = 0.5, scale_range: tuple[float, float] = (0.5, 1.0), compose_prob: float = 0.25):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, 1.0)
        self.id_key = id_key
        self.rand = RandRegistrationAugment(bank, prob, scale_range, compose_prob)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.rand.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        img_key, lab_key = self.keys[0], (self.keys[1] if len(self.keys) > 1 else None)
        img = d[img_key]
        affine = getattr(img, "affine", None)
        if affine is None:
            raise ValueError("RandRegistrationAugmentd needs a MetaTensor image (its affine scales mm fields)")
        new_img, new_lab = self.rand(img, d.get(lab_key) if lab_key else None, str(d[self.id_key]), affine)
        d[img_key] = new_img
        if lab_key is not None and new_lab is not None:
            d[lab_key] = new_lab
        d["augment"] = None if self.rand.params is None else {
            "fields": [f"{r.atlas_id}->{r.target_id}" for r in self.rand.params["records"]],
            "scales": self.rand.params["scales"]}
        return d
