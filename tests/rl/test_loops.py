"""Smoke tests of the SFT / GRPO / PPO loops on a tiny random-init LM (TRL habit)."""

from __future__ import annotations

import json
import math

import torch

from medkit.lm import chat_prompt, tiny_causal_lm
from medkit.rl import (
    GRPOConfig,
    PPOConfig,
    SelfReward,
    SFTConfig,
    exact_answer_reward,
    sft,
    train_grpo,
    train_ppo,
)


def _snap(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(before, model):
    now = dict(model.named_parameters())
    tr = [n for n, p in now.items() if p.requires_grad]
    fr = [n for n, p in now.items() if not p.requires_grad]
    assert tr and fr
    assert any(not torch.equal(before[n], now[n]) for n in tr), "no trainable parameter changed"
    assert all(torch.equal(before[n], now[n]) for n in fr), "a frozen parameter changed"


def test_sft_trains_checkpoints_and_resumes(tmp_path):
    model, tok = tiny_causal_lm(lora={"r": 4})
    prompts = [chat_prompt(tok, f"q {i}") for i in range(4)]
    resp = ["yes", "no", "yes", "no"]
    before = _snap(model)
    cfg = SFTConfig(out_dir=str(tmp_path), steps=3, batch_size=2, lr=1e-2, device="cpu", save_every=2)
    out = sft(model, tok, prompts, resp, cfg)
    assert math.isfinite(out["loss"]) and out["step"] == 3
    _changed(before, model)
    # reload into a fresh model: same trainable weights -> same logits
    fresh, _ = tiny_causal_lm(lora={"r": 4})
    from medkit.rl.common import load_checkpoint

    state = load_checkpoint(tmp_path, fresh)
    assert state["step"] == 3 and state["config"]["steps"] == 3
    x = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(fresh(x).logits, model(x).logits, atol=1e-6)
    # resume continues the step counter up to the new target
    cfg.steps, cfg.resume = 5, True
    assert sft(fresh, tok, prompts, resp, cfg)["step"] == 5
    steps = [r["step"] for r in map(json.loads, (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines())]
    assert steps == [1, 2, 3, 4, 5]


def test_grpo_smoke_and_resume(tmp_path):
    torch.manual_seed(0)
    model, tok = tiny_causal_lm(lora={"r": 4})
    prompts = [chat_prompt(tok, "say a"), chat_prompt(tok, "say b")]

    def reward(prompts, completions, rollout=None, **kw):  # reward the letter a, random LM varies
        return [float(c.count("a")) for c in completions]

    before = _snap(model)
    cfg = GRPOConfig(out_dir=str(tmp_path), steps=2, prompts_per_step=2, group_size=3, max_new_tokens=6,
                     lr=1e-2, beta=0.1, entropy_alpha=0.1, device="cpu")
    row = train_grpo(model, tok, prompts, [reward], cfg)
    assert math.isfinite(row["loss"]) and row["step"] == 2
    _changed(before, model)
    cfg.steps, cfg.advantage, cfg.resume = 3, "tempo", True
    assert train_grpo(model, tok, prompts, [reward], cfg)["step"] == 3


def test_self_rewarding_ppo_smoke(tmp_path):
    import copy

    torch.manual_seed(0)
    model, tok = tiny_causal_lm(lora={"r": 4}, value_head=True)
    prompts = [chat_prompt(tok, f"case {i}") for i in range(4)]
    sft(model, tok, prompts, ["flu"] * 4, SFTConfig(out_dir=str(tmp_path / "sft"), steps=2, batch_size=2,
                                                    lr=1e-2, device="cpu"))
    judge = SelfReward(copy.deepcopy(model))
    exact = exact_answer_reward(["flu"] * 4)
    before = _snap(model)
    cfg = PPOConfig(out_dir=str(tmp_path / "ppo"), steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=1,
                    max_new_tokens=5, lr=1e-2, device="cpu")
    row = train_ppo(model, tok, prompts, [judge, lambda p, c, rollout=None, answer=None: exact(p, c)], cfg,
                    prompt_kw=[{"answer": "flu"}] * 4)
    assert math.isfinite(row["policy_loss"]) and math.isfinite(row["value_loss"])
    _changed(before, model)
    assert model.value_head.weight.abs().sum() > 0  # the critic trained (it starts at zero)


def test_loop_checkpoint_refuses_a_pickle(tmp_path):
    """rl checkpoints go through medkit.runs (weights_only): a planted pickle is refused, never run."""
    import pickle

    import pytest

    from medkit.io.errors import MedkitInputError
    from medkit.rl.common import load_checkpoint

    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(pickle.dumps({"step": 1, "x": Boom()}))
    model, _ = tiny_causal_lm(lora={"r": 4})
    with pytest.raises(MedkitInputError, match="last.pt"):
        load_checkpoint(tmp_path, model)
    assert not (tmp_path / "pwned").exists()
