"""Training-side case listing for real layouts: Decathlon task folders as released (Task08
with the genuine dataset.json, Task03_Liver names), and a tiny training run on one."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from medkit.io import EmptyInputError, VolumeError
from medkit.segmentation.data import list_cases
from medkit.segmentation.train_config import DataConfig

from .conftest import render_small


def _nifti(path, arr, spacing=(7.0, 7.0, 10.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.diag([*spacing, 1.0])), str(path))


def _task08(tmp_path, realformat, n_labelled=3):
    """The genuine Task08 dataset.json with every training image it lists (one tiny volume,
    hard-linked), a macOS resource-fork file as the release tarball has, and Couinaud labels
    for the first ``n_labelled`` cases."""
    root = tmp_path / "Task08_HepaticVessel"
    (root / "imagesTr").mkdir(parents=True)
    shutil.copy(realformat / "msd" / "Task08_HepaticVessel_dataset.json", root / "dataset.json")
    listed = json.loads((root / "dataset.json").read_text())["training"]
    proto = tmp_path / "proto.nii.gz"
    _nifti(proto, np.zeros((4, 4, 4), np.int16))
    for e in listed:
        (root / e["image"]).hardlink_to(proto)
    (root / "imagesTr" / "._hepaticvessel_001.nii.gz").write_bytes(b"\x00\x05\x16\x07 resource fork")
    labels = tmp_path / "couinaud"
    for e in listed[:n_labelled]:
        _nifti(labels / e["image"].split("/")[-1], np.ones((4, 4, 4), np.uint8))
    return root, labels, listed


def test_task08_as_released_reads_the_genuine_dataset_json(tmp_path, realformat):
    root, labels, listed = _task08(tmp_path, realformat)
    cases = list_cases(DataConfig(root=root, layout="msd", label_dir=labels))
    assert len(cases) == len(listed) == 303  # the release's numTraining
    ids = [c[0] for c in cases]
    assert ids == sorted(ids) and ids[0] == "hepaticvessel_001" and not any(i.startswith("._") for i in ids)
    assert all(c[1].name == f"{c[0]}.nii.gz" for c in cases)  # no _0000 suffix
    labelled = [c for c in cases if c[2] is not None]
    assert [c[0] for c in labelled] == sorted(e["image"].split("/")[-1][:-7] for e in listed[:3])
    # a listed image missing on disk: one clear error naming dataset.json
    (root / listed[5]["image"]).unlink()
    with pytest.raises(EmptyInputError, match="1 missing") as e:
        list_cases(DataConfig(root=root, layout="msd", label_dir=labels))
    assert "dataset.json" in str(e.value)


def test_task03_liver_names_sort_naturally_without_dataset_json(tmp_path):
    root = tmp_path / "Task03_Liver"
    for n in (0, 1, 10, 2):
        _nifti(root / "imagesTr" / f"liver_{n}.nii.gz", np.zeros((4, 4, 4), np.int16))
    (root / "imagesTr" / "._liver_0.nii.gz").write_bytes(b"junk")
    _nifti(tmp_path / "lab" / "liver_10.nii.gz", np.ones((4, 4, 4), np.uint8))
    cases = list_cases(DataConfig(root=root, layout="msd", label_dir=tmp_path / "lab"))
    assert [c[0] for c in cases] == ["liver_0", "liver_1", "liver_2", "liver_10"]
    assert [c[2] is not None for c in cases] == [False, False, False, True]


def test_msd_layout_errors_name_the_problem(tmp_path):
    (tmp_path / "task").mkdir()
    with pytest.raises(EmptyInputError, match="imagesTr"):
        list_cases(DataConfig(root=tmp_path / "task", layout="msd", label_dir=tmp_path))
    (tmp_path / "task" / "dataset.json").write_text("{not json")
    with pytest.raises(VolumeError, match="dataset.json"):
        list_cases(DataConfig(root=tmp_path / "task", layout="msd", label_dir=tmp_path))
    with pytest.raises(VolumeError, match="label_dir"):
        list_cases(DataConfig(root=tmp_path / "task", layout="msd"))


def test_training_runs_on_a_task03_folder(tmp_path):
    """``run_pipeline`` on a Decathlon-named folder: 3 labelled phantoms (liver_N, no _0000) and
    one image without Couinaud labels, which becomes an unlabelled scan."""
    from medkit.runs import RunDir
    from medkit.segmentation.train import run_pipeline
    from medkit.segmentation.train_config import TrainConfig

    root, labels = tmp_path / "Task03_Liver", tmp_path / "couinaud"
    for n in range(4):
        c = render_small(n)
        img = nib.Nifti1Image(c.image, c.affine)
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        nib.save(img, str(root / "imagesTr" / f"liver_{n}.nii.gz"))
        if n != 1:
            labels.mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(c.labels, c.affine), str(labels / f"liver_{n}.nii.gz"))
    cfg = TrainConfig.tiny()
    cfg.data = DataConfig(root=root, layout="msd", label_dir=labels, n_val=1, n_test=0)
    run = RunDir.create(tmp_path / "run", config=cfg, seed=0)
    summ = run_pipeline(cfg, run, device="cpu")
    assert summ["split"] == {"train": ["liver_0", "liver_2"], "unlabelled": ["liver_1"], "val": ["liver_3"],
                             "test": []}
    assert summ["step"] == cfg.optim.steps and 0.0 <= summ["best_val_dice_mean"] <= 1.0
