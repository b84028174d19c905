"""``medkit report`` and :func:`medkit.report`: reports for chest radiographs (CoFE).

Input: one radiograph (PNG/JPEG/TIFF, DICOM, 2D NIfTI), a folder of them, or an R2Gen
``annotation.json`` (the ``view``-th image of each entry, its report as the reference).
Case id: the file name without its image suffix (``--case-id`` for one file), or the
annotation entry's id; never header text. A radiograph is one 2D image: a multi-frame
DICOM or a NIfTI volume of more than one slice is refused, not sliced. Every input is
read and checked before anything is written.

Output folder (runs accumulate, :class:`medkit.io.outputs.OutputFolder`)::

    reports.jsonl   {"case_id", "report", "findings", ["reference"]} per study
    metrics.json    NLG + clinical-efficacy metrics, when references are known
    cases.csv  manifest.json  config.yaml

``findings`` are what the rule-based CheXpert-style labeler
(:func:`medkit.metrics.clinical.label_report`) reads in the generated report:
observation -> 1 positive, 0 negative, -1 uncertain (unmentioned: absent).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..assets import shipped_model
from ..config import ConfigError
from ..io.errors import EmptyInputError, MedkitInputError
from ..runs import load_model_source, pick_device
from .cofe_config import ReportConfig
from .data import IMAGE_SUFFIXES, image_kind, load_image

DEFAULT_MODEL = shipped_model("cofe-synthetic")  # None when installed without models
METRIC_NOTES = {
    "text": "NLG metrics on R2Gen-cleaned text (medkit.io.clean_report), whitespace tokens, corpus level",
    "METEOR": "METEOR_impl names it: METEOR 1.5 (the jar, through Java) when Java is on PATH, else "
              "medkit.metrics.text.meteor (exact + stem matches, no WordNet synonyms or paraphrases)",
    "CE": "clinical efficacy from medkit's rule-based CheXpert-style labeler (not CheXpert/CheXbert); "
          "uncertain counted negative; micro, macro and example-based F1",
}


@dataclass
class ReportRunConfig:
    """The settings of one ``medkit report`` run (written to ``config.yaml``)."""

    input: str = ""
    output: str | None = None
    model: str | None = None
    device: str = "auto"
    beams: int = 1
    max_new_tokens: int = 96
    references: str | None = None
    case_id: str | None = None
    overwrite: bool = False


@dataclass
class Reports:
    """``rows``: ``{"case_id", "report", "findings"[, "reference"]}`` per study (sorted by id);
    ``metrics``: NLG + CE scores when references were known (else None); ``paths``: files written."""

    rows: list[dict]
    metrics: dict | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


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
    """The output key of one image: its file name without the image suffix (the name the user
    gave it; a UID-named DICOM file keeps its whole UID). Header text never names a case."""
    from ..io.cases import file_case_id

    name = path.name
    low = name.lower()
    for suffix in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"):
        if low.endswith(suffix):
            return name[: len(name) - len(suffix)]
    return file_case_id(path)


def collect_inputs(input: Path, image_size: int, view: int = 0, case_id: str | None = None,
                   progress=None) -> list[tuple[str, torch.Tensor, str | None, Path]]:
    """``[(case_id, (1, S, S) image, reference or None, source)]`` from a file, folder or annotation.json.

    A folder contributes its image files (by suffix, and suffix-less DICOM); other files are
    skipped. Every image is read and checked (:func:`medkit.report_generation.data.load_image`:
    also NaN/inf pixels) before anything is written.

    Raises:
        MedkitInputError: a missing path, a folder without images, two images with the same case
            id, or an image that cannot be one radiograph (naming the file).
    """
    from ..io.cases import check_case_id

    input = Path(input)
    wrap = progress or (lambda xs: xs)
    if not input.exists():
        raise EmptyInputError(input, "no such file or folder")
    if input.name.endswith(".json") or (input.is_dir() and (input / "annotation.json").exists()):
        from ..io import load_report_dataset

        ds = load_report_dataset(input)
        out = []
        for e in wrap([e for entries in ds.values() for e in entries]):
            ref = e.report + (f" {e.extra['impression']}" if e.extra.get("impression") else "")
            img = e.image_paths[min(view, len(e.image_paths) - 1)]
            out.append((e.id, load_image(img, image_size), ref, img))
        return out
    if input.is_file():
        return [(check_case_id(case_id) if case_id else _case_id(input), load_image(input, image_size), None, input)]
    files = sorted(f for f in input.iterdir() if f.is_file() and not f.name.startswith(".") and image_kind(f))
    if not files:
        raise EmptyInputError(input, f"no radiographs ({', '.join(IMAGE_SUFFIXES)} or DICOM) in the folder")
    if case_id is not None and len(files) > 1:
        raise MedkitInputError(input, f"--case-id names one case, but the folder holds {len(files)} radiographs")
    out, seen = [], {}
    for f in wrap(files):
        cid = check_case_id(case_id) if case_id else _case_id(f)
        if cid in seen:
            raise MedkitInputError(f, f"same case id {cid!r} as {seen[cid].name}: two images would share one "
                                      "report key; rename one")
        seen[cid] = f
        out.append((cid, load_image(f, image_size), None, f))
    return out


def read_references(path: str | Path) -> dict[str, str]:
    """``{case_id: reference report}`` from a JSONL file (``{"case_id", "report"}`` per line; a
    ``reports.jsonl`` with ``reference`` works too) or an R2Gen ``annotation.json`` (entry ids)."""
    from ..io import load_report_dataset

    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "no such references file")
    if path.name.endswith(".json") or path.is_dir():
        ds = load_report_dataset(path, check_images=False)
        return {e.id: e.report for entries in ds.values() for e in entries}
    refs = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MedkitInputError(path, f"cannot read the references ({type(e).__name__})") from None
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise MedkitInputError(path, f"line {k} is not JSON; expected {{\"case_id\": ..., \"report\": ...}}") \
                from None
        text = row.get("reference", row.get("report")) if isinstance(row, dict) else None
        if not isinstance(row, dict) or "case_id" not in row or not isinstance(text, str):
            raise MedkitInputError(path, f"line {k}: expected {{\"case_id\": ..., \"report\": \"...\"}}")
        refs[str(row["case_id"])] = text
    if not refs:
        raise MedkitInputError(path, "holds no references")
    return refs


def score(refs: dict[str, str], hyps: dict[str, str], meteor: str = "auto") -> dict:
    """NLG metrics on R2Gen-cleaned text and CE metrics (see :data:`METRIC_NOTES`).
    ``meteor``: ``auto`` (METEOR 1.5 when Java and the jar are there, else the approximation),
    ``jar``, ``approx`` or ``none``; the result's ``METEOR_impl`` says which ran."""
    from ..io import clean_report
    from ..metrics.clinical import ce_metrics
    from ..metrics.text import MeteorUnavailable, java_executable, meteor_jar, nlg_metrics

    if meteor == "auto":
        try:
            java_executable()
            meteor_jar()
            meteor = "jar"
        except MeteorUnavailable:
            meteor = "approx"

    nlg = nlg_metrics({k: clean_report(v) for k, v in refs.items()}, {k: clean_report(v) for k, v in hyps.items()},
                      tokenize="none", meteor=meteor)
    return {"n": len(refs), **nlg, **ce_metrics(refs, hyps), "notes": METRIC_NOTES}


