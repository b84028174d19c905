"""Study loading from R2Gen-layout folders (IU-Xray / MIMIC-CXR shape) and image reading."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medkit.config import load_config
from medkit.io.errors import MedkitInputError, ReportDatasetError
from medkit.metrics.clinical import OBSERVATIONS
from medkit.report_generation.cofe_config import ReportConfig
from medkit.report_generation.data import load_image, load_studies


def _iu_like(root):
    """Two IU-Xray-style entries: two views each, findings text only, no labels."""
    ann = {"train": [], "test": []}
    for k, (split, text) in enumerate([("train", "The heart is normal. No pleural effusion."),
                                       ("test", "Moderate cardiomegaly. Small left pleural effusion.")]):
        sid = f"CXR{k}_IM-{k}"
        for v in (0, 1):
            (root / "images" / sid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((40, 30), 50 + 100 * v, np.uint8)).save(root / "images" / sid / f"{v}.png")
        ann[split].append({"id": sid, "report": text, "image_path": [f"{sid}/0.png", f"{sid}/1.png"], "split": split})
    (root / "annotation.json").write_text(json.dumps(ann))


def test_iu_xray_layout_labels_from_the_labeler(tmp_path):
    _iu_like(tmp_path)
    cfg = load_config({}, ReportConfig, [f"data.root={tmp_path}", "data.dataset=iu_xray", "data.image_size=32"])
    st = load_studies(cfg.data)
    tr, te = st["train"][0], st["test"][0]
    assert tr.report == "the heart is normal . no pleural effusion ."  # R2Gen's cleaner
    assert tr.image.shape == (1, 32, 32)
    pos = {OBSERVATIONS[i] for i in np.flatnonzero(te.labels)}
    assert pos == {"Cardiomegaly", "Pleural Effusion"}
    assert {OBSERVATIONS[i] for i in np.flatnonzero(tr.labels)} == {"No Finding"}
    cfg = load_config({}, ReportConfig, [f"data.root={tmp_path}", "data.view=2"])
    with pytest.raises(ReportDatasetError, match="view 2"):
        load_studies(cfg.data)


def test_load_image_scales_and_names_bad_files(tmp_path):
    arr = np.zeros((20, 20), np.uint8)
    arr[:, 10:] = 200
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", 16)
    assert x.shape == (1, 16, 16) and float(x.min()) == 0.0 and float(x.max()) == pytest.approx(1.0)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(MedkitInputError, match="bad.png"):
        load_image(tmp_path / "bad.png", 16)
    with pytest.raises(MedkitInputError, match="not a radiograph"):
        load_image(tmp_path / "notes.txt", 16)
