"""Preference models and uncertainty routing (arXiv 2510.20369).

- :func:`bradley_terry_loss` / :class:`BTRewardModel`: scalar reward, ``P(i > j) = sigmoid(r_i - r_j)``.
- :class:`PairwiseSNGP`: pairwise preference with uncertainty, SNGP (Liu et al. 2020):
  spectral-normalised MLP body on the pair features ``[x_i, x_j, x_i - x_j]`` + a
  random-Fourier-feature GP output layer whose Laplace posterior covariance gives a
  predictive variance. ``s_ij = 2 sigmoid(logit) - 1`` in [-1, 1] (> 0: i preferred),
  ``u_ij`` = predictive std of the logit. The scale of ``u`` depends on the model, so
  ``tau = 1.4`` (public code) is a default, not a universal constant; with a judge
  budget the top-k rule needs no threshold.
- :class:`PairwiseEnsemble`: the other uncertainty the paper compares, a deep ensemble of
  pairwise MLPs; ``u_ij`` = the members' disagreement (std of their logits).
- :func:`route` / :func:`routed_preferences` / :func:`preference_advantages`: the router.

Shapes: ``n`` responses of one prompt; ``(n, n)`` pair matrices, row i column j.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """``-mean(log sigmoid(r_c - r_r))``, inputs ``(N,)``."""
    return -torch.nn.functional.logsigmoid(r_chosen - r_rejected).mean()


class BTRewardModel(nn.Module):
    """Scalar reward ``(N, F) -> (N,)`` from features with a small MLP (Bradley-Terry)."""

    def __init__(self, in_dim: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class PairwiseSNGP(nn.Module):
    """Pairwise preference with SNGP uncertainty: ``(x_i (N, F), x_j (N, F)) -> (logit, var)``, each ``(N,)``."""

    def __init__(self, in_dim: int, hidden: int = 64, n_rff: int = 256, lengthscale: float = 2.0,
                 ridge: float = 1.0, seed: int = 0):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.body = nn.Sequential(sn(nn.Linear(3 * in_dim, hidden)), nn.GELU(), sn(nn.Linear(hidden, hidden)), nn.GELU())
        self.skip = nn.Linear(3 * in_dim, hidden, bias=False)   # residual keeps distances (SNGP)
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("W", torch.randn(hidden, n_rff, generator=g) / lengthscale)
        self.register_buffer("b", torch.rand(n_rff, generator=g) * 2 * torch.pi)
        self.beta = nn.Linear(n_rff, 1)
        self.register_buffer("precision", torch.eye(n_rff) * ridge)
        self.register_buffer("cov", torch.eye(n_rff) / ridge)
        self.ridge = ridge

    def features(self, xi: torch.Tensor, xj: torch.Tensor) -> torch.Tensor:
        z = torch.cat([xi, xj, xi - xj], -1)
        h = self.body(z) + self.skip(z)
        return (2.0 / self.W.shape[1]) ** 0.5 * torch.cos(h @ self.W + self.b)

    def forward(self, xi: torch.Tensor, xj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        phi = self.features(xi, xj)
        logit = self.beta(phi).squeeze(-1)
        var = ((phi @ self.cov) * phi).sum(-1)
        return logit, var

    def pref_std(self, xi: torch.Tensor, xj: torch.Tensor) -> torch.Tensor:
        """``(N,)`` std of the preference ``s = 2 sigmoid(logit) - 1`` by the delta method,
        ``2 p (1 - p) std(logit)``. The Laplace precision weighs training pairs by ``p (1 - p)``,
        so the logit's variance stays large where the model is confident; on the preference
        scale that variance no longer counts where the sigmoid is flat."""
        logit, var = self(xi, xj)
        p = torch.sigmoid(logit)
        return 2 * p * (1 - p) * var.clamp(min=0).sqrt()

    @torch.no_grad()
    def fit_covariance(self, xi: torch.Tensor, xj: torch.Tensor) -> None:
        """Laplace posterior: precision = ridge I + sum_n p_n (1 - p_n) phi_n phi_n^T; cov = its inverse."""
        phi = self.features(xi, xj)
        p = torch.sigmoid(self.beta(phi).squeeze(-1))
        prec = self.ridge * torch.eye(phi.shape[1]) + (phi * (p * (1 - p))[:, None]).T @ phi
        self.precision.copy_(prec)
        self.cov.copy_(torch.linalg.inv(prec))


class PairwiseEnsemble(nn.Module):
    """Deep ensemble of ``members`` pairwise MLPs: ``(x_i, x_j) -> (mean logit, var of member logits)``,
    each ``(N,)``, the same interface as :class:`PairwiseSNGP` (so :func:`train_pairwise` and
    :func:`score_all_pairs` take either). Members differ by initialisation (Lakshminarayanan
    et al. 2017); trained together on one summed loss, which for disjoint parameters is
    training each on its own."""

    def __init__(self, in_dim: int, hidden: int = 64, members: int = 5, seed: int = 0):
        super().__init__()
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(seed)
            self.members = nn.ModuleList(
                nn.Sequential(nn.Linear(3 * in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                              nn.Linear(hidden, 1)) for _ in range(members))

    def member_logits(self, xi: torch.Tensor, xj: torch.Tensor) -> torch.Tensor:
        """``(M, N)`` logits of every member."""
        z = torch.cat([xi, xj, xi - xj], -1)
        return torch.stack([m(z).squeeze(-1) for m in self.members])

    def forward(self, xi: torch.Tensor, xj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lg = self.member_logits(xi, xj)
        return lg.mean(0), lg.var(0, unbiased=False)

    def pref_std(self, xi: torch.Tensor, xj: torch.Tensor) -> torch.Tensor:
        """``(N,)`` std over members of their preferences ``s = 2 sigmoid(logit) - 1``."""
        return (2 * torch.sigmoid(self.member_logits(xi, xj)) - 1).std(0, unbiased=False)

    def fit_covariance(self, xi: torch.Tensor, xj: torch.Tensor) -> None:
        """Nothing to fit after training (the ensemble's variance needs no posterior)."""


def train_pairwise(model: PairwiseSNGP | PairwiseEnsemble, xi: torch.Tensor, xj: torch.Tensor, y: torch.Tensor, *,
                   epochs: int = 200, lr: float = 1e-2, weight_decay: float = 1e-4) -> list[float]:
    """Fit on pairs ``(N, F), (N, F)`` with labels ``y (N,)`` in {0, 1} (1: i preferred).

    Both orders are used (i, j, y) and (j, i, 1 - y) so the model is near-antisymmetric;
    full-batch Adam, then the Laplace covariance. Returns the loss curve.
    """
    a, b = torch.cat([xi, xj]), torch.cat([xj, xi])
    t = torch.cat([y.float(), 1 - y.float()])
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    curve = []
    model.train()
    ens = isinstance(model, PairwiseEnsemble)
    for _ in range(epochs):
        if ens:  # each member fits the labels itself (the loss of the mean logit would couple them)
            lg = model.member_logits(a, b)
            loss = nn.functional.binary_cross_entropy_with_logits(lg, t.expand_as(lg), reduction="none").mean(1).sum()
        else:
            logit, _ = model(a, b)
            loss = nn.functional.binary_cross_entropy_with_logits(logit, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(float(loss.detach()))
    model.eval()
    model.fit_covariance(a, b)
    return curve


@torch.no_grad()
def score_all_pairs(model: PairwiseSNGP | PairwiseEnsemble, x: torch.Tensor, kind: str = "std") -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(n, F)`` -> symmetrised ``p (n, n)`` and ``u (n, n)``.

    ``s_ij = 2 sigmoid(logit_ij) - 1``; ``p_ij = (s_ij - s_ji) / 2`` (antisymmetric);
    ``u_ij = (std_ij + std_ji) / 2`` (symmetric). Diagonals are 0.
    ``kind="std"``: the predictive std of the logit: the GP's (SNGP, the paper's epistemic
    uncertainty) or the ensemble members' disagreement (:class:`PairwiseEnsemble`).
    ``kind="pref_std"``: the same std measured on the preference scale ``s`` (the models'
    ``pref_std``).
    ``kind="margin"``: total uncertainty ``1 - |2 sigmoid(logit / sqrt(1 + pi var / 8)) - 1|``
    (mean-field probability, SNGP's calibrated output), high near the decision boundary too.
    """
    n = x.shape[0]
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    logit, var = model(x[ii.flatten()], x[jj.flatten()])
    s = (2 * torch.sigmoid(logit) - 1).reshape(n, n)
    if kind == "std":
        sd = var.clamp(min=0).sqrt().reshape(n, n)
    elif kind == "pref_std":
        sd = model.pref_std(x[ii.flatten()], x[jj.flatten()]).reshape(n, n)
    elif kind == "margin":
        mf = torch.sigmoid(logit / torch.sqrt(1 + torch.pi * var.clamp(min=0) / 8))
        sd = (1 - (2 * mf - 1).abs()).reshape(n, n)
    else:
        raise ValueError(f"kind must be std / pref_std / margin, got {kind!r}")
    p = (s - s.T) / 2
    u = (sd + sd.T) / 2
    eye = torch.eye(n, dtype=torch.bool)
    return p.masked_fill(eye, 0.0), u.masked_fill(eye, 0.0)


def route(u: torch.Tensor, *, tau: float | None = 1.4, budget: int | None = None, mode: str = "uncertainty",
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose the unordered pairs (i < j) that go to the judge; ``(n, n)`` bool, symmetric.

    ``mode="uncertainty"``: with ``budget`` the ``budget`` most uncertain pairs, else all
    with ``u_ij > tau``. ``mode="random"``: ``budget`` pairs uniformly at random (the control;
    without a budget, as many as the threshold rule would send).
    """
    n = u.shape[0]
    iu = torch.triu_indices(n, n, offset=1)
    uu = u[iu[0], iu[1]]
    k = budget if budget is not None else int((uu > tau).sum())
    k = max(0, min(k, uu.numel()))
    if mode == "uncertainty":
        chosen = torch.topk(uu, k).indices if budget is not None else torch.nonzero(uu > tau).flatten()
    elif mode == "random":
        chosen = torch.randperm(uu.numel(), generator=generator)[:k]
    else:
        raise ValueError(f"mode must be uncertainty / random, got {mode!r}")
    sel = torch.zeros(n, n, dtype=torch.bool)
    sel[iu[0, chosen], iu[1, chosen]] = True
    return sel | sel.T


def route_batch(us: list[torch.Tensor], budget: int, *, mode: str = "uncertainty",
                generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Route with one judge budget shared by a batch of prompts (the budget of an RL step).

    ``us``: one ``(n_b, n_b)`` uncertainty matrix per prompt. The ``budget`` most uncertain
    unordered pairs over the whole batch (or ``budget`` uniformly random ones) are chosen,
    so hard prompts can take more judge calls than easy ones. Returns symmetric bool masks.
    """
    flat = []
    for b, u in enumerate(us):
        iu = torch.triu_indices(u.shape[0], u.shape[0], offset=1)
        flat += [(float(u[i, j]), b, int(i), int(j)) for i, j in zip(iu[0].tolist(), iu[1].tolist())]
    k = max(0, min(budget, len(flat)))
    if mode == "uncertainty":
        order = sorted(range(len(flat)), key=lambda q: -flat[q][0])[:k]
    elif mode == "random":
        order = torch.randperm(len(flat), generator=generator)[:k].tolist()
    else:
        raise ValueError(f"mode must be uncertainty / random, got {mode!r}")
    masks = [torch.zeros(u.shape, dtype=torch.bool) for u in us]
    for q in order:
        _, b, i, j = flat[q]
        masks[b][i, j] = masks[b][j, i] = True
    return masks


def routed_preferences(p: torch.Tensor, to_judge: torch.Tensor,
                       judge: Callable[[int, int], float | None]) -> tuple[torch.Tensor, int, int]:
    """Replace judged pairs: ``p_ij = judge(i, j)`` in [-1, 1], ``p_ji = -p_ij``.

    A judge that returns None (parse failure) leaves the preference model's value and
    is counted. Returns ``(p_final (n, n), n_judged, n_failed)``.
    """
    out = p.clone()
    n_j = n_f = 0
    for i, j in torch.nonzero(torch.triu(to_judge, 1)).tolist():
        v = judge(i, j)
        n_j += 1
        if v is None:
            n_f += 1
            continue
        out[i, j], out[j, i] = float(v), -float(v)
    return out, n_j, n_f


def preference_advantages(p: torch.Tensor) -> torch.Tensor:
    """``A_i = 1/(n-1) sum_{j != i} p_ij``, ``(n, n) -> (n,)`` (RLOO for a 0/1 verifier)."""
    n = p.shape[0]
    return (p * (1 - torch.eye(n, dtype=p.dtype))).sum(1) / (n - 1)
