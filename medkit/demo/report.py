"""``report.html`` of ``medkit demo``: the summary of :mod:`medkit.demo` as one page
(:mod:`medkit.viz.html_report`): case list, segmentation overlays and volumes, the
DICOM-SEG read back, deformation figures and propagated contours, generated vs reference
reports with the labeler's findings, dialogue transcripts, every metric's definition and
the manifest."""

from __future__ import annotations

from pathlib import Path

from ..viz.html_report import Section, write_report

DEFINITIONS = {
    "Dice": "2|A∩B| / (|A| + |B|) of predicted and true voxel sets of one structure; 1 = identical, 0 = no "
            "overlap; 1 when both are empty, 0 when one is (a missed structure scores the worst value and counts).",
    "Volume (ml)": "Voxel count × voxel volume (|det| of the affine's 3×3 part, mm³) / 1000, on the input grid.",
    "Mean HU": "Mean CT value (Hounsfield units) of the input image over the segment's voxels.",
    "Displacement |u| (mm)": "Euclidean norm of the predicted displacement at a voxel, world millimetres; "
                             "pull-back convention I_t(x) ≈ I_ref(x + u(x, t)).",
    "Jacobian determinant": "det(I + ∂u/∂x) of the mapping x → x + u(x, t): local volume change "
                            "(1 = none, < 1 compression, ≤ 0 folding).",
    "Folding fraction": "Share of voxels whose Jacobian determinant is ≤ 0 (physically implausible).",
    "Propagated-contour Dice": "Dice between the reference phase's labels warped to the left-out phase and that "
                               "phase's true labels; 'no motion' uses the reference labels unchanged (the baseline).",
    "BLEU-n": "Geometric mean of clipped n-gram precisions (n = 1..4) times a brevity penalty, corpus level "
              "(Papineni et al. 2002); whitespace tokens of the cleaned text.",
    "METEOR": "Harmonic mean of unigram precision and recall (recall weighted) with exact/stem matches and a "
              "fragmentation penalty (Banerjee & Lavie 2005).",
    "ROUGE-L": "F-measure (β = 1.2) of the longest common subsequence of generated and reference report.",
    "CIDEr": "CIDEr-D: TF-IDF-weighted n-gram cosine similarity with a length penalty, ×10 (Vedantam et al. 2015).",
    "CE micro/macro F1": "Clinical efficacy: F1 of the findings the rule-based labeler extracts from the generated "
                         "report, against the ones it extracts from the reference (positive = 1; uncertain as negative); "
                         "micro pools all findings, macro averages per finding.",
    "Labeler value": "1 positive, 0 negative, -1 uncertain, as the rule-based CheXpert-style labeler "
                     "(medkit.metrics.clinical) reads the sentence; blank = not mentioned.",
    "Top-1 accuracy": "Share of dialogues whose final diagnosis (first of the differential) is the case's condition.",
    "Turns": "Doctor turns before the diagnosis (or the turn limit).",
    "Exam F1": "F1 of the tests the doctor ordered against the tests indicated for the case.",
    "Hallucinations": "Doctor turns that presuppose or cite a fact the dialogue never established.",
}


def _model_row(task: str, path: str) -> dict:
    import json

    p = Path(path)
    folder = p.parent if p.is_file() else p
    root = Path(__file__).resolve().parents[2]
    shown = p.resolve().relative_to(root) if p.resolve().is_relative_to(root) else p
    row = {"task": task, "model": folder.name, "path": str(shown)}
    m = folder / "metrics.json"
    try:
        h = json.loads(m.read_text()).get("headline") if m.exists() else None
    except (OSError, ValueError):
        h = None
    if h is None and m.exists():
        try:
            h = {"metric": "mean Dice", "value": json.loads(m.read_text())["test"]["dice_mean"]}
        except (KeyError, TypeError, OSError, ValueError):
            h = None
    row["held-out metric (model card)"] = f"{h['metric']} {h['value']:.3f}" if h else "(no metrics.json)"
    return row


