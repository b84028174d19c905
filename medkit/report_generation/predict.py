"""``medkit report``: reports for radiographs from a trained CoFE run folder.

Input: one radiograph (PNG/JPEG/DICOM/NIfTI), a folder of them (case id = file
name without its image suffix; for DICOM, ``{SeriesDescription}-{sha1(SOPInstanceUID)[:8]}``
from the header), or an R2Gen ``annotation.json`` (case id = entry id, the
``view``-th image of each entry). A radiograph is one 2D image: a multi-frame
DICOM or a NIfTI volume of more than one slice is refused, not sliced. Every
input is read and checked first; then ``OUT/reports.jsonl``, one
``{"case_id", "report"}`` per study (plus ``"reference"`` for annotation input),
is written atomically, so a bad input leaves no reports file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..assets import shipped_model
from ..config import ConfigError
from ..io import write_jsonl
from ..io.errors import EmptyInputError, MedkitInputError
from ..runs import load_model_source, pick_device
from .cofe_config import ReportConfig
from .data import IMAGE_SUFFIXES, NIFTI_SUFFIXES, RASTER, dicom_case_id, image_kind, load_image

DEFAULT_MODEL = shipped_model("cofe-synthetic")  # None when installed without models


def load_model(model_dir: str | Path | None = None, device: str = "auto"):
    """``(CoFE model in eval mode, ReportConfig)`` from a model folder (``config.yaml`` +
    ``model.safetensors`` + ``assets.json``) or a training run folder (``checkpoints/best.pt``);
    ``None`` is the shipped model. No pickle is executed."""
    from .train import build_model

    if model_dir is None:
        model_dir = DEFAULT_MODEL
        if model_dir is None:
            raise MedkitInputError(None, "no --model given and no shipped report model found")
    src = load_model_source(model_dir, ReportConfig, component="report_generation")
    if "text_dim" not in src.assets:
        raise MedkitInputError(model_dir, "not a CoFE model: its assets lack text_dim")
    model = build_model(src.cfg, src.assets.get("vocab"), int(src.assets["text_dim"]))
    model.load_saved_state(src.weights)
    return model.to(pick_device(device)).eval(), src.cfg


def _case_id(path: Path) -> str:
    """The output key of one image. DICOM files are named from the header, as the io layer
    names DICOM series (``{SeriesDescription}-{sha1(SOPInstanceUID)[:8]}``), never from the
    file name, which on clinical exports often holds a patient name, MRN or accession
    number. Other images keep their file name without the image suffix (the user named them)."""
    if image_kind(path) == "dicom" or path.suffix == "":
        return dicom_case_id(path)
    name = path.name
    suffix = next((x for x in NIFTI_SUFFIXES[::-1] + RASTER if name.lower().endswith(x)), path.suffix)
    return name[: len(name) - len(suffix)]


def collect_inputs(input: Path, image_size: int, view: int = 0) -> list[tuple[str, torch.Tensor, str | None]]:
    """``[(case_id, (1, S, S) image, reference or None)]`` from a file, folder or annotation.json.

    A folder contributes its image files (by suffix, and suffix-less DICOM); other files are
    skipped. Every image is read and checked before anything is written.

    Raises:
        MedkitInputError: a missing path, a folder without images, two images with the same case
            id, or an image that cannot be one radiograph (naming the file).
    """
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
                out.append((e.id, load_image(e.image_paths[min(view, len(e.image_paths) - 1)], image_size),
                            ref))
        return out
    if input.is_file():
        return [(_case_id(input), load_image(input, image_size), None)]
    files = sorted(f for f in input.iterdir() if f.is_file() and not f.name.startswith(".") and image_kind(f))
    if not files:
        raise EmptyInputError(input, f"no radiographs ({', '.join(IMAGE_SUFFIXES)} or DICOM) in the folder")
    out, seen = [], {}
    for f in files:
        cid = _case_id(f)
        if cid in seen:
            raise MedkitInputError(f, f"same case id {cid!r} as {seen[cid].name}: two images would share one "
                                      "report key (a duplicated DICOM instance, or the same name twice)")
        seen[cid] = f
        out.append((cid, load_image(f, image_size), None))
    return out


def report_cli(*, input: Path, output: Path, model: Path | None = None, device: str = "auto", beams: int = 1,
               max_new_tokens: int = 96, log: Callable[[str], None] = lambda m: None) -> Path:
    """Body of ``medkit report``; returns the path of ``reports.jsonl``."""
    if model is None and DEFAULT_MODEL is None:
        raise ConfigError("no --model given and no shipped report model found: pass --model RUN_DIR "
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
