"""Synthetic chest radiographs (PA + lateral) with reports and CheXpert labels.

A projection model, not a picture: each structure adds its attenuation line
integral ``A = sum(mu_i * thickness_i)`` (soft tissue 0.02 /mm, aerated lung
0.005 /mm, bone +0.05 /mm, metal 0.4 /mm) and the film is
``sigmoid((A + noise - mid) / width)``, the S-shaped characteristic curve of a
screen-film or processed digital radiograph: air is black, aerated lung dark,
the heart and abdomen bright, bone and metal brightest. Quantum noise grows
with attenuation (fewer photons behind dense parts) and is drawn from the
patient's seed only, so a render of the same patient with and without a
finding differs exactly where the finding's attenuation layer is non-zero.

Frontal images are PA as displayed by convention: the patient's left is the
viewer's right (heart apex, aortic knob and gastric bubble on the right of the
image). Lateral images face the viewer's left (anterior left, spine right).

Every finding is an additive attenuation layer over the patient's anatomy
(cardiomegaly instead scales the heart to a target cardiothoracic ratio), and
its mask is that layer's support, so the labels can be checked against the
pixels. The report and labels come from :mod:`medkit.synth.cxr_reports`.

Output (R2Gen / IU-Xray layout, read by :func:`medkit.io.load_report_dataset`)::

    out/annotation.json            {"train": [entry...], "val": [...], "test": [...]}
    out/images/{id}/0.png          PA, 8-bit grayscale
    out/images/{id}/1.png          lateral
    out/masks/{id}.png             16-bit: bit k = OBSERVATIONS[k], bit 14 heart, bit 15 lungs
    out/ground_truth.jsonl         per study: findings (side, severity, CTR, positions), sentences
    out/summary.json               counts per split and per label
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..io.atomic import atomic_path, write_json, write_text
from .chexpert import OBSERVATIONS
from .cxr_anatomy import Patient, sample_patient  # noqa: F401 - Patient is part of this module's API
from .cxr_cooccurrence import apply_spurious_cue, cooccurrence
from .cxr_frontal import measure_ctr, render_frontal  # noqa: F401 - measure_ctr is part of this module's API
from .cxr_lateral import render_lateral
from .cxr_reports import (
    DEVICES,
    Finding,
    check_consistency,
    finding_observations,
    labels_from_sentences,
    rendered_observations,
    sample_findings,
    sample_pacemaker,
    sample_profile_findings,
    write_report,
)

HEART_BIT, LUNG_BIT = 14, 15
SPLITS = ("train", "val", "test")
SPURIOUS_CUES = {"none": None, "pacemaker-cardiomegaly": ("pacemaker", "Cardiomegaly")}


@dataclass
class CXRConfig:
    """``medkit synth cxr`` settings.

    Attributes:
        n_cases: studies (each one PA + one lateral image).
        seed: same seed, byte-identical output.
        size: image side in pixels (64..512; 256 keeps 100 studies well under a minute on CPU).
        lateral: also render the lateral view (``image_path`` then has two entries).
        label_model: ``mimic``: findings co-occur through latent clinical profiles, label rates
            near MIMIC-CXR's (:mod:`medkit.synth.cxr_cooccurrence`); ``independent``: each study
            draws 1..``max_findings`` pathologies with no regard to each other (the first version).
        p_uncertain: chance the report hedges on a rendered finding (label -1).
        p_normal: ``independent`` only: chance a study has no pathology.
        max_findings: ``independent`` only: most pathologies per abnormal study.
        p_devices: ``independent`` only: chance of support devices (ET tube, central line, pacemaker).
        spurious_cue: ``none`` or ``pacemaker-cardiomegaly``: in the ``cue_splits`` a pacemaker is
            present with chance ``cue_strength`` when cardiomegaly is positive and
            ``1 - cue_strength`` when not; in the other splits it is independent of cardiomegaly
            with the same marginal (:func:`~medkit.synth.cxr_cooccurrence.apply_spurious_cue`).
        cue_strength: agreement of cue and label in the cue splits (0.9: 90 %).
        cue_splits: splits where the cue tracks the label (default train and val; test is independent).
        noise: multiplier on quantum noise.
        splits: train/val/test fractions.
        write_masks: write ``masks/{id}.png``.
    """

    n_cases: int = 100
    seed: int = 0
    size: int = 256
    lateral: bool = True
    label_model: str = "mimic"
    p_uncertain: float = 0.15
    p_normal: float = 0.35
    max_findings: int = 3
    p_devices: float = 0.15
    spurious_cue: str = "none"
    cue_strength: float = 0.9
    cue_splits: tuple[str, ...] = ("train", "val")
    noise: float = 1.0
    splits: tuple[float, float, float] = (0.7, 0.1, 0.2)
    write_masks: bool = True


# --- the dataset ----------------------------------------------------------------

def _png8(path: Path, img: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(img * 255).astype(np.uint8), mode="L").save(tmp, format="PNG")


def pack_masks(masks: dict[str, np.ndarray]) -> np.ndarray:
    """Observation masks -> one uint16 image: bit k = ``OBSERVATIONS[k]``, bit 14 heart, bit 15 lungs."""
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape, dtype=np.uint16)
    for k, o in enumerate(OBSERVATIONS):
        if o in masks:
            out |= masks[o].astype(np.uint16) << k
    out |= masks["heart"].astype(np.uint16) << HEART_BIT
    out |= masks["lungs"].astype(np.uint16) << LUNG_BIT
    return out


def read_masks(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``masks/{id}.png`` back into ``{observation | "heart" | "lungs": (X, Y) bool}``."""
    arr = np.asarray(Image.open(path)).astype(np.uint32)
    out = {o: (arr >> k & 1).astype(bool) for k, o in enumerate(OBSERVATIONS)}
    out["heart"], out["lungs"] = (arr >> HEART_BIT & 1).astype(bool), (arr >> LUNG_BIT & 1).astype(bool)
    return out


