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
"""

from __future__ import annotations

import copy
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
def sft_stage(base, tok, turn_rows, cfg: DialogueTrainConfig, out: Path):
    """SFT on the oracle's turns; returns ``(sft_model, layer)`` (LoRA merged)."""
    from ..lm.generate import chat_prompt
    from ..lm.lora import add_lora, trainable_state_dict
    from ..rl import SFTConfig, sft
    from .policy import system_of

    model = copy.deepcopy(base)
    if cfg.model.sft_lora is not None:
        model = add_lora(model, dict(cfg.model.sft_lora))
    prompts = [chat_prompt(tok, r["messages"], system_of(cfg.model)) for r in turn_rows]
    responses = [r["action"] for r in turn_rows]
    s = cfg.sft
    res = sft(model, tok, prompts, responses, SFTConfig(out_dir=str(out / "loop"), steps=s.steps, batch_size=s.batch_size,
                                                        lr=s.lr, max_len=s.max_len, seed=cfg.seed, save_every=0,
                                                        resume=False, device=cfg.device))
    layer = {"lora": cfg.model.sft_lora, "state": trainable_state_dict(model)}
    if cfg.model.sft_lora is not None:
        model = model.merge_and_unload()
    return model.eval(), layer, res


def srppo_stage(sft_model, base, tok, cases, kb, cfg: DialogueTrainConfig, out: Path):
    """Self-rewarding PPO from the SFT policy on cases without demonstrations."""
    from ..lm.lora import add_lora, add_value_head, trainable_state_dict
    from ..rl import PPOConfig, SelfReward, train_ppo
    from .policy import doctor_prompt, frozen_copy, make_doctor, strip_value_head, system_of
    from .rollout import make_envs

    s = cfg.srppo
    # 1. prompts: every doctor turn of the SFT policy (sampling) on the new cases
    envs = make_envs(cases, kb, patient=cfg.patient, max_turns=cfg.max_turns)
    doctor = make_doctor(sft_model, tok, cfg.model, temperature=s.temperature, do_sample=True)
    prompts: list[str] = []
    while any(not e.done for e in envs):
        active = [e for e in envs if not e.done]
        prompts += [doctor_prompt(tok, e, system_of(cfg.model)) for e in active]
        for e, t in zip(active, doctor.act_batch(active)):
            e.step(t)
    # 2. PPO with the self-reward; reference (adapter disabled) = SFT
    policy = add_value_head(add_lora(copy.deepcopy(sft_model), dict(cfg.model.rl_lora)))
    reward = SelfReward(frozen_copy(sft_model), base_model=frozen_copy(base))
    pc = PPOConfig(out_dir=str(out / "loop"), steps=s.steps, batch_size=s.batch_size, mini_batch_size=s.mini_batch_size,
                   ppo_epochs=s.ppo_epochs, lr=s.lr, kl_coef=s.kl_coef, temperature=s.temperature,
                   max_new_tokens=cfg.model.max_new_tokens, seed=cfg.seed, save_every=0, resume=False,
                   device=cfg.device)
    row = train_ppo(policy, tok, prompts, [reward], pc)
    layer = {"lora": cfg.model.rl_lora, "state": strip_value_head(trainable_state_dict(policy))}
    return policy.merge_and_unload().eval(), layer, {**row, "n_prompts": len(prompts)}


def grpo_stage(sft_model, tok, cases, kb, cfg: DialogueTrainConfig, out: Path, *, entropy_alpha: float, log=None):
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
                            system=system_of(cfg.model), seed=cfg.seed, device=cfg.device)
    row = train_dialogue_grpo(policy, tok, cases, kb, gc, log=log)
    layer = {"lora": cfg.model.rl_lora, "state": trainable_state_dict(policy)}
    return policy.merge_and_unload().eval(), layer, row


