"""`medkit dialogue train`: oracle demonstrations -> SFT -> SR-PPO and multi-turn GRPO -> evaluation.

Stages (each a subfolder of the run, a model folder once completed):

1. ``demonstrations.jsonl``: the oracle doctor (:mod:`medkit.dialogue.oracle`) on the
   first ``data.n_train`` training cases of each source (synthetic, DDXPlus or both);
   one row per dialogue (case_id, the oracle's actions), plus the dialogues and the
   oracle's dialogues on the held-out cases (for the validation agreement).
2. ``sft/``: supervised fine-tuning on the oracle's dialogues (:mod:`medkit.dialogue.sft`),
   logging the teacher-forced agreement with the oracle on training and held-out dialogues.
3. ``srppo/``: Self-Rewarding PPO (:mod:`medkit.dialogue.srppo`) on the RL cases
   (no demonstrations), fresh LoRA on SFT.
4. ``grpo/`` (and ``grpo_entropy/`` when ``grpo_entropy_alpha > 0``): multi-turn GRPO
   (:mod:`medkit.dialogue.grpo`), fresh LoRA on SFT.
5. ``summary.json``: every stage (and the base model and the oracle) evaluated on each
   source's held-out cases of ``data.eval_split`` (validation by default) against the
   persona patient, with 95 % bootstrap CIs.

Every doctor acts under the grammar of legal actions (:mod:`medkit.dialogue.grammar`).

Resume (``medkit dialogue train ... --out RUN --resume``): each stage folder holds a
``stage.json`` (``running`` / ``completed``, steps done, the SFT it was trained on)
and its loop's ``loop/checkpoints/last.pt`` (saved every ``save_every`` steps). A
killed run, or one resumed with more steps, continues where it stopped: completed
stages whose step count is unchanged are loaded, not redone; an unfinished or
extended stage continues from its loop checkpoint (the step counter goes on); RL
stages trained on an earlier SFT are redone when SFT changed. Only step counts
(``sft.steps``, ``srppo.steps``, ``grpo.steps``), ``save_every`` and ``device`` may
differ from the run's ``config.yaml``; any other change is refused (start a new
folder). Evaluation is redone only for stages whose weights or cases changed.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ..config import ConfigError, to_dict
from .data import demonstrations, load_parts, vocabulary
from .oracle import OracleDoctor
from .stages import grpo_stage, sft_examples, sft_stage, srppo_stage
from .train_config import DialogueTrainConfig, check_config

__all__ = ["DialogueTrainConfig", "run_pipeline", "run_training"]


RESUMABLE = ("sft.steps", "srppo.steps", "grpo.steps", "sft.save_every", "srppo.save_every", "grpo.save_every",
             "device")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("sft_lora", "rl_lora"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume(cfg: DialogueTrainConfig, out: Path) -> bool:
    """May ``out`` be resumed with ``cfg``? False: nothing there yet (a fresh run).

    Raises ConfigError when ``out`` is not a run folder of this pipeline or when a field
    other than :data:`RESUMABLE` differs from its ``config.yaml``.
    """
    import yaml

    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return False
    saved = out / "config.yaml"
    if not saved.exists() or not (out / "manifest.json").exists():
        raise ConfigError(f"{out}: not a `medkit dialogue train` run folder (no config.yaml / manifest.json)")
    old, new = _flat(yaml.safe_load(saved.read_text(encoding="utf-8")) or {}), _flat(to_dict(cfg))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE)
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise ConfigError(f"{out}: --resume with a different config ({diffs}); only step counts may change. "
                          "Choose a new --out for a different run")
    return True


def _stage(out: Path, name: str) -> dict | None:
    f = out / name / "stage.json"
    return json.loads(f.read_text(encoding="utf-8")) if f.exists() else None


def _mark(out: Path, name: str, **state) -> None:
    from ..io.atomic import write_json

    write_json(out / name / "stage.json", {"stage": name, **state})


def _plan(out: Path, name: str, steps: int, upstream: str, resume: bool, log) -> str:
    """``"load"`` (completed with these steps on this upstream), ``"continue"`` or ``"train"`` (from scratch).

    A stage trained on another upstream (an SFT with other steps) is wiped first.
    """
    st = _stage(out, name) if resume else None
    if st is None:
        return "train"
    if st.get("upstream") != upstream:
        log(f"{name}: trained on {st.get('upstream')}, now {upstream}: redoing it")
        shutil.rmtree(out / name)
        return "train"
    if st.get("status") == "completed" and st.get("steps", 0) > steps:
        raise ConfigError(f"{out / name}: {st['steps']} steps already done; {name}.steps = {steps} cannot undo them")
    if st.get("status") == "completed" and st.get("steps") == steps and (out / name / "model.safetensors").exists():
        return "load"
    return "continue"


def _eval_key(policy: Path, held_out, cfg: DialogueTrainConfig) -> str:
    """What an evaluation depends on: the stage's weights (sha1 of its model.safetensors) and the cases,
    patient, turn limit and seed. A resumed run re-evaluates a stage only when this changes."""
    import hashlib

    weights = policy / "model.safetensors"
    h = hashlib.sha1(weights.read_bytes() if weights.exists() else b"")
    h.update(json.dumps([[c["case_id"] for c in held_out], cfg.patient, cfg.max_turns, cfg.seed,
                         cfg.model.top_k]).encode())
    return h.hexdigest()


def _cached_eval(out: Path, name: str, key: str) -> dict | None:
    f = out / "eval" / f"{name}.json"
    try:
        blob = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    ok = blob.get("key") == key and (out / "predictions" / f"{name}.jsonl").exists()
    return blob["summary"] if ok else None


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# --------------------------------------------------------------------------- pipeline
def run_training(cfg: DialogueTrainConfig, out: Path, *, resume: bool = False, log=print) -> dict:
    """Every stage into ``out`` (a :class:`medkit.runs.RunDir` folder); returns the summary.

    ``resume``: continue a killed or shorter run in ``out`` (see the module docstring).
    """
    from ..runs import RunDir, seed_everything

    check_config(cfg)
    out = Path(out)
    resume = check_resume(cfg, out) if resume else False
    seed_everything(cfg.seed)
    run = RunDir.create(out, config=cfg, seed=cfg.seed, device=cfg.device, command="medkit dialogue train",
                        resume=resume)
    try:
        return _pipeline(cfg, run, resume, log)
    except BaseException:
        run.finish("interrupted")      # a resumable state: `--resume` continues from here
        raise


def make_oracle(kb, cfg: DialogueTrainConfig) -> OracleDoctor:
    """The demonstrating oracle of ``cfg`` (canonical actions: no confidence, no rationale)."""
    o = cfg.oracle
    return OracleDoctor(kb, stop_p=o.stop_p, min_gain=o.min_gain, test_weight=o.test_weight,
                        group_weight=o.group_weight, top_k=cfg.model.top_k, confidence=False)


def _pipeline(cfg: DialogueTrainConfig, run, resume: bool, log) -> dict:
    import torch

    from ..io.atomic import write_json, write_jsonl
    from .evaluate import evaluate_doctor
    from .policy import build_base, load_policy, make_doctor, save_policy

    out = run.path
    t_all = time.perf_counter()
    parts = load_parts(cfg.data)
    demo_file, held_file, dial_file = (out / "demonstrations.jsonl", out / "demonstrations_held_out.jsonl",
                                       out / "demonstration_dialogues.jsonl")
    if resume and all(f.exists() for f in (demo_file, held_file, dial_file)):
        rows, held_rows, demo_recs = (_read_jsonl(f) for f in (demo_file, held_file, dial_file))
        log(f"demonstrations: {len(rows)} oracle dialogues (loaded)")
    else:
        rows, held_rows, demo_recs = [], [], []
        for p in parts:
            r, recs = demonstrations(p.demo, p.kb, make_oracle(p.kb, cfg), max_turns=cfg.max_turns,
                                     patient=cfg.patient)
            h, _ = demonstrations(p.held_out, p.kb, make_oracle(p.kb, cfg), max_turns=cfg.max_turns,
                                  patient=cfg.patient)
            rows += [{**x, "source": p.name} for x in r]
            held_rows += [{**x, "source": p.name} for x in h]
            demo_recs += recs
        write_jsonl(demo_file, rows)
        write_jsonl(held_file, held_rows)
        write_jsonl(dial_file, demo_recs)
        log(f"demonstrations: {len(rows)} oracle dialogues ({', '.join(p.name for p in parts)})")
    demo_rows = {p.name: ([r for r in rows if r["source"] == p.name], [r for r in held_rows if r["source"] == p.name])
                 for p in parts}
    base_pt = out / "base"
    if resume and (base_pt / "assets.json").exists():
        vocab = json.loads((base_pt / "assets.json").read_text()).get("vocab")
    else:
        vocab = vocabulary([p.kb for p in parts], demo_recs) if cfg.model.name == "tiny" else None
    torch.manual_seed(cfg.seed)
    base, tok = build_base(cfg.model, vocab, seed=cfg.seed, device=cfg.device)
    meta = {"seed": cfg.seed, "sources": [p.name for p in parts], "max_turns": cfg.max_turns,
            "patient": cfg.patient}
    stages: dict = {"base": (base, [])}
    times: dict[str, float] = {}
    if not (base_pt / "model.safetensors").exists():
        save_policy(base_pt, cfg.model, vocab, [], {**meta, "stage": "base"})

    def load_stage(name):
        m, _, _, layers, _ = load_policy(out / name, device=cfg.device)
        st = _stage(out, name)
        log(f"{name}: completed earlier ({st['steps']} steps), loaded from {out / name}")
        return m, layers, st.get("stage_s", 0.0)

    # SFT
    plan = _plan(out, "sft", cfg.sft.steps, "demonstrations", resume, log)
    if plan == "load":
        sft_model, layers, sft_s = load_stage("sft")
        sft_layer = layers[0]
    else:
        prev = (_stage(out, "sft") or {}).get("stage_s", 0.0) if plan == "continue" else 0.0
        _mark(out, "sft", status="running", steps=None, upstream="demonstrations", stage_s=prev)
        t0 = time.perf_counter()
        train_ex, val_ex = sft_examples(parts, demo_rows, tok, cfg)
        sft_model, sft_layer, res = sft_stage(base, tok, train_ex, val_ex, cfg, out / "sft",
                                              resume=plan == "continue", log=log)
        sft_s = prev + time.perf_counter() - t0
        log(f"sft: {res['step']} steps, loss {res['loss']:.3f}, {sft_s:.0f} s ({res['n_examples']} dialogues)")
        save_policy(out / "sft", cfg.model, vocab, [sft_layer], {**meta, "stage": "sft"})
        _mark(out, "sft", status="completed", steps=res["step"], upstream="demonstrations", stage_s=round(sft_s, 2),
              curve=res["curve"])
    times["sft"] = sft_s
    stages["sft"] = (sft_model, [sft_layer])
    upstream = f"sft:{cfg.sft.steps}"

    def rl_stage(name, steps, train_fn):
        plan = _plan(out, name, steps, upstream, resume, log)
        if plan == "load":
            m, layers, stage_s = load_stage(name)
            layer = layers[1]
        else:
            prev = (_stage(out, name) or {}).get("stage_s", 0.0) if plan == "continue" else 0.0
            _mark(out, name, status="running", steps=None, upstream=upstream, stage_s=prev)
            t0 = time.perf_counter()
            m, layer, row = train_fn(plan == "continue")
            stage_s = prev + time.perf_counter() - t0
            save_policy(out / name, cfg.model, vocab, [sft_layer, layer], {**meta, "stage": name})
            _mark(out, name, status="completed", steps=steps, upstream=upstream, stage_s=round(stage_s, 2),
                  last=row)
        times[name] = times["sft"] + stage_s
        stages[name] = (m, [sft_layer, layer])
        return m

    if cfg.srppo.enabled:
        rl_stage("srppo", cfg.srppo.steps,
                 lambda cont: srppo_stage(sft_model, base, tok, parts, cfg, out / "srppo", resume=cont, log=log))
    variants = [("grpo", cfg.grpo.entropy_alpha)] if cfg.grpo.enabled else []
    if cfg.grpo.enabled and cfg.grpo_entropy_alpha > 0:
        variants.append(("grpo_entropy", cfg.grpo_entropy_alpha))
    for name, alpha in variants:
        rl_stage(name, cfg.grpo.steps,
                 lambda cont, name=name, alpha=alpha: grpo_stage(sft_model, tok, parts, cfg, out / name,
                                                                 entropy_alpha=alpha, log=log, resume=cont))

    results: dict = {}
    for name, (m, _) in stages.items():
        for p in parts:
            tag = f"{name}-{p.name}" if len(parts) > 1 else name
            key = _eval_key(out / name, p.held_out, cfg)
            summ = _cached_eval(out, tag, key) if resume else None
            if summ is None:
                recs, summ = evaluate_doctor(make_doctor(m, tok, cfg.model), p.held_out, p.kb, patient=cfg.patient,
                                             max_turns=cfg.max_turns, seed=cfg.seed, judge=None)
                write_jsonl(out / "predictions" / f"{tag}.jsonl", recs)
                write_json(out / "eval" / f"{tag}.json", {"key": key, "summary": summ})
            else:
                log(f"eval {tag}: unchanged weights and cases, reusing eval/{tag}.json")
            results.setdefault(name, {})[p.name] = {**summ, "train_s": round(times.get(name, 0.0), 1)}
            log(f"eval {tag}: top-1 {summ['top1']['mean']:.3f} {summ['top1']['ci95']}, "
                f"turns {summ['turns']['mean']:.1f}")
    for p in parts:
        recs, summ = evaluate_doctor(make_oracle(p.kb, cfg), p.held_out, p.kb, patient=cfg.patient,
                                     max_turns=cfg.max_turns, seed=cfg.seed, judge=None)
        tag = f"oracle-{p.name}" if len(parts) > 1 else "oracle"
        write_jsonl(out / "predictions" / f"{tag}.jsonl", recs)
        results.setdefault("oracle", {})[p.name] = {**summ, "train_s": 0.0}
    if len(parts) == 1:   # one source: the flat layout results[stage] = metrics
        results = {k: v[parts[0].name] for k, v in results.items()}
    sft_state = _stage(out, "sft") or {}
    summary = {"name": cfg.name, "config": to_dict(cfg), "sources": [p.name for p in parts],
               "n_eval": {p.name: len(p.held_out) for p in parts}, "eval_split": cfg.data.eval_split,
               "eval_case_ids": {p.name: [c["case_id"] for c in p.held_out] for p in parts}, "patient": cfg.patient,
               "results": results, "sft_curve": sft_state.get("curve", []),
               "oracle_demonstrations": {"n_dialogues": len(demo_recs),
                                         "top1": sum(r["success"] for r in demo_recs) / max(len(demo_recs), 1)}}
    run.write_summary(summary)
    run.record_time("total", time.perf_counter() - t_all)
    run.finish()
    return summary


def run_pipeline(cfg: DialogueTrainConfig, run, *, device: str = "auto", resume: bool = False, log=print) -> dict:
    """``medkit run`` body of ``pipeline: dialogue-train`` (the run folder is already open)."""
    check_config(cfg)
    if resume:
        check_resume(cfg, run.path)
    try:
        return _pipeline(cfg, run, resume, log)
    except BaseException:
        run.finish("interrupted")      # a resumable state: `--resume` continues from here
        raise


def train_from_pipeline(pipeline: Path, *, out: Path | None = None, overrides: list[str] = (), resume: bool = False,
                        log=print) -> Path:
    """Load ``pipelines/dialogue_*.yaml`` (``pipeline: dialogue-train``, ``config: {...}``) and run it
    (``resume``: continue the run in ``out``, which must then be given)."""
    from ..config import load_pipeline

    cfg = load_pipeline(pipeline, "dialogue-train", DialogueTrainConfig, list(overrides))
    if resume and not out:
        raise ConfigError("--resume needs --out (the run folder to continue)")
    out = Path(out) if out else Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_training(cfg, out, resume=resume, log=log)
    return out
