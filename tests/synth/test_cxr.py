"""Synthetic chest radiographs: labels agree with pixels, reports with labels, files with R2Gen."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from medkit.synth.chexpert import OBSERVATIONS, apply_hierarchy, combine
from medkit.synth.cxr import (
    CXRConfig,
    generate_dataset,
    generate_study,
    measure_ctr,
    read_masks,
    render_frontal,
    sample_patient,
)
from medkit.synth.cxr_reports import (
    DEVICES,
    MENTIONS,
    NEGATION_CUES,
    NORMAL_SENTENCES,
    UNCERTAINTY_CUES,
    Finding,
    labels_from_sentences,
    sample_findings,
    write_report,
)


def _patient(k: int):
    return sample_patient(np.random.default_rng([99, k]))


def _has(cues, text: str) -> bool:
    t = text.lower()
    return any(re.search(rf"\b{re.escape(c)}\b", t) for c in cues)


def _polarity(sentence: str) -> int:
    """Our grammar's own tiny labeler: hedge cue -> -1, negation cue or normal phrase -> 0, else 1."""
    if _has(UNCERTAINTY_CUES, sentence):
        return -1
    normal = {s for rows in NORMAL_SENTENCES.values() for s, _ in rows}
    if _has(NEGATION_CUES, sentence) or sentence in normal:
        return 0
    return 1


def _reports(n: int, seed: int = 0):
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        sample_patient(rng)  # same stream order as generate_study
        f = sample_findings(rng)
        rep = write_report(f, rng)
        yield f, rep, labels_from_sentences(rep["sentences"])


def test_chexpert_constants():
    assert len(OBSERVATIONS) == 14 and OBSERVATIONS[0] == "No Finding" and OBSERVATIONS[-1] == "Support Devices"
    # positive beats uncertain beats negative (CheXpert aggregation)
    assert combine([0, -1]) == -1 and combine([-1, 1, 0]) == 1 and combine([]) is None
    # a positive child makes Lung Opacity positive and clears No Finding
    assert apply_hierarchy({"Edema": 1}) == {"Lung Opacity": 1, "Edema": 1}
    assert apply_hierarchy({"Support Devices": 1}) == {"No Finding": 1, "Support Devices": 1}


@pytest.mark.parametrize("k", range(3))
def test_ctr_from_heart_mask_agrees_with_cardiomegaly_label(k):
    p = _patient(k)
    normal = render_frontal(p, [], size=128)
    big = render_frontal(p, [Finding("cardiomegaly", severity="mild", params={"ctr": 0.55})], size=128)
    ctr0 = measure_ctr(normal["masks"]["heart"], normal["masks"]["lungs"] | normal["masks"]["heart"])
    ctr1 = measure_ctr(big["masks"]["heart"], big["masks"]["lungs"] | big["masks"]["heart"])
    assert ctr0 < 0.5 < ctr1
    assert abs(ctr1 - big["ctr"]) < 1e-9 and abs(ctr1 - 0.55) < 0.02
    # the heart sits on the patient's left: most of it right of the image midline (PA convention)
    cols = np.nonzero(big["masks"]["heart"].any(axis=0))[0]
    assert cols.mean() > 64
    assert "Cardiomegaly" not in normal["masks"] and big["masks"]["Cardiomegaly"].any()


@pytest.mark.parametrize("side", ["left", "right"])
def test_effusion_difference_is_exactly_its_mask(side):
    p = _patient(3)
    f = Finding("effusion", side=side, severity="moderate", seed=5)
    with_, without = render_frontal(p, [f], size=128), render_frontal(p, [], size=128)
    diff = with_["image"] - without["image"]
    mask = with_["masks"]["Pleural Effusion"]
    assert mask.any()
    np.testing.assert_array_equal(diff != 0, mask)
    assert (diff[mask] > 0).all()  # fluid only adds density
    # all of it on the labelled side, in the lower (costophrenic) half of the film
    cols = np.nonzero(mask.any(axis=0))[0]
    assert (cols > 64).all() if side == "left" else (cols < 64).all()
    assert np.nonzero(mask.any(axis=1))[0].mean() > 64


