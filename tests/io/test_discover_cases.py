"""Case discovery: ids from the input's names (never header text), nnU-Net and Decathlon
layouts (the genuine Task08 dataset.json), LiTS pairs, DICOM studies and series."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medkit.io import EmptyInputError, MedkitInputError, VolumeError, discover_cases, load_volume
from medkit.io.dicom_write import write_dicom_series

AFF = np.diag([-0.8, -0.8, 2.5, 1.0])
PHI = {"PatientName": "DOE^JANE", "PatientID": "MRN123"}


def _nii(path, shape=(3, 3, 2)):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))


def test_nnunet_layout(tmp_path):
    root = tmp_path / "Dataset001_Liver"
    (root / "dataset.json").parent.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0},
                                                   "file_ending": ".nii.gz", "numTraining": 2}))
    for c in ("liver_001", "liver_002"):
        _nii(root / "imagesTr" / f"{c}_0000.nii.gz")
    _nii(root / "labelsTr" / "liver_001.nii.gz")
    _nii(root / "imagesTs" / "liver_101_0000.nii.gz")
    cases = discover_cases(root)
    assert [(c.split, c.case_id) for c in cases] == [("test", "liver_101"), ("train", "liver_001"),
                                                     ("train", "liver_002")]
    by_id = {c.case_id: c for c in cases}
    assert by_id["liver_001"].label == root / "labelsTr" / "liver_001.nii.gz"
    assert by_id["liver_002"].label is None
    assert by_id["liver_001"].images == [root / "imagesTr" / "liver_001_0000.nii.gz"]


def test_nnunet_missing_channel(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2"}}))
    _nii(root / "imagesTr" / "c1_0000.nii.gz")
    with pytest.raises(VolumeError, match=r"c1 lacks channel file\(s\) \[1\]"):
        discover_cases(root)


def test_msd_task08_as_released(realformat, tmp_path):
    """The genuine Task08_HepaticVessel dataset.json (303 training pairs, 139 test paths) over
    files named as released: ``imagesTr/hepaticvessel_001.nii.gz``, no ``_0000``, plus the macOS
    ``._`` files the Decathlon tarballs carry."""
    root = tmp_path / "Task08_HepaticVessel"
    root.mkdir()
    shutil.copyfile(realformat / "msd" / "Task08_HepaticVessel_dataset.json", root / "dataset.json")
    meta = json.loads((root / "dataset.json").read_text())
    for e in meta["training"]:
        _nii(root / e["image"], (2, 2, 2))
        _nii(root / e["label"], (2, 2, 2))
    for p in meta["test"]:
        _nii(root / p, (2, 2, 2))
    (root / "imagesTr" / "._hepaticvessel_001.nii.gz").write_bytes(b"\0" * 64)
    cases = discover_cases(root)
    train = [c for c in cases if c.split == "train"]
    test = [c for c in cases if c.split == "test"]
    assert len(train) == meta["numTraining"] == 303 and len(test) == len(meta["test"]) == 139
    c = next(c for c in train if c.case_id == "hepaticvessel_001")
    assert c.images == [root / "imagesTr" / "hepaticvessel_001.nii.gz"]
    assert c.label == root / "labelsTr" / "hepaticvessel_001.nii.gz"
    assert "hepaticvessel_003" in {c.case_id for c in test}
    # A partial copy: a listed file missing is named, not skipped.
    (root / "imagesTr" / "hepaticvessel_002.nii.gz").unlink()
    with pytest.raises(VolumeError, match=r"dataset.json: lists 1 image file\(s\).*hepaticvessel_002"):
        discover_cases(root)


def test_task03_liver_naming_without_dataset_json(tmp_path):
    root = tmp_path / "Task03_Liver"
    for n in (0, 1, 10):
        _nii(root / "imagesTr" / f"liver_{n}.nii.gz")
        _nii(root / "labelsTr" / f"liver_{n}.nii.gz")
    _nii(root / "imagesTs" / "liver_132.nii.gz")
    cases = discover_cases(root)
    assert [(c.split, c.case_id) for c in cases] == [("test", "liver_132"), ("train", "liver_0"),
                                                     ("train", "liver_1"), ("train", "liver_10")]
    assert cases[1].label == root / "labelsTr" / "liver_0.nii.gz"


def test_folder_of_niftis_and_lits_pairs(tmp_path):
    for name in ("b.nii.gz", "a_0000.nii.gz", "c.nii"):
        _nii(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    assert [c.case_id for c in discover_cases(tmp_path)] == ["a", "b", "c"]
    lits = tmp_path / "Training Batch 1"
    for n in (0, 1):
        _nii(lits / f"volume-{n}.nii")
        _nii(lits / f"segmentation-{n}.nii")
    cases = discover_cases(lits)
    assert [c.case_id for c in cases] == ["volume-0", "volume-1"]
    assert cases[0].label == lits / "segmentation-0.nii"


def test_file_case_id_and_case_id_option(tmp_path):
    _nii(tmp_path / "ct_0000.nii.gz")
    assert discover_cases(tmp_path / "ct_0000.nii.gz")[0].case_id == "ct"
    assert discover_cases(tmp_path / "ct_0000.nii.gz", case_id="patient-7")[0].case_id == "patient-7"
    _nii(tmp_path / "other.nii.gz")
    with pytest.raises(MedkitInputError, match="--case-id names one case, but the input holds 2"):
        discover_cases(tmp_path, case_id="x")
    for bad in ("../up", "a/b", ".hidden", ""):
        with pytest.raises(MedkitInputError, match="--case-id"):
            discover_cases(tmp_path / "ct_0000.nii.gz", case_id=bad)


def test_one_study_two_series_named_after_the_folder_not_the_header(tmp_path):
    """Header text (patient name, SeriesDescription) never reaches an id; the folder the user
    typed names the case, SeriesNumber tells the series apart."""
    study = tmp_path / "patient07"
    write_dicom_series(np.zeros((4, 4, 3)), study / "DOE_JANE_MRN123" / "s1", affine=AFF,
                       series_description="CT ABD PHIMARK", patient=PHI, uid_seed=1, series_number=3,
                       study_uid="1.2.3.4.5")
    write_dicom_series(np.zeros((4, 4, 5)), study / "DOE_JANE_MRN123" / "s2", affine=AFF,
                       series_description="AX CT 1mm", patient=PHI, uid_seed=2, series_number=5,
                       study_uid="1.2.3.4.5")
    cases = discover_cases(study)
    assert [c.case_id for c in cases] == ["patient07_s3", "patient07_s5"]
    assert all(c.source == study for c in cases)
    assert sorted(c.extra["n_slices"] for c in cases) == [3, 5]
    for c in cases:
        vol = load_volume(c.images[0], series_uid=c.series_uid)
        assert vol.shape[-1] == c.extra["n_slices"]


def test_folder_of_studies_named_by_entry(tmp_path):
    root = tmp_path / "scans"
    for k, name in enumerate(("A", "B", "C")):
        write_dicom_series(np.zeros((4, 4, 3)), root / name / "DOE_JANE" / "series", affine=AFF, patient=PHI,
                           series_description="PHIMARK", uid_seed=10 + k, study_uid=f"1.2.3.{k}")
    cases = discover_cases(root)
    assert [c.case_id for c in cases] == ["A", "B", "C"]
    assert [c.source for c in cases] == [root / "A", root / "B", root / "C"]
    # One study given directly: the typed folder's name.
    assert [c.case_id for c in discover_cases(root / "B")] == ["B"]


def test_missing_folder(tmp_path):
    with pytest.raises(EmptyInputError, match="no such"):
        discover_cases(tmp_path / "absent")
