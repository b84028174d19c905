"""Shared data for the rl benchmarks: clinical cases from ``medkit.synth``, candidate answers,
cheap per-answer features and the knowledge-base judge.

Everything here is derived from the synthetic knowledge base (``medkit/synth/data``, see
``data_cards/``): the cases are drawn from its naive-Bayes model, so the full-evidence
posterior is the Bayes-optimal ranking of candidate diagnoses for a case.
"""

from __future__ import annotations

import numpy as np
import torch

from medkit.synth.knowledge import log_posterior_indexed

AGE_GROUPS = {"child": (0, 18), "adult": (18, 65), "older": (65, 200)}


def age_group(age: float) -> str:
    return next(k for k, (lo, hi) in AGE_GROUPS.items() if lo <= age < hi)


def candidates(case: dict, n: int = 5, kb=None, allowed: set[str] | None = None) -> list[str]:
    """The case's history-only differential (top ``n``), the true diagnosis swapped in last when
    missing. With ``allowed`` (and ``kb``): the top ``n`` among the allowed conditions only
    (training cases never show a held-out condition, even as a wrong answer)."""
    if allowed is None:
        ids = [d["id"] for d in case["differential"]][:n]
    else:
        lp = _lp(kb, case, ("symptom", "history"))
        ids = [kb.condition_ids[k] for k in np.argsort(-lp, kind="stable") if kb.condition_ids[k] in allowed][:n]
    if case["diagnosis"]["id"] not in ids:
        ids[-1] = case["diagnosis"]["id"]
    return ids


def _lp(kb, case: dict, types: tuple[str, ...]) -> np.ndarray:
    """``(C,)`` log posterior given the case's evidence of ``types`` (present and absent)."""
    present = {e for t in types for e in case["evidences"][t]}
    keep = [i for i, e in enumerate(kb.ev_ids) if kb.evidences[e].type in types and
            kb.evidences[e].sex in (None, case["sex"])]
    pres = np.array([i for i in keep if kb.ev_ids[i] in present], dtype=int)
    absn = np.array([i for i in keep if kb.ev_ids[i] not in present], dtype=int)
    return log_posterior_indexed(kb, pres, absn, case["age"], case["sex"])


def judge_scores(kb, case: dict, cand: list[str]) -> list[float]:
    """The knowledge-base judge: log posterior of each candidate given ALL the case's evidence
    (history, symptoms, exam, labs, imaging). It sees what the preference model does not."""
    lp = _lp(kb, case, ("symptom", "history", "exam", "lab", "imaging"))
    return [float(lp[kb.cond_index[c]]) for c in cand]


def features(kb, case: dict, cand: list[str]) -> torch.Tensor:
    """``(n, F)`` per-answer features of a cheap preference model: what a reader of the case and
    the answer can see, not the knowledge-base posterior (that is the judge's).

    Columns: share of the patient's symptoms/history the condition lists; mean listed
    likelihood of those; share of the condition's typical symptoms (P >= 0.5) the patient
    has; demographic fit log p(age, sex | c) (/5, clipped); patient age / 50; and the
    answer's identity (condition one-hot, ``C`` columns), as a text encoder would see which
    diagnosis a response names. ``F = 5 + C``.
    """
    demo = kb.log_demographics(case["age"], case["sex"])
    hist = case["evidences"]["symptom"] + case["evidences"]["history"]
    have = set(hist)
    rows = []
    for cid in cand:
        c = kb.condition(cid)
        k = kb.cond_index[cid]
        listed = [e for e in hist if e in c.likelihoods]
        typical = [e for e, p in c.likelihoods.items() if p >= 0.5 and kb.evidences[e].type in ("symptom", "history")]
        onehot = [0.0] * len(kb.conditions)
        onehot[k] = 1.0
        rows.append([len(listed) / max(1, len(hist)),
                     float(np.mean([c.likelihoods[e] for e in listed])) if listed else 0.0,
                     sum(e in have for e in typical) / max(1, len(typical)),
                     max(float(demo[k]), -15.0) / 5.0, case["age"] / 50.0, *onehot])
    return torch.tensor(rows, dtype=torch.float32)


WORDS = ["<pad>", "<eos>", "<bos>", "<unk>", "findings", ":", ".", "male", "female", "child", "adult", "older", "case",
         "diagnosis", "typically", "has", "point", "to", "and"]


def word_tokenizer(kb):
    """Whitespace word-level tokenizer over the knowledge base's ids (one token per evidence or
    condition id, plus a few function words): tiny LMs on it train in seconds on a CPU."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS + kb.ev_ids + kb.condition_ids)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                  unk_token="<unk>")
    tok.padding_side = "left"
    return tok
