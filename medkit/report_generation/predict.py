"""``medkit report``: reports for radiographs from a trained CoFE run folder.

Input: one radiograph (PNG/JPEG/DICOM/NIfTI), a folder of them (case id = file
name without suffix), or an R2Gen ``annotation.json`` (case id = entry id, the
``view``-th image of each entry). Output: ``OUT/reports.jsonl``, one
``{"case_id", "report"}`` per study (plus ``"reference"`` for annotation input),
written atomically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import ConfigError, from_dict
from ..io import write_jsonl
from ..io.errors import CorruptFileError, EmptyInputError, MedkitInputError
from ..runs import load_checkpoint, pick_device
from .cofe_config import ReportConfig
from .data import RASTER, load_image

IMAGE_SUFFIXES = RASTER + (".dcm", ".nii", ".nii.gz")
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "cofe-synthetic"


def load_model(model_dir: str | Path, device: str = "auto"):
    """``(CoFE model in eval mode, ReportConfig)`` from a run folder (``checkpoints/best.pt``), a
    model folder (``models/<name>/model.pt``) or a ``.pt`` file."""
    from .train import build_model

    p = Path(model_dir)
    ck_path = p if p.is_file() else next((c for c in (p / "checkpoints" / "best.pt", p / "model.pt") if c.exists()),
                                         p / "checkpoints" / "best.pt")
    if not ck_path.exists():
        raise MedkitInputError(p, "not a report model: no checkpoints/best.pt (a `medkit train report` run) "
                                  "or model.pt (a models/<name>/ folder)")
    ck = load_checkpoint(ck_path)
    if not isinstance(ck, dict) or "config" not in ck or "model" not in ck:
        raise MedkitInputError(ck_path, "not a CoFE checkpoint (no config/model inside)")
    cfg = from_dict(ReportConfig, ck["config"], where=str(ck_path))
    model = build_model(cfg, ck.get("vocab"), int(ck["text_dim"]))
    model.load_saved_state(ck["model"])
    return model.to(pick_device(device)).eval(), cfg


def collect_inputs(input: Path, image_size: int, view: int = 0) -> list[tuple[str, torch.Tensor, str | None]]:
    """``[(case_id, (1, S, S) image, reference or None)]`` from a file, folder or annotation.json."""
    input = Path(input)
    if not input.exists():
        raise EmptyInputError(input, "no such file or folder")
    if input.name.endswith(".json") or (input.is_dir() and (input / "annotation.json").exists()):
        from ..io import load_report_dataset

        ds = load_report_dataset(input)
        out = []
        for entries in ds.values():
            for e in entries:
                ref = e.report + (f" {e.extra['impression']}" if e.extra.get("impression") else "")
                out.append((e.id, load_image(e.image_paths[min(view, len(e.image_paths) - 1)], image_size), ref))
        return out
    if input.is_file():
        return [(_case_id(input), load_image(input, image_size), None)]
    files = sorted(f for f in input.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise EmptyInputError(input, f"no radiographs ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return [(_case_id(f), load_image(f, image_size), None) for f in files]


def _case_id(path: Path) -> str:
    """The output key of one image. DICOM files are named from the header, as the io layer
    names DICOM series (``{SeriesDescription}-{sha1(SOPInstanceUID)[:8]}``), never from the
    file name, which on clinical exports often holds a patient name, MRN or accession
    number. Other images keep their file stem (the user named them)."""
    if path.suffix.lower() in (".dcm", ".dicom", ""):
        import pydicom

        from ..io.cases import dicom_case_id

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as e:  # noqa: BLE001 - any parse failure is the file's problem
            raise CorruptFileError(path, f"unreadable DICOM header ({type(e).__name__})") from None
        uid = str(ds.get("SOPInstanceUID", "") or "")
        if not uid:
            raise CorruptFileError(path, "DICOM file without SOPInstanceUID: cannot name its report without PHI")
        return dicom_case_id(str(ds.get("SeriesDescription", "") or ""), str(ds.get("Modality", "") or ""), uid)
    return path.name.split(".")[0]


def report_cli(*, input: Path, output: Path, model: Path | None = None, device: str = "auto", beams: int = 1,
               max_new_tokens: int = 96, log: Callable[[str], None] = lambda m: None) -> Path:
    """Body of ``medkit report``; returns the path of ``reports.jsonl``."""
    if model is None:
        model = DEFAULT_MODEL
        if not model.exists():
            raise ConfigError(f"no --model given and no shipped model at {model}: pass --model RUN_DIR "
                              "(a folder written by `medkit train report`)")
    if beams < 1 or max_new_tokens < 1:
        raise ConfigError(f"--beams ({beams}) and --max-new-tokens ({max_new_tokens}) must be >= 1")
    net, cfg = load_model(model, device)
    dev = next(net.parameters()).device
    items = collect_inputs(Path(input), cfg.data.image_size, cfg.data.view)
    log(f"{len(items)} radiograph(s); model {model}")
    t0 = time.perf_counter()
    rows = []
    for s in range(0, len(items), 16):
        part = items[s:s + 16]
        texts = net.generate(torch.stack([x[1] for x in part]).to(dev), beams=beams, max_new_tokens=max_new_tokens)
        for (cid, _, ref), t in zip(part, texts):
            rows.append({"case_id": cid, "report": t, **({"reference": ref} if ref is not None else {})})
    secs = time.perf_counter() - t0
    path = write_jsonl(Path(output) / "reports.jsonl", rows)
    log(f"wrote {path} ({len(rows) / max(secs, 1e-9):.1f} reports/s)")
    return path
