"""Case discovery: nnU-Net layout, a folder of NIfTIs, a folder with two DICOM series."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medkit.io import EmptyInputError, VolumeError, discover_cases, load_volume
from medkit.io.dicom_write import write_dicom_series


def _nii(path):
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 2), np.float32), np.eye(4)), str(path))


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


def test_folder_of_niftis(tmp_path):
    for name in ("b.nii.gz", "a_0000.nii.gz", "c.nii"):
        _nii(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    assert [c.case_id for c in discover_cases(tmp_path)] == ["a", "b", "c"]


def test_two_dicom_series_two_cases_without_phi(tmp_path):
    # Folder and header both carry the patient's name: neither may reach a case id.
    study = tmp_path / "DOE_JANE_MRN123"
    phi = {"PatientName": "DOE^JANE", "PatientID": "MRN123"}
    aff = np.diag([-0.8, -0.8, 2.5, 1.0])
    write_dicom_series(np.zeros((4, 4, 3)), study / "s1", affine=aff, series_description="AX CT 5mm",
                       patient=phi, uid_seed=1, series_number=1)
    write_dicom_series(np.zeros((4, 4, 5)), study / "s2", affine=aff, series_description="AX CT 1mm",
                       patient=phi, uid_seed=2, series_number=2)
    cases = discover_cases(tmp_path)
    assert len(cases) == 2
    for c in cases:
        assert not any(w in c.case_id.upper() for w in ("DOE", "JANE", "MRN123")), c.case_id
        assert c.case_id.startswith("AX-CT-")
    assert len({c.case_id for c in cases}) == 2
    assert sorted(c.extra["n_slices"] for c in cases) == [3, 5]
    for c in cases:
        vol = load_volume(c.images[0], series_uid=c.series_uid)
        assert vol.shape[-1] == c.extra["n_slices"]


def test_missing_folder(tmp_path):
    with pytest.raises(EmptyInputError, match="no such"):
        discover_cases(tmp_path / "absent")
