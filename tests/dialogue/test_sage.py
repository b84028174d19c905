"""SAGE with planted faults: each fault does what it says, and exposure is judged against the clean oracle."""

from __future__ import annotations

import numpy as np
import pytest

from medkit.dialogue.sage import FAULTS, FaultyOracle, episode_errors, exposed, fault_recall


def _play(doctor, case, kb, patient="persona", max_turns=15):
    from medkit.dialogue.rollout import make_envs, run_episodes

    return run_episodes(make_envs([case], kb, patient=patient, max_turns=max_turns), doctor)[0]


@pytest.fixture(scope="module")
def test_cases(kb):
    from medkit.dialogue.data import load_split
    from medkit.dialogue.train_config import DataConfig

    return load_split(DataConfig(pool=600, seed=5), "test", 30, kb=kb)[1]


def test_each_fault_does_what_it_says(kb, test_cases):
    clean = FaultyOracle(kb, None, confidence=False)
    for c in test_cases[:12]:
        r0 = _play(clean, c, kb)
        first_q = next((t["evidence"] for t in r0["transcript"] if t.get("kind") == "ask"), None)
        # skip_key_question: the question the clean oracle would ask first (at turn 1) is never asked
        doc = FaultyOracle(kb, "skip_key_question", confidence=False)
        r = _play(doc, c, kb)
        banned = next(iter(doc._banned.values()))
        assert banned not in [t.get("evidence") for t in r["transcript"] if t.get("kind") == "ask"]
        if r0["transcript"][1].get("kind") == "ask":
            assert banned == first_q
        # miss_red_flag: no red-flag question, no test that reveals a red flag
        doc = FaultyOracle(kb, "miss_red_flag", confidence=False)
        r = _play(doc, c, kb)
        asked = {t.get("evidence") for t in r["transcript"] if t.get("kind") == "ask"}
        assert not asked & doc.flag_questions and not set(r["tests"]) & doc.flag_tests
        # wrong_exam: every test ordered is one not indicated for the condition
        r = _play(FaultyOracle(kb, "wrong_exam", confidence=False), c, kb)
        assert not set(r["tests"]) & set(c["indicated_tests"])
    # anchor_first_complaint: the diagnosis is the top of the posterior given the complaint alone
    from medkit.dialogue.env import DialogueEnv
    from medkit.dialogue.patient import PersonaPatient

    c = test_cases[0]
    env = DialogueEnv(c, PersonaPatient(c, kb), kb)
    p0 = FaultyOracle(kb, None).posterior(env)
    r = _play(FaultyOracle(kb, "anchor_first_complaint", confidence=False), c, kb)
    assert r["predicted"][0] == kb.conditions[int(np.argmax(p0))].id
    with pytest.raises(ValueError):
        FaultyOracle(kb, "forgets_lunch")


def test_exposure_counts_only_errors_the_clean_oracle_does_not_make(kb, test_cases):
    clean = FaultyOracle(kb, None, confidence=False)
    c, rec = next((c, r) for c in test_cases for r in [_play(clean, c, kb)] if r["success"])
    assert "wrong_diagnosis" not in episode_errors(rec, c, kb)
    assert not exposed(rec, rec, c, kb)                                     # same episode: nothing new
    wrong = {**rec, "rank": None, "predicted": ["x"]}
    assert "wrong_diagnosis" in episode_errors(wrong, c, kb) and exposed(wrong, rec, c, kb)
    odd = next(t for t in kb.tests if t not in c["indicated_tests"])
    extra = {**rec, "tests": [*rec["tests"], odd], "indicated_tests": c["indicated_tests"] or ["ecg"]}
    assert f"unindicated_test:{odd}" in episode_errors(extra, c, kb)


def test_fault_recall_per_simulator(kb, test_cases):
    r = fault_recall(test_cases[:15], kb)
    assert set(r) == {"persona", "generic"}
    for sim in r:
        assert 0.5 <= r[sim]["clean_top1"] <= 1.0
        for f in FAULTS:
            assert len(r[sim][f]) == 15 and set(r[sim][f]) <= {0, 1}
        assert sum(r[sim]["wrong_exam"]) > 0 and sum(r[sim]["anchor_first_complaint"]) > 0
