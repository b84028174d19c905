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
    """User errors (bad config, bad input files) -> one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..config import ConfigError
        from ..io.errors import MedkitInputError

        try:
            return fn(*args, **kwargs)
        except (MedkitInputError, ConfigError, FileExistsError) as e:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


@dialogue_app.command()
@_friendly
def train(
    pipeline: str = typer.Argument(..., help="A spec path or shipped name, e.g. dialogue_tiny (pipeline: dialogue-train)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<name>-<time>)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field: --set sft.steps=50 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last completed stage / "
                                                      "checkpoint (only step counts may change)."),
) -> None:
    """Oracle demonstrations -> SFT -> SR-PPO and multi-turn GRPO; evaluates every stage."""
    from ..pipelines import run_spec

    run = run_spec(pipeline, out=out, overrides=list(set_), resume=resume, expect="dialogue-train",
                   log=lambda m: typer.echo(m, err=True))
    typer.echo(f"run folder: {run}")


@dialogue_app.command("eval")
@_friendly
def eval_(
    model: str = typer.Option("oracle", help="'oracle' or a stage folder of a train run (e.g. runs/x/grpo)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for summary.json and dialogues.jsonl."),
    cases: int = typer.Option(20, help="Held-out synthetic cases (split 'test')."),
    patient: str = typer.Option("persona", help="Simulated patient: persona | generic | llm (persona facts, LM voice)."),
    patient_lm: str = typer.Option("smollm2-135m-instruct", help="With --patient llm: packaged name or local HF folder."),
    max_turns: int = typer.Option(10, help="Doctor turns per episode."),
    seed: int = typer.Option(0, help="Case set seed."),
    device: str = typer.Option("cpu", help="cpu | cuda | auto."),
    judge: str = typer.Option("rule", help="Rubric judge (history taking, safety): rule | llm | none."),
    judge_lm: str = typer.Option("smollm2-135m-instruct", help="With --judge llm: packaged name or local HF folder."),
    judge_mode: str = typer.Option("generate", help="With --judge llm: generate (reason, then <answer>N</answer>) | "
                                                    "scored (digit probabilities, G-Eval; for small models)."),
) -> None:
    """Top-1/top-3 accuracy, turns, exam F1, format errors, judge-scored rubric (95 % bootstrap CIs),
    hallucinated facts and error discovery (persona vs generic simulator)."""
    from .evaluate import eval_cli

    eval_cli(model=model, n_cases=cases, patient=patient, max_turns=max_turns, seed=seed, output=output,
             device=device, patient_lm=patient_lm, judge=judge, judge_lm=judge_lm, judge_mode=judge_mode,
             log=typer.echo)


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
    from .data import load_cases
    from .train_config import DataConfig

    if role not in ("doctor", "patient"):
        raise ConfigError(f"--role {role!r} must be doctor or patient")
    kb, _, held_out = load_cases(DataConfig(n_train=1, n_rl=0, n_eval=case + 1, seed=seed, pool=100 + 20 * (case + 1)))
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
