"""Tests for the clinical-case generator and its knowledge base (medkit.synth.cases / knowledge)."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from medkit.synth.cases import (
    CasesConfig,
    case_rng,
    generate_cases,
    generate_dataset,
    sample_evidence,
    topk_accuracy,
)
from medkit.synth.knowledge import (
    DATA_DIR,
    EVIDENCE_TYPES,
    KnowledgeBaseError,
    load_knowledge_base,
    posterior,
)
from medkit.synth.personas import ANXIETY, BIG_FIVE, LITERACY, VERBOSITY


@pytest.fixture(scope="module")
def kb():
    return load_knowledge_base()


@pytest.fixture(scope="module")
def cases300():
    return generate_cases(CasesConfig(n_cases=300, seed=0))


# --------------------------------------------------------------------------- knowledge base


def test_packaged_knowledge_base_validates(kb):
    assert len(kb.conditions) >= 40
    assert len(kb.systems) >= 8
    for c in kb.conditions:
        assert set(c.likelihoods) <= set(kb.evidences), c.id
        assert all(0.0 <= p <= 1.0 for p in c.likelihoods.values()), c.id
        assert set(c.red_flags) <= set(c.likelihoods), c.id
        assert set(c.tests) <= set(kb.tests) and c.tests, c.id
        assert 0.0 <= c.female <= 1.0 and c.age[0] <= c.age[1] <= c.age[2]
    # Every vocabulary entry is usable by the simulated patient / environment.
    for e in kb.evidences.values():
        assert e.type in EVIDENCE_TYPES
        if e.type in ("symptom", "history"):
            assert e.question.endswith("?"), e.id
        else:
            assert e.test in kb.tests and e.finding, e.id
    # The shared vocabulary is shared: chest pain is listed by many conditions.
    assert sum("chest_pain" in c.likelihoods for c in kb.conditions) >= 7


def _copy_kb(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    shutil.copytree(DATA_DIR, root)
    return root


def _edit_condition(root: Path, file: str, cond_id: str, edit) -> Path:
    path = root / "conditions" / file
    data = yaml.safe_load(path.read_text())
    cond = next(c for c in data["conditions"] if c["id"] == cond_id)
    edit(data, cond)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("kind", ["unknown_evidence", "probability", "duplicate_id"])
def test_broken_knowledge_base_names_file_and_condition(tmp_path, kind):
    root = _copy_kb(tmp_path)
    if kind == "unknown_evidence":
        path = _edit_condition(root, "respiratory.yaml", "pneumonia",
                               lambda d, c: c["symptoms"].__setitem__("purple_toes", 0.3))
        expect = ["respiratory.yaml", "pneumonia", "unknown evidence id 'purple_toes'"]
    elif kind == "probability":
        path = _edit_condition(root, "cardiovascular.yaml", "pericarditis",
                               lambda d, c: c["symptoms"].__setitem__("chest_pain", 1.5))
        expect = ["cardiovascular.yaml", "pericarditis", "chest_pain = 1.5", "[0, 1]"]
    else:
        path = _edit_condition(root, "psychiatric.yaml", "depression",
                               lambda d, c: d["conditions"].append(dict(c, name="copy")))
        expect = ["psychiatric.yaml", "depression", "duplicate condition id"]
    with pytest.raises(KnowledgeBaseError) as err:
        load_knowledge_base(root)
    msg = str(err.value)
    assert str(path) in msg
    for part in expect:
        assert part in msg, msg


def test_duplicate_yaml_key_and_too_few_conditions(tmp_path):
    root = _copy_kb(tmp_path)
    # PyYAML would silently keep the last of two equal keys; the loader refuses.
    vocab = root / "evidences.yaml"
    vocab.write_text(vocab.read_text().replace(
        "  cough: {", '  fever: {q: "again?", say: "x", salience: 1}\n  cough: {', 1))
    with pytest.raises(KnowledgeBaseError, match=r"evidences\.yaml.*duplicate key 'fever'"):
        load_knowledge_base(root)
    root2 = _copy_kb(tmp_path / "b")
    for f in list((root2 / "conditions").glob("*.yaml"))[1:]:
        f.unlink()
    with pytest.raises(KnowledgeBaseError, match="at least 40"):
        load_knowledge_base(root2)


# --------------------------------------------------------------------------- sampling


def test_sampled_evidences_follow_likelihoods(kb):
    # N = 4000 independent draws for one condition. Each evidence count is
    # Binomial(N, p): standard error sqrt(p (1 - p) / N); at p = 0.5 that is
    # sqrt(0.25 / 4000) = 0.0079, at p = 0.05 it is sqrt(0.0475 / 4000) = 0.0034.
    # Tolerance 4 SE: with ~40 evidences checked, a false alarm has probability
    # about 40 * 6e-5 = 0.003 (and the seed is fixed, so the test is deterministic).
    n = 4000
    rng = np.random.default_rng(123)
    cond = kb.condition("pneumonia")
    draws = np.stack([sample_evidence(kb, "pneumonia", "female", rng) for _ in range(n)])
    freq = draws.mean(axis=0)
    for e, p in cond.likelihoods.items():
        se = math.sqrt(p * (1 - p) / n)
        assert abs(freq[kb.ev_index[e]] - p) <= 4 * se + 1e-9, (e, p, freq[kb.ev_index[e]])
    # Unlisted evidences without a base rate appear at the background rate 0.01:
    # pooled over ~200 of them, SE = sqrt(0.0099 / (200 * 4000)) = 1.1e-4.
    noise = [kb.ev_index[e] for e, ev in kb.evidences.items()
             if e not in cond.likelihoods and ev.base is None and ev.sex != "male"]
    assert abs(freq[noise].mean() - 0.01) < 5e-4
    # Male-only evidences never occur in a female patient.
    assert not draws[:, kb.ev_index["testicular_pain"]].any()


def test_case_fields_are_consistent(kb, cases300):
    for c in cases300:
        present = {e for evs in c["evidences"].values() for e in evs}
        assert c["chief_complaint"]["evidence"] in c["evidences"]["symptom"]
        assert c["chief_complaint"]["text"] == kb.evidences[c["chief_complaint"]["evidence"]].say
        assert set(c["red_flags"]) <= present
        for test, findings in c["results"].items():
            assert all(kb.evidences[f].test == test and f in present for f in findings)
        lo, _, hi = kb.condition(c["diagnosis"]["id"]).age
        assert lo <= c["age"] < hi or lo == hi
        ps = [d["p"] for d in c["differential"]]
        assert ps == sorted(ps, reverse=True) and len(ps) == 5
        assert 0.0 <= c["posterior_true"] <= 1.0 and c["rank_true"] >= 1
    splits = Counter(c["split"] for c in cases300)
    assert splits["train"] > splits["val"] > 0 and splits["test"] > 0


def test_persona_fields_in_range(cases300):
    for c in cases300:
        p = c["persona"]
        assert p["age"] == c["age"] and p["sex"] == c["sex"] in ("female", "male")
        assert p["health_literacy"] in LITERACY and p["anxiety"] in ANXIETY and p["verbosity"] in VERBOSITY
        assert set(p["big_five"]) == set(BIG_FIVE) and all(0.0 <= v <= 1.0 for v in p["big_five"].values())
        assert p["occupation"] and p["speaking_style"]
        assert p["informant"] == ("parent" if c["age"] < 12 else "self")
    # All levels actually occur.
    assert {c["persona"]["anxiety"] for c in cases300} == set(ANXIETY)
    assert {c["persona"]["verbosity"] for c in cases300} == set(VERBOSITY)


# --------------------------------------------------------------------------- posterior


def test_posterior_arithmetic_on_a_two_condition_knowledge_base(tmp_path):
    # A has prevalence 3, B 1 -> priors 0.75 / 0.25. P(cough|A)=0.8, P(cough|B)=0.2;
    # P(fever|A)=0.5, B does not list fever -> background 0.01.
    # Observe cough present, fever absent:
    #   A: 0.75 * 0.8 * (1 - 0.5)  = 0.3
    #   B: 0.25 * 0.2 * (1 - 0.01) = 0.0495
    #   P(A | E) = 0.3 / 0.3495 = 0.858369...
    root = tmp_path / "tiny"
    (root / "conditions").mkdir(parents=True)
    shutil.copy(DATA_DIR / "evidences.yaml", root / "evidences.yaml")
    base = {"icd10": "J00", "urgency": "routine", "demographics": {"age": [0, 40, 100], "female": 0.5},
            "red_flags": [], "tests": ["vital_signs"], "antecedents": {}}
    conds = [dict(base, id="a", name="A", prevalence=3, symptoms={"cough": 0.8, "fever": 0.5}),
             dict(base, id="b", name="B", prevalence=1, symptoms={"cough": 0.2})]
    (root / "conditions" / "tiny.yaml").write_text(yaml.safe_dump({"system": "respiratory", "conditions": conds}))
    tiny = load_knowledge_base(root, min_conditions=2)
    post = posterior(tiny, ["cough"], ["fever"])
    assert post["a"] == pytest.approx(0.3 / 0.3495, rel=1e-9)
    assert sum(post.values()) == pytest.approx(1.0, abs=1e-12)
    # Same age and same sex ratio for both: demographics cancel.
    assert posterior(tiny, ["cough"], ["fever"], age=40, sex="male")["a"] == pytest.approx(0.3 / 0.3495, rel=1e-9)


def test_posterior_top1_for_a_textbook_case_of_every_condition(kb):
    for c in kb.conditions:
        sex = "female" if c.female >= 0.5 else "male"
        present = [e for e, p in c.likelihoods.items() if p >= 0.5 and kb.evidences[e].sex in (None, sex)]
        absent = [e for e in kb.evidences if e not in present and kb.evidences[e].sex in (None, sex)]
        post = posterior(kb, present, absent, age=c.age[1], sex=sex)
        assert sum(post.values()) == pytest.approx(1.0, abs=1e-9)
        assert max(post, key=post.get) == c.id, (c.id, sorted(post.items(), key=lambda kv: -kv[1])[:3])


def test_posterior_is_stable_with_every_evidence_present(kb):
    post = posterior(kb, list(kb.evidences), [], age=50, sex="female")
    vals = np.array(list(post.values()))
    assert np.isfinite(vals).all() and vals.sum() == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="unknown evidence id 'nope'"):
        posterior(kb, ["nope"])


def test_naive_bayes_accuracy_is_realistic(cases300):
    # Neither trivial nor impossible; on 1,000 cases (seed 0) we measured
    # top-1 0.909, top-3 0.986 (history + symptoms only, see the data card).
    acc = topk_accuracy(cases300)
    assert 0.4 <= acc["top1"] <= 0.95, acc
    assert acc["top3"] > acc["top1"]


def test_conditions_sharing_a_chief_complaint_are_confusable(kb, cases300):
    chest = [c for c in cases300 if c["chief_complaint"]["evidence"] == "chest_pain"]
    diagnoses = {c["diagnosis"]["id"] for c in chest}
    assert len(diagnoses) >= 5
    assert len({kb.condition(d).system for d in diagnoses}) >= 3
    # For many of them the runner-up keeps real probability mass...
    runner_up = [c["differential"][1]["p"] for c in chest]
    assert np.mean(np.array(runner_up) >= 0.05) >= 0.2
    # ...and a history-only model gets some of them wrong.
    assert any(c["rank_true"] > 1 for c in chest)


# --------------------------------------------------------------------------- files, determinism, CLI


def test_same_seed_same_bytes_and_prefix_stable(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    summary = generate_dataset(CasesConfig(n_cases=40, seed=7), a)
    generate_dataset(CasesConfig(n_cases=40, seed=7), b)
    generate_dataset(CasesConfig(n_cases=40, seed=8), c)
    assert (a / "cases.jsonl").read_bytes() == (b / "cases.jsonl").read_bytes()
    assert (a / "cases.jsonl").read_bytes() != (c / "cases.jsonl").read_bytes()
    lines = (a / "cases.jsonl").read_text().splitlines()
    assert len(lines) == summary["n_cases"] == 40
    assert [json.loads(x)["case_id"] for x in lines[:2]] == ["case_000000", "case_000001"]
    # Case i depends only on (seed, i).
    first = generate_cases(CasesConfig(n_cases=5, seed=7))
    assert [json.dumps(x) for x in first] == lines[:5]
    meta = json.loads((a / "dataset.json").read_text())
    assert meta["n_cases"] == 40 and sum(meta["counts"].values()) == 40
    assert sum(meta["condition_distribution"].values()) == 40
    assert case_rng(7, 3).random() == case_rng(7, 3).random()


def test_cli_synth_cases(tmp_path):
    from typer.testing import CliRunner

    from medkit.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["synth", "cases", "--out", str(out), "--n", "12", "--seed", "3", "--set", "top_k=3"])
    assert res.exit_code == 0, res.output
    assert "12 case(s)" in res.output
    rows = [json.loads(x) for x in (out / "cases.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(len(r["differential"]) == 3 for r in rows)
    bad = runner.invoke(app, ["synth", "cases", "--out", str(out), "--set", "no_such_knob=1"])
    assert bad.exit_code == 2 and "no_such_knob" in bad.output
