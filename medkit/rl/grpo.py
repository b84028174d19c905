"""GRPO (group-relative policy optimisation), with RLOO / TEMPO / DeepPlanner options.

Each step, read top to bottom:
1. pick ``prompts_per_step`` prompts, repeat each ``group_size`` times, generate;
2. reward callables -> outcome reward per completion (``None`` -> excluded);
3. advantages: group-normalised (GRPO), leave-one-out (RLOO) or prefix-tree TD (TEMPO),
   broadcast to tokens; optional entropy shaping and planning upweighting (DeepPlanner);
4. one gradient step on the clipped surrogate (+ beta * KL to the adapter-disabled reference).

With one update per batch the ratio is 1 and ``old_logprobs`` is the detached current
log-prob (TRL does the same), which saves a forward pass.
"""

from __future__ import annotations

import random
import time

import torch

from .advantages import (
    broadcast,
    entropy_shaped_advantages,
    group_advantages,
    masked_mean,
    planning_upweight,
    rloo_advantages,
    tempo_advantages,
)
from .common import (
    MetricsLog,
    autocast,
    call_rewards,
    load_checkpoint,
    make_accelerator,
    rank_seed,
    rollout,
    save_checkpoint,
)
from .grpo_config import GRPOConfig
from .losses import aggregate, kl_estimate, policy_loss


def grpo_advantages(cfg: GRPOConfig, roll, rewards, valid, entropies) -> torch.Tensor:
    """``(B, T)`` token advantages for one batch according to ``cfg`` (pure given its inputs)."""
    mask = roll.response_mask.float() * valid[:, None].float()
    if cfg.advantage == "grpo":
        adv = broadcast(group_advantages(rewards, cfg.group_size, scale=cfg.scale, valid=valid), mask)
    elif cfg.advantage == "rloo":
        adv = broadcast(rloo_advantages(rewards, cfg.group_size), mask)
    elif cfg.advantage == "tempo":
        adv = tempo_advantages(roll.sequences, mask, rewards, cfg.group_size)
    else:
        raise ValueError(f"advantage must be grpo / rloo / tempo, got {cfg.advantage!r}")
    if cfg.entropy_alpha > 0:
        adv = entropy_shaped_advantages(adv, entropies, mask, alpha=cfg.entropy_alpha, kappa=cfg.entropy_kappa)
    if cfg.plan_beta > 0:
        adv = planning_upweight(adv, entropies, mask, beta=cfg.plan_beta)
    return adv


def train_grpo(model, tok, prompts: list[str], reward_fns: list, cfg: GRPOConfig, *,
               prompt_kw: list[dict] | None = None) -> dict:
    """GRPO on chat-rendered ``prompts``; reward callables get per-completion kwargs from ``prompt_kw``.

    Runs unchanged under ``accelerate launch --num_processes N``: each rank draws its own
    prompts (:func:`medkit.rl.common.rank_seed`) and samples, DDP averages the gradients, and
    rank 0 alone writes the metrics log and the checkpoint.
    """
    from ..lm.generate import forward_token_stats
    from ..lm.lora import reference

    acc = make_accelerator(cfg.grad_accum, cfg.device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    state = load_checkpoint(cfg.out_dir, model, opt) if cfg.resume else None
    start = state["step"] if state else 0
    model, opt = acc.prepare(model, opt)
    net = acc.unwrap_model(model)
    rank = acc.process_index
    if acc.num_processes > 1 and state is None:
        torch.manual_seed(rank_seed(cfg.seed, rank))
    log = MetricsLog(cfg.out_dir, enabled=acc.is_main_process)
    rng = random.Random(rank_seed(cfg.seed, rank, start))
    row: dict = {}
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        # 1. group rollouts
        idx = [i for i in rng.sample(range(len(prompts)), min(cfg.prompts_per_step, len(prompts)))
               for _ in range(cfg.group_size)]
        roll = rollout(net, tok, [prompts[i] for i in idx], max_new_tokens=cfg.max_new_tokens,
                       temperature=cfg.temperature)
        t_gen = time.perf_counter() - t0
        kw = {k: [prompt_kw[i][k] for i in idx] for k in prompt_kw[0]} if prompt_kw else {}
        # 2. outcome rewards (sequence level: token rewards summed)
        tok_r, valid = call_rewards(reward_fns, roll, kw)
        rewards = tok_r.sum(-1)
        # 3. advantages
        adv = grpo_advantages(cfg, roll, rewards, valid, roll.entropies)
        mask = roll.response_mask.float() * valid[:, None].float()
        ref_lp = None
        if cfg.beta > 0:
            with torch.no_grad(), reference(net) as ref, autocast(acc.device):
                ref_lp = forward_token_stats(ref, roll.sequences, roll.attention_mask,
                                             temperature=cfg.temperature)["logprobs"]
        # 4. one gradient step
        with acc.accumulate(model), autocast(acc.device):
            new = forward_token_stats(model, roll.sequences, roll.attention_mask, temperature=cfg.temperature)
            lp = new["logprobs"]
            loss, st = policy_loss(lp, lp.detach(), adv, mask, clip_eps=cfg.clip_eps,
                                   clip_eps_high=cfg.clip_eps_high, agg=cfg.agg)
            kl = torch.zeros(())
            if ref_lp is not None:
                kl = aggregate(kl_estimate(lp, ref_lp, cfg.kl_kind), mask, cfg.agg)
                loss = loss + cfg.beta * kl
            acc.backward(loss)
            opt.step()
            opt.zero_grad()
        dt = time.perf_counter() - t0
        n_tok = float(roll.response_mask.sum())
        row = {"loop": "grpo", "step": step + 1, "loss": float(loss.detach()), "kl": float(kl.detach()),
               "reward": float(rewards[valid].mean()) if valid.any() else None, "n_valid": int(valid.sum()),
               "entropy": float(masked_mean(roll.entropies, roll.response_mask.float())),
               "resp_len": n_tok / len(idx), "step_s": dt, "gen_s": t_gen, "tokens_per_s": n_tok / dt, **st}
        log.log(row)
        if acc.is_main_process and cfg.save_every and (step + 1) % cfg.save_every == 0:
            save_checkpoint(cfg.out_dir, net, opt, step + 1, cfg)
    if acc.is_main_process:
        save_checkpoint(cfg.out_dir, net, opt, max(cfg.steps, start), cfg)
    return row
