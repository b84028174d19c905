"""Simulated patients: SAGE-style persona + case grounding, an LLM voice, and a generic control.

SAGE (arXiv 2510.11997) builds a simulated user from a top-down persona
(demographics, Big Five traits) and bottom-up knowledge. Here:

- :class:`PersonaPatient` (rule-based, the default and what tests use): the
  *case* decides every fact (an evidence is present iff the case lists it; the
  case knows every symptom / history item, as in DDXPlus), the *persona*
  decides the voice (verbosity, anxiety, health literacy). A question is mapped
  to one evidence of the knowledge base (:func:`match_question`); questions that
  map to nothing get "I'm not sure what you mean" and reveal nothing, so the
  patient never invents a symptom. Persona effects that change what the doctor
  learns: a patient with low health literacy does not understand questions about
  diagnosed conditions (history items) 40 % of the time (seeded per question),
  and a rambling patient volunteers a second symptom in the opening.
- :class:`LLMPatient`: the same grounded fact, re-voiced by a local causal LM
  (SmolLM2 by default) in the persona's style; falls back to the rule text when
  the LM reply is empty or contradicts the fact (a "no" fact needs a negation).
- :class:`GenericPatient` (the control): the same case facts without a persona
  (flat "Yes." / "No.", no misunderstanding, nothing volunteered), so a difference
  between the two simulators is the persona's doing.

A question (:attr:`medkit.synth.knowledge.KnowledgeBase.questions`) is named by its
short label (``chest pain``), its id or its text; a DDXPlus multi-choice question
("where is the pain?") is answered with every value present ("forehead, temple(L)").

Every reply passes :func:`scrub`, which removes the true diagnosis name (and its
parenthesised alias) so a patient never says it verbatim.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from .actions import norm

_STOP = {"do", "you", "have", "any", "a", "an", "the", "or", "your", "are", "is", "it", "been", "in", "of", "to",
         "when", "did", "does", "ever", "with", "that", "this", "for", "on", "at", "and", "than", "usual",
         "had", "has", "there", "what", "how", "i", "me", "my"}
NOT_UNDERSTOOD = "I'm not sure what you mean, doctor."
LITERACY_CONFUSION = 0.4


@dataclass(frozen=True)
class Reply:
    """A patient turn: the text the doctor sees and the facts it carries.

    ``evidence`` is the question id answered (None: no information), ``present`` whether any of
    its evidences is present, ``facts`` every evidence the answer settles (``{id: present}``;
    one for a yes/no question, each value of a DDXPlus multi-choice question)."""

    text: str
    evidence: str | None = None
    present: bool | None = None
    facts: dict = field(default_factory=dict)


def _content(s: str) -> set[str]:
    return {w for w in norm(s).split() if w not in _STOP}


def _index(kb) -> dict:
    key = ("dialogue_question_index",)
    if key not in kb._cache:
        exact, words = {}, {}
        for eid, ev in kb.evidences.items():
            if ev.type not in ("symptom", "history"):
                continue
            exact[norm(ev.question)] = eid
            exact[norm(eid)] = eid
            words[eid] = _content(ev.question) | _content(eid.replace("_", " "))
        for qid, q in kb.questions.items():   # a question's label / id / text names its first evidence
            for k in (q.label, qid, q.text):
                exact.setdefault(norm(k), q.evidences[0])
        tests = {}
        for tid, t in kb.tests.items():
            tests[norm(tid)] = tid
            tests[norm(t.name)] = tid
        kb._cache[key] = (exact, words, tests)
    return kb._cache[key]


def match_question(kb, question: str, sex: str | None = None, min_coverage: float = 0.6) -> str | None:
    """The evidence id (symptom / history) a question asks about, or None.

    Exact match on the knowledge base's lay question (or the evidence id), else the
    evidence covering the largest share of the question's content words (ties: the
    larger Jaccard overlap, i.e. the more specific evidence), if that share is at
    least ``min_coverage``. "Do you have a fever?" -> fever (1/1 words);
    "Do you like football?" -> None ("like football": 1 of 2 words at best).
    Evidences of the other sex never match.
    """
    exact, words, _ = _index(kb)
    eid = exact.get(norm(question))
    if eid is None:
        qw = _content(question)
        best, score = None, (0.0, 0.0)
        for e, w in words.items():
            inter = len(qw & w)
            if not inter:
                continue
            sc = (inter / len(qw), inter / len(qw | w))
            if sc > score:
                best, score = e, sc
        eid = best if score[0] >= min_coverage else None
    if eid is not None and sex is not None and kb.evidences[eid].sex not in (None, sex):
        return None
    return eid


def match_ask(kb, text: str, sex: str | None = None) -> str | None:
    """The question id an ``ASK:`` names: its label, id or text exactly (any case / punctuation),
    else the question of :func:`match_question`'s evidence; None when nothing matches."""
    eid = match_question(kb, text, sex)
    return None if eid is None else kb.question_of(eid)


