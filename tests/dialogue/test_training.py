"""The constrained doctor's training: SFT fits, the decision log-probs RL differentiates, GRPO / SR-PPO steps."""

from __future__ import annotations

import json
import math

import pytest
import torch

from medkit.dialogue.grpo import (
    DialogueGRPOConfig,
    decision_advantages,
    episode_reward,
    train_dialogue_grpo,
    zero_advantage_share,
)


def _tiny(kb, hidden=32, seed=0):
    from medkit.dialogue.policy import build_vocab, kb_texts, word_tokenizer
    from medkit.lm import tiny_causal_lm

    tok = word_tokenizer(build_vocab(kb_texts(kb) + ["No, I don't think so. Yes, I have. year old male female"]))
    return tiny_causal_lm(tok, layers=1, hidden=hidden, heads=2, seed=seed)


def test_zero_advantage_share():
    # groups of 2: (1, 1) all equal, (0, 1) mixed, (0, 0) all equal -> 2 of 3
    assert zero_advantage_share(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0]), 2) == pytest.approx(2 / 3)


def test_decision_advantages_broadcast_gain_and_entropy_cap():
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    turns = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    ent = torch.tensor([[0.1, 3.0, 0.0], [3.0, 0.1, 0.0]])
    cfg = DialogueGRPOConfig()
    a, st = decision_advantages(adv, turns, ent, mask, [[0.5, 0.25], [0.0, 0.0]], cfg)
    assert a.tolist() == [[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]]              # every decision: its episode's A
    cfg.info_gain_weight = 2.0                                                # + w * gain of the decision's turn
    a, _ = decision_advantages(adv, turns, ent, mask, [[0.5, 0.25], [0.0, 0.0]], cfg)
    assert a[0].tolist() == pytest.approx([2.0, 2.0, 1.5])
    # DeepPlanner: A + min(alpha H, |A| / kappa); alpha .5, kappa 2: H = .1 -> +.05; H = 3 -> capped at +.5
    cfg.info_gain_weight, cfg.entropy_alpha, cfg.entropy_kappa = 0.0, 0.5, 2.0
    a, st = decision_advantages(adv, turns, ent, mask, [[0.0], [0.0]], cfg)
    assert a[0, :2].tolist() == pytest.approx([1.05, 1.5]) and a[1, :2].tolist() == pytest.approx([-0.5, -0.95])
    assert st["cap_binds"] == pytest.approx(2 / 5)                           # 2 of the 5 real decisions


def test_episode_rewards():
    rec = {"success": True, "diagnosed": True, "exam_f1": 0.5}
    assert episode_reward(rec) == 1.0
    assert episode_reward(rec, "diaggym") == pytest.approx(0.1 + 1.0 + 0.25)
    with pytest.raises(ValueError):
        episode_reward(rec, "vibes")


def test_sampled_logprobs_are_what_training_recomputes(kb, cases):
    """The policy RL differentiates is the one that sampled: same decisions, same log-probs."""
    from medkit.dialogue.episodes import decision_logprobs, sample_episodes

    model, tok = _tiny(kb)
    eps = sample_episodes(model, tok, cases[:3], kb, group_size=2, temperature=1.3, seed=0, max_turns=3)
    assert len(eps) == 6 and [e.group for e in eps] == [0, 0, 1, 1, 2, 2]
    lps = decision_logprobs(model, eps, tok.pad_token_id, temperature=1.3)
    for e, lp in zip(eps, lps):
        assert len(e.decisions) == len(lp) > 0
        assert lp.tolist() == pytest.approx([d.logprob for _, d in e.decisions], abs=1e-4)
        assert all(d.chosen in d.allowed and len(d.allowed) > 1 for _, d in e.decisions)
        assert e.record["format_errors"] == 0 and all(p is not None for p in e.record["predicted"])


def test_sft_fits_a_few_dialogues(kb, cases, tmp_path):
    from medkit.dialogue.data import demonstrations
    from medkit.dialogue.grammar import ActionGrammar
    from medkit.dialogue.oracle import OracleDoctor
    from medkit.dialogue.sft import SFTLoopConfig, replay_example, train_sft

    model, tok = _tiny(kb, hidden=64)
    rows, _ = demonstrations(cases[:4], kb, OracleDoctor(kb, confidence=False), max_turns=4)
    g = ActionGrammar(kb, tok)
    ex = [replay_example(c, kb, r["actions"], g, max_turns=4) for c, r in zip(cases[:4], rows)]
    assert all(sum(e["mask"]) > 0 and len(e["branches"]) == len(r["actions"]) for e, r in zip(ex, rows))
    res = train_sft(model, tok, ex, SFTLoopConfig(steps=150, batch_size=4, lr=1e-2, warmup=5, eval_every=150,
                                                  save_every=0), tmp_path, evals={"train": ex})
    first, last = res["curve"][0], res["curve"][-1]
    assert first["step"] == 0 and last["step"] == 150
    assert last["train_action"] >= 0.9 > first["train_action"]              # memorised the oracle's turns


