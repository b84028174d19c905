"""The training stages of `medkit dialogue train`: SFT on oracle turns, SR-PPO, multi-turn GRPO.

Each takes the models and cases and a stage folder and returns ``(model, weight layer, row)``;
:mod:`.train` decides which stages run, resume or are loaded.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from .grpo import DialogueGRPOConfig
from .train_config import DialogueTrainConfig


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


def trim_loop_log(loop: Path) -> None:
    """Drop metric rows a killed loop logged after its last checkpoint (the loop redoes those steps)."""
    from ..rl.common import MetricsLog
    from ..runs import load_checkpoint
    from .grpo import trim_metrics

    if (loop / "logs" / "metrics.jsonl").exists():
        state = load_checkpoint(loop / "checkpoints" / "last.pt")
        trim_metrics(MetricsLog(loop), state["step"] if state else 0)
