"""`medkit dialogue train`: oracle demonstrations -> SFT -> SR-PPO and multi-turn GRPO -> evaluation.

Stages (each a subfolder of the run with its ``policy.pt``):

1. ``demonstrations.jsonl``: the oracle doctor (:mod:`medkit.dialogue.oracle`) on
   the first ``data.n_train`` training cases; one row per doctor turn
   (case_id, chat messages so far, the oracle's action) plus the dialogues.
2. ``sft/``: supervised fine-tuning on the oracle's turns (:func:`medkit.rl.sft`).
3. ``srppo/``: Self-Rewarding PPO (arXiv 2510.21090) on *new* cases without
   demonstrations: the SFT policy plays them, every doctor-turn prompt becomes a
   PPO prompt, reward ``log pi_SFT(y|x) - log pi_base(y|x)`` at EOS
   (:class:`medkit.rl.SelfReward`, :func:`medkit.rl.train_ppo`), fresh LoRA on SFT.
4. ``grpo/`` (and ``grpo_entropy/`` when ``grpo_entropy_alpha > 0``): multi-turn
   GRPO (:mod:`medkit.dialogue.grpo`), fresh LoRA on SFT.
5. ``summary.json``: every stage (and the base model and the oracle) evaluated on
   the held-out cases against the persona patient, with 95 % bootstrap CIs.

Resume (``medkit dialogue train ... --out RUN --resume``): each stage folder holds a
``stage.json`` (``running`` / ``completed``, steps done, the SFT it was trained on)
and its loop's ``loop/checkpoints/last.pt`` (saved every ``save_every`` steps). A
killed run, or one resumed with more steps, continues where it stopped: completed
stages whose step count is unchanged are loaded from their ``policy.pt``, not
redone; an unfinished or extended stage continues from its loop checkpoint (the
step counter goes on); RL stages trained on an earlier SFT are redone when SFT
changed. Only step counts (``sft.steps``, ``srppo.steps``, ``grpo.steps``),
``save_every`` and ``device`` may differ from the run's ``config.yaml``; any other
change is refused (start a new folder). Evaluation is always redone.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, to_dict
from .grpo import DialogueGRPOConfig
from .oracle import OracleDoctor
from .policy import ModelConfig


@dataclass
class DataConfig:
    source: str = "synth"          # synth (medkit.synth.cases) | ddxplus (a local DDXPlus release folder)
    root: str | None = None        # ddxplus: the folder with release_*.json / release_*_patients*
    pool: int = 2000               # synth: cases generated; held-out = split "test", training = "train"
    n_train: int = 200             # cases with oracle demonstrations (SFT)
    n_rl: int = 32                 # further training cases for RL (no demonstrations)
    n_eval: int = 12               # held-out cases for evaluation
    seed: int = 0


@dataclass
class OracleConfig:
    stop_p: float = 0.85
    min_gain: float = 0.01
    test_weight: float = 0.7


@dataclass
class SFTStage:
    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    max_len: int = 512
    save_every: int = 50           # loop checkpoint period in steps (resume point of a killed run)


@dataclass
class SRPPOStage:
    enabled: bool = True
    steps: int = 4
    batch_size: int = 16
    mini_batch_size: int = 8
    ppo_epochs: int = 1
    lr: float = 5e-4
    kl_coef: float = 0.05
    temperature: float = 1.0
    save_every: int = 1


@dataclass
class GRPOStage:
    enabled: bool = True
    steps: int = 6
    cases_per_step: int = 4
    group_size: int = 4
    lr: float = 5e-4
    temperature: float = 1.0
    reward: str = "success"
    info_gain_weight: float = 0.0
    entropy_alpha: float = 0.0
    entropy_kappa: float = 2.0
    save_every: int = 1


@dataclass
class DialogueTrainConfig:
    name: str = "dialogue"
    seed: int = 0
    device: str = "cpu"
    max_turns: int = 10
    patient: str = "persona"              # training / evaluation patient: persona | generic
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    sft: SFTStage = field(default_factory=SFTStage)
    srppo: SRPPOStage = field(default_factory=SRPPOStage)
    grpo: GRPOStage = field(default_factory=GRPOStage)
    grpo_entropy_alpha: float = 0.0       # > 0: also train GRPO with DeepPlanner shaping (grpo_entropy/)


def check_config(cfg: DialogueTrainConfig) -> None:
    if cfg.data.source not in ("synth", "ddxplus"):
        raise ConfigError(f"data.source = {cfg.data.source!r} must be synth or ddxplus")
    if cfg.data.source == "ddxplus" and not cfg.data.root:
        raise ConfigError("data.source = ddxplus needs data.root (a local DDXPlus release folder)")
    if cfg.patient not in ("persona", "generic"):
        raise ConfigError(f"patient = {cfg.patient!r} must be persona or generic")
    if cfg.grpo.reward not in ("success", "diaggym"):
        raise ConfigError(f"grpo.reward = {cfg.grpo.reward!r} must be success or diaggym")
    if cfg.max_turns < 1 or cfg.data.n_train < 1 or cfg.data.n_eval < 1:
        raise ConfigError("max_turns, data.n_train and data.n_eval must be at least 1")
    if cfg.grpo.group_size < 2:
        raise ConfigError("grpo.group_size must be at least 2 (group-normalised advantages)")


# --------------------------------------------------------------------------- data
def load_cases(cfg: DataConfig):
    """``(kb, train_cases, eval_cases)``: synth cases split by their ``split`` field, or DDXPlus files."""
    if cfg.source == "ddxplus":
        from .readers import ddxplus_knowledge_base, read_ddxplus_cases

        kb = ddxplus_knowledge_base(cfg.root)
        train = read_ddxplus_cases(cfg.root, "train", kb, limit=cfg.n_train + cfg.n_rl, seed=cfg.seed)
        test = read_ddxplus_cases(cfg.root, "test", kb, limit=cfg.n_eval, seed=cfg.seed)
        return kb, train, test
    from ..synth.cases import CasesConfig, generate_cases
    from ..synth.knowledge import load_knowledge_base

    kb = load_knowledge_base()
    cases = generate_cases(CasesConfig(n_cases=cfg.pool, seed=cfg.seed), kb)
    train = [c for c in cases if c["split"] == "train"]
    test = [c for c in cases if c["split"] == "test"]
    if len(train) < cfg.n_train + cfg.n_rl or len(test) < cfg.n_eval:
        raise ConfigError(f"data.pool = {cfg.pool} gives {len(train)} train / {len(test)} test cases; "
                          f"need {cfg.n_train + cfg.n_rl} / {cfg.n_eval}")
    return kb, train[: cfg.n_train + cfg.n_rl], test[: cfg.n_eval]


def demonstrations(cases, kb, oracle: OracleDoctor, *, max_turns: int, patient: str = "persona"):
    """Oracle dialogues: ``(turn_rows, episode_records)``; a turn row holds the chat messages
    before the doctor's turn and the oracle's action."""
    from .policy import messages
    from .rollout import make_envs

    rows, recs = [], []
    for env in make_envs(cases, kb, patient=patient, max_turns=max_turns):
        while not env.done:
            msgs = messages(env)
            action = oracle.act(env)
            rows.append({"case_id": env.case["case_id"], "turn": env.turns + 1, "messages": msgs, "action": action})
            env.step(action)
        recs.append(env.record())
    return rows, recs


def vocabulary(kb, turn_rows, cases) -> list[str]:
    """Word vocabulary for the tiny model: knowledge-base phrases + demonstration text + the
    generic patient's and the environment's phrases."""
    from .actions import FORMAT_REMINDER
    from .patient import NOT_UNDERSTOOD
    from .policy import build_vocab, kb_texts

    texts = kb_texts(kb) + [FORMAT_REMINDER, NOT_UNDERSTOOD, "[end] Turn limit reached without a diagnosis.",
                            "[exam] Unknown test. Order a test by its name, e.g. 'EXAM: Chest X-ray'.",
                            "I don't really know what that means, sorry. Is that bad? male female year old"]
    for r in turn_rows:
        texts += [m["content"] for m in r["messages"]] + [r["action"]]
    _, generic = demonstrations(cases[:50], kb, OracleDoctor(kb), max_turns=10, patient="generic")
    texts += [t["text"] for rec in generic for t in rec["transcript"]]
    return build_vocab(texts)


# --------------------------------------------------------------------------- stages
def sft_examples_of(tok, turn_rows, system: str | None, max_len: int) -> tuple[list, int]:
    """SFT examples from the oracle's turn rows: each dialogue packed into one example when its
    chat template allows it (:func:`medkit.lm.pack_turns`) and it fits ``max_len`` tokens, else
    one example per turn. Returns ``(examples, n_packed_dialogues)``."""
    from itertools import groupby

    from ..lm.generate import chat_prompt, pack_turns

    examples, packed = [], 0
    for _, grp in groupby(turn_rows, key=lambda r: r["case_id"]):
        grp = list(grp)
        prompts = [chat_prompt(tok, r["messages"], system) for r in grp]
        responses = [r["action"] for r in grp]
        segs = pack_turns(tok, prompts, responses)
        if segs is not None and sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1
                                    for t, _ in segs) <= max_len:
            examples.append(segs)
            packed += 1
        else:
            examples += [[(p, False), (r, True)] for p, r in zip(prompts, responses)]
    return examples, packed


def sft_stage(base, tok, turn_rows, cfg: DialogueTrainConfig, out: Path, *, resume: bool = False):
    """SFT on the oracle's turns; returns ``(sft_model, layer, loop result)`` (LoRA merged).
    ``resume``: continue from ``out/loop/checkpoints/last.pt`` when there is one."""
    from ..lm.lora import add_lora, trainable_state_dict
    from ..rl import SFTConfig, sft_examples
    from .policy import system_of

    model = copy.deepcopy(base)
    if cfg.model.sft_lora is not None:
        model = add_lora(model, dict(cfg.model.sft_lora))
    s = cfg.sft
    examples, n_packed = sft_examples_of(tok, turn_rows, system_of(cfg.model), s.max_len)
    if resume:
        trim_loop_log(out / "loop")
    res = sft_examples(model, tok, examples, SFTConfig(out_dir=str(out / "loop"), steps=s.steps,
                                                       batch_size=s.batch_size, lr=s.lr, max_len=s.max_len,
                                                       seed=cfg.seed, save_every=s.save_every, resume=resume,
                                                       device=cfg.device))
    res = {**res, "n_examples": len(examples), "n_packed_dialogues": n_packed}
    layer = {"lora": cfg.model.sft_lora, "state": trainable_state_dict(model)}
    if cfg.model.sft_lora is not None:
        model = model.merge_and_unload()
    return model.eval(), layer, res


def srppo_stage(sft_model, base, tok, cases, kb, cfg: DialogueTrainConfig, out: Path, *, resume: bool = False):
    """Self-rewarding PPO from the SFT policy on cases without demonstrations.

    The PPO prompts are kept in ``out/prompts.json`` so that a resumed stage trains on
    the same prompts (they are sampled, so regenerating them would give others)."""
    from ..io.atomic import write_json
    from ..lm.lora import add_lora, add_value_head, trainable_state_dict
    from ..rl import PPOConfig, SelfReward, train_ppo
    from .policy import doctor_prompt, frozen_copy, make_doctor, strip_value_head, system_of
    from .rollout import make_envs

    s = cfg.srppo
    # 1. prompts: every doctor turn of the SFT policy (sampling) on the new cases
    saved = out / "prompts.json"
    if resume and saved.exists():
        prompts = json.loads(saved.read_text(encoding="utf-8"))
    else:
        envs = make_envs(cases, kb, patient=cfg.patient, max_turns=cfg.max_turns)
        doctor = make_doctor(sft_model, tok, cfg.model, temperature=s.temperature, do_sample=True)
        prompts = []
        while any(not e.done for e in envs):
            active = [e for e in envs if not e.done]
            prompts += [doctor_prompt(tok, e, system_of(cfg.model)) for e in active]
            for e, t in zip(active, doctor.act_batch(active)):
                e.step(t)
        write_json(saved, prompts)
    # 2. PPO with the self-reward; reference (adapter disabled) = SFT
    policy = add_value_head(add_lora(copy.deepcopy(sft_model), dict(cfg.model.rl_lora)))
    reward = SelfReward(frozen_copy(sft_model), base_model=frozen_copy(base))
    pc = PPOConfig(out_dir=str(out / "loop"), steps=s.steps, batch_size=s.batch_size, mini_batch_size=s.mini_batch_size,
                   ppo_epochs=s.ppo_epochs, lr=s.lr, kl_coef=s.kl_coef, temperature=s.temperature,
                   max_new_tokens=cfg.model.max_new_tokens, seed=cfg.seed, save_every=s.save_every, resume=resume,
                   device=cfg.device)
    if resume:
        trim_loop_log(out / "loop")
    row = train_ppo(policy, tok, prompts, [reward], pc)
    layer = {"lora": cfg.model.rl_lora, "state": strip_value_head(trainable_state_dict(policy))}
    return policy.merge_and_unload().eval(), layer, {**row, "n_prompts": len(prompts)}


def grpo_stage(sft_model, tok, cases, kb, cfg: DialogueTrainConfig, out: Path, *, entropy_alpha: float, log=None,
               resume: bool = False):
    from ..lm.lora import add_lora, trainable_state_dict
    from .grpo import train_dialogue_grpo
    from .policy import system_of

    g = cfg.grpo
    policy = add_lora(copy.deepcopy(sft_model), dict(cfg.model.rl_lora))
    gc = DialogueGRPOConfig(out_dir=str(out / "loop"), steps=g.steps, cases_per_step=g.cases_per_step,
                            group_size=g.group_size, lr=g.lr, temperature=g.temperature,
                            max_new_tokens=cfg.model.max_new_tokens, max_prompt_len=cfg.model.max_prompt_len,
                            max_turns=cfg.max_turns, reward=g.reward, info_gain_weight=g.info_gain_weight,
                            entropy_alpha=entropy_alpha, entropy_kappa=g.entropy_kappa, patient=cfg.patient,
                            system=system_of(cfg.model), seed=cfg.seed, device=cfg.device,
                            save_every=g.save_every, resume=resume)
    row = train_dialogue_grpo(policy, tok, cases, kb, gc, log=log)
    layer = {"lora": cfg.model.rl_lora, "state": trainable_state_dict(policy)}
    return policy.merge_and_unload().eval(), layer, row


# --------------------------------------------------------------------------- resume
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


def trim_loop_log(loop: Path) -> None:
    """Drop metric rows a killed loop logged after its last checkpoint (the loop redoes those steps)."""
    from ..rl.common import MetricsLog
    from ..runs import load_checkpoint
    from .grpo import trim_metrics

    if (loop / "logs" / "metrics.jsonl").exists():
        state = load_checkpoint(loop / "checkpoints" / "last.pt")
        trim_metrics(MetricsLog(loop), state["step"] if state else 0)


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
    if st.get("status") == "completed" and st.get("steps") == steps and (out / name / "policy.pt").exists():
        return "load"
    return "continue"


def _eval_key(policy: Path, held_out, cfg: DialogueTrainConfig) -> str:
    """What an evaluation depends on: the stage's weights (sha1 of its policy.pt) and the cases,
    patient, turn limit and seed. A resumed run re-evaluates a stage only when this changes."""
    import hashlib

    h = hashlib.sha1(policy.read_bytes() if policy.exists() else b"")
    h.update(json.dumps([[c["case_id"] for c in held_out], cfg.patient, cfg.max_turns, cfg.seed]).encode())
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


def _pipeline(cfg: DialogueTrainConfig, run, resume: bool, log) -> dict:
    import torch

    from ..io.atomic import write_json, write_jsonl
    from .evaluate import evaluate_doctor
    from .policy import build_base, load_policy, make_doctor, save_policy

    out = run.path
    t_all = time.perf_counter()
    kb, cases, held_out = load_cases(cfg.data)
    demo_cases, rl_cases = cases[: cfg.data.n_train], cases[cfg.data.n_train:]
    oracle = OracleDoctor(kb, stop_p=cfg.oracle.stop_p, min_gain=cfg.oracle.min_gain, test_weight=cfg.oracle.test_weight,
                          rationale=cfg.model.rationale)
    demo_files = (out / "demonstrations.jsonl", out / "demonstration_dialogues.jsonl")
    if resume and all(f.exists() for f in demo_files):
        turn_rows, demo_recs = (_read_jsonl(f) for f in demo_files)
        log(f"demonstrations: {len(turn_rows)} doctor turns (loaded)")
    else:
        turn_rows, demo_recs = demonstrations(demo_cases, kb, oracle, max_turns=cfg.max_turns, patient=cfg.patient)
        write_jsonl(demo_files[0], turn_rows)
        write_jsonl(demo_files[1], demo_recs)
        log(f"demonstrations: {len(turn_rows)} doctor turns from {len(demo_cases)} oracle dialogues")
    base_pt = out / "base" / "policy.pt"
    if resume and base_pt.exists():
        vocab = torch.load(base_pt, map_location="cpu", weights_only=False)["vocab"]
    else:
        vocab = vocabulary(kb, turn_rows, demo_cases) if cfg.model.name == "tiny" else None
    torch.manual_seed(cfg.seed)
    base, tok = build_base(cfg.model, vocab, seed=cfg.seed, device=cfg.device)
    meta = {"seed": cfg.seed, "knowledge_base": str(kb.root)}
    stages: dict = {"base": (base, [])}
    times: dict[str, float] = {}
    if not base_pt.exists():
        save_policy(base_pt, cfg.model, vocab, [], {**meta, "stage": "base"})

    def load_stage(name):
        m, _, _, layers, _ = load_policy(out / name, device=cfg.device)
        st = _stage(out, name)
        log(f"{name}: completed earlier ({st['steps']} steps), loaded from {out / name / 'policy.pt'}")
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
        sft_model, sft_layer, res = sft_stage(base, tok, turn_rows, cfg, out / "sft", resume=plan == "continue")
        sft_s = prev + time.perf_counter() - t0
        log(f"sft: {res['step']} steps, loss {res['loss']:.3f}, {sft_s:.0f} s ({res['n_examples']} examples, "
            f"{res['n_packed_dialogues']} of them whole packed dialogues)")
        save_policy(out / "sft" / "policy.pt", cfg.model, vocab, [sft_layer], {**meta, "stage": "sft"})
        _mark(out, "sft", status="completed", steps=res["step"], upstream="demonstrations", stage_s=round(sft_s, 2))
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
            save_policy(out / name / "policy.pt", cfg.model, vocab, [sft_layer, layer], {**meta, "stage": name})
            _mark(out, name, status="completed", steps=steps, upstream=upstream, stage_s=round(stage_s, 2),
                  last=row)
        times[name] = times["sft"] + stage_s
        stages[name] = (m, [sft_layer, layer])
        return m

    if cfg.srppo.enabled:
        def srppo(cont):
            m, layer, row = srppo_stage(sft_model, base, tok, rl_cases, kb, cfg, out / "srppo", resume=cont)
            log(f"sr-ppo: {row.get('step')} steps on {row['n_prompts']} prompts, reward {row.get('reward')}")
            return m, layer, row

        rl_stage("srppo", cfg.srppo.steps, srppo)
    variants = [("grpo", cfg.grpo.entropy_alpha)] if cfg.grpo.enabled else []
    if cfg.grpo.enabled and cfg.grpo_entropy_alpha > 0:
        variants.append(("grpo_entropy", cfg.grpo_entropy_alpha))
    for name, alpha in variants:
        rl_stage(name, cfg.grpo.steps,
                 lambda cont, name=name, alpha=alpha: grpo_stage(sft_model, tok, rl_cases, kb, cfg, out / name,
                                                                 entropy_alpha=alpha, log=log, resume=cont))

    results = {}
    for name, (m, _) in stages.items():
        key = _eval_key(out / name / "policy.pt", held_out, cfg)
        summ = _cached_eval(out, name, key) if resume else None
        if summ is None:
            doc = make_doctor(m, tok, cfg.model)
            recs, summ = evaluate_doctor(doc, held_out, kb, patient=cfg.patient, max_turns=cfg.max_turns,
                                         seed=cfg.seed)
            write_jsonl(out / "predictions" / f"{name}.jsonl", recs)
            write_json(out / "eval" / f"{name}.json", {"key": key, "summary": summ})
        else:
            log(f"eval {name}: unchanged weights and cases, reusing eval/{name}.json")
        results[name] = {**summ, "train_s": round(times.get(name, 0.0), 1)}
        log(f"eval {name}: top-1 {summ['top1']['mean']:.3f} {summ['top1']['ci95']}, turns {summ['turns']['mean']:.1f}")
    recs, summ = evaluate_doctor(oracle, held_out, kb, patient=cfg.patient, max_turns=cfg.max_turns, seed=cfg.seed)
    write_jsonl(out / "predictions" / "oracle.jsonl", recs)
    results["oracle"] = {**summ, "train_s": 0.0}
    summary = {"name": cfg.name, "config": to_dict(cfg), "n_eval": len(held_out),
               "eval_case_ids": [c["case_id"] for c in held_out], "patient": cfg.patient, "results": results,
               "oracle_demonstrations": {"n_dialogues": len(demo_recs),
                                         "top1": sum(r["success"] for r in demo_recs) / max(len(demo_recs), 1)}}
    run.write_summary(summary)
    run.record_time("total", time.perf_counter() - t_all)
    run.finish()
    return summary


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
