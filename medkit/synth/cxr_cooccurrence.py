"""Which findings a synthetic radiograph has: a latent-profile model of co-occurrence, and an
optional train-only spurious cue.

Real chest-radiograph findings are not independent. In MIMIC-CXR (Johnson et al., Sci Data
2019; MIMIC-CXR-JPG v2 CheXpert labels, 227,827 studies) a third of the studies have no
finding, support devices are in 29 %, pleural effusion in 24 %, and the findings cluster by
the patient's illness: congestive heart failure gives cardiomegaly with pulmonary oedema and
(often bilateral) pleural effusions; pneumonia gives consolidation and sometimes a
parapneumonic effusion; the critically ill carry endotracheal tubes and central lines and have
effusions, basal atelectasis and oedema; pacemaker patients have heart disease.

:func:`sample_profile_findings` draws a study from a latent-class model: a *clinical profile*
(:data:`PROFILES`, prior weights), then each finding kind independently with the profile's
probability. A mixture of independent Bernoullis is the simplest model that makes findings
co-occur through a shared cause; its weights were set so that the positive-label rates match
MIMIC-CXR's (:data:`MIMIC_CXR_POSITIVE`, compared in :func:`label_rates` and in the data card).
Which findings go together (the profiles) follows the clinical associations above; how strongly
they co-occur is this model's, not a published table's: no per-pair MIMIC-CXR table was
available when it was built, so the data card shows the generator's matrix beside the
published marginals and says how to compute the real matrix from ``mimic-cxr-2.0.0-chexpert.csv``
with :func:`cooccurrence` (the same function the generator's matrix comes from).

:func:`apply_spurious_cue` turns one real association into a shortcut for the setting
counterfactual training is meant for: in the cue splits (train and val) a pacemaker is present
with probability ``strength`` when cardiomegaly is positive and ``1 - strength`` when it is not;
in the other splits (test) the pacemaker follows an independent draw of the same marginal, so a
model that reads "pacemaker" as "cardiomegaly" is wrong on the *conflict* studies (cue and
label disagree).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .chexpert import OBSERVATIONS, POSITIVE

# MIMIC-CXR-JPG v2.0.0 `mimic-cxr-2.0.0-chexpert.csv`, positive (1.0) labels per study,
# 227,827 studies (Johnson et al., arXiv:1901.07042; counts as restated from the CSV).
MIMIC_CXR_N = 227_827
MIMIC_CXR_POSITIVE: dict[str, int] = {
    "No Finding": 75_455, "Enlarged Cardiomediastinum": 7_179, "Cardiomegaly": 44_845, "Lung Opacity": 51_525,
    "Lung Lesion": 6_284, "Edema": 27_018, "Consolidation": 10_778, "Pneumonia": 16_556, "Atelectasis": 45_808,
    "Pneumothorax": 10_358, "Pleural Effusion": 54_300, "Pleural Other": 2_011, "Fracture": 4_390,
    "Support Devices": 66_558,
}

# name -> (prior weight, {finding kind: probability}). Kinds not listed have probability 0.
# Weights and probabilities were tuned (tests/synth/test_cxr.py checks the result) so that the
# positive-label rates land near MIMIC_CXR_POSITIVE / MIMIC_CXR_N; the profile contents encode
# the associations named in the module docstring.
PROFILES: dict[str, tuple[float, dict[str, float]]] = {
    "normal": (0.20, {"fracture": 0.005, "lesion": 0.008, "pleural_thickening": 0.003}),
    "heart_failure": (0.19, {
        "cardiomegaly": 0.75, "edema": 0.45, "effusion": 0.55, "atelectasis": 0.33, "pacemaker": 0.19,
        "central_line": 0.17, "ett": 0.06, "wide_mediastinum": 0.06, "opacity": 0.05, "pleural_thickening": 0.01}),
    "infection": (0.10, {
        "pneumonia": 0.60, "consolidation": 0.08, "opacity": 0.18, "effusion": 0.30, "atelectasis": 0.28,
        "central_line": 0.10, "cardiomegaly": 0.09}),
    "critical": (0.17, {
        "ett": 0.63, "central_line": 0.78, "effusion": 0.50, "atelectasis": 0.45, "edema": 0.25, "opacity": 0.14,
        "consolidation": 0.05, "pneumonia": 0.10, "cardiomegaly": 0.21, "pneumothorax": 0.09, "pacemaker": 0.05,
        "wide_mediastinum": 0.06}),
    "postprocedural": (0.045, {
        "pneumothorax": 0.65, "effusion": 0.34, "atelectasis": 0.38, "central_line": 0.36, "ett": 0.12,
        "fracture": 0.16, "wide_mediastinum": 0.09}),
    "chronic": (0.17, {
        "cardiomegaly": 0.17, "atelectasis": 0.20, "effusion": 0.10, "lesion": 0.15, "opacity": 0.08,
        "fracture": 0.07, "pleural_thickening": 0.04, "wide_mediastinum": 0.05, "pacemaker": 0.07}),
}


def _choice(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    names = list(weights)
    w = np.array([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def draw_profile(rng: np.random.Generator) -> str:
    """One clinical profile, by the prior weights of :data:`PROFILES`."""
    return _choice(rng, {k: v[0] for k, v in PROFILES.items()})


def draw_kinds(profile: str, rng: np.random.Generator) -> list[str]:
    """Finding kinds of one study of ``profile``: each kind independently with its probability.

    A pneumonia and a consolidation would be drawn as the same opacity, so consolidation is
    dropped when both come up. The order is the profile's (deterministic for a seed)."""
    kinds = [k for k, p in PROFILES[profile][1].items() if rng.random() < p]
    if "pneumonia" in kinds and "consolidation" in kinds:
        kinds.remove("consolidation")
    return kinds


