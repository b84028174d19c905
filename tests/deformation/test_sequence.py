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


# ----------------------------------------------------------------------------- DIR-Lab, several packs
DIRLAB = "dirlab_format_clone"  # Case1Pack (cases 1-5 format), Case6Pack and Case8Pack (cases 6-10 format)


def test_dirlab_landmarks_both_formats_from_a_folder_of_packs(realformat):
    root = realformat / DIRLAB
    lm8 = S.read_dirlab_landmarks(root, 8)
    lm6 = S.read_dirlab_landmarks(root, 6)
    lm1 = S.read_dirlab_landmarks(root, 1)
    for lm in (lm8, lm6, lm1):
        assert set(lm) == {0, 50} and lm[0].shape == (300, 3)
    # case 8's first row " 136\t 209\t 53\t\r\n" (1-based) -> 0-based (135, 208, 52): its own file, not case 6's
    np.testing.assert_array_equal(lm8[0][0], [135, 208, 52])
    assert not np.array_equal(lm8[0], lm6[0])
    np.testing.assert_array_equal(lm1[0][0], [53, 164, 12])  # "54\t165\t13\r\n"
    # a pack folder itself works too
    np.testing.assert_array_equal(S.read_dirlab_landmarks(root / "Case8Pack", 8)[50], lm8[50])


def test_dirlab_case_absent_from_a_folder_of_packs_is_refused(realformat):
    with pytest.raises(MedkitInputError, match=r"no Case9Pack here.*case\(s\) 1, 6, 8"):
        S.read_dirlab_landmarks(realformat / DIRLAB, 9)
    with pytest.raises(MedkitInputError, match="no Case7Pack"):
        S.read_dirlab_case(realformat / DIRLAB, 7)


def _pack_with_images(tmp_path, realformat, case: int, value: int) -> None:
    """Case{case}Pack: the genuine-format landmark folder (linked, not copied) + tiny raw images."""
    pack = tmp_path / f"Case{case}Pack"
    (pack / "Images").mkdir(parents=True)
    (pack / "extremePhases").symlink_to(realformat / DIRLAB / f"Case{case}Pack" / "extremePhases")
    for ph in (0, 50):
        np.full(6 * 5 * 4, value + ph, dtype="<i2").tofile(pack / "Images" / f"case{case}_T{ph:02d}.img")


def test_dirlab_several_packs_read_the_requested_case(tmp_path, realformat, monkeypatch):
    """Cases 6, 8 and 9 share a grid: with Case6Pack and Case8Pack unpacked side by side, case 8
    must come back with case 8's images and landmarks (it used to return case 6's)."""
    for c in (6, 8):
        monkeypatch.setitem(S.DIRLAB_CASES, c, ((6, 5, 4), (0.97, 0.97, 2.5)))
    _pack_with_images(tmp_path, realformat, 6, 600)
    _pack_with_images(tmp_path, realformat, 8, 800)
    seq8 = S.read_dirlab_case(tmp_path, 8, phases=[0, 50])
    seq6 = S.read_dirlab_case(tmp_path, 6, phases=[0, 50])
    assert seq8.frames[0][0].numpy().max() == 800 - 1024 and seq8.frames[1][0].numpy().max() == 850 - 1024
    assert seq6.frames[0][0].numpy().max() == 600 - 1024
    assert "Case8Pack" in seq8.frames[0].meta["filename_or_obj"]
    np.testing.assert_array_equal(seq8.landmarks[0][0], [135, 208, 52])
    assert not np.array_equal(seq8.landmarks[0], seq6.landmarks[0])
    assert seq8.period == 100.0 and seq8.times == [0.0, 50.0]


def test_dirlab_flat_folder_never_mixes_cases(tmp_path, monkeypatch):
    """A flat folder with case 1 and case 10 images: case1_T00 must not match case10_T00, and a
    case whose images are missing is refused naming the cases that are there."""
    monkeypatch.setitem(S.DIRLAB_CASES, 1, ((6, 5, 4), (0.97, 0.97, 2.5)))
    monkeypatch.setitem(S.DIRLAB_CASES, 10, ((6, 5, 4), (0.97, 0.97, 2.5)))
    np.full(120, 10, dtype="<i2").tofile(tmp_path / "case10_T00.img")
    with pytest.raises(MedkitInputError, match=r"no phase T00 .img file of DIR-Lab case 1 .*case\(s\) \[10\]"):
        S.read_dirlab_case(tmp_path, 1, phases=[0])
    np.full(120, 1, dtype="<i2").tofile(tmp_path / "case1_T00_s.img")
    assert S.read_dirlab_case(tmp_path, 1, phases=[0]).frames[0][0].numpy().max() == 1 - 1024
    assert S.read_dirlab_case(tmp_path, 10, phases=[0]).frames[0][0].numpy().max() == 10 - 1024
    (tmp_path / "copy").mkdir()
    np.full(120, 1, dtype="<i2").tofile(tmp_path / "copy" / "case1_T00_s.img")
    with pytest.raises(MedkitInputError, match="2 files could be the T00 image of DIR-Lab case 1"):
        S.read_dirlab_case(tmp_path, 1, phases=[0])


def test_period_from_times_json_and_percent(tmp_path, tiny_sequence):
    import json
    import shutil

    sf = S.read_sequence(tiny_sequence)
    assert sf.period is None  # times.json without a period: a longitudinal-style series
    d = tmp_path / "cyc"
    shutil.copytree(tiny_sequence, d)
    (d / "times.json").write_text(json.dumps({"unit": "s", "times": [0.0, 1.0, 2.0], "period": 3.0}))
    assert S.read_sequence(d).period == 3.0
    (d / "times.json").write_text(json.dumps({"unit": "s", "times": [0.0, 1.0, 2.0], "period": 1.5}))
    with pytest.raises(MedkitInputError, match="period 1.5 must exceed"):
        S.read_sequence(d)
    (d / "times.json").write_text(json.dumps({"unit": "%", "times": [0.0, 20.0, 40.0]}))
    assert S.read_sequence(d).period == 100.0
