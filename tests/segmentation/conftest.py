"""Tiny synthetic Couinaud samples and a tiny model folder, shared by the segmentation tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def tiny_cfg():
    from medkit.segmentation.train_config import TrainConfig

    return TrainConfig.tiny()


def render_small(index: int):
    """One small phantom (48 x 48 x 20 voxels at ~7 x 7 x 10 mm: the whole torso, coarse)."""
    from medkit.synth.liver_ct import LiverCTConfig, render_case

    cfg = LiverCTConfig(seed=0, shape=(48, 48, 24), spacing_xy_mm=(7.0, 7.5), spacing_z_mm=(9.0, 10.0),
                        fine_xy=1, fine_z_max_mm=5.0, max_tumours=0)
    return render_case(cfg, index)


@pytest.fixture(scope="session")
def tiny_samples():
    """Two preprocessed samples (dicts with image, label, case_id)."""
    from monai.data import MetaTensor

    from medkit.segmentation.data import preprocess_transforms

    pre = preprocess_transforms(tiny_cfg().preprocess)
    out = []
    for i in range(2):
        c = render_small(i)
        aff = torch.as_tensor(c.affine)
        out.append(pre({"case_id": c.case_id,
                        "image": MetaTensor(torch.from_numpy(c.image[None].astype(np.float32)), affine=aff),
                        "label": MetaTensor(torch.from_numpy(c.labels[None].astype(np.float32)), affine=aff)}))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A models/<name>/ folder (config.yaml + model.safetensors) with an untrained tiny LiverFormer."""
    from medkit.segmentation.models import build_model

    d = tmp_path_factory.mktemp("model")
    cfg = tiny_cfg()
    torch.manual_seed(0)
    from medkit.runs import save_model_folder

    save_model_folder(d, config=cfg, weights=build_model(cfg.model).state_dict(), component="segmentation")
    return d
