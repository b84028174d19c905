"""Oracle doctor: greedy expected information gain over the knowledge base.

The oracle sees only what a doctor in the episode has learnt (the environment's
known-present / known-absent evidences, age, sex), never the case. Each turn:

1. posterior p(c) from the naive-Bayes knowledge base (:mod:`medkit.synth.knowledge`);
2. if max p >= ``stop_p``, or this is the last allowed turn, or no action gains
   at least ``min_gain`` nats: ``DIAGNOSIS`` with the top 3 and confidence max p;
3. else the action of largest expected information gain (entropy reduction, nats):
   asking evidence e splits p by P(e | c); a test reveals several findings, scored
   as the sum of its findings' gains (an upper bound: findings are treated as
   independent given nothing) times ``test_weight`` (< 1: ask before you order);
   a DDXPlus multi-choice question (pain location) likewise, times ``group_weight``.
   A question is asked by its short label (``ASK: chest pain``).

With ``rationale=k`` a ``DIAGNOSIS`` also cites (``| because: ...``) up to ``k``
established-present findings that most favour the chosen condition: largest
log-likelihood ratio log P(e | top) - log P(e | not top) under the posterior,
positive ratios only. Every cited fact was elicited, so the oracle never
hallucinates (:mod:`medkit.dialogue.hallucination` checks the LM doctors).

Its dialogues are the demonstrations for SFT (:func:`write_demonstrations`).
"""

from __future__ import annotations

import re

import numpy as np

from .actions import Action, format_action


def _entropy(p: np.ndarray, axis=0) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(axis)


def expected_gains(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``(E,)`` expected entropy reduction of observing binary evidences.

    Args:
        p: ``(C,)`` current posterior. q: ``(C, E)`` P(e present | c).
    Example: p = [0.5, 0.5], q = [[1], [0]] (e decides c) -> gain = log 2 = 0.693.
    """
    py = p @ q                                            # (E,) P(yes)
    post_y = p[:, None] * q / np.clip(py, 1e-300, None)
    post_n = p[:, None] * (1 - q) / np.clip(1 - py, 1e-300, None)
    return _entropy(p) - (py * _entropy(post_y) + (1 - py) * _entropy(post_n))


class OracleDoctor:
    """Expected-information-gain doctor (see the module docstring). ``act(env) -> str``."""

    def __init__(self, kb, *, stop_p: float = 0.85, min_gain: float = 0.01, test_weight: float = 0.7,
                 top_k: int = 3, background_rate: float = 0.01, use_tests: bool = True,
                 rationale: int = 0, confidence: bool = True, group_weight: float = 1.0):
        self.kb, self.stop_p, self.min_gain, self.test_weight = kb, stop_p, min_gain, test_weight
        self.top_k, self.bg, self.use_tests, self.rationale = top_k, background_rate, use_tests, rationale
        self.confidence, self.group_weight = confidence, group_weight
        self.q = kb.probs(background_rate)
        self.test_of = np.array([e.test or "" for e in kb.evidences.values()])
        # (Q, E) membership of evidences in askable questions (a DDXPlus multi-choice question
        # reveals all its values; a synthetic question is one evidence)
        self.qids = list(kb.questions)
        self.member = np.zeros((len(self.qids), len(kb.ev_ids)), dtype=bool)
        for i, qid in enumerate(self.qids):
            self.member[i, [kb.ev_index[e] for e in kb.questions[qid].evidences]] = True
        self.qweight = np.where(self.member.sum(1) > 1, group_weight, 1.0)

    def posterior(self, env) -> np.ndarray:
        from ..synth.knowledge import log_posterior_indexed

        kb = self.kb
        pres = np.array([kb.ev_index[e] for e, v in env.known.items() if v], dtype=int)
        absn = np.array([kb.ev_index[e] for e, v in env.known.items() if not v], dtype=int)
        return np.exp(log_posterior_indexed(kb, pres, absn, env.case.get("age"), env.case.get("sex"),
                                            background_rate=self.bg))

    def gains(self, env, p: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``(question_gains (Q,), test_gains (T,), test_ids)``: expected information gain (nats) of
        each askable question and each test not yet asked / ordered (-inf when not available).
        A question or test revealing several evidences scores the sum of their gains (an upper
        bound), times ``group_weight`` / ``test_weight``."""
        kb = self.kb
        p = self.posterior(env) if p is None else p
        sex = env.case.get("sex")
        done = set(env.known) | set(env.asked)
        ok = np.array([e not in done and ev.sex in (None, sex) for e, ev in kb.evidences.items()])
        g = np.where(ok, expected_gains(p, self.q), 0.0)
        gq = (self.member * g[None, :]).sum(1) * self.qweight
        asked = set(getattr(env, "asked_q", ()))
        avail = (self.member & ok[None, :]).any(1) & np.array([q not in asked for q in self.qids])
        gq = np.where(avail, gq, -np.inf)
        tids = list(kb.tests) if self.use_tests else []
        gt = np.full(len(tids), -np.inf)
        for j, tid in enumerate(tids):
            cols = (self.test_of == tid) & ok
            if tid not in env.tests and cols.any():
                gt[j] = self.test_weight * g[cols].sum()
        return gq, gt, tids

    def choose(self, env) -> Action:
        kb = self.kb
        p = self.posterior(env)
        if p.max() >= self.stop_p or env.turns + 1 >= env.max_turns:
            return self._diagnose(p, env)
        gq, gt, tids = self.gains(env, p)
        iq = int(np.argmax(gq))
        best = (gq[iq], Action("ASK", kb.questions[self.qids[iq]].label))
        if len(gt) and gt.max() > best[0]:
            j = int(np.argmax(gt))
            best = (gt[j], Action("EXAM", kb.tests[tids[j]].name))
        if not np.isfinite(best[0]) or best[0] < self.min_gain:
            return self._diagnose(p, env)
        return best[1]

    def _diagnose(self, p: np.ndarray, env=None) -> Action:
        order = np.argsort(-p, kind="stable")[: self.top_k]
        names = tuple(self.kb.conditions[i].name for i in order)
        why = self.cite(p, int(order[0]), env) if self.rationale and env is not None else ()
        conf = round(float(p[order[0]]), 2) if self.confidence else None
        return Action("DIAGNOSIS", names[0], names, conf, why)

    def cite(self, p: np.ndarray, top: int, env) -> tuple[str, ...]:
        """Up to ``rationale`` established-present findings favouring condition ``top`` (see module doc)."""
        kb = self.kb
        present = [e for e, v in env.known.items() if v]
        if not present:
            return ()
        idx = np.array([kb.ev_index[e] for e in present], dtype=int)
        rest = np.delete(np.arange(len(p)), top)
        w = p[rest] / max(float(p[rest].sum()), 1e-300)
        q_other = np.clip(w @ self.q[rest][:, idx], 1e-12, None)
        llr = np.log(np.clip(self.q[top, idx], 1e-12, None)) - np.log(q_other)
        keep = [i for i in np.argsort(-llr, kind="stable") if llr[i] > 0][: self.rationale]
        evs = [kb.evidences[present[i]] for i in keep]
        # the action parser splits a rationale at ';', ',' and 'and': keep each fact one item
        return tuple(re.sub(r"\s*,\s*|\s+and\s+", " ", ev.finding or ev.id.replace("_", " ")) for ev in evs)

    def act(self, env) -> str:
        return format_action(self.choose(env))

    def act_batch(self, envs) -> list[str]:
        return [self.act(e) for e in envs]
