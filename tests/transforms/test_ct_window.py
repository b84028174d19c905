import pytest
import torch
from monai.data import MetaTensor

from medkit.transforms import CTWindow, CTWindowd


def test_window_maps_hu_to_unit_range():
    # window -160..240 (width 400): -160 -> 0, 40 -> 0.5, 240 -> 1, outside clipped
    hu = torch.tensor([[-1000.0, -160.0, 40.0, 240.0, 1000.0]])
    assert CTWindow()(hu).tolist() == [[0.0, 0.0, 0.5, 1.0, 1.0]]


def test_dict_wrapper_keeps_meta_and_other_keys():
    img = MetaTensor(torch.full((1, 2, 2, 2), 40.0), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    out = CTWindowd("image", -160, 240)({"image": img, "case_id": "a"})
    assert out["case_id"] == "a" and torch.allclose(out["image"].affine, img.affine)
    assert float(out["image"].mean()) == pytest.approx(0.5)


def test_bad_window_is_refused():
    with pytest.raises(ValueError, match="high > low"):
        CTWindow(100, 100)