def _models(st: dict) -> list[dict]:
    rows = [_model_row("Couinaud segmentation", st["segmentation"]["model"]),
            _model_row("report generation", st["report_generation"]["model"])]
    rows += [_model_row("dialogue doctor", d["description"]) for d in st["dialogue"]["doctors"] if d["doctor"] != "oracle"]
    return rows


def _overview(summary: dict) -> Section:
    st = summary["steps"]
    s = Section("Overview")
    s.note("Everything here is generated from synthetic phantoms for demonstration; the models are trained on "
           "synthetic data only. Not for clinical use.")
    s.text(f"medkit demo finished in {summary['total_seconds']:.0f} s on {summary['device']} "
           f"(study seed {summary['study_seed']}; the shipped models were trained on seed 0).")
    cases = [
        {"case": st["read_dicom_convert"]["case_id"], "kind": "abdominal CT (DICOM series)",
         "folder": "data/liver-ct/dicom", "pipeline": "Couinaud segmentation (medkit segment)"},
        {"case": st["deformation"]["case"], "kind": "4D respiratory CT (NIfTI phases)",
         "folder": "data/4dct", "pipeline": "ST-NeRP deformation (medkit deform)"},
    ]
    cases += [{"case": r["case_id"], "kind": "chest radiograph + report", "folder": "data/cxr",
               "pipeline": "CoFE report generation (medkit report)"} for r in st["report_generation"]["studies"]]
    first = st["dialogue"]["doctors"][0]["dialogues"] if st["dialogue"]["doctors"] else []
    cases += [{"case": d["case_id"], "kind": "clinical case", "folder": "data/cases",
               "pipeline": "diagnostic dialogue (medkit dialogue eval)"} for d in first]
    s.table(cases, "cases in this study")
    s.table(_models(st), "models used (trained on synthetic data only; see each folder's MODEL_CARD.md)")
    s.table([{"step": k, "seconds": v["seconds"]} for k, v in st.items()], "time per step")
    return s


def _segmentation(st: dict) -> Section:
    seg, conv = st["segmentation"], st["read_dicom_convert"]
    s = Section("Couinaud segmentation")
    s.text(f"Case {seg['case_id']}: DICOM series {conv['shape']} voxels, spacing {conv['spacing_mm']} mm, "
           f"orientation {conv['orientation']}; model {Path(seg['model']).name}. Mean Dice over segments I–VIII: "
           f"{seg['dice_mean']:.3f}.")
    s.image(seg["overlay"], "predicted segments (axial, coronal, sagittal through the liver's centre)")
    s.image(st["overlay"]["png"], "ground truth")
    s.table(seg["segments"], "per segment: predicted volume, true volume, mean HU, Dice (statistics.csv + truth)")
    rb = seg["dicom_seg_readback"]
    s.table([{"check": k, "value": v if isinstance(v, (int, float, str)) else ", ".join(map(str, v))
              if isinstance(v, list) else str(v)} for k, v in rb.items()],
            f"DICOM-SEG {seg['dicom_seg']} read back with pydicom and highdicom")
    s.text(f"Outputs: {seg['nifti']} (labels in the input geometry), {seg['dicom_seg']} (DICOM Segmentation "
           f"referencing the source series), {seg['statistics_csv']} (volumes and mean HU per case and segment), "
           f"{seg.get('cases_csv', 'cases.csv')} (case id -> source, series UID, output files).")
    s.definitions({k: DEFINITIONS[k] for k in ("Dice", "Volume (ml)", "Mean HU")})
    return s


