"""Ground truth of the synthetic liver CT: Couinaud anatomy, vessels on the boundaries,
HU, determinism, variability, nnU-Net layout, DICOM round trip, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from medkit.synth.liver_anatomy import COUINAUD_LABELS, VESSEL_SEPARATES, sample_anatomy
from medkit.synth.liver_ct import VESSEL_IDS, LiverCTConfig, generate_dataset, render_case

# Small but whole torso: ~64 x 64 x 40 voxels of ~5 mm; each case renders in well under a second.
TINY = dict(shape=(64, 64, 40), spacing_xy_mm=(5.0, 5.4), spacing_z_mm=(5.5, 6.5))


@pytest.fixture(scope="module")
def cases():
    """Three default-size cases (96 x 96 x 64) with their vessel maps."""
    cfg = LiverCTConfig(seed=3)
    return [render_case(cfg, i, keep_vessels=True) for i in range(3)]


def test_segments_present_and_each_one_component(cases):
    for c in cases:
        for k in range(1, 9):
            _, n = ndimage.label(c.labels == k)  # 6-connectivity: the stricter count
            assert n == 1, f"{c.case_id}: segment {COUINAUD_LABELS[k]} has {n} components"
        # Islands left by downsampling are relabelled; it must stay a rare repair.
        assert c.meta["relabelled_voxels"] < 0.005 * (c.labels > 0).sum()


def test_segment_layout_follows_anatomy(cases):
    """Couinaud geometry in world (RAS) terms, from label centroids."""
    for c in cases:
        cen = {k: np.argwhere(c.labels == k).mean(0) * np.asarray(c.meta["spacing_mm"]) for k in range(1, 9)}
        x, y, z = 0, 1, 2  # RAS: x to the patient's left, y anterior, z superior
        for sup, inf in ((7, 6), (8, 5), (2, 3)):
            assert cen[sup][z] > cen[inf][z], f"{c.case_id}: {sup} not above {inf}"
        assert cen[7][y] < cen[8][y] and cen[6][y] < cen[5][y], "posterior sector must be behind the anterior one"
        # Right lobe (V-VIII) on the patient's right of IV, IV right of II/III.
        assert max(cen[k][x] for k in (5, 6, 7, 8)) < cen[4][x] < min(cen[2][x], cen[3][x])
        assert cen[3][y] > cen[2][y], "III is anterior to II"
        # Caudate lies beside the IVC, posterior to the portal hilum (behind IV).
        assert cen[1][y] < cen[4][y]
        ivc = np.argwhere(c.vessels == VESSEL_IDS["IVC"]).mean(0) * np.asarray(c.meta["spacing_mm"])
        assert np.hypot(*(cen[1][:2] - ivc[:2])) < 45.0


def _near(d: dict, pairs, tol: float) -> np.ndarray:
    """Per vessel voxel: within ``tol`` mm of both segments of at least one pair."""
    return np.any([np.maximum(d[a], d[b]) <= tol for a, b in pairs], axis=0)


@pytest.fixture(scope="module")
def distances(cases):
    """Per case: label -> distance map (mm) to the nearest voxel of that label."""
    return [{k: ndimage.distance_transform_edt(c.labels != k, sampling=c.meta["spacing_mm"]) for k in range(1, 9)}
            for c in cases]


@pytest.mark.parametrize("vessel", ["RHV", "MHV", "LHV", "UPV", "RPV", "RPVp"])
def test_boundary_vessels_lie_on_segment_boundaries(cases, distances, vessel):
    """Every voxel of a boundary vein is within (vein radius + one voxel) of BOTH segments
    of a pair it separates; the same voxels tested against a pair it does not separate fail."""
    wrong = {"RHV": [(8, 4)], "MHV": [(7, 6)], "LHV": [(8, 5)], "UPV": [(7, 8)], "RPV": [(2, 3)], "RPVp": [(4, 2)]}
    for c, dist in zip(cases, distances):
        sp = np.asarray(c.meta["spacing_mm"])
        v = (c.vessels == VESSEL_IDS[vessel]) & (c.labels > 0)
        if vessel.startswith("RPV"):
            v &= c.labels != 4  # IVa / IVb share label 4: the portal plane there is no label boundary
        if v.sum() < 3:
            continue
        tol = 6.0 + sp.max()  # max vein radius 5.5 mm (portal) + one voxel
        d = {k: dist[k][v] for k in range(1, 9)}

        assert _near(d, VESSEL_SEPARATES[vessel], tol).mean() >= 0.9, f"{c.case_id}: {vessel} off its boundary"
        assert _near(d, wrong[vessel], tol).mean() < 0.5, f"{c.case_id}: control pair unexpectedly near {vessel}"


def test_template_vessels_lie_exactly_in_boundary_surfaces():
    for s in range(5):
        sample_anatomy(np.random.default_rng(s)).vessel_on_boundary()


def test_hounsfield_units(cases):
    for c in cases:
        hu = c.meta["hu"]
        img = c.image.astype(np.float32)
        par = ndimage.binary_erosion((c.labels > 0) & (c.vessels == 0) & (c.tumour == 0), iterations=1)
        assert abs(img[par].mean() - hu["liver"]) < 3.0
        assert 55 <= hu["liver"] <= 65
        assert 0.7 * 10 < img[par].std() < 1.5 * 10  # noise_hu = 10 (plus partial volume)
        ivc = ndimage.binary_erosion(c.vessels == VESSEL_IDS["IVC"], iterations=1)
        assert 140 < np.median(img[ivc]) < 160  # 150 HU in portal-venous phase
        for name in ("RHV", "MHV", "RPV"):
            m = (c.vessels == VESSEL_IDS[name]) & (c.labels > 0)
            # Thin tubes: partial volume with parenchyma; the core reaches the 150-200 HU of contrast.
            assert np.percentile(img[m], 90) > 140, name
            assert img[m].mean() > img[par].mean() + 50, name
        air = img[0:3, 0:3, :]
        assert np.median(air) < -990


def test_phase_changes_vessel_contrast():
    pv = render_case(LiverCTConfig(**TINY, phase="portal-venous", noise_hu=0), 0, keep_vessels=True)
    nc = render_case(LiverCTConfig(**TINY, phase="non-contrast", noise_hu=0), 0, keep_vessels=True)
    ivc = pv.vessels == VESSEL_IDS["IVC"]
    assert pv.image[ivc].mean() > nc.image[ivc].mean() + 80
    np.testing.assert_array_equal(pv.labels, nc.labels)  # the anatomy does not depend on the phase


def test_same_seed_identical_different_seed_differs():
    a = render_case(LiverCTConfig(**TINY, seed=5), 1)
    b = render_case(LiverCTConfig(**TINY, seed=5), 1)
    c = render_case(LiverCTConfig(**TINY, seed=6), 1)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)


def test_cases_vary(cases):
    vols = [c.meta["liver_volume_ml"] for c in cases]
    assert len({round(v) for v in vols}) == 3 and max(vols) - min(vols) > 20
    for key in ("right_hepatic_vein", "middle_hepatic_vein", "umbilical_fissure"):
        angles = [c.meta["boundary_angles_deg"][key] for c in cases]
        assert max(angles) - min(angles) > 1.0, key
    assert len({tuple(c.meta["spacing_mm"]) for c in cases}) == 3
    for c in cases:
        assert 900 < c.meta["liver_volume_ml"] < 2500


def test_tumours_inside_liver_and_labelled_separately():
    cfg = LiverCTConfig(**TINY, max_tumours=3, tumour_radius_mm=(12.0, 15.0))
    found = 0
    for i in range(4):
        c = render_case(cfg, i)
        found += int(c.tumour.any())
        assert len(c.meta["tumours"]) <= 3
        # Tumour voxels keep their Couinaud label: labels stay 1..8 inside the liver.
        assert np.all(c.labels[c.tumour > 0] > 0)
        if c.tumour.any():
            core = ndimage.binary_erosion(c.tumour > 0)
            if core.any():
                assert c.image[core].mean() < c.meta["hu"]["liver"] - 15  # hypodense
    assert found >= 1


def test_dataset_layout_dicom_round_trip_and_json(tmp_path):
    from medkit.io import load_volume

    # Few, thick slices keep the DICOM part quick (each slice is one file).
    cfg = LiverCTConfig(shape=(64, 64, 24), spacing_xy_mm=(5.0, 5.4), spacing_z_mm=(9.0, 10.0),
                        n_cases=2, dicom=True, seed=1)
    summary = generate_dataset(cfg, tmp_path)
    assert summary["n_cases"] == 2
    ds = json.loads((tmp_path / "dataset.json").read_text())
    assert ds["labels"] == {"background": 0, "I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6, "VII": 7, "VIII": 8}
    assert ds["channel_names"] == {"0": "CT"} and ds["numTraining"] == 2 and ds["file_ending"] == ".nii.gz"
    assert ds["medkit"]["seed"] == 1 and ds["medkit"]["config"]["shape"] == [64, 64, 24]
    for i, case in enumerate(("liver_000", "liver_001")):
        img = load_volume(tmp_path / "imagesTr" / f"{case}_0000.nii.gz")
        lab = load_volume(tmp_path / "labelsTr" / f"{case}.nii.gz")
        assert tuple(img.shape) == (1, 64, 64, 24) and tuple(lab.shape) == tuple(img.shape)
        # The files hold exactly the seeded render: same seed, same bytes of the arrays.
        again = render_case(cfg, i)
        assert np.array_equal(img.numpy()[0], again.image) and np.array_equal(lab.numpy()[0], again.labels)
        assert set(np.unique(lab.numpy()).astype(int)) == set(range(9))
        np.testing.assert_allclose(np.asarray(lab.affine), np.asarray(img.affine))
        meta = json.loads((tmp_path / "metadata" / f"{case}.json").read_text())
        assert np.allclose(meta["spacing_mm"], np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0))
        assert "right_hepatic_vein" in meta["boundary_angles_deg"] and "tumours" in meta
        dcm = load_volume(tmp_path / "dicom" / case)
        assert dcm.meta["modality"] == "CT"
        np.testing.assert_allclose(np.asarray(dcm.affine), np.asarray(img.affine), atol=1e-4)
        assert np.abs(dcm.numpy() - img.numpy()).max() <= 1.0


def test_cli_synth_liver_ct(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medkit.cli import app

    monkeypatch.setenv("MEDKIT_NO_PROGRESS", "1")
    out = tmp_path / "ds"
    args = ["synth", "liver-ct", "--out", str(out), "--n", "1", "--seed", "2",
            "--set", "shape=[48,48,32]", "--set", "spacing_xy_mm=[7.0,7.0]", "--set", "spacing_z_mm=[7.0,7.5]",
            "--set", "phase=arterial"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "imagesTr" / "liver_000_0000.nii.gz").exists()
    assert (out / "labelsTr" / "liver_000.nii.gz").exists()
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["medkit"]["config"]["phase"] == "arterial" and ds["numTraining"] == 1
    bad = CliRunner().invoke(app, ["synth", "liver-ct", "--out", str(out), "--set", "no_such_knob=1"])
    assert bad.exit_code == 2 and "no_such_knob" in bad.output


@pytest.mark.slow
def test_realistic_size_case():
    cfg = LiverCTConfig(shape=(192, 192, 160), spacing_xy_mm=(1.7, 1.9), spacing_z_mm=(1.25, 2.0))
    c = render_case(cfg, 0)
    assert c.image.shape == (192, 192, 160)
    for k in range(1, 9):
        assert ndimage.label(c.labels == k)[1] == 1