def _draw_findings(cfg: CXRConfig, rng: np.random.Generator) -> tuple[str | None, list[Finding]]:
    if cfg.label_model == "mimic":
        return sample_profile_findings(rng, p_uncertain=cfg.p_uncertain)
    return None, sample_findings(rng, model=cfg.label_model, p_normal=cfg.p_normal, p_uncertain=cfg.p_uncertain,
                                 max_findings=cfg.max_findings, p_devices=cfg.p_devices)


def draw_study(cfg: CXRConfig, index: int, split: str = "train") -> dict:
    """What study ``(cfg.seed, index)`` shows, without rendering it: ``{"id", "patient", "profile",
    "findings", "report", "labels", "cue"}`` (the same draws :func:`generate_study` renders).

    ``split`` matters only with a spurious cue (whether the cue tracks its label there).
    ``cue``: ``None`` without a cue, else ``{"name", "target", "present", "target_positive",
    "conflict"}`` (conflict: cue and label disagree).
    """
    if cfg.spurious_cue not in SPURIOUS_CUES:
        raise ValueError(f"spurious_cue must be one of {sorted(SPURIOUS_CUES)}, got {cfg.spurious_cue!r}")
    rng = np.random.default_rng([cfg.seed, index])
    patient = sample_patient(rng)
    profile, findings = _draw_findings(cfg, rng)
    cue = None
    if SPURIOUS_CUES[cfg.spurious_cue] is not None:
        # separate streams, so the rest of the study is the same with and without the cue
        crng = np.random.default_rng([cfg.seed, index, 1])
        _, phantom = _draw_findings(cfg, np.random.default_rng([cfg.seed, index, 2]))
        findings = apply_spurious_cue(findings, split in cfg.cue_splits, cfg.cue_strength, crng,
                                      any(f.kind == "cardiomegaly" and f.certain for f in phantom), sample_pacemaker)
    report = write_report(findings, rng)
    labels = labels_from_sentences(report["sentences"])
    check_consistency(findings, labels)
    if SPURIOUS_CUES[cfg.spurious_cue] is not None:
        kind, target = SPURIOUS_CUES[cfg.spurious_cue]
        present, positive = any(f.kind == kind for f in findings), labels.get(target) == 1
        cue = {"name": kind, "target": target, "present": present, "target_positive": positive,
               "conflict": present != positive}
    return {"id": f"CXR{index + 1:04d}", "patient": patient, "profile": profile, "findings": findings,
            "report": report, "labels": labels, "cue": cue}


def generate_study(cfg: CXRConfig, index: int, split: str = "train") -> dict:
    """:func:`draw_study` plus its renders: ``frontal`` (:func:`render_frontal`) and ``lateral``."""
    st = draw_study(cfg, index, split)
    st["frontal"] = render_frontal(st["patient"], st["findings"], cfg.size, cfg.noise)
    st["lateral"] = render_lateral(st["patient"], st["findings"], cfg.size, cfg.noise) if cfg.lateral else None
    return st


