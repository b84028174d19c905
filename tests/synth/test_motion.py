"""4D respiratory and longitudinal CT: the stored ground truth is exact and consistent."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medkit.synth.motion import (
    BreathingMotion,
    LongitudinalConfig,
    Motion4DConfig,
    breathing_signal,
    generate_4dct_dataset,
    generate_longitudinal_dataset,
)
from medkit.synth.thorax import sample_thorax, thorax_hu_labels

# Tiny but anatomical: 6 mm voxels over the same 300 mm field of view.
TINY = dict(n_cases=1, shape=(54, 42, 40), spacing_mm=(6.0, 6.0, 6.0), texture_mm=3.0,
            n_phases=4, n_landmarks=60, noise_hu=0.0, diaphragm_mm=(15.0, 20.0))


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)


@pytest.fixture(scope="module")
def case4d(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m4d")
    summary = generate_4dct_dataset(Motion4DConfig(**TINY), out)
    assert summary["n_cases"] == 1
    return out / "4dct_000"


def _warp(ref: np.ndarray, ddf_xyz3: np.ndarray, spacing: float) -> np.ndarray:
    """I_ref(y + u(y)) by trilinear interpolation; ddf in mm, vector last."""
    grid = np.indices(ref.shape, dtype=np.float32)
    coords = grid + np.moveaxis(ddf_xyz3, -1, 0) / spacing
    return ndimage.map_coordinates(ref, coords, order=1, mode="nearest")


def test_layout_and_metadata(case4d):
    ds = json.loads((case4d.parent / "dataset.json").read_text())
    assert ds["seed"] == 0 and ds["cases"] == ["4dct_000"] and ds["labels"]["2"] == "tumour"
    for k in range(4):
        for stem in ("phase", "labels", "ddf", "fwd"):
            assert (case4d / f"{stem}_{k:02d}.nii.gz").exists()
    img = nib.load(str(case4d / "ddf_01.nii.gz"))
    assert img.shape == (54, 42, 40, 3)
    np.testing.assert_allclose(np.diag(img.affine)[:3], 6.0)
    times = json.loads((case4d / "times.json").read_text())
    assert times["unit"] == "s" and times["reference_index"] == 0 and len(times["times"]) == 4
    # Reference = end exhale: phase 0 has a zero field and equals itself.
    assert np.abs(_load(case4d / "ddf_00.nii.gz")).max() == 0


def test_warping_reference_with_field_reproduces_each_phase(case4d):
    ref = _load(case4d / "phase_00.nii.gz")
    body = ref > -500
    states = [f["breathing_state"] for f in json.loads((case4d / "times.json").read_text())["frames"]]
    for k in (1, 2, 3):
        ph = _load(case4d / f"phase_{k:02d}.nii.gz")
        ddf = _load(case4d / f"ddf_{k:02d}.nii.gz")
        warped_err = np.abs(_warp(ref, ddf, 6.0) - ph)[body].mean()
        unwarped = np.abs(ref - ph)[body].mean()
        # Measured (seed 0, 6 mm, noiseless): peak inhale 26 HU warped vs 84 HU
        # unwarped; what is left is trilinear interpolation of sub-voxel vessels
        # and ribs (the phase itself is rendered exactly, not resampled).
        assert warped_err < 0.75 * unwarped, (k, warped_err, unwarped)
        if states[k] == max(states):
            assert warped_err < 0.35 * unwarped and warped_err < 30.0, (k, warped_err, unwarped)


def test_exact_rendering_at_fine_level(tmp_path):
    # With fine_factor=1 each voxel is one exact sample: I_t(y) == phantom(y + u_t(y)).
    cfg = Motion4DConfig(**{**TINY, "fine_factor": 1, "shape": (30, 24, 22), "spacing_mm": (10.0, 10.0, 10.0),
                            "n_landmarks": 10, "forward_fields": False})
    generate_4dct_dataset(cfg, tmp_path)
    from medkit.synth.motion import _patient

    anatomy, _, tex = _patient(cfg, np.random.default_rng([cfg.seed, 0]))
    case = tmp_path / "4dct_000"
    aff = nib.load(str(case / "phase_02.nii.gz")).affine
    ijk = np.indices(cfg.shape).reshape(3, -1)
    y = aff[:3, :3] @ ijk + aff[:3, 3:4]
    u = _load(case / "ddf_02.nii.gz").reshape(-1, 3).T
    hu, lab = thorax_hu_labels(*(y + u), anatomy, tex)
    ph = _load(case / "phase_02.nii.gz").reshape(-1)
    labels = _load(case / "labels_02.nii.gz").reshape(-1)
    # float32 storage of u (~1e-5 mm) can flip a sample exactly on an edge; allow 0.1%.
    assert np.mean(np.abs(hu - ph) < 1e-2) > 0.999
    assert np.mean(lab == labels) > 0.999


def test_landmarks_move_with_the_field(case4d):
    lm = json.loads((case4d / "landmarks.json").read_text())
    ref = np.asarray(lm["reference"]["mm"])
    assert lm["n_landmarks"] == len(ref) == 60
    labels0 = _load(case4d / "labels_00.nii.gz")
    vox0 = np.asarray(lm["reference"]["voxel"])
    assert np.all(labels0[tuple(vox0.T)] == 3), "reference landmarks must lie in the lungs"
    assert len({tuple(v) for v in vox0.tolist()}) == len(vox0), "landmarks must be distinct"
    assert lm["max_inverse_residual_mm"] < 1e-3
    errs = []
    for fr in lm["frames"][1:]:
        k = fr["index"]
        pk, vk = np.asarray(fr["mm"]), np.asarray(fr["voxel"])
        assert fr["inverse_residual_mm"] < 1e-3
        ddf = _load(case4d / f"ddf_{k:02d}.nii.gz")
        u = np.stack([ndimage.map_coordinates(ddf[..., c], vk.T, order=1) for c in range(3)], axis=1)
        errs.append(np.linalg.norm(pk + u - ref, axis=1))
        assert np.linalg.norm(pk - ref, axis=1).max() > 1.0  # they do move
    errs = np.concatenate(errs)
    # Trilinear interpolation of a smooth field on a 6 mm grid (measured: median ~0.05 mm).
    assert np.median(errs) < 0.3 and np.percentile(errs, 95) < 1.5, (np.median(errs), errs.max())


def test_map_is_invertible_jacobian_positive(case4d):
    for k in (1, 2, 3):
        u = np.moveaxis(_load(case4d / f"ddf_{k:02d}.nii.gz"), -1, 0)  # (3, X, Y, Z) mm
        jac = np.empty((3, 3) + u.shape[1:], dtype=np.float64)
        for i in range(3):
            grads = np.gradient(u[i], 6.0)
            for j in range(3):
                jac[i, j] = (i == j) + grads[j]
        det = np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))
        assert det.min() > 0, (k, det.min())


def test_diaphragm_amplitude_and_decay(case4d):
    case = json.loads((case4d / "case.json").read_text())
    amp = case["diaphragm_amplitude_mm"]
    assert 5.0 <= amp <= 25.0
    a = case["anatomy"]
    # Analytic model, peak inhale (s = 1): dome apex moves by the amplitude, decaying upward.
    from medkit.synth.motion import _patient

    anatomy, motion, _ = _patient(Motion4DConfig(**TINY), np.random.default_rng([0, 0]))
    apex = np.array(a["dome_r"], dtype=np.float64)
    pts = apex[:, None] + np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 30, 60, 100]], dtype=np.float64)
    dz = motion.forward(tuple(pts), 1.0)[2] - pts[2]
    assert dz[0] == pytest.approx(-amp, rel=0.02)
    assert np.all(np.diff(np.abs(dz)) < 0), dz  # decays with height above the dome
    # Chest wall slides: far less SI motion than the lung beside it.
    wall = np.array([[-anatomy.a_m + 5], [0.0], [apex[2] + 40]])
    lung = np.array([[-anatomy.a_c + 25], [0.0], [apex[2] + 40]])
    assert abs(motion.forward(tuple(wall), 1.0)[2] - wall[2]) < 0.3 * abs(motion.forward(tuple(lung), 1.0)[2] - lung[2])
    # The stored field agrees: the largest |u| at peak inhale is in the SI direction and within range.
    times = json.loads((case4d / "times.json").read_text())
    peak = int(np.argmax([f["breathing_state"] for f in times["frames"]]))
    ddf = _load(case4d / f"ddf_{peak:02d}.nii.gz")
    assert 0.8 * amp * max(f["breathing_state"] for f in times["frames"]) <= np.abs(ddf[..., 2]).max() <= 1.3 * amp


def test_inverse_residual_and_breathing_signal():
    rng = np.random.default_rng(3)
    motion = BreathingMotion(anatomy=sample_thorax(rng), amplitude_mm=25.0, ap_mm=10.0, lat_mm=5.0)
    pts = tuple(rng.uniform(-150, 150, (3, 2000)))
    back = motion.forward(motion.inverse(pts, 1.0), 1.0)
    assert max(np.abs(b - p).max() for b, p in zip(back, pts)) < 1e-3
    # sin^4: 0 at t = 0 (end exhale), 1 at T/2 (peak inhale), 0.25 at T/4.
    np.testing.assert_allclose(breathing_signal([0.0, 1.0, 2.0], 4.0, 2), [0.0, 0.25, 1.0], atol=1e-12)


def test_labels_warped_consistently(case4d):
    lab0 = _load(case4d / "labels_00.nii.gz")
    times = json.loads((case4d / "times.json").read_text())
    for k in (1, 2, 3):
        labk = _load(case4d / f"labels_{k:02d}.nii.gz")
        ddf = _load(case4d / f"ddf_{k:02d}.nii.gz")
        grid = np.indices(lab0.shape, dtype=np.float32) + np.moveaxis(ddf, -1, 0) / 6.0
        warped = ndimage.map_coordinates(lab0, grid, order=0, mode="nearest")
        for v in (1, 3):
            a, b = warped == v, labk == v
            dice = 2 * (a & b).sum() / (a.sum() + b.sum())
            assert dice > 0.9, (k, v, dice)
        vols = times["frames"][k]["label_volumes_ml"]
        # The tumour moves, it does not change volume (within majority voting of
        # 6 mm voxels). (The liver's lower edge leaves the field of view on inhale.)
        assert vols["2"] == pytest.approx(times["frames"][0]["label_volumes_ml"]["2"], rel=0.3)
    # Inhale moves the liver down: its centroid z drops at peak inhale.
    peak = int(np.argmax([f["breathing_state"] for f in times["frames"]]))
    z0 = np.argwhere(lab0 == 1)[:, 2].mean()
    zp = np.argwhere(_load(case4d / f"labels_{peak:02d}.nii.gz") == 1)[:, 2].mean()
    assert zp < z0 - 1.0


def test_same_seed_same_output_different_seed_differs(tmp_path, case4d):
    generate_4dct_dataset(Motion4DConfig(**TINY), tmp_path / "a")
    generate_4dct_dataset(Motion4DConfig(**{**TINY, "seed": 1}), tmp_path / "b")
    for name in ("phase_02.nii.gz", "ddf_02.nii.gz", "labels_02.nii.gz"):
        np.testing.assert_array_equal(_load(tmp_path / "a" / "4dct_000" / name), _load(case4d / name))
        assert not np.array_equal(_load(tmp_path / "b" / "4dct_000" / name), _load(case4d / name))
    assert (tmp_path / "a/4dct_000/landmarks.json").read_text() == (case4d / "landmarks.json").read_text()


def test_longitudinal_tumour_shrinks_and_fat_changes(tmp_path):
    cfg = LongitudinalConfig(n_cases=1, shape=(54, 42, 40), spacing_mm=(6.0, 6.0, 6.0), texture_mm=3.0,
                             n_timepoints=3, n_landmarks=30, noise_hu=0.0, forward_fields=False,
                             fat_change_mm=(6.0, 8.0))
    summary = generate_longitudinal_dataset(cfg, tmp_path)
    assert summary["n_cases"] == 1 and summary["max_inverse_residual_mm"] < 1e-3
    case = tmp_path / "long_000"
    times = json.loads((case / "times.json").read_text())
    assert times["unit"] == "days" and times["times"] == [0.0, 21.0, 42.0]
    tum = [f["label_volumes_ml"]["2"] for f in times["frames"]]
    assert tum[0] > tum[1] > tum[2] > 0, tum
    fat = [f["fat_mm"] for f in times["frames"]]
    assert abs(fat[2] - fat[0]) >= 6.0
    # Visible in the image: HU-measured fat (-150..-50) volume follows the thickness change.
    fat_vox = [((im > -150) & (im < -50)).sum() for im in (_load(case / f"phase_{k:02d}.nii.gz") for k in (0, 2))]
    assert np.sign(fat_vox[1] - fat_vox[0]) == np.sign(fat[2] - fat[0])
    # Landmarks and fields hold for the repositioned follow-ups too.
    lm = json.loads((case / "landmarks.json").read_text())
    ref = np.asarray(lm["reference"]["mm"])
    fr = lm["frames"][2]
    ddf = _load(case / "ddf_02.nii.gz")
    u = np.stack([ndimage.map_coordinates(ddf[..., c], np.asarray(fr["voxel"]).T, order=1) for c in range(3)], 1)
    assert np.median(np.linalg.norm(np.asarray(fr["mm"]) + u - ref, axis=1)) < 0.3


def test_cli_synth_4dct(tmp_path):
    from typer.testing import CliRunner

    from medkit.cli import app

    res = CliRunner().invoke(app, [
        "synth", "4dct", "--out", str(tmp_path), "--n", "1", "--seed", "2",
        "--set", "shape=[24,20,18]", "--set", "spacing_mm=[12,12,12]", "--set", "n_phases=2",
        "--set", "n_landmarks=5", "--set", "texture_mm=4", "--set", "forward_fields=false",
    ])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "4dct_000" / "phase_01.nii.gz").exists()
    assert json.loads((tmp_path / "dataset.json").read_text())["seed"] == 2


def test_config_rejects_folding_amplitude():
    with pytest.raises(ValueError, match="diaphragm_mm"):
        generate_4dct_dataset(Motion4DConfig(diaphragm_mm=(5.0, 200.0)), Path("/nonexistent/never"))


def test_irregular_breathing_hysteresis_and_per_phase_noise(tmp_path):
    """REALISTIC_4DCT: each phase bin from its own cycle (amplitude, phase), AP/lateral states off the SI
    state (a loop), noise std per phase in 60-100 HU; the ground truth stays exact and invertible."""
    from medkit.synth.motion import REALISTIC_4DCT, irregular_state

    cfg = Motion4DConfig(**{**TINY, "n_phases": 6, "n_landmarks": 20, **REALISTIC_4DCT, "hysteresis": (0.25, 0.3)})
    summary = generate_4dct_dataset(cfg, tmp_path)
    assert summary["max_inverse_residual_mm"] < 1e-3          # inverse maps still exact with per-axis states
    case = tmp_path / "4dct_000"
    info = json.loads((case / "times.json").read_text())
    fr = info["frames"]
    assert info["period"] == pytest.approx(json.loads((case / "case.json").read_text())["period_s"], abs=1e-5)
    assert fr[0]["state_lat_ap_si"] == [0.0, 0.0, 0.0] and np.abs(_load(case / "ddf_00.nii.gz")).max() == 0
    assert all(60.0 <= f["noise_hu"] <= 100.0 for f in fr) and len({f["noise_hu"] for f in fr}) == len(fr)
    amps = [f["cycle_amplitude"] for f in fr[1:]]
    assert np.std(amps) > 0.01 and all(abs(a - 1) <= 2.5 * 0.15 + 1e-9 for a in amps)
    # hysteresis: on inhale (phase < 0.5) AP lags SI, on exhale it leads: inhale and exhale paths differ
    for f in fr[1:]:
        s_lat, s_ap, s_si = f["state_lat_ap_si"]
        ph = f["cycle_phase"] % 1.0
        assert s_lat == s_ap and (s_ap < s_si if 0.02 < ph < 0.48 else s_ap > s_si if 0.52 < ph < 0.98 else True)
    # pure function: regular breathing and no hysteresis give one state on every axis (the old data)
    reg = irregular_state(0.3, Motion4DConfig(), 0.0, np.random.default_rng(0))
    assert reg["states"] == (pytest.approx(breathing_signal(0.3, 1.0, 2)),) * 3 and reg["amp"] == 1.0
    # the observed noise matches the recorded level (flat air outside the body)
    ph = _load(case / "phase_03.nii.gz")
    assert np.std(ph[:3, :3, :]) == pytest.approx(fr[3]["noise_hu"], rel=0.15)


def test_realistic_settings_are_checked():
    with pytest.raises(ValueError, match="amplitude_cv"):
        generate_4dct_dataset(Motion4DConfig(amplitude_cv=0.5), Path("/nonexistent/never"))
    with pytest.raises(ValueError, match="hysteresis"):
        generate_4dct_dataset(Motion4DConfig(hysteresis=(0.5, 0.2)), Path("/nonexistent/never"))
