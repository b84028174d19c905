"""The doctor's action format: valid lines parse, everything else is a FormatError (never raises)."""

from __future__ import annotations

import pytest

from medkit.dialogue.actions import Action, FormatError, format_action, parse_action


def test_ask_exam_diagnosis_parse():
    assert parse_action("ASK: Do you have a cough?") == Action("ASK", "Do you have a cough?")
    assert parse_action("  EXAM:Chest X-ray \n") == Action("EXAM", "Chest X-ray")
    a = parse_action("DIAGNOSIS: Migraine; Tension-type headache; Subarachnoid haemorrhage | confidence: 0.7")
    assert a.kind == "DIAGNOSIS" and a.text == "Migraine" and a.confidence == 0.7
    assert a.differential == ("Migraine", "Tension-type headache", "Subarachnoid haemorrhage")
    b = parse_action("DIAGNOSIS: Influenza")
    assert b.differential == ("Influenza",) and b.confidence is None


def test_word_level_detokenised_spacing_parses():
    # a word-level tokeniser decodes with spaces around every punctuation mark
    a = parse_action("DIAGNOSIS : Herpes zoster ( shingles ) ; Cellulitis | confidence : 0 . 85")
    assert a.differential == ("Herpes zoster ( shingles )", "Cellulitis") and a.confidence == 0.85


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("   \n ", "empty"),
    ("ASK: cough?\nEXAM: ECG", "lines"),
    ("Do you have a cough?", "does not start"),
    ("ask: cough?", "does not start"),            # strict: upper-case keyword
    ("ASK: cough? EXAM: ECG", "several actions"),
    ("DIAGNOSIS: Flu | confidence: 1.5", "not in [0, 1]"),
    ("DIAGNOSIS: Flu | very sure", "after '|'"),
    ("DIAGNOSIS: ; ;", "names no condition"),
])
def test_malformed_is_a_format_error(text, reason):
    out = parse_action(text)
    assert isinstance(out, FormatError) and reason in out.reason


def test_non_string_does_not_raise():
    assert isinstance(parse_action(None), FormatError)


def test_format_round_trip():
    for a in (Action("ASK", "Any fever?"), Action("EXAM", "ECG"),
              Action("DIAGNOSIS", "A", ("A", "B"), 0.25), Action("DIAGNOSIS", "A", ("A",), None, ("fever", "cough")),
              Action("DIAGNOSIS", "A", ("A", "B"), 0.5, ("expiratory wheeze",))):
        assert parse_action(format_action(a)) == a


def test_diagnosis_rationale():
    a = parse_action("DIAGNOSIS: Influenza; COVID-19 | because: fever, cough and muscle aches | confidence: 0.6")
    assert a.differential == ("Influenza", "COVID-19") and a.confidence == 0.6
    assert a.rationale == ("fever", "cough", "muscle aches")
    for bad in ("DIAGNOSIS: Flu | because: fever | because: cough", "DIAGNOSIS: Flu | confidence: .5 | confidence: .6"):
        out = parse_action(bad)
        assert isinstance(out, FormatError) and "once each" in out.reason
