"""The training stages of `medkit dialogue train`: SFT on oracle dialogues, SR-PPO, multi-turn GRPO.

Each takes the models and cases and a stage folder and returns ``(model, weight layer, row)``;
:mod:`.train` decides which stages run, resume or are loaded. Every stage trains the
constrained doctor (:mod:`medkit.dialogue.grammar`).
"""

from __future__ import annotations

import copy
from pathlib import Path

from .train_config import DialogueTrainConfig


def sft_examples(parts, demo_rows: dict, tok, cfg: DialogueTrainConfig) -> tuple[list, list]:
    """``(train_examples, validation_examples)`` (:func:`medkit.dialogue.sft.replay_example`) of the
    oracle dialogues of every part; ``demo_rows[part.name]`` = (training rows, held-out rows)."""
    from .grammar import ActionGrammar
    from .sft import replay_example

    train, val = [], []
    for p in parts:
        g = ActionGrammar(p.kb, tok, top_k=cfg.model.top_k)
        by_id = {c["case_id"]: c for c in p.demo + p.held_out}
        tr_rows, va_rows = demo_rows[p.name]
        train += [replay_example(by_id[r["case_id"]], p.kb, r["actions"], g, patient=cfg.patient,
                                 max_turns=cfg.max_turns) for r in tr_rows]
        val += [replay_example(by_id[r["case_id"]], p.kb, r["actions"], g, patient=cfg.patient,
                               max_turns=cfg.max_turns) for r in va_rows]
    return train, val


def sft_stage(base, tok, train: list, val: list, cfg: DialogueTrainConfig, out: Path, *, resume: bool = False,
              log=None):
    """SFT on the oracle dialogues; returns ``(sft_model, layer, result)`` (a LoRA adapter is merged).
    ``resume``: continue from ``out/loop/checkpoints/last.pt`` when there is one."""
    import random

    from ..lm.lora import add_lora, trainable_state_dict
    from .sft import SFTLoopConfig, freeze_lower, train_sft

    model = copy.deepcopy(base)
    if cfg.model.sft_lora is not None:
        model = add_lora(model, dict(cfg.model.sft_lora))
    else:
        freeze_lower(model, cfg.sft.train_layers, cfg.sft.train_embeddings)
    s = cfg.sft
    lc = SFTLoopConfig(steps=s.steps, batch_size=s.batch_size, lr=s.lr, warmup=s.warmup, train_layers=s.train_layers,
                       train_embeddings=s.train_embeddings, eval_every=s.eval_every, eval_n=s.eval_n,
                       save_every=s.save_every, seed=cfg.seed)
    # a fixed mixed subset of the training dialogues is scored for the fit (sources interleaved)
    scored = random.Random(cfg.seed).sample(train, min(s.eval_n, len(train)))
    if resume:
        trim_loop_log(out / "loop")
    res = train_sft(model, tok, train, lc, out / "loop", evals={"train": scored, "val": val}, log=log, resume=resume)
    res = {**res, "n_examples": len(train)}
    layer = {"lora": cfg.model.sft_lora, "state": trainable_state_dict(model)}
    if cfg.model.sft_lora is not None:
        model = model.merge_and_unload()
    return model.eval(), layer, res


def _kb_map(parts, which: str) -> tuple[list, dict]:
    cases = [c for p in parts for c in getattr(p, which)]
    return cases, {c["case_id"]: p.kb for p in parts for c in getattr(p, which)}


def srppo_stage(sft_model, base, tok, parts, cfg: DialogueTrainConfig, out: Path, *, seed: int | None = None,
                resume: bool = False, log=None):
    """Self-rewarding PPO from the SFT policy on the parts' RL cases (no demonstrations)."""
    from ..lm.lora import add_lora, trainable_state_dict
    from .policy import frozen_copy
    from .srppo import DialogueSRPPOConfig, train_dialogue_srppo

    s = cfg.srppo
    cases, kbs = _kb_map(parts, "rl")
    policy = add_lora(copy.deepcopy(sft_model), dict(cfg.model.rl_lora))
    pc = DialogueSRPPOConfig(out_dir=str(out / "loop"), steps=s.steps, cases_per_step=s.cases_per_step, lr=s.lr,
                             vf_lr=s.vf_lr, temperature=s.temperature, ppo_epochs=s.ppo_epochs, kl_coef=s.kl_coef,
                             max_turns=cfg.max_turns, top_k=cfg.model.top_k, patient=cfg.patient,
                             seed=cfg.seed if seed is None else seed, device=cfg.device, save_every=s.save_every,
                             resume=resume)
    row = train_dialogue_srppo(policy, tok, frozen_copy(base), cases, kbs, pc, log=log)
    layer = {"lora": cfg.model.rl_lora, "state": trainable_state_dict(policy)}
    return policy.merge_and_unload().eval(), layer, row


def grpo_stage(sft_model, tok, parts, cfg: DialogueTrainConfig, out: Path, *, entropy_alpha: float,
               seed: int | None = None, log=None, resume: bool = False):
    """Multi-turn GRPO from the SFT policy on the parts' RL cases."""
    from ..lm.lora import add_lora, trainable_state_dict
    from .grpo import DialogueGRPOConfig, train_dialogue_grpo

    g = cfg.grpo
    cases, kbs = _kb_map(parts, "rl")
    policy = add_lora(copy.deepcopy(sft_model), dict(cfg.model.rl_lora))
    gc = DialogueGRPOConfig(out_dir=str(out / "loop"), steps=g.steps, cases_per_step=g.cases_per_step,
                            group_size=g.group_size, lr=g.lr, temperature=g.temperature, max_turns=cfg.max_turns,
                            top_k=cfg.model.top_k, reward=g.reward, info_gain_weight=g.info_gain_weight,
                            entropy_alpha=entropy_alpha, entropy_kappa=g.entropy_kappa,
                            planning_upweight=g.planning_upweight, patient=cfg.patient,
                            seed=cfg.seed if seed is None else seed, device=cfg.device, save_every=g.save_every,
                            resume=resume)
    row = train_dialogue_grpo(policy, tok, cases, kbs, gc, log=log)
    layer = {"lora": cfg.model.rl_lora, "state": trainable_state_dict(policy)}
    return policy.merge_and_unload().eval(), layer, row


# --------------------------------------------------------------------------- resume


def trim_loop_log(loop: Path) -> None:
    """Drop metric rows a killed loop logged after its last checkpoint (the loop redoes those steps)."""
    from ..rl.common import MetricsLog
    from ..runs import load_checkpoint
    from .grpo import trim_metrics

    if (loop / "logs" / "metrics.jsonl").exists():
        state = load_checkpoint(loop / "checkpoints" / "last.pt")
        trim_metrics(MetricsLog(loop), state["step"] if state else 0)
