"""CT intensity window: Hounsfield units -> [0, 1]."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.transforms import MapTransform, Transform


def ct_window(hu: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``clip((hu - low) / (high - low), 0, 1)``; any shape; keeps MetaTensor meta."""
    if not high > low:
        raise ValueError(f"CT window needs high > low, got ({low}, {high})")
    return ((hu - low) / (high - low)).clamp(0.0, 1.0)


class CTWindow(Transform):
    """Map HU to [0, 1] through the window ``(low, high)``.

    The default -160..240 HU (W400/L40, abdominal soft tissue) keeps liver
    parenchyma (~60 HU) and contrast-filled vessels (150-200 HU) apart, which
    is what shows the Couinaud boundaries; fat sits near 0.15, air and bone clip.
    """

    def __init__(self, low: float = -160.0, high: float = 240.0):
        if not high > low:
            raise ValueError(f"CT window needs high > low, got ({low}, {high})")
        self.low, self.high = float(low), float(high)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = img if isinstance(img, torch.Tensor) else torch.as_tensor(img)
        return ct_window(img.float(), self.low, self.high)


class CTWindowd(MapTransform):
    """Dictionary wrapper of :class:`CTWindow` (default key ``image``)."""

    def __init__(self, keys: Sequence[Hashable] | Hashable = "image", low: float = -160.0, high: float = 240.0,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.window = CTWindow(low, high)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for k in self.key_iterator(d):
            d[k] = self.window(d[k])
        return d
