"""Round trips: DICOM / NIfTI / NRRD / MHA / zip reload with the same RAS affine and values."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from medkit.io import load_volume, save_volume
from medkit.io.dicom_write import write_dicom_series

ATOL_MM = 1e-4


def test_dicom_rotated_anisotropic_round_trip(make_series):
    folder, arr, aff = make_series("rot")
    vol = load_volume(folder)
    assert vol.shape == (1, *arr.shape)
    assert vol.dtype == __import__("torch").float32
    np.testing.assert_allclose(np.asarray(vol.affine), aff, atol=ATOL_MM)
    # CT stored as uint16 with intercept -1024: whole HU come back exactly.
    np.testing.assert_array_equal(vol[0].numpy(), arr.astype(np.float32))
    np.testing.assert_allclose(vol.meta["original_spacing"], (0.7, 0.9, 2.5), atol=ATOL_MM)
    assert vol.meta["format"] == "dicom" and vol.meta["modality"] == "CT"
    assert vol.meta["series_uid"] and vol.meta["n_files"] == arr.shape[2]


def test_dicom_round_trip_files_in_any_order(make_series, tmp_path):
    """Slices are ordered by position along the normal, not by file name."""
    _, arr, aff = make_series("ordered")
    folder = tmp_path / "shuffled"
    # Name files so alphabetical order is the reverse of slice order.
    write_dicom_series(arr, folder, affine=aff, uid_seed=3, file_pattern="Z{index:04d}.dcm")
    for i, p in enumerate(sorted(folder.iterdir())):
        p.rename(folder / f"{chr(ord('z') - i)}.dcm")
    vol = load_volume(folder)
    np.testing.assert_allclose(np.asarray(vol.affine), aff, atol=ATOL_MM)
    np.testing.assert_array_equal(vol[0].numpy(), arr.astype(np.float32))


def test_standard_axial_series_is_lps(make_series):
    # Identity DICOM direction (rows along +x_LPS, columns along +y_LPS, slices +z):
    # in RAS that is diag(-1, -1, 1), whose axis codes are L, P, S.
    aff = np.diag([-0.8, -0.8, 3.0, 1.0])
    folder, _, _ = make_series("axial", affine=aff)
    assert load_volume(folder).meta["original_orientation"] == "LPS"


def test_worked_example_ipp_to_ras_origin(make_series, tmp_path):
    """Identity-direction series whose first slice has IPP (10, 20, 30) mm (LPS).

    RAS = diag(-1, -1, 1) @ LPS, so voxel (0, 0, 0) sits at RAS (-10, -20, 30).
    """
    import pydicom

    lps = np.eye(4)
    lps[:3, 3] = (10.0, 20.0, 30.0)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    folder, _, _ = make_series("ipp", affine=ras)
    first = sorted(folder.iterdir())[0]
    assert [float(v) for v in pydicom.dcmread(first).ImagePositionPatient] == [10.0, 20.0, 30.0]
    vol = load_volume(folder)
    np.testing.assert_allclose(np.asarray(vol.affine)[:3, 3], (-10.0, -20.0, 30.0), atol=ATOL_MM)


def test_dicom_zip_round_trip(make_series, tmp_path):
    folder, arr, aff = make_series("zipped")
    zpath = tmp_path / "series.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, f"study/{p.name}")
    vol = load_volume(zpath)
    assert vol.meta["format"] == "dicom-zip"
    np.testing.assert_allclose(np.asarray(vol.affine), aff, atol=ATOL_MM)
    np.testing.assert_array_equal(vol[0].numpy(), arr.astype(np.float32))


def test_nifti_round_trip_image_and_label(make_series, tmp_path, rotated_affine):
    folder, arr, aff = make_series("src")
    vol = load_volume(folder)
    out = save_volume(vol, tmp_path / "img.nii.gz")
    back = load_volume(out)
    np.testing.assert_allclose(np.asarray(back.affine), aff, atol=ATOL_MM)
    np.testing.assert_array_equal(back[0].numpy(), vol[0].numpy())
    assert back.meta["original_orientation"] == vol.meta["original_orientation"]

    # A label map saved like= the image keeps the geometry and gets a small integer dtype.
    import nibabel as nib
    import torch

    label = torch.zeros(1, *arr.shape, dtype=torch.int64)
    label[0, 2:5, 3:6, 1:4] = 7
    lpath = save_volume(label, tmp_path / "lab.nii.gz", like=vol)
    assert nib.load(str(lpath)).get_data_dtype() == np.uint8
    lab = load_volume(lpath)
    np.testing.assert_allclose(np.asarray(lab.affine), aff, atol=ATOL_MM)
    assert set(np.unique(lab[0].numpy()).tolist()) == {0.0, 7.0}
    assert int((lab[0].numpy() == 7).sum()) == 27


def test_save_volume_refuses_shape_mismatch_with_like(make_series, tmp_path):
    folder, _, _ = make_series("like")
    vol = load_volume(folder)
    with pytest.raises(ValueError, match="does not match"):
        save_volume(np.zeros((3, 3, 3)), tmp_path / "x.nii.gz", like=vol)
    assert not (tmp_path / "x.nii.gz").exists()


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_sitk_formats_round_trip(tmp_path, rotated_affine, ct_array, suffix):
    """Write with SimpleITK (LPS) directly, read with load_volume (RAS)."""
    import SimpleITK as sitk

    arr = ct_array((9, 7, 5))
    aff = rotated_affine((0.6, 1.1, 3.0), angle_deg=-35.0)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.transpose(arr, (2, 1, 0)).astype(np.int16))  # sitk wants (Z, Y, X)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    path = tmp_path / f"vol{suffix}"
    sitk.WriteImage(img, str(path))
    vol = load_volume(path)
    assert vol.meta["format"] == suffix.lstrip(".")
    np.testing.assert_allclose(np.asarray(vol.affine), aff, atol=ATOL_MM)
    np.testing.assert_array_equal(vol[0].numpy(), arr.astype(np.float32))


def test_meta_carries_no_phi(make_series):
    folder, _, _ = make_series("phi", patient={"PatientName": "DOE^JANE", "PatientID": "MRN123456"})
    vol = load_volume(folder)
    flat = repr(vol.meta)
    assert "DOE" not in flat and "MRN123456" not in flat