# --------------------------------------------------------------------------- pipeline
def run_training(cfg: DialogueTrainConfig, out: Path, *, log=print) -> dict:
    """Every stage into ``out`` (a :class:`medkit.runs.RunDir` folder); returns the summary."""
    import torch

    from ..io.atomic import write_jsonl
    from ..runs import RunDir, seed_everything
    from .evaluate import evaluate_doctor
    from .policy import build_base, make_doctor, save_policy

    check_config(cfg)
    seed_everything(cfg.seed)
    run = RunDir.create(out, config=cfg, seed=cfg.seed, device=cfg.device, command="medkit dialogue train")
    out = run.path
    t_all = time.perf_counter()
    kb, cases, held_out = load_cases(cfg.data)
    demo_cases, rl_cases = cases[: cfg.data.n_train], cases[cfg.data.n_train:]
    oracle = OracleDoctor(kb, stop_p=cfg.oracle.stop_p, min_gain=cfg.oracle.min_gain, test_weight=cfg.oracle.test_weight)
    turn_rows, demo_recs = demonstrations(demo_cases, kb, oracle, max_turns=cfg.max_turns, patient=cfg.patient)
    write_jsonl(out / "demonstrations.jsonl", turn_rows)
    write_jsonl(out / "demonstration_dialogues.jsonl", demo_recs)
    log(f"demonstrations: {len(turn_rows)} doctor turns from {len(demo_cases)} oracle dialogues")
    vocab = vocabulary(kb, turn_rows, demo_cases) if cfg.model.name == "tiny" else None
    torch.manual_seed(cfg.seed)
    base, tok = build_base(cfg.model, vocab, seed=cfg.seed, device=cfg.device)
    meta = {"seed": cfg.seed, "knowledge_base": str(kb.root)}
    stages: dict = {"base": (base, [])}
    times: dict[str, float] = {}
    save_policy(out / "base" / "policy.pt", cfg.model, vocab, [], {**meta, "stage": "base"})

    t0 = time.perf_counter()
    sft_model, sft_layer, res = sft_stage(base, tok, turn_rows, cfg, out / "sft")
    times["sft"] = time.perf_counter() - t0
    log(f"sft: {res['step']} steps, loss {res['loss']:.3f}, {times['sft']:.0f} s")
    save_policy(out / "sft" / "policy.pt", cfg.model, vocab, [sft_layer], {**meta, "stage": "sft"})
    stages["sft"] = (sft_model, [sft_layer])
    if cfg.srppo.enabled:
        t0 = time.perf_counter()
        m, layer, row = srppo_stage(sft_model, base, tok, rl_cases, kb, cfg, out / "srppo")
        times["srppo"] = times["sft"] + time.perf_counter() - t0
        log(f"sr-ppo: {row.get('step')} steps on {row['n_prompts']} prompts, reward {row.get('reward')}, "
            f"{times['srppo'] - times['sft']:.0f} s")
        save_policy(out / "srppo" / "policy.pt", cfg.model, vocab, [sft_layer, layer], {**meta, "stage": "srppo"})
        stages["srppo"] = (m, [sft_layer, layer])
    variants = [("grpo", cfg.grpo.entropy_alpha)] if cfg.grpo.enabled else []
    if cfg.grpo.enabled and cfg.grpo_entropy_alpha > 0:
        variants.append(("grpo_entropy", cfg.grpo_entropy_alpha))
    for name, alpha in variants:
        t0 = time.perf_counter()
        m, layer, row = grpo_stage(sft_model, tok, rl_cases, kb, cfg, out / name, entropy_alpha=alpha, log=log)
        times[name] = times["sft"] + time.perf_counter() - t0
        save_policy(out / name / "policy.pt", cfg.model, vocab, [sft_layer, layer], {**meta, "stage": name})
        stages[name] = (m, [sft_layer, layer])

    results = {}
    for name, (m, _) in stages.items():
        doc = make_doctor(m, tok, cfg.model)
        recs, summ = evaluate_doctor(doc, held_out, kb, patient=cfg.patient, max_turns=cfg.max_turns, seed=cfg.seed)
        write_jsonl(out / "predictions" / f"{name}.jsonl", recs)
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


def train_from_pipeline(pipeline: Path, *, out: Path | None = None, overrides: list[str] = (), log=print) -> Path:
    """Load ``pipelines/dialogue_*.yaml`` (``pipeline: dialogue-train``, ``config: {...}``) and run it."""
    import yaml

    from ..config import load_config

    try:
        spec = yaml.safe_load(Path(pipeline).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{pipeline}: pipeline file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{pipeline}: invalid YAML ({e})".replace("\n", " ")) from None
    if not isinstance(spec, dict) or set(spec) - {"pipeline", "config"} or spec.get("pipeline") != "dialogue-train":
        raise ConfigError(f"{pipeline}: expected `pipeline: dialogue-train` and a `config:` mapping")
    cfg = load_config(spec.get("config") or {}, DialogueTrainConfig, list(overrides))
    out = Path(out) if out else Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_training(cfg, out, log=log)
    return out
