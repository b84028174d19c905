"""The 14 CheXpert observations and their label convention.

Irvin et al., "CheXpert: A Large Chest Radiograph Dataset with Uncertainty
Labels and Expert Comparison", AAAI 2019. The order below is the order of the
CheXpert CSV columns (and of every CheXpert / MIMIC-CXR label vector in the
report-generation literature), so a label vector built from it lines up with
published clinical-efficacy metrics.

Label values for one study, as the CheXpert labeler writes them::

    1   positive      the report says the observation is present
    0   negative      the report says it is absent ("no pleural effusion")
    -1  uncertain     the report hedges ("cannot exclude pneumothorax")
    (key absent)      the report does not mention it

Hierarchy (CheXpert Fig. 2): Lung Opacity is the parent of Edema,
Consolidation, Pneumonia, Lung Lesion and Atelectasis, so a positive child
makes Lung Opacity positive (and an uncertain child, if Lung Opacity is not
already positive, uncertain). "No Finding" is positive when no pathology is
positive or uncertain (Support Devices do not count).
"""

from __future__ import annotations

from collections.abc import Mapping

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1
LABEL_VALUES = (POSITIVE, NEGATIVE, UNCERTAIN)

# Children of Lung Opacity in CheXpert's observation hierarchy.
LUNG_OPACITY_CHILDREN: tuple[str, ...] = ("Edema", "Consolidation", "Pneumonia", "Lung Lesion", "Atelectasis")
# Observations that do not count against "No Finding".
NOT_PATHOLOGY: tuple[str, ...] = ("No Finding", "Support Devices")


def combine(values) -> int | None:
    """Merge several mentions of one observation: positive > uncertain > negative.

    This is the CheXpert labeler's aggregation rule. ``combine([0, -1]) == -1``,
    ``combine([]) is None`` (not mentioned).
    """
    values = list(values)
    if not values:
        return None
    for v in (POSITIVE, UNCERTAIN, NEGATIVE):
        if v in values:
            return v
    raise ValueError(f"label values must be in {LABEL_VALUES}, got {values}")


def apply_hierarchy(labels: Mapping[str, int]) -> dict[str, int]:
    """Propagate children to Lung Opacity and set "No Finding"; returns a new dict.

    Keys keep :data:`OBSERVATIONS` order; absent keys stay absent.
    """
    out = dict(labels)
    kids = [out[c] for c in LUNG_OPACITY_CHILDREN if c in out]
    merged = combine(([out["Lung Opacity"]] if "Lung Opacity" in out else []) + [k for k in kids if k != NEGATIVE])
    if merged is not None:
        out["Lung Opacity"] = merged
    if any(out.get(o) in (POSITIVE, UNCERTAIN) for o in OBSERVATIONS if o not in NOT_PATHOLOGY):
        out.pop("No Finding", None)
    else:
        out["No Finding"] = POSITIVE
    return {o: out[o] for o in OBSERVATIONS if o in out}


def validate_labels(labels: Mapping[str, int], where: str = "labels") -> None:
    """Raise ``ValueError`` naming ``where`` on an unknown observation or value."""
    for k, v in labels.items():
        if k not in OBSERVATIONS:
            raise ValueError(f"{where}: unknown CheXpert observation {k!r}")
        if v not in LABEL_VALUES or isinstance(v, bool):
            raise ValueError(f"{where}: {k} = {v!r}, expected 1 / 0 / -1")
