"""Token-level reward model from minimal edits (arXiv 2406.02756)."""

from __future__ import annotations

import torch

from medkit.rl import TokenRewardModel, build_edit_batch, edit_labels, token_rewards, train_token_rm


def test_edit_labels_diff():
    assert edit_labels([1, 2, 3], [1, 9, 3]) == ([0.0, -1.0, 0.0], [0.0, 1.0, 0.0])       # replace
    assert edit_labels([1, 2, 3], [1, 3]) == ([0.0, -1.0, 0.0], [0.0, 0.0])             # delete
    assert edit_labels([1, 3], [1, 2, 3]) == ([0.0, 0.0], [0.0, 1.0, 0.0])              # insert


def test_token_rm_learns_toy_edits():
    from medkit.lm import tiny_causal_lm

    torch.manual_seed(0)
    lm, tok = tiny_causal_lm(hidden=32, layers=1)
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"q{i}"}], tokenize=False,
                                       add_generation_prompt=True) for i in range(6)]
    # the "bad" token is the letter x; annotators replace it with y
    orig = ["ab x cd", "x ab", "cd x", "ab cd x", "x x ab", "cd ab x"]
    edit = [o.replace("x", "y") for o in orig]
    model = TokenRewardModel(lm.model, 32)
    batch = build_edit_batch(tok, prompts, orig, edit)
    ids, attn, resp, labels = batch
    assert (labels[resp == 0] == 0).all() and (labels < 0).any() and (labels > 0).any()
    curve = train_token_rm(model, batch, steps=150, lr=1e-2)
    assert curve[-1] < 0.3 * curve[0]
    r = token_rewards(model, ids, attn, resp)
    xid, yid = tok.convert_tokens_to_ids("x"), tok.convert_tokens_to_ids("y")
    assert r[ids == xid].mean() < -0.5 and r[ids == yid].mean() > 0.5
    assert (r[resp == 0] == 0).all()  # only response tokens get rewards


def test_reward_callables_and_sequence_rm():
    """TokenRewardFn gives (B, T) dense rewards or their (B,) sums; the Bradley-Terry sequence RM
    learns to prefer the edits on the same pairs."""
    from types import SimpleNamespace

    from medkit.lm import tiny_causal_lm
    from medkit.rl import SequenceRewardFn, SequenceRewardModel, TokenRewardFn, train_sequence_rm

    torch.manual_seed(0)
    lm, tok = tiny_causal_lm(hidden=32, layers=1)
    prompts = [f"q{i} a:" for i in range(6)]
    orig = ["ab x cd", "x ab", "cd x", "ab cd x", "x x ab", "cd ab x"]
    batch = build_edit_batch(tok, prompts, orig, [o.replace("x", "y") for o in orig])
    ids, attn, resp, _ = batch
    roll = SimpleNamespace(sequences=ids, attention_mask=attn, response_mask=resp)
    trm = TokenRewardModel(lm.model, 32)
    dense, summed = TokenRewardFn(trm)(None, None, rollout=roll), TokenRewardFn(trm, dense=False)(None, None, rollout=roll)
    assert dense.shape == ids.shape and summed.shape == (ids.shape[0],)
    assert torch.allclose(dense.sum(-1), summed) and (dense[resp == 0] == 0).all()
    body, _ = tiny_causal_lm(hidden=32, layers=1, seed=1)
    srm = SequenceRewardModel(body.model, 32)
    curve = train_sequence_rm(srm, batch, steps=100, lr=1e-2)
    assert curve[-1] < 0.2 * curve[0]
    r = SequenceRewardFn(srm)(None, None, rollout=roll)
    assert (r[6:] > r[:6]).all()          # every edit scores above its original
