"""`medkit dialogue eval` and :func:`evaluate`: a doctor on held-out cases, with a run folder.

:func:`evaluate` plays a doctor (the oracle, or a trained model folder) once on every
case of a split (synthetic cases, or a local DDXPlus release folder) against a
simulated patient and writes a self-contained run folder::

    OUT/config.yaml        the resolved evaluation settings (:class:`EvalConfig`)
    OUT/manifest.json      medkit version, git SHA, packages, device, sha256 of the data files
                           and of the model folder, times, status
    OUT/dialogues.jsonl    one record per case (``case_id``, truth, differential, transcript, ...)
    OUT/summary.json       ``top1``, ``top3``, ``n_cases``, ``mean_turns`` and every metric of
                           :func:`medkit.metrics.dialogue.summarize_episodes` with 95 % CIs

Error discovery (SAGE, arXiv 2510.11997) plays the *same* doctor on the same cases
against the persona simulator and against the generic one (same case facts, no
persona) and counts the distinct agent errors each exposes
(:func:`medkit.metrics.dialogue.agent_errors`); ``error_discovery=True`` adds it.

The judge-scored rubric (history taking, safety) is :mod:`medkit.dialogue.judge`:
the rule judge by default, or an LLM judge on any local model (``judge="llm"``; scored
by digit probabilities by default, since a 135M judge cannot keep a
reason-then-answer format).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..metrics.dialogue import distinct_errors, summarize_episodes
from .rollout import make_envs, run_episodes

SYNTH_DEFAULT_CASES = 400


@dataclass
class EvalConfig:
    """Settings of one evaluation (written to the run folder's ``config.yaml``)."""

    model: str = "oracle"
    data: str | None = None          # None: synthetic cases (medkit.synth.cases, seed); else a DDXPlus folder
    split: str = "test"              # train | validate | test
    n_cases: int | None = None       # None: every row of a DDXPlus split / 400 synthetic cases
    offset: int = 0
    patient: str = "persona"
    max_turns: int | None = None     # None: the model's training value (the oracle: 15)
    seed: int = 0
    device: str = "auto"
    batch_size: int = 32
    judge: str = "rule"
    judge_lm: str = "smollm2-135m-instruct"
    judge_mode: str = "scored"
    patient_lm: str = "smollm2-135m-instruct"
    error_discovery: bool = False


def evaluate_doctor(doctor, cases, kb, *, patient: str = "persona", max_turns: int = 10, seed: int = 0,
                    lm=None, judge="rule", batch_size: int | None = 32, progress=None) -> tuple[list[dict], dict]:
    """Play ``doctor`` on every case once (deterministic doctors give reproducible numbers).

    ``judge``: ``"rule"`` (default), ``None``, or a judge object (:mod:`medkit.dialogue.judge`);
    its scores go into each record's ``rubric`` and the summary's ``rubric``.
    Returns ``(records, summary)`` (:func:`medkit.metrics.dialogue.summarize_episodes`)."""
    from .judge import attach_rubric, make_judge

    envs = make_envs(cases, kb, patient=patient, max_turns=max_turns, lm=lm)
    records = run_episodes(envs, doctor, batch_size=batch_size, progress=progress)
    attach_rubric(records, cases, kb, make_judge(judge) if isinstance(judge, str) or judge is None else judge)
    return records, summarize_episodes(records, seed=seed)


def error_discovery(doctor, cases, kb, *, max_turns: int = 10, seed: int = 0) -> dict:
    """Distinct agent errors found by the persona vs the generic simulator on the same doctor and cases."""
    out = {}
    for kind in ("persona", "generic"):
        recs, summ = evaluate_doctor(doctor, cases, kb, patient=kind, max_turns=max_turns, seed=seed, judge=None)
        out[kind] = {**distinct_errors(recs), "top1": summ["top1"]["mean"]}
    p, g = out["persona"]["n"], out["generic"]["n"]
    out["persona_minus_generic"] = p - g
    out["persona_over_generic"] = round(p / g, 3) if g else None
    return out


_error_discovery = error_discovery   # evaluate()'s flag of the same name shadows the function


def _ci_text(m: dict) -> str:
    """``0.250 [0.12, 0.40]`` (mean and 95 % CI), ``n/a`` when nothing was scored."""
    return "n/a" if m.get("mean") is None else f"{m['mean']:.3f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]"


def report_lines(summ: dict, errors: dict | None = None) -> list[str]:
    """The eval printout: headline metrics, rubric, hallucinations, error-discovery table."""
    lines = [f"top-1 {_ci_text(summ['top1'])}  top-3 {_ci_text(summ['top3'])}  turns {summ['turns']['mean']:.2f}  "
             f"exam F1 {summ['exam_f1']['mean']:.3f}  format errors {summ['format_error_rate']:.3f}  "
             f"(n = {summ['n']})"]
    rub = summ.get("rubric")
    if rub:
        items = [k for k in rub if isinstance(rub[k], dict)]
        lines.append(f"rubric ({rub['judge']} judge, 0-1, 95% CI): " + "; ".join(
            f"{k.replace('_', ' ')} {_ci_text(rub[k])} (n={rub[k]['n']}, n/a {rub[k]['not_applicable']}, "
            f"parse failures {rub[k]['parse_failures']})" for k in items))
    lines.append(f"hallucinated facts: {summ['hallucinated_facts']} turns in {summ['hallucinating_dialogues']}/"
                 f"{summ['n']} dialogues (rate {_ci_text(summ['hallucination_rate'])})")
    if errors:
        lines.append(f"distinct agent errors: persona {errors['persona']['n']}, generic {errors['generic']['n']}")
        types = sorted(set(errors["persona"]["by_type"]) | set(errors["generic"]["by_type"]))
        w = max(len(t) for t in types) if types else 10
        lines.append(f"  {'error type':<{w}}  persona  generic")
        for t in types:
            lines.append(f"  {t:<{w}}  {errors['persona']['by_type'].get(t, 0):>7}  "
                         f"{errors['generic']['by_type'].get(t, 0):>7}")
    return lines


def _check(cfg: EvalConfig) -> None:
    from ..config import ConfigError

    if cfg.split not in ("train", "validate", "test"):
        raise ConfigError(f"--split {cfg.split!r} must be train, validate or test")
    if cfg.patient not in ("persona", "generic", "llm"):
        raise ConfigError(f"--patient {cfg.patient!r} must be persona, generic or llm")
    if cfg.judge not in ("rule", "llm", "none"):
        raise ConfigError(f"--judge {cfg.judge!r} must be rule, llm or none")
    if cfg.judge_mode not in ("generate", "scored"):
        raise ConfigError(f"--judge-mode {cfg.judge_mode!r} must be generate or scored")
    if cfg.n_cases is not None and cfg.n_cases < 1:
        raise ConfigError(f"--cases {cfg.n_cases} must be at least 1")
    if cfg.max_turns is not None and cfg.max_turns < 1:
        raise ConfigError(f"--max-turns {cfg.max_turns} must be at least 1")
    if cfg.batch_size < 1:
        raise ConfigError(f"--batch-size {cfg.batch_size} must be at least 1")


def load_eval_cases(data: str | Path | None, split: str, n_cases: int | None = None, *, offset: int = 0,
                    seed: int = 0):
    """``(kb, cases, input_files)`` of an evaluation: a DDXPlus release folder's ``split`` rows (all
    of them unless ``n_cases``), or ``n_cases`` (default 400) synthetic cases of ``split``."""
    from ..io.errors import MedkitInputError
    from .data import load_split
    from .train_config import DataConfig

    if data is None:
        n = n_cases or SYNTH_DEFAULT_CASES
        pool = int((offset + n) / 0.1 * 1.25) + 100     # ~10 % of synthetic cases fall in each held-out split
        kb, cases = load_split(DataConfig(source="synth", pool=pool, seed=seed), split, n, offset=offset)
        return kb, cases, []
    from .readers import patients_file

    root = Path(data)
    if not root.is_dir():
        raise MedkitInputError(root, "not a folder (--data takes a DDXPlus release folder)")
    dc = DataConfig(source="ddxplus", root=str(root), seed=seed)
    kb, cases = load_split(dc, split, n_cases, offset=offset)
    files = [root / "release_evidences.json", root / "release_conditions.json", patients_file(root, "train"),
             patients_file(root, split)]
    return kb, cases, list(dict.fromkeys(files))


def _load_doctor(model: str, device: str, kb=None, oracle_kw: dict | None = None):
    """``(doctor, max_turns the model was trained with or None)``; ``model`` = oracle | a model folder."""
    from ..io.errors import MedkitInputError

    if model == "oracle":
        from .oracle import OracleDoctor

        return OracleDoctor(kb, confidence=False, **(oracle_kw or {})), None
    from .policy import load_policy, make_doctor

    path = Path(model)
    if not path.exists():
        raise MedkitInputError(path, "no such model folder (--model takes 'oracle' or a model / stage folder)")
    m, tok, mcfg, _, _ = load_policy(path, device=device)
    meta = _meta(path)
    return make_doctor(m, tok, mcfg), meta.get("max_turns")


def _meta(path: Path) -> dict:
    import json

    f = Path(path) / "assets.json"
    try:
        return json.loads(f.read_text()).get("meta", {}) if f.exists() else {}
    except (OSError, ValueError):
        return {}


def evaluate(model: str | Path = "oracle", data: str | Path | None = None, split: str = "test", *,
             output: str | Path | None = None, n_cases: int | None = None, offset: int = 0,
             patient: str = "persona", max_turns: int | None = None, seed: int = 0, device: str = "auto",
             batch_size: int = 32, judge: str = "rule", judge_lm: str = "smollm2-135m-instruct",
             judge_mode: str = "scored", patient_lm: str = "smollm2-135m-instruct",
             error_discovery: bool = False, overwrite: bool = False, log=None) -> dict:
    """Evaluate a diagnostic doctor on held-out cases (the body of ``medkit dialogue eval``).

    Args:
        model: ``"oracle"`` (the knowledge-base expected-information-gain doctor) or a model folder
            (``models/dialogue-doctor-synthetic``, a stage folder of a ``medkit dialogue train`` run).
        data: a DDXPlus release folder (``release_evidences.json``, ``release_conditions.json``,
            ``release_{train,validate,test}_patients[.csv]``); None: synthetic cases.
        split: ``train`` / ``validate`` / ``test``.
        output: the run folder to write (None: write nothing, return the summary). Refused when it
            exists and is not empty, unless ``overwrite``.
        n_cases: cases (default: the whole DDXPlus split, or 400 synthetic cases); ``offset``: first row.
        patient: ``persona`` | ``generic`` | ``llm`` (persona facts voiced by ``patient_lm``).
        max_turns: doctor turns per episode (default: the model's training value; the oracle: 15).
        device: ``auto`` | ``cpu`` | ``cuda``.
        judge: rubric judge ``rule`` | ``llm`` | ``none``; ``judge_mode`` ``scored`` | ``generate``.
        error_discovery: also play the persona and the generic simulator (SAGE error discovery).

    Returns:
        The summary: ``top1``, ``top3``, ``n_cases``, ``mean_turns``, ``metrics`` (every metric with
        a 95 % CI), ``model``, ``data``, ``split``, and ``error_discovery`` when asked.

    Example::

        from medkit.dialogue.evaluate import evaluate
        s = evaluate("models/dialogue-doctor-synthetic", "DDXPlus/", "test", output="runs/eval-ddx")
        print(s["top1"], s["n_cases"])
    """
    from ..io.atomic import write_jsonl
    from ..runs import RunDir, pick_device
    from .judge import make_judge

    cfg = EvalConfig(model=str(model), data=None if data is None else str(data), split=split, n_cases=n_cases,
                     offset=offset, patient=patient, max_turns=max_turns, seed=seed, device=device,
                     batch_size=batch_size, judge=judge, judge_lm=judge_lm, judge_mode=judge_mode,
                     patient_lm=patient_lm, error_discovery=error_discovery)
    _check(cfg)
    say = log or (lambda m: None)
    if output is not None:
        out = Path(output)
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"{out}: exists and is a file, not an output folder; choose a new --output")
        if out.exists() and any(out.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{out}: output folder exists and is not empty; pass --overwrite or "
                                      "choose a new --output")
            import shutil

            shutil.rmtree(out)
    dev = str(pick_device(device))
    kb, cases, files = load_eval_cases(data, split, n_cases, offset=offset, seed=seed)
    doctor, trained_turns = _load_doctor(cfg.model, dev, kb)
    cfg.max_turns = max_turns or trained_turns or 15
    run = None
    if output is not None:
        run = RunDir.create(output, config=cfg, seed=seed, device=dev, kind="inference",
                            command="medkit dialogue eval")
        for f in files:
            run.add_input(f)
        if cfg.model != "oracle":
            run.add_input(cfg.model, name=f"model:{Path(cfg.model).name}")
    t0 = time.perf_counter()
    try:
        lm = None
        if patient == "llm":
            lm = _load_lm(patient_lm, "--patient-lm", dev)
        judge_model = None
        if judge == "llm":
            judge_model = lm if (lm is not None and judge_lm == patient_lm) else _load_lm(judge_lm, "--judge-lm", dev)
        the_judge = make_judge(judge, judge_model, **({"mode": judge_mode} if judge == "llm" else {}))
        say(f"evaluating {cfg.model} on {len(cases)} {'DDXPlus' if data else 'synthetic'} {split} cases "
            f"({patient} patient, at most {cfg.max_turns} turns, {dev})")
        recs, summ = evaluate_doctor(doctor, cases, kb, patient=patient, max_turns=cfg.max_turns, seed=seed, lm=lm,
                                     judge=the_judge, batch_size=batch_size,
                                     progress=lambda d, n: say(f"  {d}/{n} dialogues"))
        errors = (_error_discovery(doctor, cases, kb, max_turns=cfg.max_turns, seed=seed)
                  if error_discovery else None)
    except BaseException:
        if run is not None:
            run.finish("failed")
        raise
    summary = {"model": cfg.model, "data": cfg.data or "synthetic", "split": split, "patient": patient,
               "n_cases": len(recs), "top1": summ["top1"]["mean"], "top3": summ["top3"]["mean"],
               "mean_turns": summ["turns"]["mean"], "max_turns": cfg.max_turns, "seed": seed,
               "judge": judge if judge != "llm" else f"llm:{judge_lm}:{judge_mode}", "metrics": summ,
               "seconds": round(time.perf_counter() - t0, 1)}
    if judge == "llm":
        summary["judge_stats"] = dict(the_judge.stats)
    if errors is not None:
        summary["error_discovery"] = {k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items()
                                                                             if kk != "errors"})
                                      for k, v in errors.items()}
    if run is not None:
        write_jsonl(run.path / "dialogues.jsonl", recs)
        run.write_summary(summary)
        run.record_time("evaluate", summary["seconds"])
        run.finish()
    for line in report_lines(summ, errors):
        say(line)
    return summary


def _load_lm(name: str, flag: str, device: str):
    from ..config import ConfigError
    from ..lm.load import load_causal_lm

    try:
        return load_causal_lm(name, device=device)
    except FileNotFoundError as e:
        raise ConfigError(f"{flag}: {e}") from None
