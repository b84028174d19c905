"""Multi-turn GRPO for the doctor (WebAgent-R1, arXiv 2505.16421), DeepPlanner shaping optional.

One step, read top to bottom:

1. pick ``cases_per_step`` training cases, play each ``group_size`` times with the
   sampling policy (all episodes of the step advance together, one batched
   generation per turn);
2. outcome reward per episode: binary success (top-1 correct), or the DiagGym
   mix 0.1 finish + 1 correct + 0.5 exam F1 (``reward="diaggym"``);
3. group-normalised advantage ``A_i = (r_i - mean_g) / (std_g + 1e-4)``
   (:func:`medkit.rl.group_advantages`) given to *every doctor token of every turn*
   of episode i; optional per-turn information gain ``w * dp_t`` added to turn t's
   tokens (IGPO-style), and DeepPlanner entropy shaping per token;
4. one gradient step on the clipped surrogate over all doctor tokens
   (token-mean over the whole batch; ratio 1 with one update per batch, as medkit.rl).

Why here and not in medkit.rl: ``train_grpo`` is single-turn (one prompt -> one
completion). Multi-turn needs the doctor tokens of several generations per episode
to share one advantage; each turn's generation is kept as its own ``(B, T)`` chunk
whose response mask is the doctor's tokens, which is the same policy gradient as
one long sequence with the patient's tokens masked out.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch


@dataclass
class DialogueGRPOConfig:
    out_dir: str = "runs/dialogue-grpo"
    steps: int = 6
    cases_per_step: int = 4
    group_size: int = 4
    lr: float = 5e-4
    temperature: float = 1.0
    max_new_tokens: int = 32
    max_prompt_len: int = 480
    max_turns: int = 10
    reward: str = "success"           # success | diaggym
    info_gain_weight: float = 0.0     # > 0: add w * (turn's posterior gain on the truth) to that turn's tokens
    scale: str = "group"              # group | batch | none
    entropy_alpha: float = 0.0        # > 0: DeepPlanner entropy shaping
    entropy_kappa: float = 2.0
    clip_eps: float = 0.2
    patient: str = "persona"
    system: str | None = None         # the doctor's system prompt (policy.system_of(model config))
    seed: int = 0
    device: str = "cpu"
    save_every: int = 1               # checkpoint period in steps (a step is minutes on CPU: save each); 0: at the end
    resume: bool = True               # continue from <out_dir>/checkpoints/last.pt if present (medkit.rl habit)


def episode_reward(record: dict, kind: str = "success") -> float:
    """Outcome reward of one episode record. ``success``: 1 if the top-1 diagnosis is right.
    ``diaggym``: 0.1 * finished + 1.0 * correct + 0.5 * exam F1 (DiagGym/DiagAgent)."""
    if kind == "success":
        return float(record["success"])
    if kind == "diaggym":
        return 0.1 * record["diagnosed"] + 1.0 * record["success"] + 0.5 * record["exam_f1"]
    raise ValueError(f"reward must be success / diaggym, got {kind!r}")


def turn_advantages(chunks, adv: torch.Tensor, gains: list[list[float]], cfg: DialogueGRPOConfig):
    """Token advantages for each recorded chunk: ``[(roll, mask (B,T), adv (B,T))]``.

    The math is :func:`medkit.rl.advantages.multi_turn_advantages` (every doctor token of
    episode i gets A_i, plus ``info_gain_weight * gain`` of its turn); this adds the
    rollouts' masks and, when ``entropy_alpha > 0``, DeepPlanner shaping per token.

    Args:
        chunks: ``[(Rollout, uids)]`` in generation order (one per turn of the step).
        adv: ``(n_episodes,)`` group advantages. gains: per episode, per doctor turn, dp(truth).
    """
    from ..rl.advantages import entropy_shaped_advantages, multi_turn_advantages

    masks = [roll.response_mask.float() for roll, _ in chunks]
    toks = multi_turn_advantages(masks, [list(u) for _, u in chunks], adv, gains, weight=cfg.info_gain_weight)
    out = []
    for (roll, _), mask, a_tok in zip(chunks, masks, toks):
        if cfg.entropy_alpha > 0:
            a_tok = entropy_shaped_advantages(a_tok, roll.entropies.float(), mask, alpha=cfg.entropy_alpha,
                                              kappa=cfg.entropy_kappa)
        out.append((roll, mask, a_tok))
    return out


def trim_metrics(mlog, step: int) -> None:
    """Drop rows of ``mlog`` logged after ``step`` (their updates were lost with the process); atomic rewrite."""
    import json

    from ..io.atomic import write_text

    rows = mlog.read()
    keep = [r for r in rows if r.get("step", 0) <= step]
    if len(keep) != len(rows):
        write_text(mlog.path, "".join(json.dumps(r) + "\n" for r in keep))


def train_dialogue_grpo(model, tok, cases: list[dict], kb, cfg: DialogueGRPOConfig, log=None) -> dict:
    """Multi-turn GRPO of ``model`` (its trainable parameters) on ``cases``; returns the last step's metrics.

    Appends one JSON row per step to ``<out_dir>/logs/metrics.jsonl`` and writes
    ``<out_dir>/checkpoints/last.pt`` (adapter, optimizer, torch and case-sampling RNG
    states) every ``save_every`` steps and at the end. With ``resume`` it continues
    from that checkpoint: the step counter goes on, rows logged after the checkpoint
    (a run killed between a log and the next save) are dropped, and the restored RNGs
    make the continued run draw what an uninterrupted run would have drawn.
    """
    from ..lm.generate import forward_token_stats
    from ..rl.advantages import group_advantages
    from ..rl.common import MetricsLog, autocast, load_checkpoint, save_checkpoint
    from ..rl.losses import policy_loss
    from .policy import LMDoctor
    from .rollout import make_envs, run_episodes

    dev = next(model.parameters()).device
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    mlog = MetricsLog(cfg.out_dir)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    start = 0
    state = load_checkpoint(cfg.out_dir, model, opt) if cfg.resume else None   # restores the torch RNG too
    if state is not None:
        start = state["step"]
        rng.setstate(state["extra"]["case_rng"])
    trim_metrics(mlog, start)
    row: dict = (mlog.read() or [{}])[-1] if start >= cfg.steps else {}
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        batch = rng.sample(cases, min(cfg.cases_per_step, len(cases)))
        envs = make_envs(batch, kb, patient=cfg.patient, max_turns=cfg.max_turns, repeat=cfg.group_size)
        doctor = LMDoctor(model, tok, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                          do_sample=True, max_prompt_len=cfg.max_prompt_len, record=True, system=cfg.system)
        records = run_episodes(envs, doctor)
        t_gen = time.perf_counter() - t0
        rewards = torch.tensor([episode_reward(r, cfg.reward) for r in records])
        adv = group_advantages(rewards, cfg.group_size, scale=cfg.scale)
        parts = turn_advantages(doctor.chunks, adv, [r["info_gain"] for r in records], cfg)
        n_tok = sum(float(m.sum()) for _, m, _ in parts)
        model.train()
        loss_total = 0.0
        for roll, mask, a_tok in parts:
            if float(mask.sum()) == 0:
                continue
            with autocast(dev):
                lp = forward_token_stats(model, roll.sequences, roll.attention_mask,
                                         temperature=cfg.temperature)["logprobs"]
                loss, _ = policy_loss(lp, lp.detach(), a_tok.to(dev), mask.to(dev), clip_eps=cfg.clip_eps)
                loss = loss * (float(mask.sum()) / max(n_tok, 1.0))   # token-mean over the whole batch
            loss.backward()
            loss_total += float(loss.detach())
        opt.step()
        opt.zero_grad()
        row = {"loop": "dialogue-grpo", "step": step + 1, "loss": loss_total,
               "reward": float(rewards.mean()), "success": float(sum(r["success"] for r in records) / len(records)),
               "format_errors": sum(r["format_errors"] for r in records), "turns": sum(r["turns"] for r in records) / len(records),
               "doctor_tokens": n_tok, "adv_abs": float(adv.abs().mean()), "gen_s": round(t_gen, 2),
               "step_s": round(time.perf_counter() - t0, 2)}
        if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps:
            save_checkpoint(cfg.out_dir, model, opt, step + 1, cfg, extra={"case_rng": rng.getstate()})
        mlog.log(row)
        if log:
            log(f"grpo step {step + 1}/{cfg.steps}: reward {row['reward']:.3f}, turns {row['turns']:.1f}, "
                f"format errors {row['format_errors']}, {row['step_s']} s")
    return row