def match_test(kb, text: str) -> str | None:
    """The test id named by ``text`` (id or name, any case / punctuation), or None."""
    _, _, tests = _index(kb)
    return tests.get(norm(text))


def diagnosis_names(name: str, cond_id: str | None = None) -> list[str]:
    """Surface forms of a diagnosis to keep out of patient speech: name, name without its
    parenthesised part, the parenthesised alias, and the id with spaces."""
    out = {name.strip()}
    m = re.match(r"^(.*?)\s*\((.*?)\)\s*$", name)
    if m:
        out |= {m.group(1).strip(), m.group(2).strip()}
    if cond_id:
        out.add(cond_id.replace("_", " "))
    return sorted((s for s in out if len(s) >= 3), key=len, reverse=True)


def scrub(text: str, names: list[str], replacement: str = "this problem") -> str:
    """``text`` with every name in ``names`` replaced (case-insensitive, whole words)."""
    for n in names:
        text = re.sub(rf"(?<!\w){re.escape(n)}(?!\w)", replacement, text, flags=re.I)
    return text


def _rng(case_id: str, key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{case_id}|{key}".encode()))


class PersonaPatient:
    """Persona-voiced, case-grounded rule-based patient (see the module docstring)."""

    kind = "persona"

    def __init__(self, case: dict, kb):
        self.case, self.kb = case, kb
        self.persona = case.get("persona") or {}
        self.present = {e for v in case["evidences"].values() for e in v}
        self.names = diagnosis_names(case["diagnosis"]["name"], case["diagnosis"]["id"])

    # --- facts
    def fact(self, evidence: str) -> bool:
        return evidence in self.present

    # --- voice
    def opening(self) -> str:
        """The presenting complaint; sets ``volunteered`` (evidence ids stated besides the chief complaint)."""
        cc = self.case["chief_complaint"]["text"]
        text = f"I've come in because of {cc}."
        self.volunteered = []
        if self.persona.get("verbosity") == "rambling":
            extra = [e for e in self.case["evidences"].get("symptom", [])
                     if e != self.case["chief_complaint"]["evidence"]]
            if extra:
                text += f" I've also had {self.kb.evidences[extra[0]].say}, if that matters."
                self.volunteered = [extra[0]]
        if self.persona.get("anxiety") == "high":
            text += " I'm really worried it's something serious."
        return scrub(text, self.names)

    def answer(self, question: str) -> Reply:
        qid = match_ask(self.kb, question, self.case.get("sex"))
        if qid is None:
            return Reply(NOT_UNDERSTOOD)
        q = self.kb.questions[qid]
        if (q.type == "history" and self.persona.get("health_literacy") == "low"
                and _rng(self.case["case_id"], qid).random() < LITERACY_CONFUSION):
            return Reply("I don't really know what that means, sorry.")
        sex = self.case.get("sex")
        facts = {e: self.fact(e) for e in q.evidences if self.kb.evidences[e].sex in (None, sex)}
        yes = [e for e, v in facts.items() if v]
        if len(q.evidences) == 1:
            text = self._voice(self.kb.evidences[q.evidences[0]], bool(yes))
        else:
            text = self._values([self.kb.evidences[e].value for e in yes if self.kb.evidences[e].value != "(any)"])
        return Reply(scrub(text, self.names), qid, bool(yes), facts)

    def _values(self, values: list[str]) -> str:
        """Answer to a multi-choice question (DDXPlus): the values present, or no."""
        if not values:
            return {"terse": "No.", "normal": "No, none.", "rambling": "No, nothing like that at all."}.get(
                self.persona.get("verbosity", "normal"), "No.")
        listed = ", ".join(values)
        return {"terse": f"{listed}.", "rambling": f"Yes, {listed}, I think that's all."}.get(
            self.persona.get("verbosity", "normal"), f"Yes: {listed}.")

    def _voice(self, ev, yes: bool) -> str:
        verb = self.persona.get("verbosity", "normal")
        if yes:
            core = {"terse": "Yes.", "normal": "Yes, I have.", "rambling": "Yes, I have, now that you ask."}[verb]
            if ev.say and verb != "terse":
                core = f"Yes, {ev.say}." if verb == "normal" else f"Yes, {ev.say}, it's been bothering me a lot."
        else:
            core = {"terse": "No.", "normal": "No, I don't think so.",
                    "rambling": "No, not that I've noticed, and I would have noticed."}[verb]
        if self.persona.get("anxiety") == "high" and yes:
            core += " Is that bad?"
        return core


class GenericPatient(PersonaPatient):
    """Control simulator (SAGE's "generic" user): the same case facts, no persona.

    It answers every question from the case (as :class:`PersonaPatient` does) in a flat
    voice ("Yes." / "No." / the values), never misunderstands, never volunteers anything
    beyond the chief complaint and never voices worry: what is left is exactly the persona's
    contribution. (It used to answer from the textbook picture of the condition, which made
    part of the errors it found its own.)"""

    kind = "generic"

    def __init__(self, case: dict, kb):
        super().__init__({**case, "persona": {}}, kb)

    def opening(self) -> str:
        self.volunteered = []
        return scrub(f"I've come in because of {self.case['chief_complaint']['text']}.", self.names)

    def _voice(self, ev, yes: bool) -> str:
        return "Yes." if yes else "No."

    def _values(self, values: list[str]) -> str:
        return f"{', '.join(values)}." if values else "No."


_YES_START = re.compile(r"^\W*(yes|yeah|yep|i do|i have|i've|i am|sure)\b", re.I)
_NO_START = re.compile(r"^\W*(no|nope|not|never|i don't|i do not|i haven't|i have not)\b", re.I)


def consistent(text: str, present: bool) -> bool:
    """Does a voiced reply open with the fact's polarity ("Yes..." for present, "No..." for absent)?"""
    return bool((_YES_START if present else _NO_START).match(text)) and not (
        (_NO_START if present else _YES_START).match(text))


class LLMPatient(PersonaPatient):
    """The grounded fact of :class:`PersonaPatient`, said by a local causal LM in the persona's voice.

    ``lm`` is ``(model, tokenizer)``; greedy decoding. The rule-based text is the
    fallback when the LM's reply does not open with the fact's polarity ("Yes" /
    "No", :func:`consistent`): a small model drifts, and a reply that does not say
    the fact would make the patient unreliable. At most two sentences are kept;
    every reply is scrubbed. ``stats`` counts calls and fallbacks.
    """

    kind = "llm"

    def __init__(self, case: dict, kb, lm, max_new_tokens: int = 40):
        super().__init__(case, kb)
        self.model, self.tok = lm
        self.max_new_tokens = max_new_tokens
        self.stats = {"calls": 0, "fallbacks": 0}

    def answer(self, question: str) -> Reply:
        base = super().answer(question)
        if base.evidence is None:
            return base
        from ..lm.generate import chat_prompt, generate

        style = self.persona.get("speaking_style", "plain")
        system = (f"You are a {self.case.get('age')}-year-old {self.case.get('sex')} patient ({style}). "
                  "Answer the doctor in one or two sentences. Say only the fact given; add no new symptoms.")
        user = (f"Doctor asks: {question}\nThe true answer is: {base.text}\n"
                f"Reply in your own words, starting with {'Yes' if base.present else 'No'}.")
        self.stats["calls"] += 1
        out = generate(self.model, self.tok, [chat_prompt(self.tok, user, system)], do_sample=False,
                       max_new_tokens=self.max_new_tokens).texts[0].strip().split("\n")[0]
        out = " ".join(re.split(r"(?<=[.!?])\s+", out)[:2]).strip()
        if not out or not consistent(out, bool(base.present)):
            self.stats["fallbacks"] += 1
            return base
        return Reply(scrub(out, self.names), base.evidence, base.present, base.facts)


PATIENTS = {"persona": PersonaPatient, "generic": GenericPatient}
