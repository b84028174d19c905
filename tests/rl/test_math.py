"""Advantages, losses and rewards against hand-worked numbers (arithmetic in comments)."""

from __future__ import annotations

import math

import pytest
import torch

from medkit.rl import (
    aggregate,
    entropy_shaped_advantages,
    gae,
    group_advantages,
    kl_estimate,
    place_at_eos,
    planning_upweight,
    policy_loss,
    rloo_advantages,
    self_reward,
    tempo_advantages,
    value_loss,
    whiten,
)


def test_gae_hand_numbers_and_padding():
    # T=3, token 0 is prompt. gamma=1, lam=0.5
    # t=2: delta = 1 + 0 - 0.8 = 0.2 -> A2 = 0.2 ; t=1: delta = 0 + 0.8 - 0.5 = 0.3 -> A1 = 0.3 + 0.5*0.2 = 0.4
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.0, 0.5, 0.8]])
    m = torch.tensor([[0, 1, 1]])
    a, ret = gae(r, v, m, gamma=1.0, lam=0.5)
    assert torch.allclose(a, torch.tensor([[0.0, 0.4, 0.2]]))
    assert torch.allclose(ret, torch.tensor([[0.0, 0.9, 1.0]]))
    # trailing padding with garbage values/rewards changes nothing; it gets 0
    a2, ret2 = gae(torch.tensor([[5.0, 0.0, 1.0, 7.0]]), torch.tensor([[3.0, 0.5, 0.8, 9.0]]),
                   torch.tensor([[0, 1, 1, 0]]), gamma=1.0, lam=0.5)
    assert torch.allclose(a2, torch.tensor([[0.0, 0.4, 0.2, 0.0]]))
    assert torch.allclose(ret2, torch.tensor([[0.0, 0.9, 1.0, 0.0]]))


def test_whiten_masked():
    # on-mask values 1, 3 -> mean 2, pop. std 1 -> -1, 1 ; off-mask 100 ignored and zeroed
    x = torch.tensor([[100.0, 1.0, 3.0]])
    out = whiten(x, torch.tensor([[0, 1, 1]]), eps=0.0)
    assert torch.allclose(out, torch.tensor([[0.0, -1.0, 1.0]]))


def test_group_advantages_scales_and_validity():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    # group 1: mean .5, centred [.5,-.5,-.5,.5], unbiased std sqrt(4*.25/3)=0.57735 -> +-0.8660
    a = group_advantages(r, 4, scale="group", eps=0.0)
    assert torch.allclose(a[:4], torch.tensor([0.8660, -0.8660, -0.8660, 0.8660]), atol=1e-4)
    # group 2: mean .75, centred [.25,.25,.25,-.75], std sqrt((3*.0625+.5625)/3)=0.5 -> [.5,.5,.5,-1.5]
    assert torch.allclose(a[4:], torch.tensor([0.5, 0.5, 0.5, -1.5]), atol=1e-4)
    assert torch.allclose(group_advantages(r, 4, scale="none"), torch.tensor([.5, -.5, -.5, .5, .25, .25, .25, -.75]))
    # batch std of the 8 rewards (5 ones, 3 zeros): sqrt(8*.625*.375/7) = 0.51755
    ab = group_advantages(r, 4, scale="batch", eps=0.0)
    assert abs(float(ab[0]) - 0.5 / 0.51755) < 1e-3
    # invalid reward (None -> excluded): group [1, 0, x, x] -> mean .5, std .7071 -> [.7071, -.7071, 0, 0]
    valid = torch.tensor([True, True, False, False])
    av = group_advantages(torch.tensor([1.0, 0.0, 9.0, 9.0]), 4, valid=valid, eps=0.0)
    assert torch.allclose(av, torch.tensor([0.7071, -0.7071, 0.0, 0.0]), atol=1e-4)


def test_rloo():
    # A_0 = 1 - (0+0+1)/3 = 0.6667 ; A_1 = 0 - (1+0+1)/3 = -0.6667
    a = rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4)
    assert torch.allclose(a, torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))


def test_entropy_shaping_ratio_never_flips_sign_power_can():
    adv = torch.tensor([[-2.0, 0.5, 0.3]])
    ent = torch.tensor([[10.0, 10.0, 10.0]])
    m = torch.tensor([[1, 1, 0]])
    # ratio: bonus = min(0.4*10, |A|/2) -> min(4, 1) = 1 -> -1 ; min(4, .25) = .25 -> .75 ; masked -> 0
    out = entropy_shaped_advantages(adv, ent, m, alpha=0.4, kappa=2.0)
    assert torch.allclose(out, torch.tensor([[-1.0, 0.75, 0.0]]))
    # power: min(4, 2**2=4) = 4 -> +2: the sign flips (why ratio is the default)
    outp = entropy_shaped_advantages(adv, ent, m, alpha=0.4, kappa=2.0, clip="power")
    assert torch.allclose(outp, torch.tensor([[2.0, 0.75, 0.0]]))
    # low entropy: bonus alpha*H = 0.4*0.1 = 0.04 < caps -> A + 0.04
    out2 = entropy_shaped_advantages(adv, torch.full_like(ent, 0.1), m, alpha=0.4, kappa=2.0)
    assert torch.allclose(out2, torch.tensor([[-1.96, 0.54, 0.0]]))


