"""Diagnostic-dialogue metrics: top-k accuracy, exam F1, format-error rate, bootstrap CIs.

Pure functions on plain Python / NumPy values. Failures are never dropped: an
episode without a diagnosis has rank None and counts as a miss in every top-k;
no test ordered against a non-empty indication list scores exam F1 = 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def topk_accuracy(ranks: Sequence[int | None], k: int) -> float:
    """Fraction of episodes whose true diagnosis is within the top ``k`` (rank None = miss)."""
    if not ranks:
        return float("nan")
    return float(np.mean([r is not None and r <= k for r in ranks]))


def exam_f1(ordered: Sequence[str], indicated: Sequence[str]) -> float:
    """F1 of the set of tests ordered against the case's indicated tests (DiagGym style).

    Both empty -> 1 (nothing was needed, nothing was done); one empty -> 0.
    """
    o, i = set(ordered), set(indicated)
    if not o and not i:
        return 1.0
    tp = len(o & i)
    if tp == 0:
        return 0.0
    p, r = tp / len(o), tp / len(i)
    return 2 * p * r / (p + r)


def bootstrap_ci(values: Sequence[float], stat: Callable = np.mean, *, n_boot: int = 2000,
                 alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """``(estimate, low, high)``: the statistic and its percentile bootstrap (1 - alpha) interval.

    Resamples episodes with replacement ``n_boot`` times (fixed ``seed``). One
    value gives a zero-width interval; no values give NaNs.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    est = float(stat(x))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    boots = np.array([stat(x[row]) for row in idx]) if stat is not np.mean else x[idx].mean(1)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return est, float(lo), float(hi)


def _ci(values, seed) -> dict:
    """Mean with its 95 % bootstrap interval; ``None`` entries when there are no values (JSON has no NaN)."""
    if len(values) == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    est, lo, hi = bootstrap_ci(values, seed=seed)
    return {"mean": round(est, 4), "ci95": [round(lo, 4), round(hi, 4)], "n": len(values)}


def summarize_episodes(records: Sequence[dict], *, seed: int = 0) -> dict:
    """Aggregate episode rows (``DialogueEnv.record()``) into metrics with 95 % bootstrap CIs.

    ``turns_to_diagnosis`` is over diagnosed episodes only (it is undefined
    otherwise); ``diagnosed`` says how many there were. ``questions_per_gain`` is
    questions asked per unit of posterior probability gained on the truth (lower is
    better; episodes with no gain are excluded and counted in ``no_gain``).
    Recall proxies: ``red_flag_recall`` (share of the patient's present red flags the
    doctor checked, over episodes with any) and ``history_recall`` (share of the
    patient's other symptoms and history items elicited). ``hallucinated_facts``
    counts flagged turns (:mod:`medkit.dialogue.hallucination`) and
    ``hallucination_rate`` is the share of dialogues with at least one. When the
    records carry a judge's ``rubric``, ``rubric`` holds its items
    (:func:`summarize_rubric`).
    """
    ranks = [r["rank"] for r in records]
    turns = sum(r["turns"] for r in records)
    diag = [r for r in records if r["diagnosed"]]
    gains = [(r["questions"], r["p_true"][-1] - r["p_true"][0]) for r in records]
    qpg = [q / g for q, g in gains if g > 1e-6]
    return {
        "n": len(records),
        "top1": _ci([float(r is not None and r <= 1) for r in ranks], seed),
        "top3": _ci([float(r is not None and r <= 3) for r in ranks], seed),
        "turns": _ci([float(r["turns"]) for r in records], seed),
        "turns_to_diagnosis": _ci([float(r["turns"]) for r in diag], seed),
        "diagnosed": len(diag),
        "exam_f1": _ci([float(r["exam_f1"]) for r in records], seed),
        "format_error_rate": round(sum(r["format_errors"] for r in records) / max(turns, 1), 4),
        "format_errors_per_episode": _ci([float(r["format_errors"]) for r in records], seed),
        "red_flags_missed": sum(len(r["red_flags_missed"]) for r in records),
        "red_flag_recall": _ci([1 - len(r["red_flags_missed"]) / len(r["red_flags_present"])
                                for r in records if r.get("red_flags_present")], seed),
        "history_recall": _ci([r["history_recall"] for r in records if r.get("history_recall") is not None], seed),
        "questions_per_gain": _ci(qpg, seed),
        "no_gain": len(gains) - len(qpg),
        "hallucinated_facts": sum(len(r.get("hallucinations", ())) for r in records),
        "hallucinating_dialogues": sum(bool(r.get("hallucinations")) for r in records),
        "hallucination_rate": _ci([float(bool(r.get("hallucinations"))) for r in records], seed),
        **({"rubric": summarize_rubric(records, seed=seed)} if any("rubric" in r for r in records) else {}),
    }


