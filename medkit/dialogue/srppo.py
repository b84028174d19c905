"""Self-Rewarding PPO for the constrained doctor (arXiv 2510.21090), on cases without demonstrations.

The reward of a doctor turn (prompt x = the dialogue so far, response y = the action)
is the paper's self-reward, summed over the action's tokens and given at its end:
``r(x, y) = log pi_SFT(y | x) - log pi_base(y | x)`` (full softmax, EOS included), where
pi_SFT is the fine-tuned doctor and pi_base the pretrained model it started from. Each
turn is one PPO sample (a prompt and its response, as in the paper); its advantage is
``A = r - V(x)``, whitened over the batch, with V a linear critic on the *detached*
hidden state at the end of the prompt (its own optimizer: the value loss never reaches
the policy's weights; medkit/rl issue 21's cure for a critic that drags the trunk).
The clipped surrogate runs on the constrained policy's decisions (branch points), with
an optional KL penalty to the SFT policy (``kl_coef``; the reference is the policy with
its LoRA adapter disabled) subtracted from the reward.

One step: ``cases_per_step`` cases, each played once by the sampling policy, every turn
a sample; ``ppo_epochs`` passes of the surrogate over them. Logged per step: mean
self-reward, whitened-advantage stats, value loss, success, seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class DialogueSRPPOConfig:
    out_dir: str = "runs/dialogue-srppo"
    steps: int = 6
    cases_per_step: int = 16
    lr: float = 5e-5
    vf_lr: float = 1e-3
    temperature: float = 1.0
    ppo_epochs: int = 1
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    max_turns: int = 10
    top_k: int = 3
    patient: str = "persona"
    seed: int = 0
    device: str = "cpu"
    save_every: int = 1
    resume: bool = True


def turn_self_rewards(sft_sums: list[list[float]], base_sums: list[list[float]]) -> list[list[float]]:
    """Per episode, per turn: ``log pi_SFT(y|x) - log pi_base(y|x)`` (the sums of token log-probs).

    Example: SFT sums [[-1.0, -2.0]], base sums [[-5.0, -2.5]] -> [[4.0, 0.5]]."""
    return [[s - b for s, b in zip(sr, br)] for sr, br in zip(sft_sums, base_sums)]


def whiten(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``(x - mean) / (std + eps)`` over all entries (PPO reward / advantage whitening)."""
    if x.numel() < 2:
        return x - x.mean()
    return (x - x.mean()) / (x.std() + eps)


def _turn_starts(ep) -> list[int]:
    return [a for a, _ in ep.spans]


