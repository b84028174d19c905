"""Hallucinated facts: hand-written transcripts that must / must not be flagged; counted as agent errors."""

from __future__ import annotations

from medkit.dialogue.env import DialogueEnv
from medkit.dialogue.hallucination import find_hallucinations, match_fact, presupposed
from medkit.dialogue.patient import PersonaPatient
from medkit.metrics.dialogue import agent_errors, distinct_errors


def _opening(*facts):
    return {"role": "patient", "kind": "opening", "text": "I've come in because of a cough.", "facts": list(facts)}


def _ask(turn, text, evidence=None, present=None):
    return {"role": "doctor", "kind": "ask", "turn": turn, "text": text, "evidence": evidence, "present": present}


def test_presuppositions_are_found_plain_questions_are_not():
    assert presupposed("Since you have a fever, have you taken anything?") == ["you have a fever"]
    assert presupposed("How long have you had chest pain?") == ["chest pain"]
    assert presupposed("You mentioned vomiting, was there blood?") == ["vomiting"]
    for plain in ("Do you have a fever?", "Do you have pain with your periods?",
                  "Is the pain worse when you take a deep breath?"):
        assert presupposed(plain) == [], plain


def test_every_knowledge_base_question_is_a_plain_question(kb):
    # the oracle asks exactly these: it must never be flagged
    assert [q for q in (ev.question for ev in kb.evidences.values()) if q and presupposed(q)] == []


def test_fact_vocabulary(kb):
    assert match_fact(kb, "you have a fever")[0] == "fever"
    assert match_fact(kb, "chest pain") == ["chest_pain"]
    assert match_fact(kb, "expiratory wheeze") == ["wheeze_heard"]      # an exam finding, by its text
    assert match_fact(kb, "your football") == []                          # names nothing: not checkable


def test_transcript_that_must_be_flagged(kb):
    t = [
        _opening("cough"),
        _ask(1, "ASK: Do you have a fever?", "fever", False),
        {"role": "patient", "text": "No."},
        # fever was denied one turn ago -> "denied"; chest pain was never mentioned -> "unestablished"
        _ask(2, "ASK: Since you have a fever, have you taken paracetamol?", None, None),
        _ask(3, "ASK: How long have you had chest pain?", "chest_pain", True),
        # chest pain is established by turn 3's answer, so citing it now is fine; fever is not
        {"role": "doctor", "kind": "diagnosis", "turn": 4,
         "text": "DIAGNOSIS: Community-acquired pneumonia | confidence: 0.6 | because: cough; fever; chest pain"},
    ]
    found = find_hallucinations(t, kb, established=["cough"])
    assert [(h["turn"], h["evidence"], h["status"], h["where"]) for h in found] == [
        (2, "fever", "denied", "presupposition"),
        (3, "chest_pain", "unestablished", "presupposition"),
        (4, "fever", "denied", "rationale"),
    ]


def test_transcript_that_must_not_be_flagged(kb):
    t = [
        _opening("cough"),
        _ask(1, "ASK: Do you have a fever?", "fever", True),
        {"role": "patient", "text": "Yes, I feel hot."},
        _ask(2, "ASK: Since you have a fever, have you measured it?", None, None),    # affirmed at turn 1
        _ask(3, "ASK: When did your cough start?", None, None),                        # the chief complaint
        _ask(4, "ASK: Do you have pain with your periods?", "heavy_periods", False),   # a plain question
        {"role": "doctor", "kind": "exam", "turn": 5, "text": "EXAM: Respiratory examination",
         "test": "respiratory_exam", "findings": ["wheeze_heard"]},
        {"role": "doctor", "kind": "diagnosis", "turn": 6,
         "text": "DIAGNOSIS: Acute asthma | because: cough; fever; expiratory wheeze"},
    ]
    assert find_hallucinations(t, kb, established=["cough"]) == []
    # the same rationale before the exam revealed the wheeze is a hallucination
    early = t[:6] + [{**t[7], "turn": 5}]
    assert [h["evidence"] for h in find_hallucinations(early, kb, established=["cough"])] == ["wheeze_heard"]


def test_env_records_and_counts_hallucinated_facts(cases, kb):
    c = cases[0]
    absent = next(e for e in ("fever", "chest_pain", "cough", "headache")
                  if e in kb.evidences and e not in c["evidences"]["symptom"])
    env = DialogueEnv(c, PersonaPatient(c, kb), kb, max_turns=4)
    env.step(f"ASK: Since you have {kb.evidences[absent].say}, do you feel sick?")
    env.step("DIAGNOSIS: " + c["diagnosis"]["name"])
    rec = env.record()
    assert [(h["evidence"], h["status"]) for h in rec["hallucinations"]] == [(absent, "unestablished")]
    key = f"hallucinated_fact:{c['diagnosis']['id']}:{absent}"
    assert key in agent_errors(rec)
    d = distinct_errors([rec, rec])                    # the same error twice is one distinct error
    assert d["by_type"]["hallucinated_fact"] == 1 and key in d["errors"]
