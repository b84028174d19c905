"""Rule-based rewards, None handling, the generative-judge parser and Think-RM advantages."""

from __future__ import annotations

import pytest
import torch

from medkit.rl import (
    combine_rewards,
    exact_answer_reward,
    format_reward,
    parse_judgement,
    think_rm_advantages,
)


def test_exact_answer_and_format():
    fn = exact_answer_reward(["Pneumonia", None, "Asthma"], pattern=r"<answer>(.*?)</answer>")
    out = fn(None, ["<answer>pneumonia</answer>", "<answer>x</answer>", "no tags"])
    assert out == [1.0, None, 0.0]
    fmt = format_reward()
    assert fmt(None, ["<answer>a</answer>", "text <answer>a</answer>"]) == [1.0, 0.0]


def test_combine_rewards_excludes_none():
    # row0: (1 + 0)/2 = .5 ; row1: only fn2 applies -> 1 ; row2: none applies -> invalid
    r, v = combine_rewards([[1.0, None, None], [0.0, 1.0, None]])
    assert torch.allclose(r, torch.tensor([0.5, 1.0, 0.0])) and v.tolist() == [True, True, False]


def test_parse_judgement():
    assert parse_judgement("thinking... <answer>A</answer>") == 1.0
    assert parse_judgement("<answer>A</answer> wait, no <answer>B</answer>") == -1.0  # last one counts
    assert parse_judgement("I pick A") is None
    assert parse_judgement("<answer>C</answer>") is None
    assert parse_judgement("<answer>-3</answer>", "score") == -1.0
    assert parse_judgement("<answer>2</answer>", "score") == pytest.approx(2 / 3)
    assert parse_judgement("<answer>5</answer>", "score") is None
    assert parse_judgement("<answer>two</answer>", "score") is None


def test_think_rm_advantages_hand_numbers():
    # r = [1, 0, 0] -> d_ij = r_i - r_j ; mean_j: A0 = (1+1)/2 = 1, A1 = A2 = (-1+0)/2 = -.5
    # sum d^2 = 4, 2G(G-1) = 12 -> scale sqrt(1/3) = .57735 -> [1.7321, -.8660, -.8660]
    r = torch.tensor([1.0, 0.0, 0.0])
    a = think_rm_advantages(r[:, None] - r[None, :], eps=0.0)
    assert torch.allclose(a, torch.tensor([1.7321, -0.8660, -0.8660]), atol=1e-4)


def test_generative_judge_counts_parse_failures():
    from medkit.lm import tiny_causal_lm
    from medkit.rl import GenerativeJudge

    model, tok = tiny_causal_lm()
    judge = GenerativeJudge(model, tok, max_new_tokens=4)
    out = judge.batch([("q", "a", "b"), ("q2", "a", "b")])  # random weights: gibberish, never a tag
    assert out == [None, None]
    assert judge.stats == {"calls": 2, "parse_failures": 2}


def test_strict_judgement_format():
    from medkit.rl import strict_judgement

    assert strict_judgement("A explains the cough. <answer>A</answer>") == 1.0
    assert strict_judgement("B fits.\n<answer>B</answer>\n") == -1.0
    assert strict_judgement("<answer>A</answer> because ...") is None          # text after the answer
    assert strict_judgement("<answer>A</answer> <answer>B</answer>") is None   # two answers
    assert strict_judgement("the answer is A") is None and strict_judgement("<answer>C</answer>") is None