@pytest.mark.parametrize("side", ["left", "right"])
def test_pneumothorax_side_and_darkening(side):
    p = _patient(4)
    f = Finding("pneumothorax", side=side, severity="large", seed=2)
    with_, without = render_frontal(p, [f], size=128), render_frontal(p, [], size=128)
    mask = with_["masks"]["Pneumothorax"]
    cols = np.nonzero(mask.any(axis=0))[0]
    assert mask.sum() > 20
    assert (cols > 64).all() if side == "left" else (cols < 64).all()
    # apical: the gas sits in the upper lung; lateral to the pleural line the film is darker
    assert np.nonzero(mask.any(axis=1))[0].mean() < 64
    diff = (with_["image"] - without["image"])[mask]
    assert (diff < 0).mean() > 0.7


def test_masks_agree_with_labels_across_studies():
    cfg = CXRConfig(n_cases=24, size=96, p_normal=0.2, max_findings=3, p_devices=0.3)
    seen = set()
    for i in range(cfg.n_cases):
        st = generate_study(cfg, i)
        masks = st["frontal"]["masks"]
        for o in OBSERVATIONS[1:]:
            v = st["labels"].get(o)
            if v in (1, -1):
                assert o in masks and masks[o].any(), (st["id"], o, v)
                seen.add(o)
            else:
                assert o not in masks or not masks[o].any(), (st["id"], o, v)
    assert len(seen) >= 8


def test_report_mentions_positives_and_negations_parse():
    for findings, rep, labels in _reports(200):
        text = (rep["findings"] + " " + rep["impression"]).lower()
        for o, v in labels.items():
            if v != 0 and o != "No Finding":
                assert any(m in text for m in MENTIONS[o]), (o, text)
        for s in rep["sentences"]:
            for o, v in s["labels"].items():
                assert _polarity(s["text"]) == v, (s["text"], o, v)
        # laterality and severity words of rendered findings appear in the text
        for f in findings:
            if f.kind not in DEVICES and f.side in ("left", "right"):
                assert f.side in text or f.side == "left" and "lingula" in text, (f.kind, text)
            if f.severity and f.kind in ("effusion", "pneumothorax", "edema") and f.certain:
                assert f.severity in text


def test_label_distribution_covers_all_observations():
    counts = {o: {1: 0, 0: 0, -1: 0} for o in OBSERVATIONS}
    for _, _, labels in _reports(200):
        for o, v in labels.items():
            counts[o][v] += 1
    for o in OBSERVATIONS:
        assert counts[o][1] > 0, o
    assert sum(c[-1] for c in counts.values()) >= 10
    assert sum(c[0] for c in counts.values()) >= 100


def test_normal_studies_vary_in_wording():
    normals = [rep["findings"] + " | " + rep["impression"] for f, rep, lab in _reports(200)
               if not [x for x in f if x.kind not in DEVICES]]
    assert len(normals) > 40
    assert len(set(normals)) >= 0.8 * len(normals)


def test_same_seed_same_bytes_and_loads(tmp_path):
    from medkit.io import load_report_dataset

    cfg = CXRConfig(n_cases=4, size=64, p_normal=0.0)
    s1 = generate_dataset(cfg, tmp_path / "a")
    generate_dataset(cfg, tmp_path / "b")
    files = sorted(q.relative_to(tmp_path / "a") for q in (tmp_path / "a").rglob("*") if q.is_file())
    assert any(str(f).endswith("0.png") for f in files) and any(str(f).endswith("1.png") for f in files)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert s1["n_cases"] == 4 and sum(s1["splits"].values()) == 4
    ds = load_report_dataset(tmp_path / "a")
    entries = [e for rows in ds.values() for e in rows]
    assert len(entries) == 4
    gt = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "a" / "ground_truth.jsonl").read_text().splitlines()}
    for e in entries:
        assert [p.name for p in e.image_paths] == ["0.png", "1.png"] and all(p.is_file() for p in e.image_paths)
        assert e.report and e.extra["impression"] and e.labels == gt[e.id]["labels"]
        m = read_masks(tmp_path / "a" / "masks" / f"{e.id}.png")
        assert abs(measure_ctr(m["heart"], m["lungs"] | m["heart"]) - gt[e.id]["ctr"]) < 1e-3
        for o in OBSERVATIONS[1:]:
            assert m[o].any() == (e.labels.get(o) in (1, -1)), (e.id, o)
    # another seed gives other images
    generate_dataset(CXRConfig(n_cases=1, size=64, seed=1), tmp_path / "c")
    assert (tmp_path / "c/images/CXR0001/0.png").read_bytes() != (tmp_path / "a/images/CXR0001/0.png").read_bytes()


