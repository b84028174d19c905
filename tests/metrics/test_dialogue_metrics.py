"""Dialogue metrics with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medkit.metrics.dialogue import (
    agent_errors,
    bootstrap_ci,
    distinct_errors,
    exam_f1,
    summarize_episodes,
    topk_accuracy,
)


def test_topk_counts_missing_diagnosis_as_miss():
    ranks = [1, 2, None, 4]
    assert topk_accuracy(ranks, 1) == 0.25
    assert topk_accuracy(ranks, 3) == 0.5      # ranks 1 and 2; None is a miss, never dropped
    assert math.isnan(topk_accuracy([], 1))


def test_exam_f1_hand_values():
    # ordered {a, b, c}, indicated {b, c, d, e}: P = 2/3, R = 2/4, F1 = 2PR/(P+R) = (2/3)/(7/6) = 4/7
    assert exam_f1(["a", "b", "c"], ["b", "c", "d", "e"]) == pytest.approx(4 / 7)
    assert exam_f1([], ["x"]) == 0.0            # nothing ordered: worst score, counted
    assert exam_f1([], []) == 1.0
    assert exam_f1(["x", "x"], ["x"]) == 1.0     # a repeated order is one test


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    x = np.r_[np.ones(30), np.zeros(70)]
    est, lo, hi = bootstrap_ci(x, seed=1)
    assert est == pytest.approx(0.3) and lo < 0.3 < hi
    # binomial SE = sqrt(.3*.7/100) = 0.046; a 95 % interval is about +-0.09
    assert 0.12 < hi - lo < 0.25
    assert bootstrap_ci(x, seed=1) == (est, lo, hi)
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert bootstrap_ci([2.0, 4.0], stat=np.median)[0] == 3.0


def _rec(rank, diagnosed=True, fe=0, missed=(), turns=4, tests=(), p=(0.1, 0.5), q=2):
    return {"rank": rank, "diagnosed": diagnosed, "format_errors": fe, "red_flags_missed": list(missed),
            "red_flags_present": ["low_oxygen", "hypotension"] if missed else [], "history_recall": 0.5 if q else None,
            "turns": turns, "exam_f1": exam_f1(list(tests), ["ecg"]), "truth": {"id": "t"},
            "predicted": ["t" if rank == 1 else "w"], "questions": q, "p_true": list(p)}


def test_summarize_and_errors():
    recs = [_rec(1, tests=["ecg"]), _rec(2, fe=2, missed=["low_oxygen"]), _rec(None, diagnosed=False, turns=10)]
    s = summarize_episodes(recs)
    assert s["top1"]["mean"] == pytest.approx(1 / 3, abs=1e-4) and s["top3"]["mean"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["format_error_rate"] == pytest.approx(2 / 18, abs=1e-4)    # 2 errors over 4 + 4 + 10 turns
    assert s["turns_to_diagnosis"]["mean"] == 4.0 and s["diagnosed"] == 2
    assert s["exam_f1"]["mean"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["questions_per_gain"]["mean"] == pytest.approx(2 / 0.4)
    assert s["red_flag_recall"]["mean"] == 0.5 and s["red_flag_recall"]["n"] == 1   # 1 of 2 red flags checked
    assert s["history_recall"] == {"mean": 0.5, "ci95": [0.5, 0.5], "n": 3}
    assert agent_errors(recs[1]) == {"wrong_diagnosis:t->w", "missed_red_flag:t:low_oxygen", "format:t"}
    assert agent_errors(recs[2]) == {"no_diagnosis:t"}
    d = distinct_errors(recs + [recs[1]])                       # a repeated error counts once
    # every type is listed, zeros included ("looked, found none")
    assert d["n"] == 4 and d["by_type"] == {"format": 1, "hallucinated_fact": 0, "missed_red_flag": 1,
                                            "no_diagnosis": 1, "wrong_diagnosis": 1}
    assert s["hallucinated_facts"] == 0 and s["hallucination_rate"]["mean"] == 0.0 and "rubric" not in s


def test_hallucinations_and_rubric_in_the_summary():
    h = {"turn": 2, "evidence": "fever", "status": "denied", "where": "presupposition", "text": "you have a fever"}
    recs = [_rec(1), _rec(1), _rec(2)]
    recs[0]["hallucinations"] = [h, {**h, "turn": 3}]          # the same fact twice in one dialogue
    recs[2]["hallucinations"] = [{**h, "evidence": "cough"}]
    for r, (ht, sf, failed) in zip(recs, [(0.5, 1.0, []), (1.0, None, []), (None, None, ["history_taking"])]):
        r["rubric"] = {"judge": "rule", "history_taking": ht, "safety": sf, "failed": failed}
    s = summarize_episodes(recs)
    # 3 flagged turns; 2 of 3 dialogues have one -> rate 2/3
    assert s["hallucinated_facts"] == 3 and s["hallucination_rate"]["mean"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["hallucinating_dialogues"] == 2
    assert agent_errors(recs[0]) >= {"hallucinated_fact:t:fever"}
    assert distinct_errors(recs)["by_type"]["hallucinated_fact"] == 2          # t:fever, t:cough
    r = s["rubric"]
    # history: scored 0.5 and 1.0 -> mean 0.75 (n 2); the third was a judge parse failure: counted, not scored
    assert r["history_taking"]["mean"] == 0.75 and r["history_taking"]["n"] == 2
    assert r["history_taking"]["parse_failures"] == 1 and r["history_taking"]["not_applicable"] == 0
    # safety: one score (1.0), two not applicable
    assert r["safety"] == {"mean": 1.0, "ci95": [1.0, 1.0], "n": 1, "not_applicable": 2, "parse_failures": 0}


def test_empty_metric_is_none_not_nan():
    s = summarize_episodes([_rec(None, diagnosed=False)])
    assert s["turns_to_diagnosis"]["mean"] is None