def _split_of(n: int, seed: int, fractions) -> list[str]:
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"splits must be three non-negative fractions (train, val, test), got {list(fractions)}")
    fr = fr / fr.sum()
    n_tr, n_va = int(round(fr[0] * n)), int(round(fr[1] * n))
    n_va = min(n_va, n - n_tr)
    perm = np.random.default_rng([seed, 2**20]).permutation(n)
    out = ["test"] * n
    for j, i in enumerate(perm):
        out[i] = "train" if j < n_tr else "val" if j < n_tr + n_va else "test"
    return out


def generate_dataset(cfg: CXRConfig, out: str | Path, progress=None) -> dict:
    """Write ``cfg.n_cases`` studies to ``out`` (layout in the module doc); return a summary.

    Raises:
        ValueError: on a size outside 64..512, no studies, or bad split fractions.
    """
    import time

    if not 64 <= cfg.size <= 512:
        raise ValueError(f"size must be 64..512 pixels, got {cfg.size}")
    if cfg.n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {cfg.n_cases}")
    out = Path(out)
    t0 = time.perf_counter()
    splits = _split_of(cfg.n_cases, cfg.seed, cfg.splits)
    ann: dict[str, list] = {s: [] for s in SPLITS}
    gt_rows = []
    counts = {o: {"1": 0, "0": 0, "-1": 0} for o in OBSERVATIONS}
    all_labels: list[dict] = []
    items = range(cfg.n_cases)
    for i in (progress(items, "radiographs") if progress else items):
        st = generate_study(cfg, i, splits[i])
        sid, split, rep = st["id"], splits[i], st["report"]
        _png8(out / "images" / sid / "0.png", st["frontal"]["image"])
        paths = [f"{sid}/0.png"]
        if st["lateral"] is not None:
            _png8(out / "images" / sid / "1.png", st["lateral"])
            paths.append(f"{sid}/1.png")
        if cfg.write_masks:
            with atomic_path(out / "masks" / f"{sid}.png") as tmp:
                Image.fromarray(pack_masks(st["frontal"]["masks"])).save(tmp, format="PNG")
        for o, v in st["labels"].items():
            counts[o][str(v)] += 1
        ctr = round(float(st["frontal"]["ctr"]), 4)
        ann[split].append({"id": sid, "report": rep["findings"], "impression": rep["impression"],
                           "image_path": paths, "split": split, "labels": st["labels"],
                           "views": ["PA", "LATERAL"][: len(paths)], "ctr": ctr,
                           **({"cue": st["cue"]} if st["cue"] is not None else {})})
        all_labels.append(st["labels"])
        gt_rows.append({
            "id": sid, "split": split, "ctr": ctr, "labels": st["labels"], "profile": st["profile"],
            "cue": st["cue"],
            "text": f"FINDINGS: {rep['findings']}\nIMPRESSION: {rep['impression']}",
            "findings": [{**f.to_dict(), "observations": list(finding_observations(f)), "geometry": g}
                         for f, g in zip(st["findings"], st["frontal"]["geometry"])],
            "rendered": sorted(rendered_observations(st["findings"])),
            "sentences": rep["sentences"], "patient": asdict(st["patient"])})
    write_json(out / "annotation.json", ann)
    write_text(out / "ground_truth.jsonl", "".join(json.dumps(r, allow_nan=False) + "\n" for r in gt_rows))
    summary = {"n_cases": cfg.n_cases, "n_images": cfg.n_cases * (2 if cfg.lateral else 1), "size": cfg.size,
               "seed": cfg.seed, "splits": {s: len(v) for s, v in ann.items()}, "label_counts": counts,
               "devices": sum(any(f["kind"] in DEVICES for f in r["findings"]) for r in gt_rows),
               "label_model": cfg.label_model, "cooccurrence": cooccurrence(all_labels)}
    if SPURIOUS_CUES[cfg.spurious_cue] is not None:
        summary["spurious_cue"] = {
            s_: {"n": len(rows), "cue_present": sum(r["cue"]["present"] for r in rows),
                 "conflict": sum(r["cue"]["conflict"] for r in rows)}
            for s_ in SPLITS for rows in [[r for r in gt_rows if r["split"] == s_]]}
    write_json(out / "summary.json", summary)
    return {**summary, "seconds": round(time.perf_counter() - t0, 2)}
