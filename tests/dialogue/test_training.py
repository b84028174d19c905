"""Multi-turn GRPO advantages (hand values), a GRPO smoke step, the train pipeline end to end."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from medkit.dialogue.grpo import (
    DialogueGRPOConfig,
    episode_reward,
    train_dialogue_grpo,
    turn_advantages,
)


def _chunk(rows, T=4, n_resp=2, ent=0.0):
    resp = torch.zeros(rows, T)
    resp[:, T - n_resp:] = 1
    return SimpleNamespace(response_mask=resp, entropies=torch.full((rows, T), ent) * resp)


def test_every_doctor_token_of_every_turn_gets_its_episode_advantage():
    from medkit.rl.advantages import group_advantages

    # one group of 2 episodes, rewards [1, 0]: mean .5, unbiased std .7071 -> A = [+.7070, -.7070]
    adv = group_advantages(torch.tensor([1.0, 0.0]), 2)
    assert adv.tolist() == pytest.approx([0.5 / (0.5 ** 0.5 + 1e-4), -0.5 / (0.5 ** 0.5 + 1e-4)])
    # turn 1: both episodes act; turn 2: only episode 1 (episode 0 already diagnosed)
    chunks = [(_chunk(2), [0, 1]), (_chunk(1), [1])]
    cfg = DialogueGRPOConfig()
    parts = turn_advantages(chunks, adv, [[0.1], [0.2, 0.3]], cfg)
    (_, m1, a1), (_, m2, a2) = parts
    assert torch.equal(a1[0], adv[0] * m1[0]) and torch.equal(a1[1], adv[1] * m1[1])
    assert torch.equal(a2[0], adv[1] * m2[0])
    assert (a1[:, :2] == 0).all() and (a2[:, :2] == 0).all()       # prompt tokens get nothing
    # IGPO-style turn term: turn t of episode u adds w * gain[u][t]
    cfg.info_gain_weight = 2.0
    parts = turn_advantages(chunks, adv, [[0.1], [0.2, 0.3]], cfg)
    assert parts[0][2][0, -1] == pytest.approx(float(adv[0]) + 0.2)
    assert parts[1][2][0, -1] == pytest.approx(float(adv[1]) + 0.6)  # episode 1's second turn
    # DeepPlanner shaping never flips a negative advantage: A' <= A (1 - 1/kappa) < 0
    cfg.info_gain_weight, cfg.entropy_alpha = 0.0, 10.0
    parts = turn_advantages([(_chunk(2, ent=5.0), [0, 1])], adv, [[0.1], [0.2]], cfg)
    a = parts[0][2]
    assert a[0, -1] == pytest.approx(float(adv[0]) * 1.5) and a[1, -1] == pytest.approx(float(adv[1]) * 0.5)


def test_episode_rewards():
    rec = {"success": True, "diagnosed": True, "exam_f1": 0.5}
    assert episode_reward(rec) == 1.0
    assert episode_reward(rec, "diaggym") == pytest.approx(0.1 + 1.0 + 0.25)
    assert episode_reward({**rec, "success": False, "diagnosed": False}, "diaggym") == pytest.approx(0.25)
    with pytest.raises(ValueError):
        episode_reward(rec, "vibes")


def test_grpo_smoke_changes_only_the_adapter(tmp_path, cases, kb, monkeypatch):
    import itertools

    import medkit.dialogue.grpo as grpo_mod
    from medkit.dialogue.policy import build_vocab, kb_texts, word_tokenizer
    from medkit.lm import add_lora, tiny_causal_lm

    tok = word_tokenizer(build_vocab(kb_texts(kb)))
    model, tok = tiny_causal_lm(tok, layers=1, hidden=32, heads=2)
    model = add_lora(model, {"r": 4, "target_modules": ["q_proj", "v_proj"]})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # a random policy fails every episode (equal rewards -> A = 0); give the episodes distinct rewards
    counter = itertools.count()
    monkeypatch.setattr(grpo_mod, "episode_reward", lambda rec, kind: float(next(counter) % 2))
    cfg = DialogueGRPOConfig(out_dir=str(tmp_path), steps=1, cases_per_step=2, group_size=2, max_new_tokens=6,
                             max_turns=2, lr=1e-2, reward="diaggym", entropy_alpha=0.1)
    row = train_dialogue_grpo(model, tok, cases[:4], kb, cfg)
    assert math.isfinite(row["loss"]) and row["doctor_tokens"] > 0
    now = dict(model.named_parameters())
    trainable = [n for n, p in now.items() if p.requires_grad]
    assert all(torch.equal(before[n], p) for n, p in now.items() if not p.requires_grad)
    logged = [json.loads(x) for x in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["step"] == 1 and row["adv_abs"] > 0
    assert any(not torch.equal(before[n], now[n]) for n in trainable), "no adapter weight changed"


def test_grpo_resume_continues_the_step_counter_and_matches_an_uninterrupted_run(tmp_path, cases, kb):
    from medkit.dialogue.policy import build_vocab, kb_texts, word_tokenizer
    from medkit.lm import add_lora, tiny_causal_lm
    from medkit.lm.lora import trainable_state_dict

    tok0 = word_tokenizer(build_vocab(kb_texts(kb)))

    def fresh():
        model, tok = tiny_causal_lm(tok0, layers=1, hidden=32, heads=2, seed=0)
        return add_lora(model, {"r": 4, "target_modules": ["q_proj", "v_proj"]}), tok

    def cfg(out, steps):
        # diaggym reward: 0.1 * finished + 0.5 * exam F1 differs between episodes even when all fail
        return DialogueGRPOConfig(out_dir=str(out), steps=steps, cases_per_step=2, group_size=2, max_new_tokens=6,
                                  max_turns=2, lr=1e-2, reward="diaggym", temperature=1.5)

    m_a, tok = fresh()
    train_dialogue_grpo(m_a, tok, cases[:6], kb, cfg(tmp_path / "a", 3))
    m_b, _ = fresh()
    train_dialogue_grpo(m_b, tok, cases[:6], kb, cfg(tmp_path / "b", 2))     # "killed" after step 2
    # a killed run may have logged a step whose checkpoint never landed: resume must drop it
    log_b = tmp_path / "b" / "logs" / "metrics.jsonl"
    log_b.write_text(log_b.read_text() + json.dumps({"step": 3, "loss": 0.0}) + "\n")
    m_b2, _ = fresh()                                                         # a new process: fresh weights
    row = train_dialogue_grpo(m_b2, tok, cases[:6], kb, cfg(tmp_path / "b", 3))
    steps = [json.loads(x)["step"] for x in log_b.read_text().splitlines()]
    assert row["step"] == 3 and steps == [1, 2, 3]
    # restored adapter, optimizer and RNGs: same weights as the uninterrupted 3-step run
    a, b = trainable_state_dict(m_a), trainable_state_dict(m_b2)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(not torch.allclose(a[k], trainable_state_dict(fresh()[0])[k]) for k in a)   # it did train
