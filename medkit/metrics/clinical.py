"""Clinical efficacy (CE): a rule-based CheXpert-style labeler and label P/R/F1.

Report-generation papers score clinical correctness by labelling generated and
reference reports with the CheXpert labeler (Irvin et al. AAAI 2019) or
CheXbert and comparing the 14-observation vectors. This module is a small,
dependency-free labeler in the CheXpert mould:

1. **Mentions**: per observation, regular expressions over each sentence
   clause (split at ``.``, ``;`` and ``but``).
2. **Negation**: a cue ("no", "without", "not", "negative for", "free of",
   "resolved") earlier in the clause, or a normality statement about the
   mentioned structure ("heart size is normal", "lungs are clear",
   "mediastinum is unremarkable") -> 0.
3. **Uncertainty**: a hedge ("possible", "cannot be excluded", "may represent",
   "suspected", "concerning for", "borderline", ...) in the clause -> -1.
4. Aggregation per observation: positive > uncertain > negative; then
   CheXpert's hierarchy (a positive child makes Lung Opacity positive, an
   uncertain one uncertain; No Finding = 1 when no pathology is 1 or -1).

It is not the CheXpert labeler (no dependency parse, a much smaller phrase
list); its per-observation accuracy on the synthetic set's reference reports
is measured in tests/metrics/test_clinical_metrics.py.

CE metrics (:func:`ce_metrics`) binarise a label dict as R2Gen/PromptMRG do:
**1 = positive, everything else (0, -1, absent) = 0**, over all 14
observations (No Finding included). Three flavours, named as papers name them:

- ``micro``: TP/FP/FN summed over all (study, observation) pairs, then P/R/F1.
  R2Gen / R2GenCMN / CoFE MIMIC-CXR "CE" numbers are this flavour.
- ``macro``: P/R/F1 per observation (0 where undefined), then the mean.
- ``example``: P/R/F1 per study (0 where undefined), then the mean over studies
  (sklearn ``average="samples"``); PromptMRG's "example-based" CE.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

# CheXpert CSV column order; tests check it equals medkit.synth.chexpert.OBSERVATIONS.
OBSERVATIONS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
_LO_CHILDREN = ("Edema", "Consolidation", "Pneumonia", "Lung Lesion", "Atelectasis")

# Mentions (regular expressions on lower-cased clauses).
MENTION_PATTERNS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (r"mediastin\w*", r"cardiomediastinal silhouette"),
    "Cardiomegaly": (r"cardiomegaly", r"heart size", r"cardiac silhouette", r"cardiomediastinal silhouette",
                     r"\bheart\b(?= is)", r"cardiac enlargement", r"enlarged heart", r"cardiac size"),
    "Lung Opacity": (r"opacit\w*", r"infiltrat\w*", r"airspace disease", r"\bdensity\b", r"\blungs?\b(?= (?:are|is) (?:well expanded and )?clear)",
                     r"clear lungs"),
    "Lung Lesion": (r"nodul\w*", r"\bmass(?:es)?\b", r"\blesions?\b", r"tumou?r", r"neoplasm"),
    "Edema": (r"edema", r"vascular congestion", r"kerley"),
    "Consolidation": (r"consolidat\w*",),
    "Pneumonia": (r"pneumonia", r"infectio\w*"),
    "Atelectasis": (r"atelecta\w*", r"collapse"),
    "Pneumothorax": (r"pneumothora\w*",),
    "Pleural Effusion": (r"effusion",),
    "Pleural Other": (r"pleural thickening", r"pleural scarring", r"apical cap", r"fibrothorax"),
    "Fracture": (r"fractur\w*",),
    "Support Devices": (r"\btubes?\b", r"catheter", r"pacemaker", r"central (?:venous )?line", r"picc",
                        r"\bport\b", r"\bstents?\b", r"\bleads?\b", r"sternotomy wires"),
}
NEGATION_CUES = (r"\bno\b", r"\bwithout\b", r"\bnot\b", r"negative for", r"free of", r"\bresolved\b",
                 r"\bclear of\b", r"\bnor\b")
UNCERTAINTY_CUES = (r"possib\w*", r"question\w*", r"suspect\w*", r"cannot be excluded", r"cannot exclude",
                    r"can not be excluded", r"may represent", r"concerning for", r"\bprobabl\w*", r"\blikely\b",
                    r"borderline", r"could", r"\bversus\b", r"differential", r"suggest\w*", r"\bmay\b")
# "X is normal / within normal limits / unremarkable / not enlarged": a normality statement.
_NORMAL = re.compile(r"\bnormal\b|within normal limits|unremarkable|not (?:enlarged|widened)|\bstable\b")
_CLEAR_LUNGS = re.compile(r"\blungs?\b.*\bclear\b|clear lungs")
_CLAUSE = re.compile(r"[.;]\s+|[.;]$|\bbut\b|\n")

_MENTIONS = {o: [re.compile(p) for p in ps] for o, ps in MENTION_PATTERNS.items()}
_NEG = [re.compile(p) for p in NEGATION_CUES]
_UNC = [re.compile(p) for p in UNCERTAINTY_CUES]
_POSITIVE_SIZE = re.compile(r"enlarg\w*|widen\w*|cardiomegaly")
_NOT_ENLARGED = re.compile(r"\bnot (?:\w+ )?(?:enlarged|widened)")


def _first(pats, text: str) -> int | None:
    hits = [m.start() for p in pats for m in [p.search(text)] if m]
    return min(hits) if hits else None


def _clause_label(obs: str, clause: str, start: int) -> int:
    """Label of a mention of ``obs`` starting at ``start`` in ``clause``."""
    neg = [m.start() for p in _NEG for m in p.finditer(clause) if m.start() < start]
    if obs in ("Cardiomegaly", "Enlarged Cardiomediastinum"):
        if _NOT_ENLARGED.search(clause):
            return 0
        if _POSITIVE_SIZE.search(clause) and not neg:
            return -1 if _first(_UNC, clause) is not None else 1
        if _NORMAL.search(clause) or neg:
            return 0
        return -1 if _first(_UNC, clause) is not None else 1
    if obs == "Lung Opacity" and _CLEAR_LUNGS.search(clause) and not re.search(r"opacit|infiltrat|density", clause):
        return 0
    if neg:
        return 0
    return -1 if _first(_UNC, clause) is not None else 1


def label_report(text: str) -> dict[str, int]:
    """CheXpert-style labels of one report: ``{observation: 1 | 0 | -1}``; unmentioned are absent.

    >>> label_report("Mild cardiomegaly. No pleural effusion. Possible left lower lobe pneumonia.")["Pneumonia"]
    -1
    """
    found: dict[str, list[int]] = {}
    for clause in _CLAUSE.split(text.lower()):
        clause = clause.strip()
        if not clause:
            continue
        for obs, pats in _MENTIONS.items():
            for p in pats:
                for m in p.finditer(clause):
                    if obs == "Enlarged Cardiomediastinum" and m.group(0) == "cardiomediastinal silhouette" \
                            and _POSITIVE_SIZE.search(clause) and "mediastin" not in clause.replace("cardiomediastinal", ""):
                        continue  # "cardiomediastinal silhouette is enlarged" is read as cardiomegaly
                    found.setdefault(obs, []).append(_clause_label(obs, clause, m.start()))
    labels = {o: _combine(v) for o, v in found.items()}
    return apply_hierarchy(labels)


def _combine(values: Iterable[int]) -> int:
    values = list(values)
    for v in (1, -1, 0):
        if v in values:
            return v
    raise ValueError(values)


def apply_hierarchy(labels: Mapping[str, int]) -> dict[str, int]:
    """CheXpert's parent rule (children -> Lung Opacity) and No Finding; keys in :data:`OBSERVATIONS` order."""
    out = dict(labels)
    kids = [out[c] for c in _LO_CHILDREN if c in out and out[c] != 0]
    if kids or "Lung Opacity" in out:
        out["Lung Opacity"] = _combine(([out["Lung Opacity"]] if "Lung Opacity" in out else []) + kids)
    if any(out.get(o) in (1, -1) for o in OBSERVATIONS if o not in ("No Finding", "Support Devices")):
        out.pop("No Finding", None)
    else:
        out["No Finding"] = 1
    return {o: out[o] for o in OBSERVATIONS if o in out}