def test_bad_size_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="size"):
        generate_dataset(CXRConfig(n_cases=1, size=4096), tmp_path)


def test_cli_synth_cxr(tmp_path):
    from typer.testing import CliRunner

    from medkit.cli import app

    res = CliRunner().invoke(app, ["synth", "cxr", "--out", str(tmp_path / "cxr"), "--n", "2", "--seed", "3",
                                   "--set", "size=64", "--set", "lateral=false"])
    assert res.exit_code == 0, res.output
    ann = json.loads((tmp_path / "cxr" / "annotation.json").read_text())
    entries = [e for rows in ann.values() for e in rows]
    assert len(entries) == 2 and all(len(e["image_path"]) == 1 for e in entries)
    assert "2 case(s)" in res.output


def _drawn(cfg, n, split="train"):
    from medkit.synth.cxr import draw_study

    return [draw_study(cfg, i, split) for i in range(n)]


def test_cooccurrence_model_matches_mimic_rates_and_clusters_findings():
    """Label rates within 25 % of MIMIC-CXR's published ones, or 4 binomial standard errors for the
    rare ones (Lung Opacity excepted: CheXpert's hierarchy makes every child an opacity here), and
    the clinical clusters co-occur (lift > 1.3)."""
    from medkit.synth.cxr_cooccurrence import cooccurrence, mimic_rates

    studies = _drawn(CXRConfig(), 2500)
    c = cooccurrence([s["labels"] for s in studies])
    want = mimic_rates()
    for o, r in zip(c["observations"], c["rate"]):
        if o != "Lung Opacity":
            p = want[o]
            assert abs(r - p) < max(0.25 * p, 4 * np.sqrt(p * (1 - p) / c["n"])), (o, r, p)
    i = {o: k for k, o in enumerate(c["observations"])}
    for a, b in [("Cardiomegaly", "Edema"), ("Cardiomegaly", "Pleural Effusion"), ("Edema", "Pleural Effusion"),
                 ("Support Devices", "Pleural Effusion"), ("Support Devices", "Atelectasis"),
                 ("Consolidation", "Pneumonia")]:
        assert c["lift"][i[a]][i[b]] > 1.3, (a, b, c["lift"][i[a]][i[b]])
    # the first generator drew findings independently: no such cluster there
    ind = cooccurrence([s["labels"] for s in _drawn(CXRConfig(label_model="independent"), 1500)])
    assert ind["lift"][i["Cardiomegaly"]][i["Edema"]] < 1.3


def test_spurious_cue_tracks_its_label_in_train_only():
    cfg = CXRConfig(spurious_cue="pacemaker-cardiomegaly", cue_strength=0.9)
    for split, agree_lo, agree_hi in (("train", 0.86, 0.94), ("test", 0.0, 0.8)):
        cues = [s["cue"] for s in _drawn(cfg, 1500, split)]
        agree = np.mean([not c["conflict"] for c in cues])
        assert agree_lo < agree < agree_hi, (split, agree)
        pos = [c["present"] for c in cues if c["target_positive"]]
        neg = [c["present"] for c in cues if not c["target_positive"]]
        gap = np.mean(pos) - np.mean(neg)
        assert (gap > 0.7) if split == "train" else (abs(gap) < 0.1), (split, gap)
    # the cue changes only the pacemaker: the rest of a study is the one drawn without it
    a, b = _drawn(cfg, 30, "test"), _drawn(CXRConfig(), 30)
    for x, y in zip(a, b):
        assert [f.kind for f in x["findings"] if f.kind != "pacemaker"] == \
               [f.kind for f in y["findings"] if f.kind != "pacemaker"]
    with pytest.raises(ValueError, match="spurious_cue"):
        _drawn(CXRConfig(spurious_cue="ett-edema"), 1)
