"""Convert DICOM folders / zips / NRRD / MHA to NIfTI (one file per series)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .cases import dicom_case_id, discover_cases
from .errors import VolumeError
from .volume import NIFTI_SUFFIXES, load_volume, save_volume


@dataclass
class ConvertConfig:
    """Config of the ``convert`` pipeline.

    Attributes:
        input: a DICOM folder (one or many series), zip, NRRD/MHA or NIfTI file.
        output: a ``.nii.gz`` file (single series) or a folder, filled in nnU-Net
            naming ``{case}_0000.nii.gz``.
        modality: expected modality (``CT``...) or ``None`` to accept any.
    """

    input: str = ""
    output: str = ""
    modality: str | None = None
    series_uid: str | None = None


def convert(cfg: ConvertConfig, progress=None) -> list[dict]:
    """Run the conversion; returns one row per written (or failed) case.

    A case that fails is reported with its error and writes nothing; the others go on.
    With a single-file ``output`` any failure raises.
    """
    src, out = Path(cfg.input), Path(cfg.output)
    single = any(out.name.endswith(s) for s in NIFTI_SUFFIXES)
    if single:
        vol = load_volume(src, series_uid=cfg.series_uid, modality=cfg.modality)
        save_volume(vol, out)
        return [_row(src.name, vol, out)]
    cases = discover_cases(src) if cfg.series_uid is None else None
    if cases is None or src.is_file():
        vol = load_volume(src, series_uid=cfg.series_uid, modality=cfg.modality)
        if vol.meta.get("series_uid"):  # DICOM: never name the output after a file or folder (PHI)
            name = dicom_case_id(vol.meta.get("dicom", {}).get("SeriesDescription", ""),
                                 str(vol.meta.get("modality", "")), str(vol.meta["series_uid"]))
        else:
            name = cases[0].case_id if cases else (src.name.split(".")[0] or "case")
        target = out / f"{name}_0000.nii.gz"
        save_volume(vol, target)
        return [_row(name, vol, target)]
    rows = []
    for case in (progress(cases) if progress else cases):
        target = out / f"{case.case_id}_0000.nii.gz"
        try:
            vol = load_volume(case.images[0], series_uid=case.series_uid, modality=cfg.modality)
            save_volume(vol, target)
            rows.append(_row(case.case_id, vol, target))
        except VolumeError as e:
            rows.append({"case_id": case.case_id, "status": "error", "error": str(e)})
    return rows


def _row(case_id: str, vol, target: Path) -> dict:
    return {
        "case_id": case_id,
        "status": "ok",
        "output": str(target),
        "shape": list(vol.shape[1:]),
        "spacing_mm": [round(s, 4) for s in vol.meta["original_spacing"]],
        "orientation": vol.meta["original_orientation"],
        "modality": vol.meta.get("modality"),
    }


def run_pipeline(cfg: ConvertConfig, run, *, device: str = "auto", resume: bool = False, log=None) -> dict:
    """``medkit run`` entry: convert into ``run/predictions`` unless ``output`` is set."""
    from ..progress import track

    if not cfg.input:
        raise VolumeError(None, "convert: no input given; use --set input=PATH (a DICOM folder, zip, NRRD/MHA)")
    if not cfg.output:
        cfg.output = str(run.path / "predictions")
    run.add_input(cfg.input)
    rows = convert(cfg, progress=lambda xs: track(xs, "converting"))
    return {"cases": rows, "n_ok": sum(r["status"] == "ok" for r in rows), "n_error": sum(r["status"] != "ok" for r in rows)}