def cooccurrence(labels: Iterable[Mapping[str, int]] | np.ndarray, observations=OBSERVATIONS) -> dict:
    """Co-occurrence of positive labels.

    Args:
        labels: per study a label dict (``{observation: 1 | 0 | -1}``, positive = 1) or an
            ``(N, L)`` 0/1 matrix in ``observations`` order.

    Returns:
        ``{"observations", "n", "rate" (L,), "joint" (L, L) P(A and B), "conditional" (L, L)
        P(B | A) (row A, column B; None where A never occurs), "lift" (L, L) P(A and B) / (P(A) P(B))
        (None where A or B never occurs)}`` as nested lists (JSON-safe).
    """
    if isinstance(labels, np.ndarray):
        y = labels.astype(bool)
    else:
        y = np.array([[lab.get(o) == POSITIVE for o in observations] for lab in labels], dtype=bool).reshape(
            -1, len(observations))
    n = max(len(y), 1)
    rate = y.mean(0) if len(y) else np.zeros(len(observations))
    joint = (y[:, :, None] & y[:, None, :]).sum(0) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = joint / rate[:, None]
        lift = joint / (rate[:, None] * rate[None, :])
    def rows(m):
        return [[float(x) if np.isfinite(x) else None for x in r] for r in m]
    return {"observations": list(observations), "n": int(len(y)), "rate": rate.tolist(), "joint": joint.tolist(),
            "conditional": rows(cond), "lift": rows(lift)}


def mimic_rates() -> dict[str, float]:
    """Published MIMIC-CXR positive rates per study (:data:`MIMIC_CXR_POSITIVE` / :data:`MIMIC_CXR_N`)."""
    return {o: MIMIC_CXR_POSITIVE[o] / MIMIC_CXR_N for o in OBSERVATIONS}


def apply_spurious_cue(findings: list, cue_on: bool, strength: float, rng: np.random.Generator,
                       phantom_positive: bool, make_pacemaker) -> list:
    """Re-decide the pacemaker of a study by the spurious-cue rule (module docstring).

    Args:
        findings: the study's findings (:class:`~.cxr_reports.Finding`); pacemakers are replaced.
        cue_on: True in the cue splits (the pacemaker tracks cardiomegaly), False elsewhere
            (it tracks ``phantom_positive``, an independent draw with cardiomegaly's marginal).
        strength: P(pacemaker | cardiomegaly positive) = P(no pacemaker | not positive).
        make_pacemaker: ``rng -> Finding`` drawing a pacemaker's side and seed.

    Returns:
        The findings with a pacemaker iff the rule says so.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"spurious cue strength must be in [0, 1], got {strength}")
    cm = any(f.kind == "cardiomegaly" and f.certain for f in findings)
    follow = cm if cue_on else phantom_positive
    want = bool(rng.random() < (strength if follow else 1.0 - strength))
    out = [f for f in findings if f.kind != "pacemaker"]
    if want:
        out.append(make_pacemaker(rng))
    return out
