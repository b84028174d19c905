"""`medkit dialogue eval`: held-out accuracy with bootstrap CIs, and SAGE-style error discovery.

Error discovery (SAGE, arXiv 2510.11997): play the *same* doctor on the same
cases against the persona simulator and against the generic one, and count the
distinct agent errors each exposes (:func:`medkit.metrics.dialogue.agent_errors`:
wrong diagnosis (truth -> answer), no diagnosis, missed red flag, format errors).
"""

from __future__ import annotations

from pathlib import Path

from ..metrics.dialogue import distinct_errors, summarize_episodes
from .rollout import make_envs, run_episodes


def evaluate_doctor(doctor, cases, kb, *, patient: str = "persona", max_turns: int = 10, seed: int = 0,
                    lm=None) -> tuple[list[dict], dict]:
    """Play ``doctor`` on every case once (deterministic doctors give reproducible numbers).
    Returns ``(records, summary)`` (:func:`medkit.metrics.dialogue.summarize_episodes`)."""
    envs = make_envs(cases, kb, patient=patient, max_turns=max_turns, lm=lm)
    records = run_episodes(envs, doctor)
    return records, summarize_episodes(records, seed=seed)


def error_discovery(doctor, cases, kb, *, max_turns: int = 10, seed: int = 0) -> dict:
    """Distinct agent errors found by the persona vs the generic simulator on the same doctor and cases."""
    out = {}
    for kind in ("persona", "generic"):
        recs, summ = evaluate_doctor(doctor, cases, kb, patient=kind, max_turns=max_turns, seed=seed)
        out[kind] = {**distinct_errors(recs), "top1": summ["top1"]["mean"]}
    p, g = out["persona"]["n"], out["generic"]["n"]
    out["persona_minus_generic"] = p - g
    out["persona_over_generic"] = round(p / g, 3) if g else None
    return out


def eval_cli(*, model: str, n_cases: int, patient: str, max_turns: int, seed: int, output: Path,
             device: str = "cpu", patient_lm: str = "smollm2-135m-instruct", log=print) -> dict:
    """Body of ``medkit dialogue eval``: ``model`` is ``oracle`` or a stage folder / policy.pt.
    ``patient="llm"`` voices the persona patient with ``patient_lm`` (a local model)."""
    from ..config import ConfigError
    from ..io.atomic import write_json, write_jsonl
    from .oracle import OracleDoctor
    from .train import DataConfig, load_cases

    if patient not in ("persona", "generic", "llm"):
        raise ConfigError(f"--patient {patient!r} must be persona, generic or llm")
    lm = None
    if patient == "llm":
        from ..lm.load import load_causal_lm

        try:
            lm = load_causal_lm(patient_lm, device=device)
        except FileNotFoundError as e:
            raise ConfigError(f"--patient-lm: {e}") from None
    kb, _, held_out = load_cases(DataConfig(n_train=1, n_rl=0, n_eval=n_cases, seed=seed, pool=100 + 20 * n_cases))
    if model == "oracle":
        doctor = OracleDoctor(kb)
    else:
        from .policy import load_policy, make_doctor

        m, tok, mcfg, _, _ = load_policy(model, device=device)
        doctor = make_doctor(m, tok, mcfg)
    recs, summ = evaluate_doctor(doctor, held_out, kb, patient=patient, max_turns=max_turns, seed=seed, lm=lm)
    errors = error_discovery(doctor, held_out, kb, max_turns=max_turns, seed=seed)
    write_jsonl(Path(output) / "dialogues.jsonl", recs)
    summary = {"model": model, "patient": patient, "n_cases": len(held_out), "seed": seed, "metrics": summ,
               "error_discovery": {k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk != "errors"})
                                   for k, v in errors.items()}}
    write_json(Path(output) / "summary.json", summary)
    log(f"top-1 {summ['top1']['mean']:.3f} {summ['top1']['ci95']}  top-3 {summ['top3']['mean']:.3f} "
        f"{summ['top3']['ci95']}  turns {summ['turns']['mean']:.2f}  exam F1 {summ['exam_f1']['mean']:.3f}  "
        f"format errors {summ['format_error_rate']:.3f}")
    log(f"distinct agent errors: persona {errors['persona']['n']}, generic {errors['generic']['n']}")
    return summary