def test_planning_upweight():
    adv = torch.tensor([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    ent = torch.tensor([[2.0, 2.0], [0.1, 0.1], [3.0, 3.0]])
    m = torch.ones(3, 2)
    # intensities [2, .1, 3], median 2: only row 2 is above, but its A < 0 -> unchanged; nothing scaled
    assert torch.allclose(planning_upweight(adv, ent, m, beta=0.5), adv)
    # quantile 0.3 -> threshold between .1 and 2: row 0 (A > 0) scaled by 1.5
    out = planning_upweight(adv, ent, m, beta=0.5, quantile=0.3)
    assert torch.allclose(out[0], torch.tensor([1.5, 1.5])) and torch.allclose(out[1:], adv[1:])


def test_tempo_prefix_tree():
    # group of 2: responses [5, 6] (r=1) and [5, 7] (r=0); one prompt token (id 1) in front
    seq = torch.tensor([[1, 5, 6], [1, 5, 7]])
    m = torch.tensor([[0, 1, 1], [0, 1, 1]])
    # GRPO part (scale none): [.5, -.5]. Root has one child (5): no branch at k=0.
    # Node (5,) branches: V(5,6) - V(5,) = 1 - .5 = .5 ; V(5,7) - V(5,) = 0 - .5 = -.5
    a = tempo_advantages(seq, m, torch.tensor([1.0, 0.0]), 2)
    assert torch.allclose(a, torch.tensor([[0.0, 0.5, 1.0], [0.0, -0.5, -1.0]]))


def test_policy_loss_hand_numbers_and_mask():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 7.0]]))
    adv = torch.tensor([[1.0, -1.0, 5.0]])
    m = torch.tensor([[1, 1, 0]])  # third token is padding: must not count
    # tok1: min(1.5*1, 1.2*1) = 1.2 -> -1.2 ; tok2: min(.5*-1, .8*-1) = -.8 -> .8 ; mean = -0.2
    loss, st = policy_loss(new, old, adv, m, clip_eps=0.2)
    assert abs(float(loss) + 0.2) < 1e-6
    assert st["clipfrac"] == 1.0
    # asymmetric clip (clip-higher): hi 0.6 -> tok1 min(1.5, 1.6)=1.5 -> (-1.5 + .8)/2 = -0.35
    loss_hi, _ = policy_loss(new, old, adv, m, clip_eps=0.2, clip_eps_high=0.6)
    assert abs(float(loss_hi) + 0.35) < 1e-6


def test_aggregation_modes():
    lt = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert float(aggregate(lt, m, "token-mean")) == pytest.approx(2.0)          # (1+2+3)/3
    assert float(aggregate(lt, m, "sequence-mean-token-mean")) == pytest.approx(2.25)  # (1.5+3)/2
    assert float(aggregate(lt, m, "sequence-mean-token-sum-norm")) == pytest.approx(1.0)  # (3/3+3/3)/2
    with pytest.raises(ValueError):
        aggregate(lt, m, "mean")


def test_value_loss_clipped():
    # v=1, old=.5, R=0: unclipped 1 ; clipped v=.7 -> .49 ; max 1 -> 0.5 * 1 = 0.5
    vl = value_loss(torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([[0.0]]), torch.ones(1, 1), clip=0.2)
    assert float(vl) == pytest.approx(0.5)
    # v=.6 old=.5 R=1: unclipped .16, clipped .6 -> .16 ; 0.5*.16 = .08
    vl2 = value_loss(torch.tensor([[0.6]]), torch.tensor([[0.5]]), torch.tensor([[1.0]]), torch.ones(1, 1), clip=0.2)
    assert float(vl2) == pytest.approx(0.08)


def test_kl_estimators():
    # logp = 0, ref = log .5: d = ref - logp = -0.6931 ; k1 = 0.6931 ; k3 = e^d - d - 1 = .5 + .6931 - 1 = .1931
    lp, ref = torch.zeros(1, 1), torch.log(torch.tensor([[0.5]]))
    assert float(kl_estimate(lp, ref, "k1")) == pytest.approx(math.log(2), abs=1e-6)
    assert float(kl_estimate(lp, ref, "k3")) == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    assert float(kl_estimate(lp, lp, "k3")) == 0.0


def test_self_reward_and_eos_placement():
    sft = torch.tensor([[9.0, -1.0, -2.0, 4.0]])
    base = torch.tensor([[0.0, -2.0, -2.0, 0.0]])
    m = torch.tensor([[0, 1, 1, 0]])  # prompt token 0, padding token 3
    # (-1 - -2) + (-2 - -2) = 1 ; prompt/padding ignored
    r = self_reward(sft, base, m)
    assert torch.allclose(r, torch.tensor([1.0]))
    # reward lands on the last response token (index 2), nowhere else
    assert torch.allclose(place_at_eos(r, m), torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    # an empty response gets nothing
    assert float(place_at_eos(torch.tensor([3.0]), torch.zeros(1, 4)).abs().sum()) == 0.0
