"""Sequence readers: DIR-Lab raw + landmarks on a fake case, 4D NIfTI, phase folders."""

import numpy as np
import pytest

from medkit.deformation import sequence as S
from medkit.io import MedkitInputError


def test_dirlab_reader_fake_case(tmp_path, monkeypatch):
    # A fake "case 1" with a tiny grid: patch the published table for this test only.
    monkeypatch.setitem(S.DIRLAB_CASES, 1, ((6, 5, 4), (0.97, 0.97, 2.5)))
    img_dir = tmp_path / "Case1Pack" / "Images"
    lm_dir = tmp_path / "Case1Pack" / "ExtremePhases"
    img_dir.mkdir(parents=True)
    lm_dir.mkdir(parents=True)
    vol = np.arange(6 * 5 * 4, dtype=np.int16).reshape(4, 5, 6)  # stored (Z, Y, X), x fastest
    for ph in (0, 50):
        (vol + ph).astype("<i2").tofile(img_dir / f"case1_T{ph:02d}_s.img")
        (lm_dir / f"Case1_300_T{ph:02d}_xyz.txt").write_text("1\t1\t1\n6\t5\t4\n2\t3\t1\n")
    seq = S.read_dirlab_case(tmp_path, 1, phases=[0, 50])
    assert [tuple(f.shape) for f in seq.frames] == [(1, 6, 5, 4)] * 2
    a = seq.frames[0][0].numpy()
    # voxel (x=2, y=3, z=1) = stored index z*30 + y*6 + x = 30 + 18 + 2 = 50, minus 1024 (HU offset)
    assert a[2, 3, 1] == 50 - 1024
    assert seq.frames[1][0].numpy()[2, 3, 1] == 50 + 50 - 1024
    assert np.allclose(np.asarray(seq.frames[0].affine), np.diag([0.97, 0.97, 2.5, 1.0]))
    assert seq.times == [0.0, 50.0]
    np.testing.assert_array_equal(seq.landmarks[0][1], [5, 4, 3])  # 1-based -> 0-based
    assert set(seq.landmarks) == {0, 1}


def test_dirlab_wrong_size_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setitem(S.DIRLAB_CASES, 2, ((6, 5, 4), (1.16, 1.16, 2.5)))
    (tmp_path / "case2_T00_s.img").write_bytes(b"\x00\x00" * 7)
    with pytest.raises(MedkitInputError, match="case2_T00_s.img"):
        S.read_dirlab_case(tmp_path, 2, phases=[0])


def test_nifti_4d_and_folder(tmp_path, tiny_sequence):
    import nibabel as nib

    arr = np.stack([np.asarray(nib.load(tiny_sequence / f"phase_{k:02d}.nii.gz").dataobj) for k in range(3)], -1)
    img = nib.Nifti1Image(arr, nib.load(tiny_sequence / "phase_00.nii.gz").affine)
    img.header.set_zooms((4.0, 4.0, 4.0, 0.5))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, tmp_path / "seq4d.nii.gz")
    s4 = S.read_sequence(tmp_path / "seq4d.nii.gz")
    assert len(s4.frames) == 3 and s4.times == [0.0, 0.5, 1.0]
    sf = S.read_sequence(tiny_sequence)
    assert sf.times == [0.0, 1.0, 2.0] and sf.unit == "s"
    np.testing.assert_allclose(s4.frames[2][0].numpy(), sf.frames[2][0].numpy())


def test_dicom_series_per_phase(tmp_path, tiny_sequence):
    """4D-Lung layout: one DICOM series per phase, ordered by the phase % in the description."""
    from medkit.io import load_volume
    from medkit.io.dicom_write import write_dicom_series

    for k, pct in ((2, 40.0), (0, 0.0), (1, 20.0)):  # written out of order on purpose
        v = load_volume(tiny_sequence / f"phase_{k:02d}.nii.gz")
        write_dicom_series(v, tmp_path / "study" / f"series{k}", series_description=f"Gated, {pct:.1f}%",
                           series_number=k + 1, uid_seed=k)
    seq = S.read_sequence(tmp_path / "study")
    assert seq.unit == "%" and seq.times == [0.0, 20.0, 40.0]
    ref = load_volume(tiny_sequence / "phase_02.nii.gz")[0].numpy()
    assert np.abs(seq.frames[2][0].numpy() - ref).max() < 1.0  # uint16 storage rounds to 1 HU


def test_single_dicom_series_refused(tmp_path, tiny_sequence):
    from medkit.io import load_volume
    from medkit.io.dicom_write import write_dicom_series

    write_dicom_series(load_volume(tiny_sequence / "phase_00.nii.gz"), tmp_path / "one", uid_seed=3)
    with pytest.raises(MedkitInputError, match="one 3D volume"):
        S.read_sequence(tmp_path / "one")
