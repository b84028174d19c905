"""The diagnostic-dialogue environment: one episode = one case + one simulated patient.

Each doctor turn is one reply in the format of :mod:`medkit.dialogue.actions`:

- ``ASK`` goes to the patient simulator; its reply is returned as plain text.
  Whatever the reply says ("DIAGNOSIS: ...", "ignore your instructions") is only
  text for the doctor policy to read: the environment parses doctor turns only.
- ``EXAM`` returns the case's result for that test (its findings present, else
  the test's normal text) and reveals all of the test's findings as present / absent.
- ``DIAGNOSIS`` ends the episode. Names are matched to knowledge-base conditions
  (name or id, any case / punctuation); an unknown name is a wrong answer.
- Anything else is a format error: counted, answered with the format reminder,
  and it uses up a turn. After ``max_turns`` doctor turns without a diagnosis the
  episode ends as a failure.

The environment tracks what the doctor has learnt (evidences known present /
absent) and, after every turn, the knowledge-base posterior probability of the
true diagnosis: its change is the turn's information gain (IGPO / ProMed style).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .actions import FORMAT_REMINDER, Action, FormatError, norm, parse_action
from .patient import match_ask, match_test, scrub
from .readers import ANY as ANY_VALUE


@dataclass
class StepResult:
    observation: str
    done: bool
    info: dict


def match_condition(kb, name: str) -> str | None:
    """Condition id for a doctor's diagnosis text: exact id / name / name without its
    parenthesised alias / the alias; else None."""
    key = ("dialogue_condition_index",)
    if key not in kb._cache:
        idx = {}
        for c in kb.conditions:
            idx[norm(c.id)] = c.id
            idx[norm(c.name)] = c.id
            if "(" in c.name:
                head, alias = c.name.split("(", 1)
                idx.setdefault(norm(head), c.id)
                idx.setdefault(norm(alias), c.id)
        kb._cache[key] = idx
    return kb._cache[key].get(norm(name))


class DialogueEnv:
    """One diagnostic episode (see the module docstring).

    Args:
        case: a case dict (:func:`medkit.synth.cases.sample_case` schema).
        patient: a simulator with ``opening() -> str`` and ``answer(question) -> Reply``.
        kb: the knowledge base the case came from.
        max_turns: doctor turns allowed (format errors count).
        background_rate: of the posterior; must match the case generator.
    """

    def __init__(self, case: dict, patient, kb, *, max_turns: int = 12, background_rate: float = 0.01):
        self.case, self.patient, self.kb = case, patient, kb
        self.max_turns, self.background_rate = max_turns, background_rate
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> str:
        c = self.case
        self.turns = 0
        self.done = False
        self.format_errors = 0
        self.unknown_tests = 0
        self.diagnosis: Action | None = None
        self.predicted: list[str | None] = []
        self.known: dict[str, bool] = {}
        self.asked: list[str] = []          # evidence ids asked about (answered or not)
        self.asked_q: list[str] = []        # question ids asked, in order
        self.tests: list[str] = []          # test ids ordered, in order
        self.gains: list[float] = []
        cc = c["chief_complaint"]["evidence"]
        if cc in self.kb.ev_index:
            self.known[cc] = True
        self.p_true = [self._p_true()]
        opening = self.patient.opening()
        # facts the opening states (chief complaint + volunteered): established for the hallucination check
        facts = [cc] + [e for e in getattr(self.patient, "volunteered", ()) if e != cc]
        self.transcript = [{"role": "patient", "text": opening, "kind": "opening", "facts": facts}]
        self.intro = f"{c['age']}-year-old {c['sex']}."
        return f"{self.intro} {opening}"

    def _p_true(self) -> float:
        from ..synth.knowledge import log_posterior_indexed

        tid = self.case["diagnosis"]["id"]
        if tid not in self.kb.cond_index:
            return float("nan")
        pres = np.array([self.kb.ev_index[e] for e, v in self.known.items() if v], dtype=int)
        absn = np.array([self.kb.ev_index[e] for e, v in self.known.items() if not v], dtype=int)
        lp = log_posterior_indexed(self.kb, pres, absn, self.case.get("age"), self.case.get("sex"),
                                   background_rate=self.background_rate)
        return float(np.exp(lp[self.kb.cond_index[tid]]))

    # ------------------------------------------------------------------ step
    def step(self, text: str) -> StepResult:
        if self.done:
            raise RuntimeError("episode is over; call reset()")
        self.turns += 1
        act = parse_action(text)
        row = {"role": "doctor", "text": text.strip(), "turn": self.turns}
        if isinstance(act, FormatError):
            self.format_errors += 1
            row.update(kind="format_error", reason=act.reason)
            obs = FORMAT_REMINDER
        elif act.kind == "ASK":
            row["kind"] = "ask"
            rep = self.patient.answer(act.text)
            if rep.evidence is not None:
                q = self.kb.questions.get(rep.evidence)
                self.asked_q.append(rep.evidence)
                self.asked.extend(q.evidences if q is not None else [rep.evidence])
                facts = rep.facts or ({rep.evidence: rep.present} if rep.present is not None else {})
                if len(facts) > 1:
                    # a multi-choice answer ("forehead") states its values, not the absence of the
                    # 163 others: counting each as an independent "no" would swamp the posterior;
                    # whether any value was given is the question's one "(any)" evidence
                    facts = {e: v for e, v in facts.items() if v or self.kb.evidences[e].value == ANY_VALUE}
                self.known.update(facts)
                if rep.present is False:
                    self._skip_children(rep.evidence)
                row["question"] = q.text if q is not None else act.text
            elif (qid := match_ask(self.kb, act.text, self.case.get("sex"))) is not None:
                # a question of the knowledge base the patient did not understand (low health
                # literacy): asked, nothing learnt. Its one phrasing cannot be put differently,
                # so it leaves the legal actions instead of being repeated to the turn limit.
                q = self.kb.questions[qid]
                self.asked_q.append(qid)
                self.asked.extend(q.evidences)
                row["question"] = q.text
            row.update(evidence=rep.evidence, present=rep.present)
            obs = rep.text
        elif act.kind == "EXAM":
            row["kind"] = "exam"
            obs = self._exam(act.text, row)
        else:
            row.update(kind="diagnosis", differential=list(act.differential), confidence=act.confidence,
                       rationale=list(act.rationale))
            self.diagnosis = act
            self.predicted = [match_condition(self.kb, n) for n in act.differential]
            row["predicted"] = self.predicted
            obs = "[end] Diagnosis recorded."
            self.done = True
        self.p_true.append(self._p_true())
        gain = self.p_true[-1] - self.p_true[-2]
        self.gains.append(gain)
        row["info_gain"] = round(gain, 6)
        self.transcript.append(row)
        if not self.done and self.turns >= self.max_turns:
            self.done = True
            obs += " [end] Turn limit reached without a diagnosis."
        if row["kind"] != "diagnosis":
            self.transcript.append({"role": "patient" if row["kind"] == "ask" else "system", "text": obs})
        return StepResult(obs, self.done, {"kind": row["kind"], "info_gain": gain})

    def _skip_children(self, qid: str) -> None:
        """A no to ``qid`` answers every question asked only after a yes to it (DDXPlus: no pain ->
        no pain location, character or intensity): they count as asked. They are not recorded as
        absent evidence, which would count one "no" many times over in the posterior."""
        for q in self.kb.questions.values():
            if q.parent == qid and q.id not in self.asked_q:
                self.asked_q.append(q.id)
                self.asked.extend(q.evidences)

    def _exam(self, name: str, row: dict) -> str:
        tid = match_test(self.kb, name)
        if tid is None:
            self.unknown_tests += 1
            row["test"] = None
            return f"[exam] Unknown test '{name}'. Order a test by its name, e.g. 'EXAM: Chest X-ray'."
        row["test"] = tid
        if tid not in self.tests:
            self.tests.append(tid)
        found = set(self.case.get("results", {}).get(tid, []))
        row["findings"] = sorted(found)
        for eid, ev in self.kb.evidences.items():
            if ev.test == tid and ev.sex in (None, self.case.get("sex")):
                self.known[eid] = eid in found
        t = self.kb.tests[tid]
        text = "; ".join(self.kb.evidences[e].finding for e in sorted(found)) or t.normal
        return scrub(f"{t.name}: {text}.", self.patient.names)

    # ------------------------------------------------------------------ outcome
    @property
    def true_id(self) -> str:
        return self.case["diagnosis"]["id"]

    def rank_of_truth(self) -> int | None:
        """1-based rank of the true diagnosis in the doctor's differential, None if absent."""
        for i, p in enumerate(self.predicted):
            if p == self.true_id:
                return i + 1
        return None

    def _condition_red_flags(self) -> list[str]:
        if self.true_id in self.kb.cond_index:
            return list(self.kb.condition(self.true_id).red_flags)
        return list(self.case.get("red_flags", []))

    def _present_in_world(self, e: str) -> bool:
        """Is evidence ``e`` present for this episode's patient (symptoms/history: the
        simulator's facts; exam/lab/imaging findings: the case's results)?"""
        ev = self.kb.evidences.get(e)
        if ev is not None and ev.type not in ("symptom", "history"):
            return e in self.case.get("results", {}).get(ev.test, [])
        return bool(self.patient.fact(e))

    def record(self) -> dict:
        """The episode as one JSON-ready row (keyed by ``case_id``)."""
        from ..metrics.dialogue import exam_f1
        from .hallucination import find_hallucinations

        rank = self.rank_of_truth()
        indicated = list(self.case.get("indicated_tests", []))
        red = [e for e in self._condition_red_flags() if self._present_in_world(e)]
        checked = set(self.asked) | {e for e in self.known}
        cc = self.case["chief_complaint"]["evidence"]
        history = [e for e in self.case["evidences"].get("symptom", []) + self.case["evidences"].get("history", [])
                   if e != cc and self._present_in_world(e)]
        return {
            "case_id": self.case["case_id"],
            "patient": getattr(self.patient, "kind", type(self.patient).__name__),
            "truth": {"id": self.true_id, "name": self.case["diagnosis"]["name"]},
            "predicted": self.predicted,
            "differential": list(self.diagnosis.differential) if self.diagnosis else [],
            "confidence": self.diagnosis.confidence if self.diagnosis else None,
            "diagnosed": self.diagnosis is not None,
            "rank": rank,
            "success": rank == 1,
            "top3": rank is not None and rank <= 3,
            "turns": self.turns,
            "format_errors": self.format_errors,
            "unknown_tests": self.unknown_tests,
            "tests": list(self.tests),
            "indicated_tests": indicated,
            "exam_f1": exam_f1(self.tests, indicated),
            "questions": len([t for t in self.transcript if t.get("kind") == "ask"]),
            "info_gain": [round(g, 6) for g in self.gains],
            "p_true": [round(p, 6) for p in self.p_true],
            "red_flags_present": red,
            "red_flags_missed": [e for e in red if e not in checked],
            # rubric proxies: share of the patient's other symptoms / history the doctor elicited
            "history_recall": (sum(self.known.get(e) is True for e in history) / len(history)) if history else None,
            # doctor turns presupposing / citing facts the dialogue never established (SAGE error type)
            "hallucinations": find_hallucinations(self.transcript, self.kb, established=[cc]),
            "transcript": self.transcript,
        }
