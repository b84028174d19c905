"""Registration augmentation: identity, label integrity, seeding, mm translation, field bank."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medkit.transforms import (
    FieldBank,
    RandRegistrationAugment,
    RandRegistrationAugmentd,
    RegistrationAugment,
    RegistrationAugmentd,
    RegistrationConfig,
    register_pair,
)

AFF = np.diag([2.0, 2.0, 3.0, 1.0])  # 2 x 2 x 3 mm voxels


def _atlas(shape=(12, 10, 8)):
    g = torch.Generator().manual_seed(0)
    img = torch.rand((1, *shape), generator=g)
    lab = torch.zeros((1, *shape))
    lab[0, 3:7, 2:6, 2:5] = 3
    lab[0, 7:10, 5:9, 3:7] = 5
    return MetaTensor(img, affine=torch.as_tensor(AFF)), MetaTensor(lab, affine=torch.as_tensor(AFF))


def test_zero_field_is_identity():
    img, lab = _atlas()
    ddf = torch.zeros(3, *img.shape[1:])
    out = RegistrationAugmentd()({"image": img, "label": lab, "ddf": ddf})
    assert torch.allclose(out["image"], img, atol=1e-5)
    assert torch.equal(out["label"].as_tensor(), lab.as_tensor())


def test_translation_in_mm_moves_the_image_by_that_many_voxels():
    img, lab = _atlas()
    ddf = torch.zeros(3, *img.shape[1:])
    ddf[0] = 4.0  # +4 mm along x = 2 voxels of 2 mm; warped(x) = atlas(x + u) -> content moves by -2 voxels
    ddf[2] = 3.0  # +3 mm along z = 1 voxel of 3 mm
    out = RegistrationAugment("bilinear")(img, ddf, AFF)
    assert torch.allclose(out[0, :-2, :, :-1], img[0, 2:, :, 1:], atol=1e-5)
    lab_out = RegistrationAugment("nearest")(lab, ddf, AFF)
    assert torch.equal(lab_out[0, :-2, :, :-1].as_tensor(), lab[0, 2:, :, 1:].as_tensor())


def _bank():
    bank = FieldBank()
    shape = (12, 10, 8)
    g = torch.Generator().manual_seed(1)
    for tgt in ("b", "c", "d"):
        # smooth random field, up to ~3 mm
        coarse = torch.randn(1, 3, 3, 3, 3, generator=g) * 3.0
        ddf = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0]
        bank.add("a", tgt, ddf, AFF, {"note": "test"})
    return bank


def test_random_labels_stay_integer_and_in_the_label_set():
    img, lab = _atlas()
    t = RandRegistrationAugmentd(_bank(), prob=1.0, compose_prob=0.5).set_random_state(seed=3)
    for _ in range(4):
        out = t({"image": img, "label": lab, "case_id": "a"})
        vals = torch.unique(out["label"])
        assert set(vals.tolist()) <= {0.0, 3.0, 5.0}
        assert torch.equal(out["label"], out["label"].round())
        assert out["augment"] is not None and out["augment"]["fields"][0].startswith("a->")
    # an unregistered case passes unchanged
    same = t({"image": img, "label": lab, "case_id": "zzz"})
    assert torch.equal(same["image"], img) and same["augment"] is None


def test_same_seed_same_output_different_seed_different():
    img, lab = _atlas()
    bank = _bank()

    def run(seed):
        t = RandRegistrationAugment(bank, prob=1.0, scale_range=(0.2, 1.0), compose_prob=0.5)
        t.set_random_state(seed=seed)
        return t(img, lab, "a", AFF)

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_field_bank_round_trip_keeps_provenance(tmp_path):
    img, _ = _atlas()
    ddf = torch.full((3, *img.shape[1:]), 1.5)
    bank = FieldBank(tmp_path / "fields")
    bank.add("a", "b", ddf, AFF, {"mse_initial": 0.1})
    again = FieldBank(tmp_path / "fields")
    rec = again.for_atlas("a")[0]
    assert rec.target_id == "b" and rec.info["mse_initial"] == 0.1 and "medkit_version" in rec.info
    assert torch.allclose(again.load(rec), ddf)
    assert np.allclose(again.affine, AFF)


def test_registration_recovers_a_shift():
    # A blob shifted by 2 voxels along x: the affine stage must bring MSE well down.
    x = torch.arange(16.0)
    xx, yy, zz = torch.meshgrid(x, x, x, indexing="ij")
    blob = lambda cx: torch.exp(-((xx - cx) ** 2 + (yy - 8) ** 2 + (zz - 8) ** 2) / 12.0)[None]  # noqa: E731
    fixed, moving = blob(7.0), blob(9.0)
    ddf, info = register_pair(fixed, moving, np.eye(4), RegistrationConfig(affine_iters=40, deform_iters=5,
                                                                           downsample=1, device="cpu"))
    assert ddf.shape == (3, 16, 16, 16)
    assert info["mse_deformable"] < 0.2 * info["mse_initial"]
    # warped(x) = moving(x + u): the blob sits 2 voxels (mm, identity affine) further along x in moving
    assert float(ddf[0, 7, 8, 8]) == pytest.approx(2.0, abs=0.5)
    assert info["folding_fraction"] == 0.0


def _blobs(cx: float, cy: float = 8.0):
    x = torch.arange(16.0)
    xx, yy, zz = torch.meshgrid(x, x, x, indexing="ij")
    return torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2 + (zz - 8) ** 2) / 12.0)[None]


def test_registration_provenance_compares_every_stage_on_the_full_grid():
    """mse_initial / mse_affine / mse_deformable are all full-grid MSEs (the affine one used to be
    on the smoothed coarse grid, so the deformable stage looked harmful): recomputing the final
    one from the returned field on the full grid gives the stored number, and the stages only
    ever improve on a pair that needs both an affine and a local correction."""
    import torch.nn.functional as F

    from medkit.nn.warp import warp_mm

    fixed = _blobs(7.0)
    moving = _blobs(9.5, 9.0) + 0.5 * _blobs(4.0, 5.0)  # shifted, plus a structure fixed lacks
    ddf, info = register_pair(fixed, moving, np.eye(4), RegistrationConfig(affine_iters=40, deform_iters=20,
                                                                           downsample=2, device="cpu"))
    assert info["levels"] == [2, 1]
    assert info["mse_initial"] == pytest.approx(float(F.mse_loss(moving, fixed)), rel=1e-6)
    again = float(F.mse_loss(warp_mm(moving[None], ddf[None], np.eye(4)), fixed[None]))
    assert info["mse_deformable"] == pytest.approx(again, rel=1e-4)
    assert info["mse_deformable"] <= info["mse_affine"] < info["mse_initial"]


def test_registration_quality_gate_passes_a_field_that_carries_the_labels_and_fails_a_zero_field():
    from medkit.segmentation.train import registration_quality

    shape = (12, 10, 8)
    tgt = torch.zeros((1, *shape))
    tgt[0, 1:4, 2:6, 2:5] = 1
    tgt[0, 4:7, 2:6, 2:5] = 2  # x <= 8 after the roll: the border padding never repeats a label
    atl = torch.roll(tgt, shifts=2, dims=1)  # the atlas anatomy sits 2 voxels further along x
    aff = torch.as_tensor(AFF)
    cases = {"a": {"case_id": "a", "label": MetaTensor(atl, affine=aff)},
             "t": {"case_id": "t", "label": MetaTensor(tgt, affine=aff)}}
    good, zero = FieldBank(), FieldBank()
    u = torch.zeros(3, *shape)
    u[0] = 2 * 2.0  # warped(x) = atlas(x + 2 voxels of 2 mm): exactly undoes the roll
    good.add("a", "t", u, AFF)
    zero.add("a", "t", torch.zeros(3, *shape), AFF)
    q = registration_quality(good, cases, cases, min_gain=0.05)
    assert q["n"] == 1 and q["warped"] == pytest.approx(1.0) and q["identity"] < 0.6
    assert q["gate"]["held"] and "PASSED" in q["printed"]
    z = registration_quality(zero, cases, cases, min_gain=0.05)
    assert z["gain"] == pytest.approx(0.0) and not z["gate"]["held"] and "FAILED" in z["printed"]
    # a target marked unlabelled is never scored (training targets have no labels)
    cases["t"]["unlabelled"] = True
    assert registration_quality(good, cases, cases)["n"] == 0


def test_field_bank_registers_unlabelled_scans_first():
    """Targets are the unlabelled scans before any other labelled atlas (the bug: the first
    max_targets of labelled + unlabelled were taken, so atlases mostly met each other)."""
    from medkit.segmentation.train import build_field_bank
    from medkit.segmentation.train_config import AugmentConfig, TrainConfig

    aff = torch.as_tensor(AFF)

    def case(cid, shift, unlabelled=False):
        img = MetaTensor(_blobs(6.0 + shift)[:, :12, :10, :8].clone(), affine=aff)
        d = {"case_id": cid, "image": img, "label": MetaTensor((img > 0.5).float(), affine=aff)}
        return dict(d, unlabelled=True) if unlabelled else d

    labelled = [case("l0", 0), case("l1", 1), case("l2", 2)]
    unlabelled = [case("u0", 0.5, True), case("u1", 1.5, True)]
    cfg = TrainConfig(augment=AugmentConfig(kind="registration", max_targets=2,
                                            registration=RegistrationConfig(affine_iters=1, deform_iters=1,
                                                                            device="cpu")))
    bank = build_field_bank(cfg, labelled, labelled + unlabelled, progress=lambda it, *a: it)
    assert {r.target_id for r in bank.records} == {"u0", "u1"}
    assert len(bank) == 6
