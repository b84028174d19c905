"""A tiny 3-phase sequence: a textured blob translating along x, 16x12x10 voxels at 4 mm."""

import json

import numpy as np
import pytest


def _phase(shift_mm: float, shape=(16, 12, 10), sp=4.0):
    g = np.stack(np.meshgrid(*[np.arange(n) * sp for n in shape], indexing="ij"))
    c = np.array([32.0 + shift_mm, 22.0, 18.0])
    d2 = sum((g[i] - c[i]) ** 2 for i in range(3))
    return (-1000 + 1100 * np.exp(-d2 / (2 * 8.0**2))).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_sequence(tmp_path_factory):
    from monai.data import MetaTensor

    from medkit.io import save_volume

    root = tmp_path_factory.mktemp("seq")
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    aff[:3, 3] = [-30.0, -20.0, -18.0]
    for k, s in enumerate([0.0, 3.0, 6.0]):
        save_volume(MetaTensor(_phase(s)[None], affine=aff), root / f"phase_{k:02d}.nii.gz")
    lab = (_phase(0.0) > -500).astype(np.uint8)
    save_volume(MetaTensor(lab[None], affine=aff), root / "labels_ref.nii.gz")
    (root / "times.json").write_text(json.dumps({"unit": "s", "times": [0.0, 1.0, 2.0]}))
    return root
