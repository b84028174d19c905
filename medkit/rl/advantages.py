"""Advantage estimators: pure functions on tensors.

Shapes: ``B`` sequences, ``T`` tokens (prompt + response, aligned as in
:mod:`medkit.lm.generate`), ``G`` group size (``B = n_groups * G``, groups
contiguous). ``mask`` is the ``(B, T)`` response mask: 1 on policy tokens only;
every function returns exactly 0 where ``mask`` is 0.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance over masked entries."""
    mu = masked_mean(x, mask)
    return masked_mean((x - mu) ** 2, mask)


def whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over masked entries (``shift_mean=False`` keeps the mean); 0 off-mask."""
    mu, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mu) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mu
    return out * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over response tokens.

    Args:
        rewards, values, mask: ``(B, T)``; ``values[:, t]`` is V(state before token t).
    Returns:
        ``(advantages, returns)``, each ``(B, T)``, 0 off-mask.
        delta_t = r_t + gamma * V_{t'} - V_t, A_t = delta_t + gamma * lam * A_{t'}, where t' is
        the next response token (none after the last one: V = A = 0 there).
    """
    B, T = rewards.shape
    m = mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    next_v = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    next_a = torch.zeros_like(next_v)
    for t in range(T - 1, -1, -1):
        mt = m[:, t]
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        a = delta + gamma * lam * next_a
        adv[:, t] = a * mt
        # off-mask positions (padding after EOS, prompt) pass the carry through untouched
        next_v = torch.where(mt > 0, values[:, t], next_v)
        next_a = torch.where(mt > 0, a, next_a)
    return adv, (adv + values) * m