def _deformation(st: dict, root: Path) -> Section:
    d = st["deformation"]
    s = Section("Deformation and contour propagation")
    s.text(f"ST-NeRP fitted on phases {d['observed_phases']} of {d['case']} (phase {d['held_out_phase']} at "
           f"t = {d['held_out_time_s']:.3f} s left out) in {d['fit_seconds']:.0f} s; the reference labels are "
           f"propagated to every predicted time. Mean Dice on the left-out phase: {d['dice_propagated_mean']:.3f} "
           f"propagated vs {d['dice_no_motion_mean']:.3f} with no motion; on the fitted peak-inhale phase "
           f"{d['peak_dice_propagated_mean']:.3f} vs {d['peak_dice_no_motion_mean']:.3f}.")
    for p in d["predictions"]:
        s.image(p["figure"], f"t = {p['time_s']:g} s ({p['phase']}): coronal slice, the reference warped to t with "
                             "the propagated (coloured) and reference (white) contours | displacement magnitude |u|, "
                             "colour bar 0 to the largest |u| in the volume (the table's max_displacement_mm)",
                width=_figure_width(root / p["figure"]))
    s.table([{k: v for k, v in p.items() if k != "figure"} for p in d["predictions"]], "predicted fields")
    s.table(d["contours"], "propagated contours against each phase's true labels")
    s.image(d["loss_png"], "fit loss")
    s.definitions({k: DEFINITIONS[k] for k in ("Displacement |u| (mm)", "Jacobian determinant", "Folding fraction",
                                               "Propagated-contour Dice")})
    return s


def _figure_width(path: Path) -> int:
    """Display width for a deformation figure: doubled (pixels kept sharp) up to the page width."""
    from PIL import Image

    with Image.open(path) as im:
        return min(2 * im.width, 1040)


def _reports(st: dict) -> Section:
    r = st["report_generation"]
    s = Section("Report generation")
    s.text(f"Model {Path(r['model']).parent.name}/{Path(r['model']).name}; {len(r['studies'])} radiograph(s). "
           "Metrics over so few studies are illustrative only; the model card has held-out numbers.")
    for x in r["studies"]:
        s.heading(x["case_id"])
        if x["image"]:
            s.image(x["image"], f"{x['case_id']}: frontal view (the model reads it resized to its input size)",
                    width=384)
        s.pre("Generated report", x["generated"])
        s.pre("Reference report", x["reference"])
        s.table(x["findings"], "labeler findings (1 positive, 0 negative, -1 uncertain)")
    s.table([r["metrics"]], "NLG and clinical-efficacy metrics (this study)")
    s.definitions({k: DEFINITIONS[k] for k in ("BLEU-n", "METEOR", "ROUGE-L", "CIDEr", "CE micro/macro F1",
                                               "Labeler value")})
    return s


def _dialogues(st: dict) -> Section:
    d = st["dialogue"]
    s = Section("Diagnostic dialogues")
    s.text(f"{d['n_cases']} synthetic case(s), persona patient; one dialogue per case and doctor.")
    s.table([{"doctor": x["doctor"], "model": x["description"], "top1": x["top1"], "turns": x["turns"]}
             for x in d["doctors"]], "doctors")
    for x in d["doctors"]:
        for g in x["dialogues"]:
            s.pre(f"{x['doctor']} · {g['case_id']} · truth: {g['truth']} · diagnosis: {g['predicted']} · "
                  f"{'correct' if g['success'] else 'wrong'} · {g['turns']} turns", g["transcript"])
    s.definitions({k: DEFINITIONS[k] for k in ("Top-1 accuracy", "Turns", "Exam F1", "Hallucinations")})
    return s


def write_demo_report(out: Path, summary: dict, manifest: dict) -> Path:
    """Write ``out/report.html`` from the demo's summary and manifest."""
    st = summary["steps"]
    sections = [_overview(summary), _segmentation(st), _deformation(st, Path(out)), _reports(st), _dialogues(st)]
    flat = {k: v for k, v in manifest.items() if k not in ("packages", "timings_s", "inputs")}
    flat.update({f"package {k}": v for k, v in (manifest.get("packages") or {}).items()})
    flat.update({f"time {k} (s)": v for k, v in (manifest.get("timings_s") or {}).items()})
    return write_report(Path(out) / "report.html", "medkit demo", sections, manifest=flat,
                        subtitle="Synthetic study, every pipeline, one page. Not for clinical use.")
