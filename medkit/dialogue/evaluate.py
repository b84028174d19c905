"""`medkit dialogue eval`: held-out accuracy with bootstrap CIs, and SAGE-style error discovery.

Error discovery (SAGE, arXiv 2510.11997): play the *same* doctor on the same
cases against the persona simulator and against the generic one, and count the
distinct agent errors each exposes (:func:`medkit.metrics.dialogue.agent_errors`:
wrong diagnosis (truth -> answer), no diagnosis, missed red flag, hallucinated fact,
format errors).

The judge-scored rubric (history taking, safety) is :mod:`medkit.dialogue.judge`:
the rule judge by default, or an LLM judge on any local model (``--judge llm``).
"""

from __future__ import annotations

from pathlib import Path

from ..metrics.dialogue import distinct_errors, summarize_episodes
from .rollout import make_envs, run_episodes


def evaluate_doctor(doctor, cases, kb, *, patient: str = "persona", max_turns: int = 10, seed: int = 0,
                    lm=None, judge="rule") -> tuple[list[dict], dict]:
    """Play ``doctor`` on every case once (deterministic doctors give reproducible numbers).

    ``judge``: ``"rule"`` (default), ``None``, or a judge object (:mod:`medkit.dialogue.judge`);
    its scores go into each record's ``rubric`` and the summary's ``rubric``.
    Returns ``(records, summary)`` (:func:`medkit.metrics.dialogue.summarize_episodes`)."""
    from .judge import attach_rubric, make_judge

    envs = make_envs(cases, kb, patient=patient, max_turns=max_turns, lm=lm)
    records = run_episodes(envs, doctor)
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


def _ci_text(m: dict) -> str:
    """``0.250 [0.12, 0.40]`` (mean and 95 % CI), ``n/a`` when nothing was scored."""
    return "n/a" if m.get("mean") is None else f"{m['mean']:.3f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]"


def report_lines(summ: dict, errors: dict) -> list[str]:
    """The eval printout: headline metrics, rubric, hallucinations, error-discovery table."""
    lines = [f"top-1 {summ['top1']['mean']:.3f} {summ['top1']['ci95']}  top-3 {summ['top3']['mean']:.3f} "
             f"{summ['top3']['ci95']}  turns {summ['turns']['mean']:.2f}  exam F1 {summ['exam_f1']['mean']:.3f}  "
             f"format errors {summ['format_error_rate']:.3f}"]
    rub = summ.get("rubric")
    if rub:
        items = [k for k in rub if isinstance(rub[k], dict)]
        lines.append(f"rubric ({rub['judge']} judge, 0-1, 95% CI): " + "; ".join(
            f"{k.replace('_', ' ')} {_ci_text(rub[k])} (n={rub[k]['n']}, n/a {rub[k]['not_applicable']}, "
            f"parse failures {rub[k]['parse_failures']})" for k in items))
    lines.append(f"hallucinated facts: {summ['hallucinated_facts']} turns in {summ['hallucinating_dialogues']}/"
                 f"{summ['n']} dialogues (rate {_ci_text(summ['hallucination_rate'])})")
    lines.append(f"distinct agent errors: persona {errors['persona']['n']}, generic {errors['generic']['n']}")
    types = sorted(set(errors["persona"]["by_type"]) | set(errors["generic"]["by_type"]))
    w = max(len(t) for t in types) if types else 10
    lines.append(f"  {'error type':<{w}}  persona  generic")
    for t in types:
        lines.append(f"  {t:<{w}}  {errors['persona']['by_type'].get(t, 0):>7}  {errors['generic']['by_type'].get(t, 0):>7}")
    return lines


def eval_cli(*, model: str, n_cases: int, patient: str, max_turns: int, seed: int, output: Path,
             device: str = "cpu", patient_lm: str = "smollm2-135m-instruct", judge: str = "rule",
             judge_lm: str = "smollm2-135m-instruct", judge_mode: str = "generate", log=print) -> dict:
    """Body of ``medkit dialogue eval``: ``model`` is ``oracle`` or a stage folder / policy.pt.
    ``patient="llm"`` voices the persona patient with ``patient_lm`` (a local model);
    ``judge="llm"`` scores the rubric with ``judge_lm`` (a local model; the patient's when the same),
    by free reasoning (``judge_mode="generate"``) or digit probabilities (``"scored"``)."""
    from ..config import ConfigError
    from ..io.atomic import write_json, write_jsonl
    from .data import load_cases
    from .judge import make_judge
    from .oracle import OracleDoctor
    from .train_config import DataConfig

    if patient not in ("persona", "generic", "llm"):
        raise ConfigError(f"--patient {patient!r} must be persona, generic or llm")
    if judge not in ("rule", "llm", "none"):
        raise ConfigError(f"--judge {judge!r} must be rule, llm or none")
    if judge_mode not in ("generate", "scored"):
        raise ConfigError(f"--judge-mode {judge_mode!r} must be generate or scored")

    def load_lm(name, flag):
        from ..lm.load import load_causal_lm

        try:
            return load_causal_lm(name, device=device)
        except FileNotFoundError as e:
            raise ConfigError(f"{flag}: {e}") from None

    lm = load_lm(patient_lm, "--patient-lm") if patient == "llm" else None
    judge_model = None
    if judge == "llm":
        judge_model = lm if (lm is not None and judge_lm == patient_lm) else load_lm(judge_lm, "--judge-lm")
    the_judge = make_judge(judge, judge_model, **({"mode": judge_mode} if judge == "llm" else {}))
    kb, _, held_out = load_cases(DataConfig(n_train=1, n_rl=0, n_eval=n_cases, seed=seed, pool=100 + 20 * n_cases))
    if model == "oracle":
        doctor = OracleDoctor(kb)
    else:
        from .policy import load_policy, make_doctor

        m, tok, mcfg, _, _ = load_policy(model, device=device)
        doctor = make_doctor(m, tok, mcfg)
    recs, summ = evaluate_doctor(doctor, held_out, kb, patient=patient, max_turns=max_turns, seed=seed, lm=lm,
                                 judge=the_judge)
    errors = error_discovery(doctor, held_out, kb, max_turns=max_turns, seed=seed)
    write_jsonl(Path(output) / "dialogues.jsonl", recs)
    summary = {"model": model, "patient": patient, "judge": judge if judge == "rule" else (
                   f"llm:{judge_lm}:{judge_mode}" if judge == "llm" else None), "n_cases": len(held_out), "seed": seed,
               "metrics": summ,
               "error_discovery": {k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk != "errors"})
                                   for k, v in errors.items()}}
    if judge == "llm":
        summary["judge_stats"] = dict(the_judge.stats)
    write_json(Path(output) / "summary.json", summary)
    for line in report_lines(summ, errors):
        log(line)
    return summary