def test_grpo_smoke_changes_only_the_adapter(tmp_path, cases, kb, monkeypatch):
    import itertools

    import medkit.dialogue.grpo as grpo_mod
    from medkit.lm import add_lora

    model, tok = _tiny(kb)
    model = add_lora(model, {"r": 4, "target_modules": ["q_proj", "v_proj"]})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # a random policy fails every episode (equal rewards -> A = 0); give the episodes distinct rewards
    counter = itertools.count()
    monkeypatch.setattr(grpo_mod, "episode_reward", lambda rec, kind: float(next(counter) % 2))
    cfg = DialogueGRPOConfig(out_dir=str(tmp_path), steps=1, cases_per_step=2, group_size=2, max_turns=2, lr=1e-2,
                             entropy_alpha=0.1, planning_upweight=0.5)
    row = train_dialogue_grpo(model, tok, cases[:4], kb, cfg)
    assert math.isfinite(row["loss"]) and row["decisions"] > 0 and row["zero_adv_groups"] == 0.0
    assert 0.0 <= row["cap_binds"] <= 1.0 and 0.0 <= row["planning_upweighted"] <= 1.0
    now = dict(model.named_parameters())
    trainable = [n for n, p in now.items() if p.requires_grad]
    assert all(torch.equal(before[n], p) for n, p in now.items() if not p.requires_grad)
    logged = [json.loads(x) for x in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert logged[0]["step"] == 1 and "zero_adv_groups" in logged[0] and "cap_binds" in logged[0]
    assert any(not torch.equal(before[n], now[n]) for n in trainable), "no adapter weight changed"


def test_grpo_resume_continues_the_step_counter_and_matches_an_uninterrupted_run(tmp_path, cases, kb, monkeypatch):
    import medkit.dialogue.grpo as grpo_mod
    from medkit.lm import add_lora
    from medkit.lm.lora import trainable_state_dict

    # an untrained policy fails every case; a deterministic reward that differs between episodes
    monkeypatch.setattr(grpo_mod, "episode_reward", lambda rec, kind: float(len(rec["differential"][0]) % 2))

    def fresh():
        model, tok = _tiny(kb)
        return add_lora(model, {"r": 4, "target_modules": ["q_proj", "v_proj"]}), tok

    def cfg(out, steps):
        return DialogueGRPOConfig(out_dir=str(out), steps=steps, cases_per_step=2, group_size=4, max_turns=2,
                                  lr=1e-2, temperature=1.5)

    m_a, tok = fresh()
    train_dialogue_grpo(m_a, tok, cases[:6], kb, cfg(tmp_path / "a", 3))
    m_b, _ = fresh()
    train_dialogue_grpo(m_b, tok, cases[:6], kb, cfg(tmp_path / "b", 2))     # "killed" after step 2
    log_b = tmp_path / "b" / "logs" / "metrics.jsonl"
    log_b.write_text(log_b.read_text() + json.dumps({"step": 3, "loss": 0.0}) + "\n")
    m_b2, _ = fresh()                                                         # a new process: fresh weights
    row = train_dialogue_grpo(m_b2, tok, cases[:6], kb, cfg(tmp_path / "b", 3))
    steps = [json.loads(x)["step"] for x in log_b.read_text().splitlines()]
    assert row["step"] == 3 and steps == [1, 2, 3]
    a, b = trainable_state_dict(m_a), trainable_state_dict(m_b2)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(not torch.allclose(a[k], trainable_state_dict(fresh()[0])[k]) for k in a)   # it did train


def test_srppo_step_rewards_and_critic(tmp_path, cases, kb):
    from medkit.dialogue.srppo import (
        DialogueSRPPOConfig,
        train_dialogue_srppo,
        turn_self_rewards,
        whiten,
    )
    from medkit.lm import add_lora

    assert turn_self_rewards([[-1.0, -2.0]], [[-5.0, -2.5]]) == [[4.0, 0.5]]
    w = whiten(torch.tensor([1.0, 2.0, 3.0]))
    assert float(w.mean()) == pytest.approx(0.0, abs=1e-6) and float(w.std()) == pytest.approx(1.0, abs=1e-4)
    sft, tok = _tiny(kb, seed=0)
    base, _ = _tiny(kb, seed=1)                     # a different "pretrained" model: non-zero self-rewards
    policy = add_lora(sft, {"r": 4, "target_modules": ["q_proj", "v_proj"]})
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    row = train_dialogue_srppo(policy, tok, base, cases[:6], kb,
                               DialogueSRPPOConfig(out_dir=str(tmp_path), steps=2, cases_per_step=3, max_turns=3,
                                                   lr=1e-2, kl_coef=0.1))
    assert row["step"] == 2 and math.isfinite(row["reward"]) and row["reward"] != 0.0
    assert math.isfinite(row["value_loss"]) and row["decisions"] > 0
    assert any(not torch.equal(before[n], p) for n, p in policy.named_parameters() if p.requires_grad)
