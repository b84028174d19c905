"""Clinical cases for diagnostic dialogue, sampled from a condition knowledge base.

DDXPlus-like (Fansi Tchango et al., NeurIPS Datasets & Benchmarks 2022): a case
is a true diagnosis, age and sex, the evidences present, a chief complaint and
the differential a naive-Bayes model would give from the history. The
generative model is exactly the one :func:`medkit.synth.knowledge.posterior`
inverts:

1. condition c ~ prevalence (relative prior, normalised);
2. age ~ Triangular(min, mode, max) of c (completed years), sex ~ Bernoulli(P(female | c));
3. each evidence e present ~ Bernoulli(P(e | c)), with ``background_rate`` for
   evidences c does not list (noise) and 0 for evidences of the other sex;
   redrawn (step 3 only) until at least one symptom is present, since a patient
   with no complaint does not attend;
4. chief complaint = the present symptom with the highest salience;
5. differential = top-k of the posterior given the ``differential_types``
   evidences (default symptoms + history, what history-taking can elicit; all
   other evidences of those types are known absent, as in DDXPlus), plus age
   and sex. Exam/lab/imaging results are in the case for an agent to order.

Writes ``{out}/cases.jsonl`` (one case per line, keyed by ``case_id``, persona
inside) and ``{out}/dataset.json``. Case i depends only on ``(seed, i)``, so
the first 10 cases of a 1,000-case set equal a 10-case set with the same seed.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import ConfigError, to_dict
from ..io.atomic import write_json, write_jsonl
from .knowledge import EVIDENCE_TYPES, KnowledgeBase, load_knowledge_base, log_posterior_indexed
from .personas import sample_persona

_MAX_REDRAWS = 1000


@dataclass
class CasesConfig:
    """Knobs of ``medkit synth cases``."""

    n_cases: int = 1000
    seed: int = 0
    background_rate: float = 0.01      # P(e | c) for evidences c does not list: noise
    top_k: int = 5                     # differential length
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    differential_types: list[str] = field(default_factory=lambda: ["symptom", "history"])
    knowledge_base: str | None = None  # folder with evidences.yaml + conditions/; None = packaged


def _check(cfg: CasesConfig) -> None:
    if cfg.n_cases < 1:
        raise ConfigError(f"n_cases = {cfg.n_cases} must be at least 1")
    if not 0.0 <= cfg.background_rate < 0.5:
        raise ConfigError(f"background_rate = {cfg.background_rate} must be in [0, 0.5)")
    if cfg.top_k < 1:
        raise ConfigError(f"top_k = {cfg.top_k} must be at least 1")
    if cfg.val_fraction < 0 or cfg.test_fraction < 0 or cfg.val_fraction + cfg.test_fraction > 1:
        raise ConfigError("val_fraction and test_fraction must be >= 0 and sum to at most 1")
    bad = [t for t in cfg.differential_types if t not in EVIDENCE_TYPES]
    if bad or not cfg.differential_types:
        raise ConfigError(f"differential_types {cfg.differential_types} must be a non-empty subset of {list(EVIDENCE_TYPES)}")


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The independent random stream of case ``index`` (prefix-stable across ``n_cases``)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def _sex_mask(kb: KnowledgeBase, sex: str) -> np.ndarray:
    """``(E,)`` True where the evidence can exist for ``sex``."""
    key = ("sex", sex)
    if key not in kb._cache:
        kb._cache[key] = np.array([e.sex in (None, sex) for e in kb.evidences.values()])
    return kb._cache[key]


def _type_mask(kb: KnowledgeBase, types) -> np.ndarray:
    key = ("types", tuple(types))
    if key not in kb._cache:
        kb._cache[key] = np.array([e.type in types for e in kb.evidences.values()])
    return kb._cache[key]


def sample_evidence(kb: KnowledgeBase, cond_id: str, sex: str, rng: np.random.Generator,
                    background_rate: float = 0.01) -> np.ndarray:
    """``(E,)`` bool: one draw of every evidence for a patient with ``cond_id`` (no redraw)."""
    p = kb.probs(background_rate)[kb.cond_index[cond_id]] * _sex_mask(kb, sex)
    return rng.random(p.shape[0]) < p


def sample_case(kb: KnowledgeBase, cfg: CasesConfig, index: int) -> dict:
    """Case ``index`` of the dataset defined by ``cfg`` (see the module docstring)."""
    rng = case_rng(cfg.seed, index)
    prior = np.exp(kb.log_prior)
    ci = int(rng.choice(len(kb.conditions), p=prior))
    cond = kb.conditions[ci]
    lo, mode, hi = cond.age
    age = min(int(rng.triangular(lo, mode, hi)), int(hi) - 1) if hi > lo else int(lo)
    sex = "female" if rng.random() < cond.female else "male"
    u_split = rng.random()
    split = "test" if u_split < cfg.test_fraction else "val" if u_split < cfg.test_fraction + cfg.val_fraction else "train"

    symptom = _type_mask(kb, ("symptom",))
    for _ in range(_MAX_REDRAWS):
        present = sample_evidence(kb, cond.id, sex, rng, cfg.background_rate)
        if (present & symptom).any():
            break
    else:  # pragma: no cover - the validator requires a symptom with p > 0
        raise RuntimeError(f"condition '{cond.id}': no symptom in {_MAX_REDRAWS} draws")

    ev_ids, evs = kb.ev_ids, kb.evidences
    present_ids = [ev_ids[j] for j in np.flatnonzero(present)]
    # Chief complaint: the most salient present symptom; ties go to the one this
    # condition makes likelier, then vocabulary order (stable, deterministic).
    sym = [e for e in present_ids if evs[e].type == "symptom"]
    cc = max(sym, key=lambda e: (evs[e].salience, cond.likelihoods.get(e, 0.0), -kb.ev_index[e]))

    observed = _type_mask(kb, tuple(cfg.differential_types)) & _sex_mask(kb, sex)
    lp = log_posterior_indexed(kb, np.flatnonzero(observed & present), np.flatnonzero(observed & ~present),
                               age, sex, background_rate=cfg.background_rate)
    order = np.argsort(-lp, kind="stable")
    rank_true = int(np.flatnonzero(order == ci)[0]) + 1
    all_obs = _sex_mask(kb, sex)
    lp_all = log_posterior_indexed(kb, np.flatnonzero(all_obs & present), np.flatnonzero(all_obs & ~present),
                                   age, sex, background_rate=cfg.background_rate)

    by_type = {t: [e for e in present_ids if evs[e].type == t] for t in EVIDENCE_TYPES}
    results: dict[str, list[str]] = {}
    for e in by_type["exam"] + by_type["lab"] + by_type["imaging"]:
        results.setdefault(evs[e].test, []).append(e)

    return {
        "case_id": f"case_{index:06d}",
        "split": split,
        "age": age,
        "sex": sex,
        "diagnosis": {"id": cond.id, "name": cond.name, "icd10": cond.icd10, "system": cond.system,
                      "urgency": cond.urgency},
        "chief_complaint": {"evidence": cc, "text": evs[cc].say},
        "evidences": by_type,
        "results": dict(sorted(results.items())),
        "indicated_tests": list(cond.tests),
        "red_flags": [e for e in cond.red_flags if e in set(present_ids)],
        "differential": [{"id": kb.conditions[j].id, "name": kb.conditions[j].name,
                          "p": round(float(np.exp(lp[j])), 4)} for j in order[: cfg.top_k]],
        "posterior_true": round(float(np.exp(lp[ci])), 4),
        "rank_true": rank_true,
        "posterior_true_all_evidence": round(float(np.exp(lp_all[ci])), 4),
        "persona": sample_persona(age, sex, cond.urgency, rng),
    }


def generate_cases(cfg: CasesConfig, kb: KnowledgeBase | None = None, progress=None) -> list[dict]:
    """All ``cfg.n_cases`` cases in memory (no files)."""
    _check(cfg)
    kb = kb or load_knowledge_base(cfg.knowledge_base)
    idx = range(cfg.n_cases)
    return [sample_case(kb, cfg, i) for i in (progress(idx, "sampling cases") if progress else idx)]


def topk_accuracy(cases: list[dict], ks=(1, 3, 5)) -> dict[str, float]:
    """Fraction of cases whose true diagnosis ranks within the top k of the differential posterior."""
    ranks = np.array([c["rank_true"] for c in cases])
    return {f"top{k}": round(float((ranks <= k).mean()), 4) for k in ks}


def generate_dataset(cfg: CasesConfig, out: Path, progress=None) -> dict:
    """Write ``cases.jsonl`` and ``dataset.json`` under ``out``; return the summary."""
    t0 = time.perf_counter()
    kb = load_knowledge_base(cfg.knowledge_base)
    cases = generate_cases(cfg, kb, progress)
    out = Path(out)
    write_jsonl(out / "cases.jsonl", cases)
    dist = Counter(c["diagnosis"]["id"] for c in cases)
    splits = Counter(c["split"] for c in cases)
    summary = {
        "name": "synth-cases",
        "seed": cfg.seed,
        "n_cases": len(cases),
        "config": to_dict(cfg),
        "counts": {s: splits.get(s, 0) for s in ("train", "val", "test")},
        "knowledge_base": {"path": str(kb.root), "sha256": kb.sha256, "n_conditions": len(kb.conditions),
                           "systems": kb.systems, "n_evidences": len(kb.evidences), "n_tests": len(kb.tests)},
        "condition_distribution": {c.id: dist.get(c.id, 0) for c in kb.conditions},
        "system_distribution": dict(sorted(Counter(c["diagnosis"]["system"] for c in cases).items())),
        "naive_bayes": {**topk_accuracy(cases),
                        "mean_posterior_true": round(float(np.mean([c["posterior_true"] for c in cases])), 4),
                        "evidence_types": list(cfg.differential_types)},
        "files": {"cases": "cases.jsonl"},
    }
    write_json(out / "dataset.json", summary)
    return {**summary, "seconds": round(time.perf_counter() - t0, 3)}
