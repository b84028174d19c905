"""Multi-turn GRPO for the constrained doctor (WebAgent-R1, arXiv 2505.16421), DeepPlanner shaping optional.

One step, read top to bottom:

1. pick ``cases_per_step`` training cases, play each ``group_size`` times with the
   sampling policy (constrained decoding at ``temperature``,
   :func:`medkit.dialogue.episodes.sample_episodes`);
2. outcome reward per episode: binary success (top-1 correct), or the DiagGym mix
   0.1 finish + 1 correct + 0.5 exam F1 (``reward="diaggym"``);
3. group-normalised advantage ``A_i = (r_i - mean_g) / (std_g + 1e-4)``
   (:func:`medkit.rl.group_advantages`) given to *every decision of every turn* of
   episode i (a decision = a branch point of the grammar; forced tokens carry no
   gradient); optionally plus ``info_gain_weight * dp_t`` for the decisions of turn t
   (IGPO-style), DeepPlanner entropy shaping ``A + min(alpha H, |A| / kappa)`` with H the
   entropy of the legal-token distribution at the decision, and the upweighting of
   planning-intensive episodes (:func:`medkit.rl.advantages.planning_upweight`:
   ``planning_upweight`` = its beta; 0 = off);
4. one gradient step on the clipped surrogate over all decisions (decision-mean over the
   batch; one update per batch, so the ratio is 1 and this is the policy gradient).

Logged per step: reward, success, the share of groups whose rewards are all equal (zero
advantage: no signal), the share of decisions where the entropy cap ``|A| / kappa``
binds (``alpha H > |A| / kappa``), seconds.
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
    max_turns: int = 10
    top_k: int = 3
    reward: str = "success"           # success | diaggym
    info_gain_weight: float = 0.0     # > 0: add w * (turn's posterior gain on the truth) to that turn's decisions
    scale: str = "group"              # group | batch | none
    entropy_alpha: float = 0.0        # > 0: DeepPlanner entropy shaping
    entropy_kappa: float = 2.0
    planning_upweight: float = 0.0    # > 0: beta of planning_upweight (positive-advantage, high-entropy episodes)
    clip_eps: float = 0.2
    patient: str = "persona"
    seed: int = 0
    device: str = "cpu"
    save_every: int = 1               # checkpoint period in steps; 0: at the end only
    resume: bool = True               # continue from <out_dir>/checkpoints/last.pt if present


def episode_reward(record: dict, kind: str = "success") -> float:
    """Outcome reward of one episode record. ``success``: 1 if the top-1 diagnosis is right.
    ``diaggym``: 0.1 * finished + 1.0 * correct + 0.5 * exam F1 (DiagGym/DiagAgent)."""
    if kind == "success":
        return float(record["success"])
    if kind == "diaggym":
        return 0.1 * record["diagnosed"] + 1.0 * record["success"] + 0.5 * record["exam_f1"]
    raise ValueError(f"reward must be success / diaggym, got {kind!r}")


def zero_advantage_share(rewards: torch.Tensor, group_size: int) -> float:
    """Share of groups whose rewards are all equal (their advantages are 0: no learning signal).

    Example: rewards [1, 1, 0, 1] in groups of 2 -> groups (1, 1) and (0, 1) -> 0.5."""
    r = rewards.reshape(-1, group_size)
    return float((r.max(1).values == r.min(1).values).float().mean())


def decision_advantages(adv: torch.Tensor, turns: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor,
                        gains: list[list[float]], cfg: DialogueGRPOConfig) -> tuple[torch.Tensor, dict]:
    """``(B, D)`` advantages of every decision, and shaping statistics.

    Args:
        adv: ``(B,)`` episode advantages. turns: ``(B, D)`` 0-based turn of each decision.
        entropy: ``(B, D)`` entropy (nats) of the legal-token distribution at each decision.
        mask: ``(B, D)`` 1 on real decisions. gains: per episode, per turn, dp(truth).
    """
    from ..rl.advantages import entropy_shaped_advantages, planning_upweight

    a = adv[:, None].expand_as(mask).clone()
    if cfg.info_gain_weight:
        g = torch.zeros_like(a)
        for i, row in enumerate(gains):
            for k in range(a.shape[1]):
                t = int(turns[i, k])
                if mask[i, k] and t < len(row):
                    g[i, k] = row[t]
        a = a + cfg.info_gain_weight * g
    a = a * mask
    stats = {"cap_binds": 0.0, "cap_binds_nonzero": 0.0, "planning_upweighted": 0.0}
    if cfg.entropy_alpha > 0:
        # the cap |A| / kappa binds where the entropy bonus would exceed it; with A = 0 (a group
        # of equal rewards) it always binds, so the share is also given over non-zero advantages
        bonus, cap = cfg.entropy_alpha * entropy, a.abs() / cfg.entropy_kappa
        binds = (bonus > cap).float() * mask
        nz = mask * (a != 0).float()
        stats["cap_binds"] = float(binds.sum() / max(float(mask.sum()), 1.0))
        stats["cap_binds_nonzero"] = float((binds * nz).sum() / max(float(nz.sum()), 1.0))
        a = entropy_shaped_advantages(a, entropy, mask, alpha=cfg.entropy_alpha, kappa=cfg.entropy_kappa)
    if cfg.planning_upweight > 0:
        before = a.clone()
        a = planning_upweight(a, entropy, mask, beta=cfg.planning_upweight)
        stats["planning_upweighted"] = float(((a != before).any(1)).float().mean())
    return a, stats


def trim_metrics(mlog, step: int) -> None:
    """Drop rows of ``mlog`` logged after ``step`` (their updates were lost with the process); atomic rewrite."""
    import json

    from ..io.atomic import write_text

    rows = mlog.read()
    keep = [r for r in rows if r.get("step", 0) <= step]
    if len(keep) != len(rows):
        write_text(mlog.path, "".join(json.dumps(r) + "\n" for r in keep))


def start_loop(cfg, model, opt, **extra) -> tuple[int, random.Random, object, dict]:
    """The common start of the dialogue RL loops (GRPO, SR-PPO): the metrics log, seeded case and
    torch RNGs and, with ``cfg.resume``, the state of ``<out_dir>/checkpoints/last.pt`` (trainable
    weights, ``opt``, RNGs and every ``extra`` module/optimizer under its own key, e.g.
    ``critic=...``). Returns ``(start step, case rng, metrics log, last logged row when done)``."""
    from ..lm.lora import load_trainable_state_dict
    from ..rl.common import MetricsLog
    from ..runs import load_checkpoint

    mlog = MetricsLog(cfg.out_dir)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    start = 0
    state = load_checkpoint(f"{cfg.out_dir}/checkpoints/last.pt") if cfg.resume else None
    if state is not None:
        load_trainable_state_dict(model, state["model"])
        opt.load_state_dict(state["optimizer"])
        for key, obj in extra.items():
            obj.load_state_dict(state[key])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        rng.setstate(_rng_state(state["case_rng"]))
    trim_metrics(mlog, start)
    row: dict = (mlog.read() or [{}])[-1] if start >= cfg.steps else {}
    return start, rng, mlog, row


def train_dialogue_grpo(model, tok, cases: list[dict], kb, cfg: DialogueGRPOConfig, log=None) -> dict:
    """Multi-turn GRPO of ``model`` (its trainable parameters) on ``cases``; returns the last step's metrics.

    ``kb`` is one knowledge base, or a dict ``{case_id: kb}`` when cases mix sources (synthetic and
    DDXPlus). Appends one JSON row per step to ``<out_dir>/logs/metrics.jsonl`` and writes
    ``<out_dir>/checkpoints/last.pt`` (trainable weights, optimizer, torch and case-sampling RNG
    states) every ``save_every`` steps and at the end; with ``resume`` it continues from there.
    """
    from ..lm.lora import trainable_state_dict
    from ..rl.advantages import group_advantages
    from ..rl.losses import policy_loss
    from ..runs import plain_state, save_checkpoint
    from .episodes import decision_logprobs, padded, sample_episodes

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    ckpt = f"{cfg.out_dir}/checkpoints/last.pt"
    start, rng, mlog, row = start_loop(cfg, model, opt)
    kbs = kb if isinstance(kb, dict) else None
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        batch = rng.sample(cases, min(cfg.cases_per_step, len(cases)))
        eps = []
        for part_kb, part in _by_kb(batch, kbs, kb):
            eps += sample_episodes(model, tok, part, part_kb, group_size=cfg.group_size, temperature=cfg.temperature,
                                   seed=cfg.seed * 100003 + step, patient=cfg.patient, max_turns=cfg.max_turns,
                                   top_k=cfg.top_k)
        t_gen = time.perf_counter() - t0
        rewards = torch.tensor([episode_reward(e.record, cfg.reward) for e in eps])
        adv = group_advantages(rewards, cfg.group_size, scale=cfg.scale)
        ent, mask = padded([torch.tensor([d.entropy for _, d in e.decisions]) for e in eps])
        turns, _ = padded([torch.tensor([float(t) for t, _ in e.decisions]) for e in eps])
        a_dec, shaping = decision_advantages(adv, turns, ent, mask, [e.record["info_gain"] for e in eps], cfg)
        old, _ = padded([torch.tensor([d.logprob for _, d in e.decisions]) for e in eps])
        model.train()
        n_dec = float(mask.sum())
        loss_total = 0.0
        live = [i for i in range(len(eps)) if float(a_dec[i].abs().sum()) > 0]
        for s in range(0, len(live), 8):                 # episodes with a non-zero advantage only
            idx = live[s:s + 8]
            lps = decision_logprobs(model, [eps[i] for i in idx], pad, temperature=cfg.temperature)
            lp = torch.stack([torch.nn.functional.pad(v, (0, mask.shape[1] - len(v))) for v in lps])
            loss, _ = policy_loss(lp, old[idx], a_dec[idx], mask[idx], clip_eps=cfg.clip_eps, agg="token-mean")
            loss = loss * (float(mask[idx].sum()) / max(n_dec, 1.0))   # decision-mean over the whole batch
            loss.backward()
            loss_total += float(loss.detach())
        if live:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        opt.zero_grad(set_to_none=True)
        row = {"loop": "dialogue-grpo", "step": step + 1, "loss": loss_total, "reward": float(rewards.mean()),
               "success": float(sum(e.record["success"] for e in eps) / len(eps)),
               "turns": sum(e.record["turns"] for e in eps) / len(eps),
               "zero_adv_groups": zero_advantage_share(rewards, cfg.group_size),
               "cap_binds": shaping["cap_binds"], "cap_binds_nonzero": shaping["cap_binds_nonzero"],
               "planning_upweighted": shaping["planning_upweighted"],
               "decisions": n_dec, "entropy": float((ent * mask).sum() / max(n_dec, 1.0)),
               "adv_abs": float(adv.abs().mean()), "gen_s": round(t_gen, 2),
               "step_s": round(time.perf_counter() - t0, 2)}
        if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps:
            save_checkpoint(ckpt, {"model": trainable_state_dict(model), "optimizer": opt.state_dict(),
                                   "step": step + 1, "torch_rng": torch.get_rng_state(),
                                   "case_rng": plain_state(_rng_plain(rng.getstate()))})
        mlog.log(row)
        if log:
            log(f"grpo step {step + 1}/{cfg.steps}: reward {row['reward']:.3f}, zero-adv groups "
                f"{row['zero_adv_groups']:.2f}, cap binds {row['cap_binds']:.2f}, turns {row['turns']:.1f}, "
                f"{row['step_s']} s")
    model.eval()
    return row


def _by_kb(batch: list[dict], kbs: dict | None, kb):
    """Split a batch of cases by knowledge base (one sampling call per knowledge base)."""
    if kbs is None:
        return [(kb, batch)]
    groups: dict[int, tuple] = {}
    for c in batch:
        k = kbs[c["case_id"]]
        groups.setdefault(id(k), (k, []))[1].append(c)
    return list(groups.values())


def _rng_plain(state: tuple) -> list:
    """``random.Random.getstate()`` as plain lists (what a weights-only checkpoint stores)."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_state(plain) -> tuple:
    version, internal, gauss = plain
    return (int(version), tuple(int(x) for x in internal), gauss)
