"""`medkit dialogue chat`: a person plays the patient or the doctor in the terminal.

- ``--role doctor``: you type actions (``ASK: ...``, ``EXAM: ...``, ``DIAGNOSIS: ...``);
  the simulated persona patient of a held-out case answers. At the end the true
  diagnosis and the episode's scores are shown.
- ``--role patient``: the doctor (the oracle, or a trained stage folder) asks; you
  answer in your own words. For the episode's bookkeeping (the oracle's posterior,
  information gain) answers are read as yes / no / unknown (:func:`read_yes_no`).

Input and output go through ``ask`` / ``say`` callables, so tests drive it with a
script and the CLI with ``typer.prompt`` / ``typer.echo``.
"""

from __future__ import annotations

import re

from .patient import Reply, match_ask, scrub

_YES = re.compile(r"^\s*(y|yes|yeah|yep|i do|i have|sure|correct|right)\b", re.I)
_NO = re.compile(r"^\s*(n|no|nope|never|not really|i don't|i do not|i haven't)\b", re.I)


def read_yes_no(text: str) -> bool | None:
    """``True`` for a yes, ``False`` for a no, ``None`` otherwise (then nothing is recorded)."""
    if _NO.match(text):
        return False
    if _YES.match(text):
        return True
    return None


class HumanPatient:
    """A person answering as the patient of ``case`` (they are shown the case first)."""

    kind = "human"

    def __init__(self, case: dict, kb, ask, say):
        self.case, self.kb, self.ask, self.say = case, kb, ask, say
        self.names: list[str] = []   # a person may say the diagnosis; nothing is filtered
        self.facts: dict[str, bool] = {}

    def fact(self, e: str) -> bool:
        return self.facts.get(e, e in {x for v in self.case["evidences"].values() for x in v})

    def opening(self) -> str:
        return self.ask("you (opening complaint)")

    def answer(self, question: str) -> Reply:
        self.say(f"doctor: {question}")
        text = self.ask("you")
        qid = match_ask(self.kb, question, self.case.get("sex"))
        yn = read_yes_no(text)
        if qid is None or yn is None:
            return Reply(text)
        # a yes / no settles a yes/no question; for a multi-choice one only a "no" says which values
        evs = self.kb.questions[qid].evidences
        facts = {e: yn for e in evs} if len(evs) == 1 or not yn else {}
        self.facts.update(facts)
        return Reply(text, qid, yn, facts)


def chat(*, role: str, case: dict, kb, ask, say, doctor=None, max_turns: int = 10) -> dict:
    """Run one chat episode; returns the episode record."""
    from .env import DialogueEnv
    from .patient import PersonaPatient

    if role == "doctor":
        env = DialogueEnv(case, PersonaPatient(case, kb), kb, max_turns=max_turns)
        say(f"patient: {env.intro} {env.transcript[0]['text']}")
        say("Reply with ASK: <question>, EXAM: <test> or DIAGNOSIS: <name>; <second> | confidence: <0-1>.")
        while not env.done:
            res = env.step(ask("doctor"))
            say(f"{'patient' if res.info['kind'] == 'ask' else 'system'}: {res.observation}")
    elif role == "patient":
        persona = case.get("persona", {})
        say(f"You are a {case['age']}-year-old {case['sex']} ({persona.get('speaking_style', '')}).")
        say(f"What you have: {', '.join(kb.evidences[e].say or kb.evidences[e].question for e in case['evidences']['symptom'])}."
            f" History: {', '.join(case['evidences']['history']) or 'nothing notable'}. Answer yes or no, in your words.")
        env = DialogueEnv(case, HumanPatient(case, kb, ask, say), kb, max_turns=max_turns)
        while not env.done:
            action = doctor.act(env)
            res = env.step(action)
            if res.info["kind"] != "ask":
                say(f"doctor: {action}")
                if res.info["kind"] != "diagnosis":
                    say(f"system: {res.observation}")
    else:
        raise ValueError(f"role must be doctor or patient, got {role!r}")
    rec = env.record()
    say(f"true diagnosis: {scrub(case['diagnosis']['name'], [])}; doctor said: {rec['differential'] or 'nothing'}; "
        f"correct: {rec['success']}; turns: {rec['turns']}; format errors: {rec['format_errors']}")
    return rec
