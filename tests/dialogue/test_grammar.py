"""The grammar of legal doctor actions: what it allows, how it tokenises, and a doctor that cannot err."""

from __future__ import annotations

import pytest

from medkit.dialogue.env import DialogueEnv
from medkit.dialogue.grammar import ActionGrammar
from medkit.dialogue.patient import PersonaPatient


@pytest.fixture(scope="module")
def tok(kb):
    from medkit.dialogue.policy import build_vocab, kb_texts, word_tokenizer

    return word_tokenizer(build_vocab(kb_texts(kb)))


def _walk(g, env, text):
    """Feed the tokens of ``text`` through a fresh constraint; returns the constraint (raises if illegal)."""
    c = g.constraint(env)
    for t in g.encode(text):
        assert t in c.allowed(), text
        c.advance(t)
    return c


def test_every_legal_action_round_trips_and_illegal_ones_are_refused(kb, cases, tok):
    g = ActionGrammar(kb, tok)
    env = DialogueEnv(cases[0], PersonaPatient(cases[0], kb), kb, max_turns=5)
    cond = kb.conditions
    for text in ("ASK: fever", f"EXAM: {next(iter(kb.tests.values())).name}",
                 f"DIAGNOSIS: {cond[0].name}; {cond[1].name}; {cond[2].name}", f"DIAGNOSIS: {cond[5].name}"):
        c = _walk(g, env, text)
        assert c.done and c.text() == text and g.canonical(text) == text
    # canonical text: ids and any case/punctuation name the same item; confidence and rationale dropped
    assert g.canonical(f"DIAGNOSIS: {cond[0].id} | confidence: 0.4 | because: fever") == f"DIAGNOSIS: {cond[0].name}"
    for bad in ("ASK: do you like football", "DIAGNOSIS: Acute atraneous anginosis", "EXAM: tarot reading", "hello"):
        with pytest.raises(ValueError):
            g.encode(bad)


def test_legality_follows_the_episode(kb, cases, tok):
    g = ActionGrammar(kb, tok)
    c = cases[1]
    env = DialogueEnv(c, PersonaPatient(c, kb), kb, max_turns=3)
    cc = kb.question_of(c["chief_complaint"]["evidence"])
    avail = g.available(env)
    assert g.ask_items[cc] not in avail                               # the complaint is known already
    q = next(q for q in kb.questions.values() if q.id != cc and q.sex is None)
    env.step(f"ASK: {q.label}")
    assert g.ask_items[q.id] not in g.available(env)                  # asked: never again
    t = next(iter(kb.tests))
    env.step(f"EXAM: {kb.tests[t].name}")
    last = g.available(env)                                           # turn 3 of 3: only a diagnosis
    assert last == set(g.cond_items)
    other = "female" if c["sex"] == "male" else "male"
    sexed = [q for q in kb.questions.values() if q.sex == other]
    env2 = DialogueEnv(c, PersonaPatient(c, kb), kb, max_turns=5)
    assert sexed and not any(g.ask_items[q.id] in g.available(env2) for q in sexed)


def test_a_differential_never_repeats_a_condition(kb, cases, tok):
    g = ActionGrammar(kb, tok)
    env = DialogueEnv(cases[2], PersonaPatient(cases[2], kb), kb, max_turns=5)
    c = g.constraint(env)
    for t in g.encode(f"DIAGNOSIS: {kb.conditions[3].name}")[:-1]:
        c.advance(t)
    refused = False
    for t in g.next.sequences[3]:                    # "; <the same name>" again
        if t not in c.allowed():
            refused = True
            break
        c.advance(t)
    assert refused or g.eos not in c.allowed()
    # a different second name is fine, and a third, then only the end
    c = g.constraint(env)
    for t in g.encode(f"DIAGNOSIS: {kb.conditions[3].name}; {kb.conditions[4].name}; {kb.conditions[5].name}"):
        assert t in c.allowed()
        c.advance(t)
    assert c.done and c.text().count(";") == 2


def test_an_untrained_lm_under_the_grammar_makes_no_format_errors_and_invents_nothing(kb, cases, tok):
    from medkit.dialogue.policy import ConstrainedDoctor
    from medkit.dialogue.rollout import make_envs, run_episodes
    from medkit.lm import tiny_causal_lm

    model, tok2 = tiny_causal_lm(tok, layers=1, hidden=32, heads=2, seed=0)
    recs = run_episodes(make_envs(cases[:8], kb, max_turns=4), ConstrainedDoctor(model, tok2), batch_size=3)
    assert all(r["format_errors"] == 0 and r["unknown_tests"] == 0 for r in recs)
    assert all(r["diagnosed"] and r["predicted"] and None not in r["predicted"] for r in recs)
    assert all(len(set(r["predicted"])) == len(r["predicted"]) <= 3 for r in recs)
    asked = [[t["evidence"] for t in r["transcript"] if t.get("kind") == "ask"] for r in recs]
    assert all(len(a) == len(set(a)) and None not in a for a in asked)  # every question understood, none twice