def train_dialogue_srppo(model, tok, base_model, cases: list[dict], kb, cfg: DialogueSRPPOConfig, log=None) -> dict:
    """SR-PPO of ``model`` (a LoRA adapter on the SFT doctor; adapter disabled = pi_SFT) with the
    frozen pretrained ``base_model`` as pi_base. ``kb``: one knowledge base or ``{case_id: kb}``.
    Returns the last step's metrics; logs / checkpoints as :func:`medkit.dialogue.grpo.train_dialogue_grpo`."""
    from ..lm.lora import reference, trainable_state_dict
    from ..rl.losses import policy_loss
    from ..runs import plain_state, save_checkpoint
    from .episodes import action_token_logprob_sums, decision_logprobs, padded, sample_episodes
    from .grpo import _by_kb, _rng_plain, start_loop
    from .sft import _body_head, hidden_states

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    body, _ = _body_head(model)
    hidden = body.config.hidden_size
    critic = torch.nn.Linear(hidden, 1)
    torch.nn.init.zeros_(critic.weight)
    torch.nn.init.zeros_(critic.bias)
    vopt = torch.optim.AdamW(critic.parameters(), lr=cfg.vf_lr)
    ckpt = f"{cfg.out_dir}/checkpoints/last.pt"
    start, rng, mlog, row = start_loop(cfg, model, opt, critic=critic, critic_optimizer=vopt)
    kbs = kb if isinstance(kb, dict) else None
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        batch = rng.sample(cases, min(cfg.cases_per_step, len(cases)))
        eps = []
        for part_kb, part in _by_kb(batch, kbs, kb):
            eps += sample_episodes(model, tok, part, part_kb, group_size=1, temperature=cfg.temperature,
                                   seed=cfg.seed * 100003 + step, patient=cfg.patient, max_turns=cfg.max_turns,
                                   top_k=cfg.top_k)
        t_gen = time.perf_counter() - t0
        # self-reward per turn: pi_SFT = the policy with its adapter disabled; pi_base = the pretrained model
        with reference(model):
            sft_sums = action_token_logprob_sums(model, eps, pad)
            ref_lp = [v.detach() for v in decision_logprobs(model, eps, pad, temperature=cfg.temperature)] \
                if cfg.kl_coef else None
        base_sums = action_token_logprob_sums(base_model, eps, pad)
        r_turn = turn_self_rewards(sft_sums, base_sums)
        # per-decision reward of its turn (minus the KL penalty of the turn's decisions)
        old, mask = padded([torch.tensor([d.logprob for _, d in e.decisions]) for e in eps])
        turn_of, _ = padded([torch.tensor([float(t) for t, _ in e.decisions]) for e in eps])
        # critic inputs: detached hidden state at the end of each turn's prompt
        with torch.no_grad():
            feats, tr = [], []
            for s in range(0, len(eps), 8):
                part = eps[s:s + 8]
                h, off = hidden_states(model, [e.ids for e in part], pad)
                for b, e in enumerate(part):
                    for t, a in enumerate(_turn_starts(e)):
                        feats.append(h[b, off[b] + a - 1].float().cpu())
                        rt = r_turn[s + b][t]
                        if cfg.kl_coef:
                            sel = [k for k, (tt, _) in enumerate(e.decisions) if tt == t]
                            rt -= cfg.kl_coef * float(sum(e.decisions[k][1].logprob - ref_lp[s + b][k] for k in sel))
                        tr.append(rt)
        feats = torch.stack(feats) if feats else torch.zeros(0, hidden)
        returns = torch.tensor(tr, dtype=torch.float32)
        values = critic(feats).squeeze(-1)
        adv_turn = whiten(returns - values.detach())
        # decision advantages: each decision gets its turn's advantage
        a_dec = torch.zeros_like(mask)
        k = 0
        for i, e in enumerate(eps):
            n_t = len(e.spans)
            for j, (t, _) in enumerate(e.decisions):
                a_dec[i, j] = adv_turn[k + t]
            k += n_t
        model.train()
        n_dec = float(mask.sum())
        loss_total = 0.0
        for _ in range(cfg.ppo_epochs):
            for s in range(0, len(eps), 8):
                idx = list(range(s, min(s + 8, len(eps))))
                lps = decision_logprobs(model, [eps[i] for i in idx], pad, temperature=cfg.temperature)
                lp = torch.stack([torch.nn.functional.pad(v, (0, mask.shape[1] - len(v))) for v in lps])
                loss, _ = policy_loss(lp, old[idx], a_dec[idx], mask[idx], clip_eps=cfg.clip_eps, agg="token-mean")
                loss = loss * (float(mask[idx].sum()) / max(n_dec, 1.0))
                loss.backward()
                loss_total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        vloss = torch.nn.functional.mse_loss(critic(feats).squeeze(-1), returns) if len(returns) else torch.tensor(0.0)
        vloss.backward()
        vopt.step()
        vopt.zero_grad(set_to_none=True)
        row = {"loop": "dialogue-srppo", "step": step + 1, "loss": loss_total, "value_loss": float(vloss.detach()),
               "reward": float(returns.mean()) if len(returns) else 0.0,
               "success": float(sum(e.record["success"] for e in eps) / len(eps)),
               "turns": sum(e.record["turns"] for e in eps) / len(eps), "decisions": n_dec,
               "gen_s": round(t_gen, 2), "step_s": round(time.perf_counter() - t0, 2)}
        if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps:
            save_checkpoint(ckpt, {"model": trainable_state_dict(model), "critic": critic.state_dict(),
                                   "optimizer": opt.state_dict(), "critic_optimizer": vopt.state_dict(),
                                   "step": step + 1, "torch_rng": torch.get_rng_state(),
                                   "case_rng": plain_state(_rng_plain(rng.getstate()))})
        mlog.log(row)
        if log:
            log(f"sr-ppo step {step + 1}/{cfg.steps}: self-reward {row['reward']:.3f}, value loss "
                f"{row['value_loss']:.3f}, success {row['success']:.2f}, {row['step_s']} s")
    model.eval()
    return row
