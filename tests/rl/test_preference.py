"""Preference models, SNGP uncertainty and the judge router."""

from __future__ import annotations

import torch

from medkit.rl import (
    PairwiseSNGP,
    bradley_terry_loss,
    preference_advantages,
    route,
    routed_preferences,
    score_all_pairs,
    train_pairwise,
)


def test_bt_loss_hand():
    # -log sigmoid(0) = log 2 = .6931
    assert abs(float(bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0]))) - 0.6931) < 1e-4


def test_preference_advantages_hand():
    p = torch.tensor([[0.0, 0.6, -0.2], [-0.6, 0.0, 0.4], [0.2, -0.4, 0.0]])
    # A0 = (.6 - .2)/2 = .2 ; A1 = (-.6 + .4)/2 = -.1 ; A2 = (.2 - .4)/2 = -.1
    assert torch.allclose(preference_advantages(p), torch.tensor([0.2, -0.1, -0.1]))


def test_route_topk_threshold_random_and_replacement():
    u = torch.tensor([[0.0, 2.0, 0.1], [2.0, 0.0, 1.5], [0.1, 1.5, 0.0]])
    sel = route(u, tau=1.4)  # pairs (0,1) u=2 and (1,2) u=1.5 exceed 1.4
    assert sel[0, 1] and sel[1, 0] and sel[1, 2] and not sel[0, 2]
    sel1 = route(u, budget=1)
    assert sel1.sum() == 2 and sel1[0, 1]
    g = torch.Generator().manual_seed(0)
    assert route(u, budget=2, mode="random", generator=g).sum() == 4
    p = torch.zeros(3, 3)
    calls = []

    def judge(i, j):
        calls.append((i, j))
        return None if (i, j) == (1, 2) else -1.0

    out, n_j, n_f = routed_preferences(p, sel, judge)
    assert (n_j, n_f) == (2, 1) and sorted(calls) == [(0, 1), (1, 2)]
    assert out[0, 1] == -1.0 and out[1, 0] == 1.0 and out[1, 2] == 0.0  # failure keeps the model's value


def test_sngp_learns_and_is_uncertain_off_distribution():
    torch.manual_seed(0)
    # truth: the response with the larger first feature wins; train features in [-1, 1]
    x = torch.rand(200, 4) * 2 - 1
    xi, xj = x[:100], x[100:]
    y = (xi[:, 0] > xj[:, 0]).float()
    model = PairwiseSNGP(4, hidden=32, n_rff=128)
    curve = train_pairwise(model, xi, xj, y, epochs=150)
    assert curve[-1] < 0.5 * curve[0]
    xt = torch.rand(50, 4) * 2 - 1
    p, u = score_all_pairs(model, xt)
    truth = torch.sign(xt[:, 0][:, None] - xt[:, 0][None, :])
    off = ~torch.eye(50, dtype=torch.bool)
    acc = ((torch.sign(p) == truth) & off).sum() / off.sum()
    assert acc > 0.8
    assert torch.allclose(p, -p.T) and torch.allclose(u, u.T)
    # far outside the training box the GP variance is larger
    _, u_far = score_all_pairs(model, torch.randn(50, 4) * 20)
    assert u_far[off].mean() > u[off].mean()


def test_route_batch_shares_one_budget():
    from medkit.rl import route_batch

    u1 = torch.tensor([[0.0, 0.9], [0.9, 0.0]])
    u2 = torch.tensor([[0.0, 0.5, 0.8], [0.5, 0.0, 0.1], [0.8, 0.1, 0.0]])
    m1, m2 = route_batch([u1, u2], 2)   # the two most uncertain pairs overall: u=.9 (prompt 1), .8 (prompt 2)
    assert m1[0, 1] and m1[1, 0] and m2[0, 2] and m2[2, 0] and int(m2.sum()) == 2
    r = route_batch([u1, u2], 3, mode="random", generator=torch.Generator().manual_seed(0))
    assert sum(int(x.sum()) for x in r) == 6


def test_ensemble_learns_and_disagrees_off_distribution():
    from medkit.rl import PairwiseEnsemble

    torch.manual_seed(0)
    x = torch.rand(200, 4) * 2 - 1
    xi, xj = x[:100], x[100:]
    y = (xi[:, 0] > xj[:, 0]).float()
    model = PairwiseEnsemble(4, hidden=16, members=4, seed=0)
    curve = train_pairwise(model, xi, xj, y, epochs=150)
    assert curve[-1] < 0.5 * curve[0]
    xt = torch.rand(40, 4) * 2 - 1
    p, u = score_all_pairs(model, xt)
    truth = torch.sign(xt[:, 0][:, None] - xt[:, 0][None, :])
    off = ~torch.eye(40, dtype=torch.bool)
    assert ((torch.sign(p) == truth) & off).sum() / off.sum() > 0.8
    _, u_far = score_all_pairs(model, torch.randn(40, 4) * 20)
    assert u_far[off].mean() > u[off].mean()      # members extrapolate differently far away
