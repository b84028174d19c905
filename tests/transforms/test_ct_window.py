"""CT windowing is MONAI's ScaleIntensityRange(d) everywhere: the arithmetic, and that the
segmentation preprocessing and the deformation fit use it with the configured window."""

import pytest
import torch
from monai.data import MetaTensor


def test_segmentation_preprocessing_windows_hu_through_monai():
    # window -160..240 (width 400): -160 -> 0, 40 -> 0.5, 240 -> 1, outside clipped
    from monai.transforms import ScaleIntensityRanged

    from medkit.segmentation.data import preprocess_transforms
    from medkit.segmentation.train_config import PreprocessConfig

    chain = preprocess_transforms(PreprocessConfig(), with_label=False)
    win = [t for t in chain.transforms if isinstance(t, ScaleIntensityRanged)]
    assert len(win) == 1
    hu = MetaTensor(torch.tensor([-1000.0, -160.0, 40.0, 240.0, 1000.0]).reshape(1, 5, 1, 1),
                    affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    out = win[0]({"image": hu, "case_id": "a"})
    assert out["image"].flatten().tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert out["case_id"] == "a" and torch.allclose(out["image"].affine, hu.affine)


def test_deformation_scale_hu_is_the_same_window():
    from medkit.deformation.fit import scale_hu

    x = torch.tensor([-1200.0, -1000.0, -250.0, 500.0, 900.0])
    assert scale_hu(x, (-1000.0, 500.0)).tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
