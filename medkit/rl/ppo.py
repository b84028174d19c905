"""PPO with a critic on a detached trunk, reward whitening and GAE (optionally self-rewarding,
arXiv 2510.21090).

One rollout batch per step, read top to bottom:
1. sample prompts, generate (left-padded batch, per-token log-probs);
2. score: rewards (sequence at EOS, or dense token rewards), whitened with running
   moments of the per-sequence score, minus a per-token k1 KL penalty to the reference
   (the policy with its LoRA adapter disabled); old log-probs and values;
3. GAE -> advantages (whitened) and returns;
4. ``ppo_epochs`` passes of minibatches: clipped policy loss + clipped value loss.

Why the critic reads a detached trunk and the rewards are whitened: with the value head
on the policy's own LoRA trunk, the value loss on raw returns of about 10 (self-reward
sums) was the largest gradient the adapter saw, and PPO lowered its own reward (10.56 ->
9.4 in 40 steps). Detached, the critic trains only its head; whitened, its targets have
unit scale whatever the reward function.
"""

from __future__ import annotations

import random

import torch

from .advantages import RunningMoments, gae, masked_mean, masked_var, whiten, whiten_token_rewards
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


def _check(cfg: PPOConfig) -> None:
    if cfg.critic not in ("detached", "shared"):
        raise ValueError(f"critic must be detached / shared, got {cfg.critic!r}")
    if cfg.reward_norm not in ("running", "batch", "none"):
        raise ValueError(f"reward_norm must be running / batch / none, got {cfg.reward_norm!r}")


def train_ppo(model, tok, prompts: list[str], reward_fns: list, cfg: PPOConfig, *, prompt_kw: list[dict] | None = None) -> dict:
    """PPO on ``prompts`` (chat-rendered). ``model`` needs a LoRA adapter and a value head
    (:func:`medkit.lm.add_value_head`).

    ``prompt_kw[i]`` (optional) is passed to reward functions for prompt i (e.g. ``answer=``),
    as lists over the batch. Logs one row per step to ``<out_dir>/logs/metrics.jsonl``
    (``reward`` is the raw mean score of the batch). Returns the last step's metrics.
    """
    from ..lm.generate import forward_token_stats, value_head_of
    from ..lm.lora import reference

    _check(cfg)
    acc = make_accelerator(cfg.grad_accum, cfg.device)
    head = value_head_of(model)
    head_ids = {id(p) for p in head.parameters()}
    actor = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    opt = torch.optim.AdamW([{"params": actor, "lr": cfg.lr},
                             {"params": list(head.parameters()), "lr": cfg.critic_lr or cfg.lr}])
    moments = RunningMoments()
    state = load_checkpoint(cfg.out_dir, model, opt) if cfg.resume else None
    start = state["step"] if state else 0
    if state and "reward_moments" in state.get("extra", {}):
        moments.load_state_dict(state["extra"]["reward_moments"])
    model, opt = acc.prepare(model, opt)
    net = acc.unwrap_model(model)
    rank = acc.process_index
    if acc.num_processes > 1 and state is None:
        torch.manual_seed(rank_seed(cfg.seed, rank))
    log = MetricsLog(cfg.out_dir, enabled=acc.is_main_process)
    rng = random.Random(rank_seed(cfg.seed, rank, start))
    trunk_grad = cfg.critic == "shared"
    row: dict = {}
    for step in range(start, cfg.steps):
        # 1. rollouts
        idx = rng.sample(range(len(prompts)), min(cfg.batch_size, len(prompts)))
        roll = rollout(net, tok, [prompts[i] for i in idx], max_new_tokens=cfg.max_new_tokens,
                       temperature=cfg.temperature)
        kw = {k: [prompt_kw[i][k] for i in idx] for k in prompt_kw[0]} if prompt_kw else {}
        seq, attn, mask = roll.sequences, roll.attention_mask, roll.response_mask.float()
        # 2. scores: rewards (whitened), old log-probs/values, reference log-probs
        rewards, valid = call_rewards(reward_fns, roll, kw)
        mask = mask * valid[:, None].float()          # no applicable reward -> sequence skipped
        score = (rewards * mask).sum(-1)              # (B,) raw score of each sequence
        if cfg.reward_norm == "running":
            mean, std = moments.update(score[valid])
        elif cfg.reward_norm == "batch" and int(valid.sum()) > 1:
            mean, std = float(score[valid].mean()), float(score[valid].std(unbiased=False))
        else:
            mean, std = 0.0, 1.0
        norm_r = whiten_token_rewards(rewards, mask, mean, std)
        with torch.no_grad(), autocast(acc.device):
            old = forward_token_stats(net, seq, attn, temperature=cfg.temperature, with_values=True)
            with reference(net) as ref:
                ref_lp = forward_token_stats(ref, seq, attn, temperature=cfg.temperature)["logprobs"]
        kl = kl_estimate(old["logprobs"], ref_lp, "k1") * mask
        shaped = norm_r - cfg.kl_coef * kl
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
                    new = forward_token_stats(model, seq[mb], attn[mb], temperature=cfg.temperature,
                                              with_values=True, value_trunk_grad=trunk_grad)
                    pl, st = policy_loss(new["logprobs"], old["logprobs"][mb], adv[mb], mask[mb],
                                         clip_eps=cfg.clip_eps, agg=cfg.agg)
                    vl = value_loss(new["values"], old["values"][mb], ret[mb], mask[mb], clip=cfg.value_clip)
                    loss = pl + cfg.vf_coef * vl
                    acc.backward(loss)
                    opt.step()
                    opt.zero_grad()
                stats.append({"policy_loss": float(pl.detach()), "value_loss": float(vl.detach()), **st})
        var_ret = float(masked_var(ret, mask))
        row = {"loop": "ppo", "step": step + 1, "reward": float(score[valid].mean()) if valid.any() else None,
               "reward_whitened": float((norm_r * mask).sum(-1)[valid].mean()) if valid.any() else None,
               "kl": float(masked_mean(kl, mask)), "resp_len": float(mask.sum(-1).mean()),
               "value_explained_var": 1.0 - float(masked_var(ret - old["values"], mask)) / var_ret if var_ret > 0 else None,
               **{k: sum(d[k] for d in stats) / len(stats) for k in stats[0]}}
        log.log(row)
        if acc.is_main_process and cfg.save_every and (step + 1) % cfg.save_every == 0:
            save_checkpoint(cfg.out_dir, net, opt, step + 1, cfg, extra={"reward_moments": moments.state_dict()})
    if acc.is_main_process:
        save_checkpoint(cfg.out_dir, net, opt, max(cfg.steps, start), cfg,
                        extra={"reward_moments": moments.state_dict()})
    return row
