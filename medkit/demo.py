"""``medkit demo``: generate an embedded study and run the pipelines on it.

What a new user sees after ``make demo`` on a fresh machine, with no data and no
network: medkit generates a small study from a seed with :mod:`medkit.synth`
(an abdominal CT written as a real DICOM series, a short 4D CT, chest
radiographs with reports, clinical cases), then reads it back from disk exactly
as it would read a user's own folder, and writes a run folder::

    runs/demo/
      data/                   the generated study (DICOM, NIfTI, PNG, JSONL)
      predictions/            what the pipelines wrote (NIfTI from DICOM, overlays)
      summary.json            per step: what was produced and checked
      manifest.json           versions, device, seed, timings
      config.yaml

The component pipelines (Couinaud segmentation, ST-NeRP deformation, report
generation, diagnostic dialogue) join this list as they land; until then the
demo exercises the data layer end to end: DICOM reading with geometry checks,
conversion, and ground-truth overlays.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class DemoConfig:
    """Config of ``medkit demo`` (every field can be set with ``--set``)."""

    seed: int = 0
    device: str = "auto"
    n_radiographs: int = 2
    n_dialogue_cases: int = 2


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
    from .io import load_volume, save_volume
    from .runs import RunDir, pick_device, seed_everything, track

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not _is_previous_demo(out):
            raise FileExistsError(f"{out}: folder exists and is not a previous demo run; choose another --out")
        shutil.rmtree(out)
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    run = RunDir.create(out, config=cfg, seed=cfg.seed, device=str(device), command="medkit demo")
    data = out / "data"
    steps: dict[str, dict] = {}
    t_all = time.perf_counter()

    def step(name: str):
        log(f"[demo] {name} ...")
        return time.perf_counter()

    def done(name: str, t0: float, **info) -> None:
        dt = time.perf_counter() - t0
        run.record_time(name, dt)
        steps[name] = {"seconds": round(dt, 2), **info}
        log(f"[demo] {name}: {dt:.1f} s")

    # 1. Abdominal CT as a DICOM series, with Couinaud ground truth.
    from .synth import liver_ct

    t0 = step("synth liver CT (DICOM)")
    liver_cfg = liver_ct.LiverCTConfig(n_cases=1, seed=cfg.seed, dicom=True)
    liver_sum = liver_ct.generate_dataset(liver_cfg, data / "liver-ct", progress=lambda xs, d="": track(xs, d))
    done("synth_liver_ct", t0, folder=str(data / "liver-ct"), summary=_small(liver_sum))

    # 2. Read it back from the DICOM folder as a user's scan, convert, check geometry.
    t0 = step("read DICOM series + convert to NIfTI")
    dicom_root = data / "liver-ct" / "dicom"
    case_dirs = sorted(p for p in dicom_root.iterdir() if p.is_dir())
    case_id = case_dirs[0].name
    vol = load_volume(case_dirs[0], modality="CT")
    nifti_path = save_volume(vol, out / "predictions" / f"{case_id}_0000.nii.gz")
    truth_img = load_volume(data / "liver-ct" / "imagesTr" / f"{case_id}_0000.nii.gz")
    labels = load_volume(data / "liver-ct" / "labelsTr" / f"{case_id}.nii.gz")
    aff_err = float(np.abs(np.asarray(vol.affine) - np.asarray(truth_img.affine)).max())
    hu_err = float(np.abs(vol.as_tensor().numpy() - truth_img.as_tensor().numpy()).max())
    done(
        "read_dicom_convert", t0, case_id=case_id, output=str(nifti_path),
        shape=list(vol.shape[1:]), spacing_mm=[round(s, 3) for s in vol.meta["original_spacing"]],
        orientation=vol.meta["original_orientation"], affine_max_err_mm=aff_err, hu_max_err=hu_err,
    )

    # 3. Ground-truth overlay on the scan read from DICOM.
    from .viz.overlay import save_overlay

    t0 = step("overlay of the Couinaud ground truth")
    png = save_overlay(vol, labels, out / "predictions" / f"{case_id}_truth_overlay.png",
                       label_names=_couinaud_names(), title=f"{case_id}: Couinaud segments (ground truth)")
    seg_ml = _volumes_ml(labels)
    done("overlay", t0, png=str(png), segment_volumes_ml=seg_ml)

    # 4. The other embedded sets, small.
    from .synth import cases, cxr, motion

    t0 = step("synth 4D CT")
    m_sum = motion.generate_4dct_dataset(motion.Motion4DConfig(n_cases=1, seed=cfg.seed), data / "4dct")
    done("synth_4dct", t0, folder=str(data / "4dct"), summary=_small(m_sum))

    t0 = step("synth chest radiographs + reports")
    c_sum = cxr.generate_dataset(cxr.CXRConfig(n_cases=cfg.n_radiographs, seed=cfg.seed), data / "cxr")
    done("synth_cxr", t0, folder=str(data / "cxr"), summary=_small(c_sum))

    t0 = step("synth clinical cases")
    k_sum = cases.generate_dataset(cases.CasesConfig(n_cases=cfg.n_dialogue_cases, seed=cfg.seed), data / "cases")
    done("synth_cases", t0, folder=str(data / "cases"), summary=_small(k_sum))

    total = time.perf_counter() - t_all
    run.record_time("total", total)
    summary = {"steps": steps, "total_seconds": round(total, 2), "device": str(device),
               "note": "synthetic phantoms for demonstration; not for clinical use"}
    run.write_summary(summary)
    run.finish()
    return summary


def _couinaud_names() -> dict[int, str]:
    return {i: n for i, n in enumerate(["background", "I", "II", "III", "IV", "V", "VI", "VII", "VIII"]) if i}


def _volumes_ml(labels) -> dict[str, float]:
    arr = labels.as_tensor().numpy()[0]
    voxel_ml = float(np.prod(labels.meta["original_spacing"])) / 1000.0
    names = _couinaud_names()
    return {names[k]: round(float((arr == k).sum()) * voxel_ml, 2) for k in names}


def _small(summary: dict) -> dict:
    """Keep a summary's scalar fields (the full one lives beside the data)."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}