def report(input: str | Path, output: str | Path | None = None, *, model: str | Path | None = None,
           device: str = "auto", beams: int = 1, max_new_tokens: int = 96, references: str | Path | None = None,
           case_id: str | None = None, overwrite: bool = False, meteor: str = "auto",
           log: Callable[[str], None] | None = None) -> Reports:
    """Generate reports for radiographs (``medkit report`` is this function).

    Args:
        input: a radiograph, a folder of them, or an R2Gen ``annotation.json`` (its reports are the
            references).
        output: a folder (``reports.jsonl``, ``metrics.json``, ``cases.csv``, manifest; earlier runs'
            cases are kept), or ``None`` to write nothing.
        model: a model folder or training run folder; ``None``: the shipped ``models/cofe-synthetic``.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        beams: beam width (1 = greedy). max_new_tokens: the longest report.
        references: a JSONL (``{"case_id", "report"}``) or annotation.json of reference reports: every
            generated case must have one; metrics are computed and written.
        case_id: the id of a single input image. overwrite: replace earlier rows of these cases.
        meteor: ``auto`` (METEOR 1.5 through Java when available, else medkit's approximation),
            ``jar``, ``approx`` or ``none``; ``metrics["METEOR_impl"]`` says which ran.
        log: where progress lines go (default: stderr).

    Returns:
        :class:`Reports` (``rows``, ``metrics``, ``paths``).
    """
    import sys

    from ..progress import track

    log = log or (lambda m: print(m, file=sys.stderr))
    if beams < 1 or max_new_tokens < 1:
        raise ConfigError(f"--beams ({beams}) and --max-new-tokens ({max_new_tokens}) must be >= 1")
    cfg = ReportRunConfig(str(input), None if output is None else str(output), None if model is None else str(model),
                          device, beams, max_new_tokens, None if references is None else str(references), case_id,
                          overwrite)
    pick_device(device)
    if model is None and DEFAULT_MODEL is None:
        raise ConfigError("no --model given and no shipped report model found: pass --model RUN_DIR "
                          "(a folder written by `medkit train report`)")
    net, mcfg = load_model(model, device)
    dev = next(net.parameters()).device
    items = collect_inputs(Path(input), mcfg.data.image_size, mcfg.data.view, case_id,
                           progress=lambda xs: track(xs, "read radiographs"))
    refs = read_references(references) if references is not None else None
    if refs is not None:
        missing = [cid for cid, *_ in items if cid not in refs]
        if missing:
            raise MedkitInputError(references, f"no reference for {len(missing)} case(s) (first: {missing[0]!r}); "
                                               "every case needs one")
    folder = None
    if output is not None:
        from ..io.outputs import OutputFolder

        folder = OutputFolder(output, "report", overwrite=overwrite)
        for cid, _, _, src in items:
            folder.claim(cid, [], src)
        manifest = _start(folder, cfg, dev, model)
    log(f"{len(items)} radiograph(s); model {model or DEFAULT_MODEL}")
    t0 = time.perf_counter()
    rows = _generate(net, items, dev, beams, max_new_tokens, refs)
    secs = time.perf_counter() - t0
    known = {r["case_id"]: r["reference"] for r in rows if r.get("reference") is not None}
    metrics = score(known, {r["case_id"]: r["report"] for r in rows if r["case_id"] in known},
                    meteor) if known else None
    result = Reports(rows, metrics)
    if folder is not None:
        from ..io import write_json
        from ..runs import sha256_path

        result.paths["reports"] = folder.upsert_jsonl("reports.jsonl", rows)
        every = [json.loads(x) for x in result.paths["reports"].read_text(encoding="utf-8").splitlines() if x.strip()]
        every = [r for r in every if isinstance(r.get("reference"), str)]
        if every:  # over every case of the folder with a reference, this run's and earlier ones
            all_refs = {r["case_id"]: r["reference"] for r in every}
            same = metrics is not None and all_refs == known
            result.paths["metrics"] = write_json(folder.path / "metrics.json", metrics if same else score(
                all_refs, {r["case_id"]: r["report"] for r in every}, meteor))
        for cid, _, _, src in items:
            folder.record(cid, [folder.path / "reports.jsonl"], source=src, written_at=_now())
        manifest["inputs"] = {cid: sha256_path(src) for cid, _, _, src in items}
        manifest.update(status="completed", finished_at=_now(), timings_s={"generate": round(secs, 3)})
        folder.write_manifest(manifest)
        log(f"wrote {result.paths['reports']} ({len(rows) / max(secs, 1e-9):.1f} reports/s)"
            + (f"; metrics: {result.paths['metrics']}" if "metrics" in result.paths else ""))
    if metrics is not None:
        log(f"BLEU-4 {metrics['BLEU_4']:.3f}  METEOR {metrics['METEOR']:.3f}  ROUGE-L {metrics['ROUGE_L']:.3f}  "
            f"CIDEr {metrics['CIDEr']:.3f}  CE micro-F1 {metrics['micro_f1']:.3f} (n = {metrics['n']})")
    return result


def _generate(net, items, dev, beams: int, max_new_tokens: int, refs: dict | None) -> list[dict]:
    from ..metrics.clinical import label_report
    from ..progress import track

    rows = []
    batches = [items[s:s + 16] for s in range(0, len(items), 16)]
    for part in track(batches, "report", total=len(batches)):
        with torch.no_grad():
            texts = net.generate(torch.stack([x[1] for x in part]).to(dev), beams=beams, max_new_tokens=max_new_tokens)
        for (cid, _, ref, _), t in zip(part, texts):
            ref = refs[cid] if refs is not None else ref
            rows.append({"case_id": cid, "report": t, "findings": label_report(t),
                         **({"reference": ref} if ref is not None else {})})
    return sorted(rows, key=lambda r: r["case_id"])


def _now() -> str:
    from ..runs import now_utc

    return now_utc()


def _start(folder, cfg: ReportRunConfig, dev, model) -> dict:
    from ..config import dump_config
    from ..io import write_text
    from ..runs import inference_manifest

    write_text(folder.path / "config.yaml", dump_config(cfg))
    manifest = inference_manifest("report", device=str(dev), model=model if model is not None else DEFAULT_MODEL)
    folder.write_manifest(manifest)
    return manifest