def summarize_rubric(records: Sequence[dict], *, seed: int = 0) -> dict:
    """Judge-scored rubric items (``record["rubric"]``, :mod:`medkit.dialogue.judge`): mean and 95 % bootstrap CI.

    Per item: ``n`` dialogues scored, ``not_applicable`` (nothing to score, e.g. no
    red flags for the condition), ``parse_failures`` (an LLM judge's reply without a
    valid answer). A parse failure is the judge's failure, not the doctor's, so it is
    left out of the mean; it is counted here, beside ``n``, never silently dropped.
    """
    rubrics = [r["rubric"] for r in records if "rubric" in r]
    items = [k for k in rubrics[0] if k not in ("judge", "failed", "replies")] if rubrics else []
    out: dict = {"judge": rubrics[0].get("judge") if rubrics else None, "unscored_records": len(records) - len(rubrics)}
    for k in items:
        vals = [float(x[k]) for x in rubrics if x.get(k) is not None]
        failed = sum(k in x.get("failed", ()) for x in rubrics)
        out[k] = {**_ci(vals, seed), "not_applicable": len(rubrics) - len(vals) - failed, "parse_failures": failed}
    return out


ERROR_TYPES = ("format", "hallucinated_fact", "missed_red_flag", "no_diagnosis", "wrong_diagnosis")


def agent_errors(record: dict) -> set[str]:
    """Distinct agent errors in one episode, as comparable keys (SAGE-style error discovery).

    ``wrong_diagnosis:<truth>-><predicted>``, ``no_diagnosis:<truth>``,
    ``missed_red_flag:<truth>:<evidence>``, ``hallucinated_fact:<truth>:<evidence>`` (a doctor
    turn presupposing or citing a fact the dialogue never established,
    :mod:`medkit.dialogue.hallucination`), ``format:<truth>``.
    """
    t = record["truth"]["id"]
    out = set()
    if not record["diagnosed"]:
        out.add(f"no_diagnosis:{t}")
    elif record["rank"] != 1:
        out.add(f"wrong_diagnosis:{t}->{record['predicted'][0] if record['predicted'] else None}")
    out |= {f"missed_red_flag:{t}:{e}" for e in record["red_flags_missed"]}
    out |= {f"hallucinated_fact:{t}:{h['evidence']}" for h in record.get("hallucinations", ())}
    if record["format_errors"]:
        out.add(f"format:{t}")
    return out


def distinct_errors(records: Sequence[dict]) -> dict:
    """Union of :func:`agent_errors` over episodes: ``{"n": count, "by_type": {...}, "errors": sorted keys}``.

    ``by_type`` lists every type of :data:`ERROR_TYPES`, zero counts included (a table
    column that is 0 says "looked, found none")."""
    errs: set[str] = set()
    for r in records:
        errs |= agent_errors(r)
    by_type: dict[str, int] = dict.fromkeys(ERROR_TYPES, 0)
    for e in errs:
        by_type[e.split(":", 1)[0]] = by_type.get(e.split(":", 1)[0], 0) + 1
    return {"n": len(errs), "by_type": dict(sorted(by_type.items())), "errors": sorted(errs)}