def label_vector(labels: Mapping[str, int], *, uncertain_as: int = 0) -> np.ndarray:
    """``(14,)`` int vector: 1 where positive; uncertain -> ``uncertain_as``; negative/absent -> 0."""
    v = np.zeros(len(OBSERVATIONS), dtype=np.int64)
    for k, o in enumerate(OBSERVATIONS):
        x = labels.get(o)
        v[k] = 1 if x == 1 else (uncertain_as if x == -1 else 0)
    return v


def _prf(tp, fp, fn):
    p = np.divide(tp, tp + fp, out=np.zeros_like(tp, dtype=float), where=(tp + fp) > 0)
    r = np.divide(tp, tp + fn, out=np.zeros_like(tp, dtype=float), where=(tp + fn) > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros_like(p, dtype=float), where=(p + r) > 0)
    return p, r, f


def ce_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """P/R/F1 of binary ``(N, 14)`` label matrices, in the three flavours of the module doc."""
    t, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must be the same (N, L) shape")
    tp, fp, fn = (t & p), (~t & p), (t & ~p)
    mi = _prf(np.array(tp.sum(), float), np.array(fp.sum(), float), np.array(fn.sum(), float))
    ma = _prf(tp.sum(0).astype(float), fp.sum(0).astype(float), fn.sum(0).astype(float))
    ex = _prf(tp.sum(1).astype(float), fp.sum(1).astype(float), fn.sum(1).astype(float))
    out = {}
    for name, (pp, rr, ff) in (("micro", mi), ("macro", ma), ("example", ex)):
        out[f"{name}_precision"] = float(np.mean(pp))
        out[f"{name}_recall"] = float(np.mean(rr))
        out[f"{name}_f1"] = float(np.mean(ff))
    out["per_observation_f1"] = {o: float(f) for o, f in zip(OBSERVATIONS, ma[2])}
    return out


def ce_metrics(references: Mapping, hypotheses: Mapping, *, uncertain_as: int = 0) -> dict:
    """Label ``{case_id: text}`` references and hypotheses with :func:`label_report`; :func:`ce_scores`.

    Keys: ``micro_/macro_/example_`` + ``precision/recall/f1`` and ``per_observation_f1``.
    """
    if set(references) != set(hypotheses):
        raise ValueError("references and hypotheses must have the same case ids")
    ids = sorted(references, key=str)
    t = np.stack([label_vector(label_report(references[i]), uncertain_as=uncertain_as) for i in ids])
    p = np.stack([label_vector(label_report(hypotheses[i]), uncertain_as=uncertain_as) for i in ids])
    return ce_scores(t, p)
