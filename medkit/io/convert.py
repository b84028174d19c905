"""Convert DICOM folders / zips / NRRD / MHA / NIfTI to NIfTI, NRRD or MHA (one file per series).

The output's format is explicit: a name ending ``.nii.gz``/``.nii``/``.nrrd``/``.mha`` is
one file (the input must hold one series, or pick one with ``series_uid``); a name
without an image suffix is a folder, filled as ``{case}_0000.nii.gz`` (nnU-Net naming;
case ids from :func:`medkit.io.discover_cases`) with a ``cases.csv``. Any other
suffix is refused, never turned into a folder. Existing outputs are refused unless
``overwrite``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .cases import discover_cases
from .errors import MedkitInputError, SeriesNotFoundError, VolumeError
from .header import load_case
from .volume import WRITE_SUFFIXES, load_volume, save_volume


@dataclass
class ConvertConfig:
    """Config of the ``convert`` pipeline.

    Attributes:
        input: a DICOM folder (one or many series), zip, NRRD/MHA or NIfTI file.
        output: a ``.nii.gz``/``.nii``/``.nrrd``/``.mha`` file (single series) or a folder,
            filled in nnU-Net naming ``{case}_0000.nii.gz``.
        modality: expected modality (``CT``...) or ``None`` to accept any.
        series_uid: the series to convert when the input holds several.
        case_id: the id of the input's one case (folder output).
        overwrite: replace existing output files (of the cases converted only).
    """

    input: str = ""
    output: str = ""
    modality: str | None = None
    series_uid: str | None = None
    case_id: str | None = None
    overwrite: bool = False


def output_kind(out: Path) -> str:
    """``file`` (a name ending in a written suffix) or ``folder`` (no suffix, or an existing folder)."""
    name = out.name.lower()
    if any(name.endswith(s) for s in WRITE_SUFFIXES):
        return "file"
    if out.is_dir() or "." not in name.lstrip("."):
        return "folder"
    raise MedkitInputError(out, f"unknown output format {out.suffix!r}: name a file ending in "
                                f"{', '.join(WRITE_SUFFIXES)}, or a folder (a name without suffix)")


def convert(cfg: ConvertConfig, progress=None) -> list[dict]:
    """Run the conversion; returns one row per written (or failed) case.

    A case that fails is reported with its error and writes nothing; the others go on.
    With a single-file ``output`` any failure raises.
    """
    from .outputs import OutputFolder, check_parent_writable

    src, out = Path(cfg.input), Path(cfg.output)
    if output_kind(out) == "file":
        if out.exists() and not cfg.overwrite:
            raise MedkitInputError(out, "exists; pass --overwrite to replace it, or choose another name")
        check_parent_writable(out)
        vol = load_volume(src, series_uid=cfg.series_uid, modality=cfg.modality)
        save_volume(vol, out)
        return [_row(cfg.case_id or src.name, vol, out)]
    cases = discover_cases(src, case_id=cfg.case_id)
    if cfg.series_uid is not None:
        cases = [c for c in cases if c.series_uid == cfg.series_uid]
        if not cases:
            raise SeriesNotFoundError(src, f"series UID {cfg.series_uid} not found in the input")
    folder = OutputFolder(out, "convert", overwrite=cfg.overwrite)
    for c in cases:
        folder.claim(c.case_id, [out / f"{c.case_id}_0000.nii.gz"], c.source)
    rows = []
    for case in (progress(cases) if progress else cases):
        target = out / f"{case.case_id}_0000.nii.gz"
        try:
            vol = load_case(case, modality=cfg.modality)
            save_volume(vol, target)
            folder.record(case.case_id, [target], source=case.source, series_uid=vol.meta.get("series_uid"))
            rows.append(_row(case.case_id, vol, target))
        except VolumeError as e:
            if len(cases) == 1:
                raise
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
