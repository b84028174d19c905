"""What a synthetic chest radiograph shows, and the report that describes it.

Two halves, kept apart from the renderer (:mod:`medkit.synth.cxr`):

- :func:`sample_findings` draws a study's findings (kind, side, severity, size,
  whether the report will hedge on it) from a ``numpy.random.Generator``: by default
  from the latent-profile co-occurrence model of :mod:`medkit.synth.cxr_cooccurrence`
  (MIMIC-CXR-like: findings cluster by illness), or independently of each other
  (``model="independent"``, the generator's first version).
- :func:`write_report` turns findings into an IU-Xray-style report (FINDINGS +
  IMPRESSION) from a small grammar with synonyms, negations, uncertainty,
  laterality and severity words, and returns every sentence with the CheXpert
  labels it asserts. The study's labels are derived from those sentences only
  (:func:`labels_from_sentences`), the way a report labeler would read them, so
  a finding the report hedges on is -1, a pertinent negative is 0 and an
  unmentioned observation is absent.

The phrase tables (:data:`MENTIONS`, :data:`NEGATION_CUES`,
:data:`UNCERTAINTY_CUES`, :data:`NORMAL_SENTENCES`) are public so a test can
check the grammar with a ten-line parser instead of a real labeler.

Sides are the patient's: "left" is the viewer's right on a PA film.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .chexpert import LUNG_OPACITY_CHILDREN, NEGATIVE, POSITIVE, UNCERTAIN, apply_hierarchy, combine

# Finding kind -> the CheXpert observations it makes present.
KIND_OBSERVATIONS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("Cardiomegaly",),
    "wide_mediastinum": ("Enlarged Cardiomediastinum",),
    "effusion": ("Pleural Effusion",),
    "pneumothorax": ("Pneumothorax",),
    "consolidation": ("Consolidation",),
    "pneumonia": ("Consolidation", "Pneumonia"),
    "atelectasis": ("Atelectasis",),
    "edema": ("Edema",),
    "lesion": ("Lung Lesion",),
    "opacity": ("Lung Opacity",),
    "fracture": ("Fracture",),
    "pleural_thickening": ("Pleural Other",),
    "ett": ("Support Devices",),
    "central_line": ("Support Devices",),
    "pacemaker": ("Support Devices",),
}
DEVICES = ("ett", "central_line", "pacemaker")
# Relative frequency of each pathology among abnormal studies.
KIND_WEIGHTS: dict[str, float] = {
    "cardiomegaly": 1.0, "effusion": 1.0, "atelectasis": 0.8, "consolidation": 0.7, "lesion": 0.7,
    "pneumonia": 0.6, "edema": 0.6, "opacity": 0.6, "pneumothorax": 0.6, "wide_mediastinum": 0.4,
    "fracture": 0.4, "pleural_thickening": 0.4,
}

# --- phrase tables (public: the tests parse the grammar with these) ----------
# Substrings that count as mentioning an observation (lower case).
MENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("mediastin",),
    "Cardiomegaly": ("cardiomegaly", "heart", "cardiac"),
    "Lung Opacity": ("opacit", "consolidation", "atelectasis", "edema", "nodul", "mass", "pneumonia"),
    "Lung Lesion": ("nodul", "mass"),
    "Edema": ("edema",),
    "Consolidation": ("consolidation",),
    "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis",),
    "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("effusion",),
    "Pleural Other": ("pleural thickening",),
    "Fracture": ("fracture",),
    "Support Devices": ("tube", "catheter", "pacemaker"),
}
NEGATION_CUES = ("no", "without", "not", "negative for", "free of")
UNCERTAINTY_CUES = ("possible", "questionable", "suspected", "cannot be excluded", "cannot exclude",
                    "may represent", "concerning for")
SEVERITY_WORDS = ("small", "moderate", "large", "mild", "severe")

_CM, _EC, _LO = "Cardiomegaly", "Enlarged Cardiomediastinum", "Lung Opacity"
_PE, _PTX = "Pleural Effusion", "Pneumothorax"
# Normal statements: (sentence, labels it asserts). Several carry no cue word
# ("heart size is normal"), which is why the tests need this table.
NORMAL_SENTENCES: dict[str, list[tuple[str, dict[str, int]]]] = {
    "heart": [
        ("The heart is normal in size.", {_CM: 0}), ("Heart size is normal.", {_CM: 0}),
        ("The heart size is within normal limits.", {_CM: 0}), ("Normal heart size.", {_CM: 0}),
        ("The cardiac silhouette is normal in size.", {_CM: 0}), ("The heart is not enlarged.", {_CM: 0}),
        ("The cardiomediastinal silhouette is within normal limits.", {_CM: 0, _EC: 0}),
        ("Normal cardiomediastinal silhouette.", {_CM: 0, _EC: 0}),
        ("Heart size and mediastinal contours are normal.", {_CM: 0, _EC: 0}),
    ],
    "mediastinum": [
        ("The mediastinum is unremarkable.", {_EC: 0}), ("Mediastinal contours are normal.", {_EC: 0}),
        ("The mediastinum is not widened.", {_EC: 0}), ("Normal mediastinal contours.", {_EC: 0}),
    ],
    "lungs": [
        ("The lungs are clear.", {_LO: 0}), ("Lungs are clear bilaterally.", {_LO: 0}),
        ("The lungs are well expanded and clear.", {_LO: 0}), ("Clear lungs.", {_LO: 0}),
        ("No focal consolidation.", {"Consolidation": 0}),
        ("There is no focal airspace opacity.", {_LO: 0}),
        ("No pulmonary edema.", {"Edema": 0}), ("There is no evidence of pulmonary edema.", {"Edema": 0}),
        ("No suspicious pulmonary nodules or masses.", {"Lung Lesion": 0}),
        ("No focal consolidation to suggest pneumonia.", {"Consolidation": 0, "Pneumonia": 0}),
    ],
    "pleura": [
        ("No pleural effusion or pneumothorax.", {_PE: 0, _PTX: 0}),
        ("There is no pneumothorax or pleural effusion.", {_PE: 0, _PTX: 0}),
        ("No pneumothorax.", {_PTX: 0}), ("No pleural effusion.", {_PE: 0}),
        ("No evidence of pleural effusion.", {_PE: 0}), ("Without evidence of pneumothorax.", {_PTX: 0}),
        ("The costophrenic angles are sharp without pleural effusion.", {_PE: 0}),
    ],
    "bones": [
        ("No acute osseous abnormality.", {}), ("The osseous structures are intact.", {}),
        ("No acute fracture.", {"Fracture": 0}), ("No displaced rib fracture is seen.", {"Fracture": 0}),
        ("Visualized osseous structures are unremarkable.", {}),
    ],
    "impression": [
        ("No acute cardiopulmonary process.", {}), ("No acute cardiopulmonary abnormality.", {}),
        ("No acute disease.", {}), ("Normal chest radiograph.", {}),
        ("No active cardiopulmonary disease.", {}), ("No acute cardiopulmonary findings.", {}),
        ("Normal chest x-ray.", {}),
    ],
}

_LOBES = {("right", "upper"): "right upper lobe", ("right", "middle"): "right middle lobe",
          ("right", "lower"): "right lower lobe", ("left", "upper"): "left upper lobe",
          ("left", "middle"): "lingula", ("left", "lower"): "left lower lobe"}
_ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}
_ORDINAL = {3: "3rd", 4: "4th", 5: "5th", 6: "6th", 7: "7th", 8: "8th", 9: "9th"}


@dataclass
class Finding:
    """One abnormality of a study, in the patient's frame.

    Attributes:
        kind: a key of :data:`KIND_OBSERVATIONS`.
        side: "left" / "right" / "bilateral" (patient side), None where it has none.
        severity: "small"/"moderate"/"large" or "mild"/"moderate"/"severe".
        certain: False when the report hedges on it (its labels become -1).
        params: kind-specific numbers (``ctr``, ``zone``, ``size_mm``, ``rib``...).
        seed: randomness the renderer uses for its shape and exact position.
    """

    kind: str
    side: str | None = None
    severity: str | None = None
    certain: bool = True
    params: dict = field(default_factory=dict)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _pick(rng: np.random.Generator, items, p=None):
    i = rng.choice(len(items), p=None if p is None else np.asarray(p) / np.sum(p))
    return items[int(i)]


def finding_observations(f: Finding) -> tuple[str, ...]:
    """The CheXpert observations finding ``f`` makes present (a pneumonia the report calls an
    opacity makes Pneumonia present, not Consolidation)."""
    if f.kind == "pneumonia" and f.params.get("described_as") == "opacity":
        return ("Pneumonia",)
    return KIND_OBSERVATIONS[f.kind]


def _sample_one(kind: str, rng: np.random.Generator, certain: bool, profile: str | None = None) -> Finding:
    side = _pick(rng, ("left", "right"))
    f = Finding(kind, side=side, certain=certain, seed=int(rng.integers(2**31)))
    if kind == "cardiomegaly":
        f.side = None
        if certain:
            f.severity = _pick(rng, ("mild", "moderate", "severe"), (0.5, 0.35, 0.15))
            lo, hi = {"mild": (0.55, 0.58), "moderate": (0.58, 0.63), "severe": (0.63, 0.69)}[f.severity]
        else:  # borderline heart: the report hedges
            f.severity, (lo, hi) = "mild", (0.52, 0.54)
        f.params["ctr"] = round(float(rng.uniform(lo, hi)), 3)
    elif kind == "wide_mediastinum":
        f.side, f.severity = None, _pick(rng, ("mild", "moderate"))
        f.params["extra_mm"] = round(float(rng.uniform(*((12, 20) if f.severity == "mild" else (20, 32)))), 1)
    elif kind == "effusion":
        # heart-failure effusions are mostly bilateral or right-sided; others more often one-sided
        f.side = _pick(rng, ("left", "right", "bilateral"),
                       (0.15, 0.30, 0.55) if profile == "heart_failure" else (0.4, 0.35, 0.25))
        f.severity = _pick(rng, ("small", "moderate", "large"), (0.5, 0.35, 0.15))
    elif kind == "pneumothorax":
        f.severity = _pick(rng, ("small", "moderate", "large"), (0.5, 0.3, 0.2))
    elif kind in ("consolidation", "pneumonia", "opacity"):
        f.severity = _pick(rng, ("small", "moderate", "large"), (0.35, 0.4, 0.25))
        f.params["zone"] = _pick(rng, ("upper", "middle", "lower"), (0.3, 0.2, 0.5))
        f.params["air_bronchograms"] = kind != "opacity" and bool(rng.random() < 0.5)
        if kind == "pneumonia" and profile is not None:  # the co-occurrence model: words vary
            # MIMIC-CXR has fewer Consolidation than Pneumonia positives: many pneumonias are
            # reported as an opacity ("opacity concerning for pneumonia"), not a consolidation.
            f.params["described_as"] = _pick(rng, ("consolidation", "opacity"), (0.45, 0.55))
    elif kind == "atelectasis":
        f.side = _pick(rng, ("left", "right", "bilateral"), (0.35, 0.35, 0.3))
        f.severity = _pick(rng, ("mild", "moderate", "severe"), (0.6, 0.3, 0.1))
        if f.side == "bilateral" and f.severity == "severe":
            f.severity = "moderate"
    elif kind == "edema":
        f.side = "bilateral"
        f.severity = _pick(rng, ("mild", "moderate", "severe"), (0.45, 0.35, 0.2))
        f.params["kerley_lines"] = f.severity != "mild" and bool(rng.random() < 0.6)
    elif kind == "lesion":
        mass = bool(rng.random() < 0.35)
        f.params["size_mm"] = round(float(rng.uniform(32, 60) if mass else rng.uniform(7, 28)), 0)
        f.params["zone"] = _pick(rng, ("upper", "middle", "lower"))
        f.severity = None
    elif kind == "fracture":
        f.params["rib"] = int(rng.integers(4, 10))
        f.params["displaced"] = bool(rng.random() < 0.5)
    elif kind == "pleural_thickening":
        f.params["location"] = _pick(rng, ("apical", "lateral"))
    elif kind == "central_line":
        f.params["route"] = _pick(rng, ("internal jugular", "subclavian"))
    elif kind == "pacemaker":
        f.side = _pick(rng, ("left", "right"), (0.85, 0.15))
    if kind in DEVICES:
        f.certain = True
        if kind == "ett":
            f.side = None
            f.params["tip_above_carina_cm"] = round(float(rng.uniform(3, 6)), 1)
    return f


def sample_findings(rng: np.random.Generator, *, model: str = "mimic", p_uncertain: float = 0.15,
                    p_normal: float = 0.35, max_findings: int = 3, p_devices: float = 0.15) -> list[Finding]:
    """Draw one study's findings (pathologies and support devices).

    Args:
        model: ``mimic`` (default): the latent-profile co-occurrence model
            (:func:`sample_profile_findings`); ``independent``: none (a normal study, chance
            ``p_normal``) or 1..``max_findings`` pathologies drawn without regard to each other,
            plus devices with chance ``p_devices`` (``p_normal``/``max_findings``/``p_devices`` only
            apply here).
        p_uncertain: chance the report hedges on a rendered pathology (its labels become -1).
    """
    if model == "mimic":
        return sample_profile_findings(rng, p_uncertain=p_uncertain)[1]
    if model != "independent":
        raise ValueError(f"label model must be 'mimic' or 'independent', got {model!r}")
    out: list[Finding] = []
    if rng.random() >= p_normal:
        kinds = list(KIND_WEIGHTS)
        w = np.array([KIND_WEIGHTS[k] for k in kinds])
        n = int(rng.integers(1, max_findings + 1))
        chosen = [kinds[i] for i in rng.choice(len(kinds), size=min(n, len(kinds)), replace=False, p=w / w.sum())]
        if "pneumonia" in chosen and "consolidation" in chosen:  # both would draw the same opacity
            chosen.remove("consolidation")
        out += [_sample_one(k, rng, certain=bool(rng.random() >= p_uncertain)) for k in chosen]
    if rng.random() < p_devices:
        for k in DEVICES:
            if rng.random() < 0.5 or k == "ett" and not any(f.kind in DEVICES for f in out):
                out.append(_sample_one(k, rng, certain=True))
    return out


def sample_profile_findings(rng: np.random.Generator, *, p_uncertain: float = 0.15) -> tuple[str, list[Finding]]:
    """``(profile, findings)`` from the co-occurrence model of :mod:`.cxr_cooccurrence`."""
    from .cxr_cooccurrence import draw_kinds, draw_profile

    profile = draw_profile(rng)
    kinds = draw_kinds(profile, rng)
    return profile, [_sample_one(k, rng, certain=k in DEVICES or bool(rng.random() >= p_uncertain),
                                 profile=profile) for k in kinds]


def sample_pacemaker(rng: np.random.Generator) -> Finding:
    """A pacemaker (the spurious cue's device), left-sided 85 % of the time."""
    return _sample_one("pacemaker", rng, certain=True)


# --- the grammar --------------------------------------------------------------

def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _lobe(f: Finding, rng) -> str:
    zone = f.params.get("zone", "lower")
    if zone == "lower" and rng.random() < 0.35:
        return f"{f.side} lung base"
    return _LOBES[(f.side, zone)]


def _size(mm: float) -> str:
    return f"{mm:.0f} mm" if mm < 10 else f"{mm / 10:.1f} cm"


def _hedge(np_: str, rng) -> str:
    """A hedged sentence about noun phrase ``np_`` (contains an uncertainty cue)."""
    return _pick(rng, (f"Possible {np_}.", f"{_cap(np_)} cannot be excluded.", f"Cannot exclude {np_}.",
                       f"Questionable {np_}.", f"Suspected {np_}.", f"Findings may represent {np_}."))


def _finding_sentences(f: Finding, rng) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(findings-section sentences, impression sentences), each with its labels."""
    obs = finding_observations(f)
    val = POSITIVE if f.certain else UNCERTAIN
    tags = {o: val for o in obs}
    k, sev, side = f.kind, f.severity, f.side
    if k == "cardiomegaly":
        if not f.certain:
            return ([(_pick(rng, ("The heart size is at the upper limits of normal; mild cardiomegaly cannot be excluded.",
                                  "Possible mild cardiomegaly.", "The cardiac silhouette is borderline; cannot exclude mild cardiomegaly.")), tags)],
                    [("Possible mild cardiomegaly.", tags)])
        return ([(_pick(rng, (f"{_cap(sev)} cardiomegaly.", f"The heart is {_ADVERB[sev]} enlarged.",
                              f"The cardiac silhouette is {_ADVERB[sev]} enlarged.", f"There is {sev} cardiomegaly.")), tags)],
                [(f"{_cap(sev)} cardiomegaly.", tags)])
    if k == "wide_mediastinum":
        np_ = "widening of the superior mediastinum"
        if not f.certain:
            return [(_hedge(np_, rng), tags)], [(_hedge("mediastinal widening", rng), tags)]
        return ([(_pick(rng, ("The mediastinum is widened.", "There is widening of the superior mediastinum.",
                              "The mediastinal silhouette is widened.")), tags)],
                [(_pick(rng, ("Widened mediastinum.", "Mediastinal widening; consider CT for further evaluation.")), tags)])
    if k == "effusion":
        np_ = f"{sev} bilateral pleural effusions" if side == "bilateral" else f"{sev} {side} pleural effusion"
        angle = "costophrenic angles" if side == "bilateral" else f"{side} costophrenic angle"
        if not f.certain:
            return ([(f"Blunting of the {angle} may represent {'' if side == 'bilateral' else 'a '}{np_}.", tags)],
                    [(_hedge(np_, rng), tags)])
        return ([(_pick(rng, (f"There {'are' if side == 'bilateral' else 'is a'} {np_}.", f"{_cap(np_)}.",
                              f"{_cap(np_)} with blunting of the {angle}.", f"{_cap(np_)} with a meniscus.")), tags)],
                [(f"{_cap(np_)}.", tags)])
    if k == "pneumothorax":
        np_ = _pick(rng, (f"{sev} {side} apical pneumothorax", f"{sev} {side} pneumothorax"))
        if not f.certain:
            return [(_hedge(np_, rng), tags)], [(_hedge(f"{side} pneumothorax", rng), tags)]
        return ([(_pick(rng, (f"There is a {np_}.", f"{_cap(np_)} with a visible visceral pleural line.",
                              f"{_cap(np_)} with absent lung markings lateral to the pleural line.")), tags)],
                [(f"{_cap(np_)}.", tags)])
    if k in ("consolidation", "pneumonia", "opacity"):
        lobe = _lobe(f, rng)
        ab = " with air bronchograms" if f.params.get("air_bronchograms") else ""
        if k == "opacity":
            adj = _pick(rng, ("patchy", "hazy", "ill-defined"))
            np_ = f"{'small ' if sev == 'small' else 'large ' if sev == 'large' else ''}{adj} opacity in the {lobe}"
            if not f.certain:
                return [(_hedge(np_, rng), tags)], [(_hedge(f"opacity in the {lobe}", rng), tags)]
            return [(f"There is a {np_}.", tags)], [(f"{_cap(np_)}.", tags)]
        if k == "pneumonia" and f.params.get("described_as") == "opacity":
            size = {"small": "small ", "moderate": "", "large": "large "}[sev]
            adj = _pick(rng, ("patchy", "airspace", "focal"))
            fs = [(f"There is a {size}{adj} opacity in the {lobe}{ab}.", {_LO: POSITIVE})]
            if f.certain:
                imp = _pick(rng, (f"{_cap(lobe)} pneumonia.", f"Findings consistent with {lobe} pneumonia.",
                                  f"{_cap(lobe)} opacity consistent with pneumonia."))
                return fs, [(imp, {"Pneumonia": val, **({_LO: POSITIVE} if "opacity" in imp else {})})]
            imp = _pick(rng, ("Pneumonia cannot be excluded.", f"{_cap(lobe)} opacity may represent pneumonia.",
                              f"Possible {lobe} pneumonia."))
            return fs, [(imp, {"Pneumonia": val})]
        word = {"small": "small focus of consolidation", "moderate": "consolidation",
                "large": "extensive consolidation"}[sev]
        cons = {"Consolidation": POSITIVE if k == "pneumonia" else val}
        fs = [(_pick(rng, (f"There is {'a ' if sev == 'small' else ''}{word} in the {lobe}{ab}.",
                           f"{_cap(word)} in the {lobe}{ab}.")), cons)]
        if k == "consolidation" and not f.certain:
            fs = [(_hedge(f"consolidation in the {lobe}", rng), cons)]
        if k == "consolidation":
            return fs, [(f"{_cap(lobe)} consolidation." if f.certain else _hedge(f"{lobe} consolidation", rng), cons)]
        pn = {"Pneumonia": val}
        if f.certain:
            imp = _pick(rng, (f"{_cap(lobe)} pneumonia.", f"Findings consistent with {lobe} pneumonia.",
                              "Consolidation compatible with pneumonia."))
            return fs, [(imp, {**pn, **({"Consolidation": POSITIVE} if "onsolidation" in imp else {})})]
        imp = _pick(rng, ("Pneumonia cannot be excluded.", "Findings may represent pneumonia in the appropriate clinical setting.",
                          f"Possible {lobe} pneumonia.", "Findings concerning for pneumonia."))
        return fs, [(imp, pn)]
    if k == "atelectasis":
        where = "bibasilar" if side == "bilateral" else f"{side} basilar"
        if sev == "mild":
            np_ = _pick(rng, (f"mild {where} atelectasis", f"mild plate-like atelectasis at the {'lung bases' if side == 'bilateral' else side + ' base'}"))
        elif sev == "moderate":
            np_ = f"moderate {where} atelectasis with volume loss"
        else:
            np_ = f"severe {side} lower lobe atelectasis with elevation of the {side} hemidiaphragm"
        if not f.certain:
            return [(_hedge(np_, rng), tags)], [(_hedge(f"{where} atelectasis", rng), tags)]
        return [(_pick(rng, (f"{_cap(np_)}.", f"There is {np_}.")), tags)], [(f"{_cap(where)} atelectasis.", tags)]
    if k == "edema":
        np_ = f"{sev} pulmonary edema"
        if not f.certain:
            return ([(_pick(rng, (f"Perihilar haziness may represent {np_}.", f"Possible {sev} interstitial edema.")), tags)],
                    [(_hedge(np_, rng), tags)])
        kl = " with Kerley B lines" if f.params.get("kerley_lines") else ""
        return ([(_pick(rng, (f"{_cap(np_)}{kl}.", f"Bilateral perihilar haziness and vascular cephalization, consistent with {np_}.",
                              f"{_cap(sev)} interstitial edema{kl}.")), tags)],
                [(f"{_cap(np_)}.", tags)])
    if k == "lesion":
        mm = f.params["size_mm"]
        noun = "mass" if mm >= 30 else "nodule"
        lobe = _LOBES[(side, f.params["zone"])]
        np_ = f"{_size(mm)} {noun} in the {lobe}"
        if not f.certain:
            return [(_hedge(np_, rng), tags)], [(_hedge(f"{lobe} {noun}", rng), tags)]
        return ([(_pick(rng, (f"There is a {np_}.", f"A {_size(mm)} rounded opacity in the {lobe}, consistent with a {noun}.")), tags)],
                [(_pick(rng, (f"{_cap(lobe)} {noun}; recommend CT for further evaluation.", f"{_cap(np_)}.")), tags)])
    if k == "fracture":
        rib = _ORDINAL[f.params["rib"]]
        np_ = f"{'displaced' if f.params.get('displaced') else 'nondisplaced'} fracture of the {side} lateral {rib} rib"
        if not f.certain:
            return [(_hedge(f"fracture of the {side} {rib} rib", rng), tags)], [(_hedge(f"{side} {rib} rib fracture", rng), tags)]
        return [(_pick(rng, (f"There is a {np_}.", f"{_cap(np_)}.")), tags)], [(f"{_cap(side)} {rib} rib fracture.", tags)]
    if k == "pleural_thickening":
        np_ = (f"{side} apical pleural thickening" if f.params["location"] == "apical"
               else f"pleural thickening along the {side} lateral chest wall")
        if not f.certain:
            return [(_hedge(np_, rng), tags)], []
        return [(f"{_cap(np_)}.", tags)], ([(f"{_cap(np_)}.", tags)] if rng.random() < 0.5 else [])
    if k == "ett":
        cm = f.params["tip_above_carina_cm"]
        return [(_pick(rng, (f"Endotracheal tube terminates {cm} cm above the carina.",
                             "Endotracheal tube in standard position.")), tags)], []
    if k == "central_line":
        route = f.params["route"]
        return [(_pick(rng, (f"{_cap(side)} {route} central venous catheter with tip in the SVC.",
                             f"{_cap(side)} {route} catheter tip projects over the superior vena cava.")), tags)], []
    if k == "pacemaker":
        return [(_pick(rng, (f"{_cap(side)}-sided pacemaker with leads in the right atrium and right ventricle.",
                             f"{_cap(side)} chest wall dual-lead pacemaker in place.")), tags)], []
    raise ValueError(f"unknown finding kind {k!r}")


def rendered_observations(findings: list[Finding]) -> set[str]:
    """Observations made present by ``findings`` (Lung Opacity if any child is)."""
    obs = {o for f in findings for o in finding_observations(f)}
    if obs & set(LUNG_OPACITY_CHILDREN):
        obs.add("Lung Opacity")
    return obs


def write_report(findings: list[Finding], rng: np.random.Generator) -> dict:
    """Write a report for ``findings``.

    Returns:
        ``{"findings": str, "impression": str, "sentences": [{"section", "text", "labels"}]}``;
        the study labels are :func:`labels_from_sentences` of ``sentences``.
    """
    present = rendered_observations(findings)

    def normal(slot: str, p: float = 1.0) -> list[tuple[str, dict]]:
        ok = [s for s in NORMAL_SENTENCES[slot] if not set(s[1]) & present]
        return [_pick(rng, ok)] if ok and rng.random() < p else []

    order = ("ett", "central_line", "pacemaker", "cardiomegaly", "wide_mediastinum", "edema", "consolidation",
             "pneumonia", "opacity", "atelectasis", "lesion", "effusion", "pneumothorax", "pleural_thickening", "fracture")
    by = {k: [f for f in findings if f.kind == k] for k in order}
    fs: list[tuple[str, dict]] = []
    imp: list[tuple[str, dict]] = []

    def add(kinds):
        for k in kinds:
            for f in by[k]:
                a, b = _finding_sentences(f, rng)
                fs.extend(a)
                imp.extend(b)

    add(("ett", "central_line", "pacemaker"))
    add(("cardiomegaly", "wide_mediastinum"))
    heart = normal("heart", 0.9)
    fs += heart
    if not (heart and _EC in heart[0][1]):
        fs += normal("mediastinum", 0.4)
    add(("edema", "consolidation", "pneumonia", "opacity", "atelectasis", "lesion"))
    fs += normal("lungs", 0.9)
    add(("effusion", "pneumothorax", "pleural_thickening"))
    fs += normal("pleura", 0.85)
    add(("fracture",))
    fs += normal("bones", 0.45)
    pathology = [f for f in findings if f.kind not in DEVICES]
    if not pathology:
        imp = normal("impression")
    elif not imp:  # only findings with no impression line (pleural thickening): say so anyway
        imp = [(s, t) for s, t in fs if any(v != NEGATIVE for v in t.values()) and not set(t) <= {"Support Devices"}][:1]
    sentences = [{"section": "findings", "text": s, "labels": t} for s, t in fs]
    sentences += [{"section": "impression", "text": s, "labels": t} for s, t in imp]
    return {"findings": " ".join(s for s, _ in fs), "impression": " ".join(s for s, _ in imp), "sentences": sentences}


def labels_from_sentences(sentences: list[dict]) -> dict[str, int]:
    """Study labels from tagged sentences: CheXpert aggregation, then its hierarchy."""
    seen: dict[str, list[int]] = {}
    for s in sentences:
        for o, v in s["labels"].items():
            seen.setdefault(o, []).append(v)
    return apply_hierarchy({o: combine(v) for o, v in seen.items()})


def check_consistency(findings: list[Finding], labels: dict[str, int]) -> None:
    """Raise ``AssertionError`` when labels and rendered findings disagree.

    Rendered observations must be 1 or -1; everything else 0 or absent.
    """
    present = rendered_observations(findings)
    for o, v in labels.items():
        if o in ("No Finding",):
            continue
        if (o in present) != (v in (POSITIVE, UNCERTAIN)):
            raise AssertionError(f"label {o}={v} disagrees with rendered findings {[f.kind for f in findings]}")
    for o in present:
        if o not in labels:
            raise AssertionError(f"rendered {o} is not mentioned in the report")