def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: str = "group",
                     eps: float = 1e-4, valid: torch.Tensor | None = None) -> torch.Tensor:
    """GRPO advantages ``(B,)``: reward minus its group mean, divided by a scale.

    Args:
        rewards: ``(B,)`` outcome rewards, groups of ``group_size`` contiguous.
        scale: ``"group"`` (group std, GRPO / WebAgent-R1), ``"batch"`` (std of the
            whole batch, more stable with few distinct rewards), ``"none"`` (Dr. GRPO).
            Std is the unbiased sample std (torch default, as TRL); ``eps`` 1e-4 as WebAgent-R1.
        valid: optional ``(B,)`` bool; invalid rewards (``None`` from a reward function)
            are excluded from the mean/std and get advantage 0.
    """
    r = rewards.reshape(-1, group_size).to(torch.float32)
    v = torch.ones_like(r, dtype=torch.bool) if valid is None else valid.reshape(-1, group_size).bool()
    vf = v.float()
    n = vf.sum(1, keepdim=True)
    mean = (r * vf).sum(1, keepdim=True) / n.clamp(min=1)
    centred = (r - mean) * vf
    if scale == "group":
        std = ((centred ** 2).sum(1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()
        adv = centred / (std + eps)
    elif scale == "batch":
        flat, fv = r[v], v.sum()
        std = flat.std() if fv > 1 else torch.tensor(0.0)
        adv = centred / (std + eps)
    elif scale == "none":
        adv = centred
    else:
        raise ValueError(f"scale must be group / batch / none, got {scale!r}")
    return (adv * vf).reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out ``(B,)``: r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean)."""
    r = rewards.reshape(-1, group_size).to(torch.float32)
    G = group_size
    return (r - (r.sum(1, keepdim=True) - r) / (G - 1)).reshape(-1)


def broadcast(seq_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` per-sequence value -> ``(B, T)`` on response tokens, 0 elsewhere."""
    return seq_values[:, None].to(torch.float32) * mask.to(torch.float32)


def entropy_shaped_advantages(adv: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, *,
                              alpha: float = 0.4, kappa: float = 2.0, clip: str = "ratio") -> torch.Tensor:
    """Entropy-based advantage shaping (DeepPlanner, arXiv 2510.12979; Cheng et al. 2025).

    ``A' = A + min(alpha * H.detach(), c(A))`` per token, with
    ``c(A) = |A| / kappa`` (``clip="ratio"``, default) or ``|A| ** kappa`` (``clip="power"``).

    METHODS.md writes ``|A|^kappa`` and says the clip keeps high entropy from flipping
    a negative advantage. That guarantee holds for ``|A| / kappa`` with kappa > 1
    (A < 0 -> A' <= A (1 - 1/kappa) < 0), which is the form of the entropy-advantage
    paper DeepPlanner builds on; for ``|A|^kappa`` it fails whenever |A| > 1 (A = -2,
    kappa = 2: bonus up to 4, A' = +2). Hence the default; ``"power"`` is kept for
    comparison. Inputs/outputs ``(B, T)``; 0 off-mask.
    """
    if kappa <= 1:
        raise ValueError(f"kappa must be > 1, got {kappa}")
    a = adv.abs()
    cap = a / kappa if clip == "ratio" else a ** kappa if clip == "power" else None
    if cap is None:
        raise ValueError(f"clip must be ratio / power, got {clip!r}")
    bonus = torch.minimum(alpha * entropy.detach(), cap)
    return (adv + bonus) * mask


def planning_upweight(adv: torch.Tensor, entropy: torch.Tensor, mask: torch.Tensor, *,
                      plan_mask: torch.Tensor | None = None, beta: float = 0.5,
                      quantile: float = 0.5) -> torch.Tensor:
    """Selective upweighting of planning-intensive rollouts (DeepPlanner; formula not public).

    Our choice: a rollout's planning intensity is its mean token entropy over
    ``plan_mask`` (e.g. tokens inside ``<plan>...</plan>``; default all response
    tokens). Rollouts whose intensity is above the batch ``quantile`` AND whose
    advantage is positive get ``A * (1 + beta)``; others unchanged. Only positive
    advantages are scaled so that uncertain-but-wrong plans are not punished harder.
    ``(B, T)`` in and out.
    """
    pm = mask if plan_mask is None else plan_mask * mask
    intensity = masked_mean(entropy.detach(), pm, dim=-1)  # (B,)
    has = pm.sum(-1) > 0
    thr = torch.quantile(intensity[has], quantile) if has.any() else torch.tensor(float("inf"))
    heavy = (intensity > thr) & has
    w = torch.where(heavy[:, None] & (adv > 0), 1.0 + beta, 1.0)
    return adv * w * mask


def tempo_advantages(sequences: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor, group_size: int, *,
                     beta: float = 1.0, scale: str = "none", eps: float = 1e-4) -> torch.Tensor:
    """TEMPO (arXiv 2509.18314): GRPO advantage + TD corrections at branching tokens.

    A group's responses form a prefix tree over their response tokens. The value of a
    node (a prefix) is the mean outcome of the responses passing through it; the
    root's value is the group mean. For response i at response position k with
    prefix ``p = y_i[:k]``: if node ``p`` has more than one child (a branching
    point), add ``beta * (V(p + y_i[k]) - V(p))``, the TD error of that choice;
    elsewhere (no branching) the TD error is 0 by construction. The sequence part is
    :func:`group_advantages` with ``scale`` ("none" default, so both terms share units).

    Args:
        sequences, mask: ``(B, T)``; rewards ``(B,)``.
    Returns:
        ``(B, T)`` token advantages, 0 off-mask.
    """
    B, T = sequences.shape
    base = group_advantages(rewards, group_size, scale=scale, eps=eps)
    out = broadcast(base, mask).clone()
    r = rewards.to(torch.float32).tolist()
    for g0 in range(0, B, group_size):
        rows = list(range(g0, g0 + group_size))
        pos = {i: torch.nonzero(mask[i], as_tuple=False).flatten().tolist() for i in rows}
        toks = {i: sequences[i, pos[i]].tolist() for i in rows}
        sums: dict[tuple, list[float]] = {}
        children: dict[tuple, set] = {}
        for i in rows:
            for k in range(len(toks[i]) + 1):
                pre = tuple(toks[i][:k])
                s = sums.setdefault(pre, [0.0, 0])
                s[0] += r[i]
                s[1] += 1
                if k < len(toks[i]):
                    children.setdefault(pre, set()).add(toks[i][k])
        val = {p: s[0] / s[1] for p, s in sums.items()}
        for i in rows:
            for k, t in enumerate(pos[i]):
                pre = tuple(toks[i][:k])
                if len(children.get(pre, ())) > 1:
                    out[i, t] += beta * (val[pre + (toks[i][k],)] - val[pre])
    return out * mask


def multi_turn_advantages(masks: list[torch.Tensor], episodes: list[list[int]], adv: torch.Tensor,
                          turn_rewards: list[list[float]] | None = None, *, weight: float = 0.0) -> list[torch.Tensor]:
    """Multi-turn GRPO token advantages (WebAgent-R1, arXiv 2505.16421), with an optional per-turn term.

    An episode's policy tokens are spread over several generations, one per turn.
    Generation ``k`` is a chunk whose ``(B_k, T_k)`` response mask is ``masks[k]`` and
    whose row ``b`` belongs to episode ``episodes[k][b]``. Chunks are in generation
    order, so the n-th chunk holding episode ``u`` is u's n-th turn. Every policy
    token of episode ``u``, in every turn, gets the episode's advantage ``adv[u]``;
    with ``weight`` (IGPO-style turn rewards) the tokens of u's turn ``t`` also get
    ``weight * turn_rewards[u][t]`` (0 for turns beyond that list).

    Args:
        masks: ``[(B_k, T_k)]`` response masks. episodes: ``[[u, ...]]``, ``B_k`` ids each.
        adv: ``(N,)`` episode advantages (e.g. :func:`group_advantages`).
        turn_rewards: ``N`` lists of per-turn rewards (needed when ``weight`` is not 0).
    Returns:
        ``[(B_k, T_k)]`` float32 token advantages, 0 off-mask.
    """
    if len(masks) != len(episodes):
        raise ValueError(f"{len(masks)} masks but {len(episodes)} episode-id lists")
    if weight and turn_rewards is None:
        raise ValueError("weight != 0 needs turn_rewards")
    turn_of = [0] * adv.shape[0]
    out = []
    for mask, uids in zip(masks, episodes):
        if mask.shape[0] != len(uids):
            raise ValueError(f"a chunk has {mask.shape[0]} rows but {len(uids)} episode ids")
        a = adv[torch.as_tensor(list(uids), dtype=torch.long)].to(torch.float32)
        if weight:
            bonus = [turn_rewards[u][turn_of[u]] if turn_of[u] < len(turn_rewards[u]) else 0.0 for u in uids]
            a = a + weight * torch.tensor(bonus, dtype=torch.float32)
        for u in uids:
            turn_of[u] += 1
        out.append(broadcast(a, mask))
    return out


class RunningMoments:
    """Running mean and standard deviation of scalar scores (Chan et al. parallel update).

    PPO's reward whitening divides scores by a *running* std (and removes the running
    mean) so that the critic regresses targets of a stable, unit scale across the run;
    per-batch statistics would move the targets under it every step. State is three
    floats (:meth:`state_dict`), saved in checkpoints.
    """

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 0.0

    def update(self, x: torch.Tensor) -> tuple[float, float]:
        """Fold the ``(N,)`` scores ``x`` in; returns the new ``(mean, std)``."""
        x = x.detach().to(torch.float64).flatten()
        n = float(x.numel())
        if n == 0:
            return self.mean, self.std
        b_mean, b_var = float(x.mean()), float(x.var(unbiased=False))
        tot = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta ** 2 * self.count * n / tot
        self.mean, self.var, self.count = self.mean + delta * n / tot, m2 / tot, tot
        return self.mean, self.std

    @property
    def std(self) -> float:
        return float(self.var) ** 0.5

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, d: dict) -> None:
        self.mean, self.var, self.count = float(d["mean"]), float(d["var"]), float(d["count"])


def whiten_token_rewards(rewards: torch.Tensor, mask: torch.Tensor, mean: float, std: float, *,
                         eps: float = 1e-4) -> torch.Tensor:
    """Whiten rewards whose per-sequence sum is the score: ``(B, T) -> (B, T)``.

    Every token reward is divided by ``std``, and ``mean / std`` is taken off the last
    response token, so the whitened score ``sum_t r'_t = (sum_t r_t - mean) / std``.
    A sequence reward placed at EOS becomes ``(R - mean) / std``; dense token rewards keep
    their shape along the sequence. 0 off-mask. Example: r = [0, 0, 3] (EOS last),
    mean 1, std 2 -> [0, 0, 1].
    """
    from .rewards import place_at_eos

    m = mask.to(torch.float32)
    s = max(float(std), eps)
    has = (m.sum(-1) > 0).to(torch.float32)
    return (rewards.float() * m - place_at_eos(torch.full_like(has, float(mean)) * has, m)) / s
