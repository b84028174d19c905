"""Expected information gain (hand values), question matching, persona effects, the LLM voice's guard."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medkit.dialogue.oracle import expected_gains
from medkit.dialogue.patient import (
    LITERACY_CONFUSION,
    LLMPatient,
    PersonaPatient,
    consistent,
    match_question,
    match_test,
    scrub,
)


def test_expected_gain_hand_values():
    p = np.array([0.5, 0.5])
    # an evidence that decides between two equally likely conditions gains log 2 nats
    assert expected_gains(p, np.array([[1.0], [0.0]]))[0] == pytest.approx(math.log(2))
    # one that both conditions share equally gains nothing
    assert expected_gains(p, np.array([[0.5], [0.5]]))[0] == pytest.approx(0.0, abs=1e-12)
    # P(yes) = .5*.8 + .5*.2 = .5; posterior after yes = (.8, .2): H = 0.5004; after no (.2, .8) same
    h = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    assert expected_gains(p, np.array([[0.8], [0.2]]))[0] == pytest.approx(math.log(2) - h)


def test_match_question(kb):
    q = kb.evidences["chest_pain"].question
    assert match_question(kb, q) == "chest_pain"
    assert match_question(kb, "ASK style: chest pain?".split(":")[1]) == "chest_pain"
    assert match_question(kb, "do you like football") is None
    assert match_question(kb, "Do you have a fever?") == "fever"              # 1 of 1 content words
    assert match_question(kb, "Any pain or pressure in your chest?") == "chest_pain"
    assert match_question(kb, "Do you have pain low in your eye red ?") is None   # 2 of 4 words at best
    male_only = next(e for e, ev in kb.evidences.items() if ev.sex == "male" and ev.type == "symptom")
    assert match_question(kb, kb.evidences[male_only].question, "female") is None
    assert match_test(kb, "chest x ray") == "chest_xray" and match_test(kb, "ECG") == "ecg"
    assert match_test(kb, "12-lead ECG") == "ecg" and match_test(kb, "an ECG please") is None


def test_low_literacy_patient_sometimes_does_not_understand_history_questions(cases, kb):
    c = cases[0]
    hist = [e for e, ev in kb.evidences.items() if ev.type == "history" and ev.sex in (None, c["sex"])]
    low = PersonaPatient({**c, "persona": {"health_literacy": "low"}}, kb)
    high = PersonaPatient({**c, "persona": {"health_literacy": "high"}}, kb)
    lost = [low.answer(kb.evidences[e].question).evidence is None for e in hist]
    assert all(high.answer(kb.evidences[e].question).evidence == e for e in hist)
    # seeded per (case, question): about LITERACY_CONFUSION of them, the same on every call
    assert abs(np.mean(lost) - LITERACY_CONFUSION) < 0.2
    assert lost == [low.answer(kb.evidences[e].question).evidence is None for e in hist]


def test_voiced_reply_must_open_with_the_fact():
    assert consistent("Yes, it hurts when I breathe.", True) and consistent("No, never.", False)
    assert not consistent("I'm sorry for your mistake, but I'm not here to help.", False)   # drifted: fallback
    assert not consistent("No. Yes.", True) and not consistent("Yes I do", False)


def test_scrub_whole_words_case_insensitive():
    assert scrub("I read it was MIGRAINE, migraines too", ["migraine"]) == "I read it was this problem, migraines too"


def test_llm_patient_keeps_the_fact_and_never_leaks(cases, kb):
    from medkit.lm import tiny_causal_lm

    model, tok = tiny_causal_lm()      # random weights: its words are noise, the fact must survive
    c = cases[1]
    p = LLMPatient(c, kb, (model, tok), max_new_tokens=8)
    present = c["evidences"]["symptom"][0]
    absent = next(e for e, ev in kb.evidences.items() if ev.type == "symptom" and e not in c["evidences"]["symptom"]
                  and ev.sex in (None, c["sex"]))
    r1, r2 = p.answer(kb.evidences[present].question), p.answer(kb.evidences[absent].question)
    assert (r1.evidence, r1.present) == (present, True) and (r2.evidence, r2.present) == (absent, False)
    assert p.stats["calls"] == 2
    base = PersonaPatient(c, kb).answer(kb.evidences[absent].question).text
    assert r2.text == base or consistent(r2.text, False)
    assert c["diagnosis"]["name"].lower() not in (r1.text + r2.text).lower()


def test_oracle_rationale_cites_only_elicited_facts(cases, kb):
    from medkit.dialogue.actions import parse_action
    from medkit.dialogue.oracle import OracleDoctor
    from medkit.dialogue.rollout import make_envs

    oracle = OracleDoctor(kb, rationale=3)
    cited = 0
    for env in make_envs(cases[:20], kb, max_turns=10):
        while not env.done:
            env.step(oracle.act(env))
        rec = env.record()
        final = parse_action([t for t in rec["transcript"] if t["role"] == "doctor"][-1]["text"])
        assert final.kind == "DIAGNOSIS" and len(final.rationale) <= 3
        cited += len(final.rationale)
        # the hallucination checker maps every cited fact to an evidence the dialogue established
        assert rec["hallucinations"] == [], rec["hallucinations"]
    assert cited >= 20                     # it does cite (most dialogues elicit several supporting facts)


def test_a_question_the_patient_did_not_understand_is_not_asked_again(realformat, tmp_path):
    """Genuine DDXPlus: a low-literacy persona does not understand some history questions (the
    same ones on every try). The oracle used to ask such a question again and again until the
    turn limit (ddxplus_test_0000018: 9 times 'traveled out of the country'); once asked it
    leaves the legal actions, so no question is asked twice."""
    import json

    from medkit.dialogue.evaluate import evaluate

    evaluate("oracle", realformat / "ddxplus", "test", output=tmp_path / "ev", n_cases=40, judge="none")
    rows = [json.loads(x) for x in (tmp_path / "ev" / "dialogues.jsonl").read_text().splitlines()]
    confused = 0
    for r in rows:
        asked = [t.get("question", t["text"]) for t in r["transcript"] if t.get("kind") == "ask"]
        assert len(asked) == len(set(asked)), r["case_id"]
        confused += sum("know what that means" in t["text"] for t in r["transcript"] if t["role"] == "patient")
    assert confused > 0   # the case this guards exists among these 40 rows
