"""`medkit dialogue train|eval|chat`. Heavy imports stay inside the commands."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import typer

dialogue_app = typer.Typer(
    help="Diagnostic dialogue: train an LLM doctor with RL, evaluate it against simulated patients, chat.",
    no_args_is_help=True,
)


def _friendly(fn):
    """User errors (bad config, bad input files, an output that exists or cannot be written) ->
    one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..config import ConfigError
        from ..io.errors import MedkitInputError

        try:
            return fn(*args, **kwargs)
        except (MedkitInputError, ConfigError, FileExistsError) as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        except OSError as e:   # read-only output folder, disk full, ...
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            typer.secho(f"error: {where}{e.strerror or e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


TRAIN_EXAMPLE = "medkit dialogue train dialogue_tiny --out runs/doctor-tiny --set sft.steps=50"
EVAL_EXAMPLE = "medkit dialogue eval --model oracle --cases 20 --output runs/eval-oracle"


@dialogue_app.command(epilog=f"Example: {TRAIN_EXAMPLE}  |  on DDXPlus: medkit dialogue train dialogue_ddxplus "
                             "--data DDXPlus/ --out runs/doctor-ddx")
@_friendly
def train(
    pipeline: str = typer.Argument(..., help="A spec path or shipped name, e.g. dialogue_tiny (pipeline: dialogue-train)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<name>-<time>)."),
    data: Optional[Path] = typer.Option(None, "--data", help="A DDXPlus release folder (release_evidences.json, "
                                        "release_conditions.json, release_*_patients[.csv]); sets data.root."),
    split: Optional[str] = typer.Option(None, "--split", help="DDXPlus / synthetic split the training cases come "
                                        "from: train | validate | test (default train)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field: --set sft.steps=50 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last completed stage / "
                                                      "checkpoint (only step counts may change)."),
) -> None:
    """Oracle demonstrations -> SFT -> SR-PPO and multi-turn GRPO; evaluates every stage on validation cases."""
    from ..pipelines import resolve, run_spec
    from .train_config import check_config

    overrides = [*data_overrides(pipeline, data, split), *set_]
    if not resume:   # a bad config is refused before a run folder exists (a resumed run checks its own)
        check_config(resolve(pipeline, overrides, expect="dialogue-train")[1])
    run = run_spec(pipeline, out=out, overrides=overrides, resume=resume, expect="dialogue-train",
                   log=lambda m: typer.echo(m, err=True))
    typer.echo(f"run folder: {run}")


def data_overrides(pipeline: str, data: Path | None, split: str | None) -> list[str]:
    """The config overrides ``--data`` / ``--split`` stand for: a DDXPlus folder makes the spec's
    source ``ddxplus`` (or keeps ``both``, one doctor for synthetic and DDXPlus cases) with that root;
    ``--split`` is where the training cases come from."""
    from ..config import ConfigError, read_pipeline_spec
    from ..io.errors import MedkitInputError

    out = []
    if data is not None:
        if not data.is_dir():
            raise MedkitInputError(data, "not a folder (--data takes a DDXPlus release folder)")
        src = (read_pipeline_spec(_spec_path(pipeline), "dialogue-train").get("data") or {}).get("source")
        out += [f"data.source={'both' if src == 'both' else 'ddxplus'}", f"data.root={data}"]
    if split is not None:
        if split not in ("train", "validate", "test"):
            raise ConfigError(f"--split {split!r} must be train, validate or test")
        out.append(f"data.train_split={split}")
    return out


def _spec_path(pipeline: str) -> Path:
    from ..assets import find_pipeline

    return find_pipeline(pipeline)


@dialogue_app.command("eval", epilog=f"Example: {EVAL_EXAMPLE}  |  on DDXPlus: medkit dialogue eval --model "
                                     "models/dialogue-doctor-synthetic --data DDXPlus/ --split test --output runs/ev")
@_friendly
def eval_(
    model: str = typer.Option("oracle", help="'oracle', a model folder (models/dialogue-doctor-synthetic) or a "
                                             "stage folder of a train run (runs/x/grpo)."),
    output: Path = typer.Option(..., "--output", "-o", help="Run folder: summary.json, dialogues.jsonl, "
                                                             "config.yaml, manifest.json (must not exist)."),
    data: Optional[Path] = typer.Option(None, "--data", help="A DDXPlus release folder; default: synthetic cases."),
    split: str = typer.Option("test", "--split", help="train | validate | test."),
    cases: Optional[int] = typer.Option(None, help="Number of cases (default: the whole DDXPlus split, or 400 "
                                                   "synthetic cases)."),
    offset: int = typer.Option(0, help="First case (row) of the split."),
    patient: str = typer.Option("persona", help="Simulated patient: persona | generic | llm (persona facts, LM voice)."),
    patient_lm: str = typer.Option("smollm2-135m-instruct", help="With --patient llm: packaged name or local HF folder."),
    max_turns: Optional[int] = typer.Option(None, help="Doctor turns per episode (default: the model's training value, "
                                                       "15 for the oracle)."),
    seed: int = typer.Option(0, help="Synthetic case set / persona seed."),
    device: str = typer.Option("auto", help="cpu | cuda | auto."),
    batch_size: int = typer.Option(32, help="Dialogues decoded together (one KV cache)."),
    judge: str = typer.Option("rule", help="Rubric judge (history taking, safety): rule | llm | none."),
    judge_lm: str = typer.Option("smollm2-135m-instruct", help="With --judge llm: packaged name or local HF folder."),
    judge_mode: str = typer.Option("scored", help="With --judge llm: scored (digit probabilities, G-Eval; the default, "
                                                  "no format failures) | generate (reason, then <answer>N</answer>)."),
    error_discovery: bool = typer.Option(False, "--error-discovery", help="Also count the distinct errors the persona "
                                                                          "and the generic simulator expose (SAGE)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output folder."),
) -> None:
    """Top-1/top-3 accuracy, turns, exam F1, judge-scored rubric (95 % bootstrap CIs) and hallucinated facts
    of a doctor on held-out synthetic or DDXPlus cases; writes a run folder."""
    from .evaluate import evaluate

    s = evaluate(model, data, split, output=output, n_cases=cases, offset=offset, patient=patient,
                 max_turns=max_turns, seed=seed, device=device, batch_size=batch_size, judge=judge, judge_lm=judge_lm,
                 judge_mode=judge_mode, patient_lm=patient_lm, error_discovery=error_discovery, overwrite=overwrite,
                 log=typer.echo)
    typer.echo(f"top1 {s['top1']:.4f}  top3 {s['top3']:.4f}  n_cases {s['n_cases']}  mean_turns {s['mean_turns']:.2f}")
    typer.echo(f"run folder: {output}")


@dialogue_app.command()
@_friendly
def chat(
    role: str = typer.Option("doctor", help="Who you play: doctor | patient."),
    case: int = typer.Option(0, help="Index of the held-out case to play."),
    doctor: str = typer.Option("oracle", help="With --role patient: 'oracle' or a stage folder."),
    max_turns: int = typer.Option(10, help="Doctor turns."),
    seed: int = typer.Option(0, help="Case set seed."),
) -> None:
    """Play the doctor (against a simulated patient) or the patient (against a doctor) in the terminal."""
    from ..config import ConfigError
    from .chat import chat as run_chat
    from .data import load_split
    from .train_config import DataConfig

    if role not in ("doctor", "patient"):
        raise ConfigError(f"--role {role!r} must be doctor or patient")
    if case < 0:
        raise ConfigError(f"--case {case} must be 0 or more")
    kb, held_out = load_split(DataConfig(seed=seed, pool=200 + 20 * (case + 1)), "test", case + 1)
    doc = None
    if role == "patient":
        if doctor == "oracle":
            from .oracle import OracleDoctor

            doc = OracleDoctor(kb)
        else:
            from .policy import load_policy, make_doctor

            m, tok, mcfg, _, _ = load_policy(doctor)
            doc = make_doctor(m, tok, mcfg)

    def ask(label: str) -> str:
        return typer.prompt(label, default="", show_default=False)

    run_chat(role=role, case=held_out[case], kb=kb, ask=ask, say=typer.echo, doctor=doc, max_turns=max_turns)
