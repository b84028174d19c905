"""multi_turn_advantages: hand-computed token advantages across turns."""

from __future__ import annotations

import pytest
import torch

from medkit.rl.advantages import multi_turn_advantages


def _mask(rows, T, n_resp):
    m = torch.zeros(rows, T)
    m[:, T - n_resp:] = 1
    return m


def test_every_turn_gets_the_episode_advantage_plus_its_turn_reward():
    # turn 1: episodes 0 and 1 act (T=4, 2 response tokens); turn 2: only episode 1 (T=3, 1 token)
    masks, eps = [_mask(2, 4, 2), _mask(1, 3, 1)], [[0, 1], [1]]
    adv = torch.tensor([0.5, -1.0])
    a1, a2 = multi_turn_advantages(masks, eps, adv)
    assert a1.tolist() == [[0, 0, 0.5, 0.5], [0, 0, -1.0, -1.0]] and a2.tolist() == [[0, 0, -1.0]]
    # weight 2, turn rewards [[0.2], [0.1, 0.3]]:
    #   ep 0 turn 1: 0.5 + 2 * 0.2 = 0.9;  ep 1 turn 1: -1 + 2 * 0.1 = -0.8;  ep 1 turn 2: -1 + 2 * 0.3 = -0.4
    a1, a2 = multi_turn_advantages(masks, eps, adv, [[0.2], [0.1, 0.3]], weight=2.0)
    assert torch.allclose(a1[:, 2:], torch.tensor([[0.9, 0.9], [-0.8, -0.8]])) and a2[0, 2] == pytest.approx(-0.4)
    assert (a1[:, :2] == 0).all() and (a2[:, :2] == 0).all()         # prompt tokens get nothing
    # a turn beyond the reward list adds 0: ep 1 turn 2 -> -1 + 0 = -1
    _, a2 = multi_turn_advantages(masks, eps, adv, [[0.2], [0.1]], weight=2.0)
    assert a2[0, 2] == pytest.approx(-1.0)


def test_mismatched_inputs_are_errors():
    with pytest.raises(ValueError, match="episode ids"):
        multi_turn_advantages([_mask(2, 3, 1)], [[0]], torch.zeros(2))
    with pytest.raises(ValueError, match="turn_rewards"):
        multi_turn_advantages([_mask(1, 3, 1)], [[0]], torch.zeros(1), weight=1.0)
    with pytest.raises(ValueError, match="masks"):
        multi_turn_advantages([_mask(1, 3, 1)], [], torch.zeros(1))


def test_running_moments_match_numpy():
    import numpy as np

    from medkit.rl.advantages import RunningMoments

    rm = RunningMoments()
    xs = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0]), torch.tensor([-4.0, 0.5])]
    for x in xs:
        mean, std = rm.update(x)
    allx = np.concatenate([x.numpy() for x in xs])
    assert abs(mean - allx.mean()) < 1e-9 and abs(std - allx.std()) < 1e-9
    rm2 = RunningMoments()
    rm2.load_state_dict(rm.state_dict())
    assert rm2.update(torch.tensor([]))[0] == mean


def test_whiten_token_rewards_scales_tokens_and_shifts_the_score():
    from medkit.rl.advantages import whiten_token_rewards

    # row 0: sequence reward 3 at EOS; mean 1, std 2 -> (3 - 1) / 2 = 1 at EOS
    # row 1: dense rewards [1, 1, 1] -> [0.5, 0.5, 0.5 - 0.5] (score (3 - 1) / 2 = 1 too)
    # row 2: no response token -> all 0
    r = torch.tensor([[0.0, 0.0, 0.0, 3.0], [0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    m = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]])
    out = whiten_token_rewards(r, m, 1.0, 2.0)
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]]))
