"""SAGE as the paper frames it: plant known faults in a doctor, count how often a simulator exposes them.

SAGE (arXiv 2510.11997) asks whether a persona-driven user simulator finds more of an
agent's errors than a generic one. With the errors unknown, "more errors found" mixes
real errors with the simulator's own artefacts. Here the errors are planted: the
oracle doctor (:mod:`medkit.dialogue.oracle`) with one known fault
(:class:`FaultyOracle`), played on the same case against the persona simulator and
against the generic one (the same case facts, no persona:
:class:`medkit.dialogue.patient.GenericPatient`). The fault is **exposed** on a case
when the episode shows an error (:func:`episode_errors`) that the fault-free oracle
does not show on the same case with the same simulator, so an error the simulator
causes by itself (a misunderstood question) is never credited to the fault. A
simulator's **recall** of a fault is the share of cases on which it exposes it.

Faults (each a rule a reviewer can check in a transcript):

- ``skip_key_question``: never asks the key question, the question of largest expected
  information gain at the first turn (the one the oracle asks first);
- ``anchor_first_complaint``: diagnoses from the chief complaint alone (the posterior
  given age, sex and the presenting complaint), ignoring every later answer;
- ``miss_red_flag``: never asks about a red flag (any condition's ``red_flags``) and
  never orders a test that reveals one;
- ``wrong_exam``: whenever it would order a test, orders a test that is not indicated for
  the case's condition instead (a fixed draw per case).

Errors a rule-based judge reads from a finished episode and its case sheet:
wrong / missing diagnosis, a present red flag never checked, a test not indicated for
the condition, and key history left unasked (:func:`medkit.dialogue.judge.key_history`).
"""

from __future__ import annotations

import zlib

import numpy as np

from .actions import Action
from .oracle import OracleDoctor

FAULTS = ("skip_key_question", "anchor_first_complaint", "miss_red_flag", "wrong_exam")


class FaultyOracle(OracleDoctor):
    """The oracle with one planted fault (see the module docstring); ``fault=None`` is the oracle."""

    def __init__(self, kb, fault: str | None, **kw):
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, got {fault!r}")
        super().__init__(kb, **kw)
        self.fault = fault
        self._banned: dict[int, str] = {}        # env id -> key question id
        self._anchor: dict[int, np.ndarray] = {}  # env id -> posterior at the first turn
        flags = {e for c in kb.conditions for e in c.red_flags}
        self.flag_questions = {kb.question_of(e) for e in flags if kb.evidences[e].type in ("symptom", "history")}
        self.flag_tests = {kb.evidences[e].test for e in flags if kb.evidences[e].test}

    def choose(self, env) -> Action:
        kb = self.kb
        p = self.posterior(env)
        first = env.turns == 0
        if self.fault == "anchor_first_complaint" and first:
            self._anchor[id(env)] = p
        if p.max() >= self.stop_p or env.turns + 1 >= env.max_turns:
            return self._final(p, env)
        gq, gt, tids = self.gains(env, p)
        if self.fault == "skip_key_question":
            if first:
                self._banned[id(env)] = self.qids[int(np.argmax(gq))]
            banned = self._banned.get(id(env))
            gq = np.where(np.array([q == banned for q in self.qids]), -np.inf, gq)
        if self.fault == "miss_red_flag":
            gq = np.where(np.array([q in self.flag_questions for q in self.qids]), -np.inf, gq)
            gt = np.where(np.array([t in self.flag_tests for t in tids]), -np.inf, gt) if len(gt) else gt
        iq = int(np.argmax(gq))
        best = (gq[iq], Action("ASK", kb.questions[self.qids[iq]].label))
        if len(gt) and gt.max() > best[0]:
            j = int(np.argmax(gt))
            tid = tids[j]
            if self.fault == "wrong_exam":
                tid = self._wrong_test(env, tid)
            best = (gt[j], Action("EXAM", kb.tests[tid].name))
        if not np.isfinite(best[0]) or best[0] < self.min_gain:
            return self._final(p, env)
        return best[1]

    def _final(self, p, env) -> Action:
        if self.fault == "anchor_first_complaint":
            p = self._anchor.get(id(env), p)
        return self._diagnose(p, env)

    def _wrong_test(self, env, tid: str) -> str:
        """A test not indicated for the case's condition and not ordered yet (fixed per case and turn)."""
        indicated = set(env.case.get("indicated_tests", ()))
        options = sorted(t for t in self.kb.tests if t not in indicated and t not in env.tests)
        if not options:
            return tid
        h = zlib.crc32(f"{env.case['case_id']}|{env.turns}".encode())
        return options[h % len(options)]


def episode_errors(record: dict, case: dict, kb) -> set[str]:
    """The errors a rule-based judge reads from one finished episode (comparable keys).

    ``wrong_diagnosis`` / ``no_diagnosis``, ``missed_red_flag:<e>`` (a red flag the patient has,
    never asked nor tested), ``unindicated_test:<t>`` (a test not indicated for the condition),
    ``missed_key_history:<e>`` (a key history item, :func:`medkit.dialogue.judge.key_history`,
    never asked)."""
    from .judge import key_history

    out = set()
    if not record["diagnosed"]:
        out.add("no_diagnosis")
    elif record["rank"] != 1:
        out.add("wrong_diagnosis")
    out |= {f"missed_red_flag:{e}" for e in record["red_flags_missed"]}
    indicated = set(record.get("indicated_tests", ()))
    out |= {f"unindicated_test:{t}" for t in record.get("tests", ()) if indicated and t not in indicated}
    asked = {t.get("evidence") for t in record["transcript"] if t.get("kind") == "ask"}
    asked_ev = set()
    for q in asked:
        if q in kb.questions:
            asked_ev |= set(kb.questions[q].evidences)
    out |= {f"missed_key_history:{e}" for e in key_history(case, kb) if e not in asked_ev}
    return out


def exposed(faulty: dict, clean: dict, case: dict, kb) -> bool:
    """Does the faulty episode show an error the clean oracle's episode (same case, same simulator) does not?"""
    return bool(episode_errors(faulty, case, kb) - episode_errors(clean, case, kb))


def fault_recall(cases: list[dict], kb, *, simulators=("persona", "generic"), faults=FAULTS, max_turns: int = 15,
                 stop_p: float = 0.95) -> dict:
    """Per simulator and fault, the per-case exposure (0/1, in case order) of :class:`FaultyOracle`.

    Returns ``{simulator: {fault: [0/1 per case]}}`` plus ``{simulator: {"clean_top1": ...}}``."""
    from .evaluate import evaluate_doctor

    out: dict = {}
    for sim in simulators:
        clean, summ = evaluate_doctor(FaultyOracle(kb, None, stop_p=stop_p, confidence=False), cases, kb,
                                      patient=sim, max_turns=max_turns, judge=None, batch_size=None)
        out[sim] = {"clean_top1": summ["top1"]["mean"]}
        for f in faults:
            recs, _ = evaluate_doctor(FaultyOracle(kb, f, stop_p=stop_p, confidence=False), cases, kb, patient=sim,
                                      max_turns=max_turns, judge=None, batch_size=None)
            out[sim][f] = [int(exposed(r, c, case, kb)) for r, c, case in zip(recs, clean, cases)]
    return out
