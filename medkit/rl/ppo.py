"""PPO with a value head and GAE (optionally self-rewarding, arXiv 2510.21090).

One rollout batch per step, read top to bottom:
1. sample prompts, generate (left-padded batch, per-token log-probs);
2. score: rewards (sequence at EOS, or token-level) minus a per-token k1 KL penalty to
   the reference (the policy with its LoRA adapter disabled); old log-probs and values;
3. GAE -> advantages (whitened) and returns;
4. ``ppo_epochs`` passes of minibatches: clipped policy loss + clipped value loss.
"""

from __future__ import annotations

import random

import torch

from .advantages import gae, masked_mean, whiten
from .common import (
    MetricsLog,
    autocast,
    call_rewards,
    load_checkpoint,
    make_accelerator,
    rollout,
    save_checkpoint,
    vllm_available,
)
from .losses import kl_estimate, policy_loss, value_loss
from .ppo_config import PPOConfig
from .rewards import self_reward


class SelfReward:
    """Reward callable of Self-Rewarding PPO: ``log pi_SFT(y|x) - log pi_base(y|x)`` (at EOS).

    ``sft_model`` is a frozen copy of the SFT policy. ``pi_base`` is ``base_model`` when
    given (e.g. SFT was full fine-tuning), else ``sft_model`` with its LoRA adapter
    disabled (SFT was a LoRA run: one extra copy in memory).
    """

    def __init__(self, sft_model, base_model=None):
        self.model = sft_model.eval()
        self.base = base_model.eval() if base_model is not None else None
        for m in (self.model, self.base):
            for p in (m.parameters() if m is not None else ()):
                p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, prompts, completions, rollout=None, **kw) -> torch.Tensor:
        from ..lm.generate import forward_token_stats
        from ..lm.lora import reference

        dev = next(self.model.parameters()).device
        seq, attn, m = (rollout.sequences.to(dev), rollout.attention_mask.to(dev), rollout.response_mask.to(dev))
        sft = forward_token_stats(self.model, seq, attn)["logprobs"]
        if self.base is not None:
            bl = forward_token_stats(self.base, seq, attn)["logprobs"]
        else:
            with reference(self.model) as base:
                bl = forward_token_stats(base, seq, attn)["logprobs"]
        return self_reward(sft, bl, m)


def train_ppo(model, tok, prompts: list[str], reward_fns: list, cfg: PPOConfig, *, prompt_kw: list[dict] | None = None) -> dict:
    """PPO on ``prompts`` (chat-rendered). ``model`` needs a LoRA adapter and a value head.

    ``prompt_kw[i]`` (optional) is passed to reward functions for prompt i (e.g. ``answer=``),
    as lists over the batch. Returns the last step's metrics.
    """
    from ..lm.generate import forward_token_stats
    from ..lm.lora import reference

    acc = make_accelerator(cfg.grad_accum, cfg.device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    state = load_checkpoint(cfg.out_dir, model, opt) if cfg.resume else None
    start = state["step"] if state else 0
    model, opt = acc.prepare(model, opt)
    net = acc.unwrap_model(model)
    use_vllm = cfg.use_vllm and vllm_available(acc.device)
    log = MetricsLog(cfg.out_dir)
    rng = random.Random(cfg.seed + start)
    row: dict = {}
    for step in range(start, cfg.steps):
        # 1. rollouts
        idx = rng.sample(range(len(prompts)), min(cfg.batch_size, len(prompts)))
        roll = rollout(net, tok, [prompts[i] for i in idx], max_new_tokens=cfg.max_new_tokens,
                       temperature=cfg.temperature, use_vllm=use_vllm)
        kw = {k: [prompt_kw[i][k] for i in idx] for k in prompt_kw[0]} if prompt_kw else {}
        seq, attn, mask = roll.sequences, roll.attention_mask, roll.response_mask.float()
        # 2. scores: rewards, old log-probs/values, reference log-probs
        rewards, valid = call_rewards(reward_fns, roll, kw)
        mask = mask * valid[:, None].float()          # no applicable reward -> sequence skipped
        with torch.no_grad(), autocast(acc.device):
            old = forward_token_stats(net, seq, attn, temperature=cfg.temperature, with_values=True)
            with reference(net) as ref:
                ref_lp = forward_token_stats(ref, seq, attn, temperature=cfg.temperature)["logprobs"]
        kl = kl_estimate(old["logprobs"], ref_lp, "k1") * mask
        shaped = rewards - cfg.kl_coef * kl
        # 3. GAE
        adv, ret = gae(shaped, old["values"], mask, gamma=cfg.gamma, lam=cfg.lam)
        if cfg.whiten_advantages:
            adv = whiten(adv, mask)
        # 4. PPO epochs over minibatches
        B = seq.shape[0]
        stats = []
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(B)
            for s in range(0, B, cfg.mini_batch_size):
                mb = perm[s:s + cfg.mini_batch_size]
                with acc.accumulate(model), autocast(acc.device):
                    new = forward_token_stats(model, seq[mb], attn[mb], temperature=cfg.temperature, with_values=True)
                    pl, st = policy_loss(new["logprobs"], old["logprobs"][mb], adv[mb], mask[mb],
                                         clip_eps=cfg.clip_eps, agg=cfg.agg)
                    vl = value_loss(new["values"], old["values"][mb], ret[mb], mask[mb], clip=cfg.value_clip)
                    loss = pl + cfg.vf_coef * vl
                    acc.backward(loss)
                    opt.step()
                    opt.zero_grad()
                stats.append({"policy_loss": float(pl.detach()), "value_loss": float(vl.detach()), **st})
        seq_r = (rewards * mask).sum(-1)
        row = {"loop": "ppo", "step": step + 1, "reward": float(seq_r[valid].mean()) if valid.any() else None,
               "kl": float(masked_mean(kl, mask)), "resp_len": float(mask.sum(-1).mean()),
               **{k: sum(d[k] for d in stats) / len(stats) for k in stats[0]}}
        log.log(row)
        if cfg.save_every and (step + 1) % cfg.save_every == 0:
            save_checkpoint(cfg.out_dir, net, opt, step + 1, cfg)
    save_checkpoint(cfg.out_dir, net, opt, max(cfg.steps, start), cfg)
    return row
