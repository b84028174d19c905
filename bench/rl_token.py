"""Token-level rewards from minimal edits in the PPO loop (arXiv 2406.02756) vs sequence rewards.

Task ("findings"): the prompt names a condition of the knowledge base (the conditions with at
least 6 typical findings, 63 of 71); the response lists K = 4 findings typical of it
(evidence ids; a finding is typical when P(e | c) >= 0.3).
Gold reward = (typical, not yet listed findings - other tokens) / K, in [-(K+1)/K, 1].

1. A tiny word-level LM is fine-tuned on noisy demonstrations (each listed finding typical
   with probability 0.5): a start that is half right.
2. An annotator (the knowledge base) minimally edits ``n_edits`` of its sampled responses:
   every wrong finding is replaced by a typical one not yet listed, extra words deleted.
3. On the same (original, edit) pairs: the token-level RM regresses the edit labels (-1 on
   replaced/deleted tokens, +1 on their replacements, 0 unchanged); the sequence-level RM is
   Bradley-Terry with the edit preferred.
4. PPO from the same start, same budget, one reward each: ``token`` (dense token rewards),
   ``sequence_bt`` (the sequence RM at EOS, the usual RLHF baseline), ``token_sum`` (the
   token RM's sum at EOS: same RM, sequence-level credit). Evaluated with the gold reward
   on every task prompt, sampled (16 per prompt) and greedy.

Budget: a learned reward is over-optimised after a while (the gold reward peaks, then falls
while the RM's reward keeps rising). Each arm's KL coefficient and number of PPO steps are
chosen on a tuning seed (100, not a test seed) where its gold reward, smoothed over 10
steps, peaks; the test seeds then run with that arm's choice.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.rl_data import word_tokenizer

K = 4
ARMS = ("token", "sequence_bt", "token_sum")
TUNE_SEED, TUNE_KL = 100, (0.1, 0.3)
DEFAULTS = {"K": K, "typical_p": 0.3, "min_typical": 6, "demo_correct": 0.5, "n_demos_per_condition": 40,
            "sft_steps": 3000, "sft_lr": 1e-2, "n_edits": 1500, "n_val_edits": 300, "rm_steps": 300, "rm_lr": 3e-3, "ppo_steps": 200,
            "batch_size": 32, "mini_batch_size": 16, "ppo_epochs": 2, "lr": 3e-3, "kl_coef": 0.1, "hidden": 64,
            "layers": 2, "n_eval_samples": 16}
LORA = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                      "down_proj", "lm_head"]}


def typical(kb, p_min: float) -> dict[str, list[str]]:
    return {c.id: sorted(e for e, p in c.likelihoods.items() if p >= p_min) for c in kb.conditions}


def task_conditions(kb, o: dict) -> list[str]:
    """The conditions of the task: those with at least ``min_typical`` typical findings (room for K)."""
    t = typical(kb, o["typical_p"])
    return [c for c in kb.condition_ids if len(t[c]) >= o["min_typical"]]


def gold_tokens(words: list[str], good: set[str]) -> list[float]:
    """Per word: +1 a typical finding not listed before, -1 anything else (wrong, repeated, extra)."""
    seen, out = set(), []
    for k, w in enumerate(words):
        ok = w in good and w not in seen and k < K
        out.append(1.0 if ok else -1.0)
        seen.add(w)
    return out


def gold(text: str, good: set[str]) -> float:
    return sum(gold_tokens(text.split(), good)) / K


def minimal_edit(text: str, good: set[str], rng: np.random.Generator) -> str:
    """The annotator: replace each wrong word by a typical unused finding, delete words beyond K."""
    words = text.split()[:K]
    used = {w for w, g in zip(words, gold_tokens(words, good)) if g > 0}
    spare = [e for e in sorted(good) if e not in used]
    rng.shuffle(spare)
    out = []
    for w, g in zip(words, gold_tokens(words, good)):
        out.append(w if g > 0 else (spare.pop() if spare else w))
    return " ".join(out)


def prompt_of(cid: str) -> str:
    return f"findings {cid} :"


def setup(kb, seed: int, o: dict):
    """Seed-determined start shared by the arms: the SFT policy, both reward models, their quality."""
    from medkit.lm import tiny_causal_lm
    from medkit.lm.generate import generate
    from medkit.rl import (
        SequenceRewardModel,
        SFTConfig,
        TokenRewardModel,
        build_edit_batch,
        sft,
        train_sequence_rm,
        train_token_rm,
    )

    tok = word_tokenizer(kb)
    good = {c: set(v) for c, v in typical(kb, o["typical_p"]).items()}
    rng = np.random.default_rng(seed)
    # 1. noisy demonstrations -> SFT start (full fine-tune of a random-init tiny LM)
    conds = task_conditions(kb, o)
    prompts, demos = [], []
    for cid in conds:
        pool = sorted(good[cid])
        others = [e for e in kb.ev_ids if e not in good[cid]]
        for _ in range(o["n_demos_per_condition"]):
            words: list[str] = []
            while len(words) < K:
                w = rng.choice(pool) if rng.random() < o["demo_correct"] else rng.choice(others)
                if w not in words:
                    words.append(str(w))
            prompts.append(prompt_of(cid))
            demos.append(" ".join(words))
    torch.manual_seed(seed)
    policy, _ = tiny_causal_lm(tok, layers=o["layers"], hidden=o["hidden"], seed=seed)
    with tempfile.TemporaryDirectory() as d:
        sft(policy, tok, prompts, demos, SFTConfig(out_dir=d, steps=o["sft_steps"], batch_size=32, lr=o["sft_lr"], seed=seed,
                                                   device="cpu", save_every=0))
    policy.eval()
    # 2. minimal edits of the start's own samples
    cids = [conds[i] for i in rng.integers(0, len(conds), size=o["n_edits"] + o["n_val_edits"])]
    torch.manual_seed(seed)
    roll = generate(policy, tok, [prompt_of(c) for c in cids], max_new_tokens=K + 1)
    orig = [t if t.strip() else "<unk>" for t in roll.texts]
    edits = [minimal_edit(t, good[c], rng) for t, c in zip(orig, cids)]
    n = o["n_edits"]
    tr = build_edit_batch(tok, [prompt_of(c) for c in cids[:n]], orig[:n], edits[:n])
    va = build_edit_batch(tok, [prompt_of(c) for c in cids[n:]], orig[n:], edits[n:])
    # 3. both reward models on the same pairs, each with its own fresh body
    body_t, _ = tiny_causal_lm(tok, layers=o["layers"], hidden=o["hidden"], seed=seed + 1)
    body_s, _ = tiny_causal_lm(tok, layers=o["layers"], hidden=o["hidden"], seed=seed + 1)
    trm = TokenRewardModel(body_t.model, o["hidden"])
    srm = SequenceRewardModel(body_s.model, o["hidden"])
    c_t = train_token_rm(trm, tr, steps=o["rm_steps"], lr=o["rm_lr"])
    c_s = train_sequence_rm(srm, tr, steps=o["rm_steps"], lr=o["rm_lr"])
    quality = rm_quality(trm, srm, va, tok, good, [*cids[n:], *cids[n:]])
    quality["n_conditions"] = len(conds)
    return tok, good, policy, trm, srm, {"token_rm_loss": [c_t[0], c_t[-1]], "sequence_rm_loss": [c_s[0], c_s[-1]],
                                         **quality, "start_gold_mean": float(np.mean([gold(t, good[c]) for t, c in zip(orig, cids)]))}


@torch.no_grad()
def rm_quality(trm, srm, va, tok, good, cids) -> dict:
    """Held-out edits: token RM sign agreement with the gold token label; both RMs' pairwise
    accuracy (edit scored above its original)."""
    ids, attn, resp, _ = va
    N = ids.shape[0] // 2
    r_tok = trm(ids, attn).float() * resp
    agree, total = 0, 0
    for b in range(ids.shape[0]):
        words = tok.convert_ids_to_tokens(ids[b][resp[b] > 0].tolist())
        words = [w for w in words if w != tok.eos_token]
        g = gold_tokens(words, good[cids[b]])
        r = r_tok[b][resp[b] > 0].tolist()[: len(g)]
        agree += sum((ri > 0) == (gi > 0) for ri, gi in zip(r, g))
        total += len(g)
    s_seq = srm(ids, attn, resp)
    t_seq = r_tok.sum(-1)
    return {"token_rm_token_sign_acc": agree / max(1, total),
            "token_rm_pair_acc": float((t_seq[N:] > t_seq[:N]).float().mean()),
            "sequence_rm_pair_acc": float((s_seq[N:] > s_seq[:N]).float().mean())}


@torch.no_grad()
def evaluate(policy, tok, cids, good, n_samples: int, seed: int) -> dict:
    from medkit.lm.generate import generate

    torch.manual_seed(10_000 + seed)
    greedy = generate(policy, tok, [prompt_of(c) for c in cids], max_new_tokens=K + 1, do_sample=False)
    sampled = generate(policy, tok, [prompt_of(c) for c in cids for _ in range(n_samples)], max_new_tokens=K + 1)
    s = np.array([gold(t, good[c]) for t, c in zip(sampled.texts, [c for c in cids for _ in range(n_samples)])])
    return {"greedy": [gold(t, good[c]) for t, c in zip(greedy.texts, cids)],
            "sampled": s.reshape(len(cids), n_samples).mean(1).tolist(), "condition_ids": cids,
            "examples": greedy.texts[:3]}


def token_cell(kb, arm: str, seed: int, **kw) -> dict:
    """One (arm, seed) cell: rebuild the seed's start (deterministic), PPO with this arm's reward."""
    from medkit.lm import add_lora, add_value_head
    from medkit.rl import PPOConfig, SequenceRewardFn, TokenRewardFn, train_ppo

    o = {**DEFAULTS, **kw}
    tok, good, start, trm, srm, info = setup(kb, seed, o)
    conds = task_conditions(kb, o)
    before = evaluate(start, tok, conds, good, o["n_eval_samples"], seed)
    reward = {"token": TokenRewardFn(trm), "token_sum": TokenRewardFn(trm, dense=False),
              "sequence_bt": SequenceRewardFn(srm)}[arm]
    gold_curve: list[float] = []

    def traced(prompts, completions, rollout=None, **k):
        gold_curve.append(float(np.mean([gold(t, good[p.split()[1]]) for p, t in zip(prompts, completions)])))
        return reward(prompts, completions, rollout=rollout, **k)

    torch.manual_seed(seed)
    policy = add_value_head(add_lora(copy.deepcopy(start), LORA), hidden=o["hidden"])
    prompts = [prompt_of(c) for c in conds]
    with tempfile.TemporaryDirectory() as d:
        train_ppo(policy, tok, prompts, [traced],
                  PPOConfig(out_dir=d, steps=o["ppo_steps"], batch_size=o["batch_size"], mini_batch_size=o["mini_batch_size"],
                            ppo_epochs=o["ppo_epochs"], max_new_tokens=K + 1, lr=o["lr"], kl_coef=o["kl_coef"], seed=seed,
                            device="cpu"))
        log = [json.loads(x) for x in (Path(d) / "logs" / "metrics.jsonl").read_text().splitlines()]
    policy.eval()
    after = evaluate(policy, tok, conds, good, o["n_eval_samples"], seed)
    return {"arm": arm, "seed": seed, "setup": info, "start": before, "final": after, "gold_curve": gold_curve,
            "rm_reward_curve": [r["reward"] for r in log], "kl_curve": [r["kl"] for r in log],
            "value_explained_var": [r.get("value_explained_var") for r in log], "options": o}


# ----------------------------------------------------------------------------- cells and table
def choose(tune: dict[float, dict]) -> dict:
    """An arm's (kl_coef, ppo_steps): where its 10-step smoothed training gold peaks on the tuning seed."""
    best = None
    for kl, r in tune.items():
        g = np.convolve(r["gold_curve"], np.ones(10) / 10, mode="valid")
        k = int(np.argmax(g))
        if best is None or g[k] > best["gold"]:
            best = {"kl_coef": kl, "ppo_steps": k + 10, "gold": float(g[k])}
    return best


def run(b, kb, seeds, settings=ARMS) -> None:
    """Tuning cells (seed 100, each arm x KL) first, then each test seed's arms with the arm's choice."""
    cfg = {"part": "token", **DEFAULTS}
    chosen = {}
    for arm in settings:
        tune = {kl: b.cell(f"token/tune/{arm}/kl{kl}", lambda a=arm, k=kl: token_cell(kb, a, TUNE_SEED, kl_coef=k),
                           config={**cfg, "kl_coef": kl}) for kl in TUNE_KL}
        chosen[arm] = choose(tune)
    for seed in seeds:
        for arm in settings:
            c = {k: chosen[arm][k] for k in ("kl_coef", "ppo_steps")}
            b.cell(f"token/{arm}/seed{seed}", lambda a=arm, s=seed, c=c: token_cell(kb, a, s, **c),
                   config={**cfg, **c})


def rises(curve: list[float], frac: float = 0.2) -> dict:
    """Training reward rose: mean of the last ``frac`` of steps minus the first ``frac``."""
    k = max(1, int(len(curve) * frac))
    first, last = float(np.mean(curve[:k])), float(np.mean(curve[-k:]))
    return {"first": first, "last": last, "rise": last - first}


def assemble(b, out_dir) -> tuple[dict, list[str], dict]:
    from bench.cells import target_ci
    from medkit.metrics.stats import paired_diff
    from medkit.viz.curves import plot_curves

    cells = b.cells("token/")
    if not cells:
        return {}, [], {}
    by, tune = {}, {}
    for key, r in cells.items():
        if key.startswith("token/tune/"):
            tune.setdefault(r["arm"], {})[r["options"]["kl_coef"]] = r
        else:
            by.setdefault(r["arm"], {})[r["seed"]] = r
    chosen = {arm: choose(t) for arm, t in tune.items()}
    rel = out_dir.parents[1]
    lines = ["\n### Token-level vs sequence-level rewards: budget chosen on tuning seed 100 "
             "(peak of the 10-step smoothed training gold reward)",
             "| arm | KL coef | peak gold | at step | chosen |", "|---|---|---|---|---|"]
    tune_series = {}
    for arm in ARMS:
        for kl, r in sorted(tune.get(arm, {}).items()):
            g = np.convolve(r["gold_curve"], np.ones(10) / 10, mode="valid")
            tune_series[f"{arm}, kl {kl}"] = (list(range(10, 10 + len(g))), g.tolist())
            pick = chosen[arm]["kl_coef"] == kl
            lines.append(f"| {arm} | {kl} | {g.max():.3f} | {int(np.argmax(g)) + 10} | {'yes' if pick else ''} |")
    pngs = []
    if tune_series:
        pngs.append(plot_curves(tune_series, out_dir / "token_rm_tuning_gold.png", ylabel="gold reward (10-step mean)",
                                title="Tuning seed 100: gold reward of PPO training batches per arm and KL"))
    lines += ["\n### Token-level vs sequence-level rewards in PPO (gold reward on the 63 task prompts; mean over seeds)",
              "| arm | seeds | KL, steps | start greedy | final greedy | start sampled | final sampled | "
              "RM reward first->last 20 % | gold first->last 20 % | RM pair acc (held-out edits) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    rows, gold_series, rm_series, rise = {}, {}, {}, {}
    for arm in ARMS:
        rs = by.get(arm, {})
        if not rs:
            continue
        seeds = sorted(rs)
        n = min(len(rs[s]["gold_curve"]) for s in seeds)
        gc = np.mean([np.convolve(rs[s]["gold_curve"][:n], np.ones(5) / 5, mode="valid") for s in seeds], 0)
        rc = np.mean([rs[s]["rm_reward_curve"][:n] for s in seeds], 0)
        gold_series[arm] = (list(range(5, 5 + len(gc))), gc.tolist())
        rm_series[arm] = (list(range(1, 1 + len(rc))), rc.tolist())
        rise[arm] = {s: rises(rs[s]["rm_reward_curve"]) for s in seeds}
        rm_acc = float(np.mean([rs[s]["setup"]["sequence_rm_pair_acc" if arm == "sequence_bt" else "token_rm_pair_acc"]
                                for s in seeds]))
        row = {"seeds": seeds, "budget": chosen.get(arm), "rm_pair_acc": rm_acc,
               **{f"{w}_{k}": float(np.mean([np.mean(rs[s][w][k]) for s in seeds]))
                  for w in ("start", "final") for k in ("greedy", "sampled")},
               "rm_reward_rise": rise[arm], "gold_rise": {s: rises(rs[s]["gold_curve"]) for s in seeds}}
        rows[arm] = row
        rr = np.mean([x["rise"] for x in row["rm_reward_rise"].values()])
        gr = np.mean([x["rise"] for x in row["gold_rise"].values()])
        bud = f"{chosen[arm]['kl_coef']}, {chosen[arm]['ppo_steps']}" if arm in chosen else "-"
        lines.append(f"| {arm} | {len(seeds)} | {bud} | {row['start_greedy']:.3f} | {row['final_greedy']:.3f} | "
                     f"{row['start_sampled']:.3f} | {row['final_sampled']:.3f} | {rr:+.3f} | {gr:+.3f} | {rm_acc:.3f} |")
    if gold_series:
        pngs.append(plot_curves(gold_series, out_dir / "token_rm_gold_curves.png",
                                ylabel="gold reward of the training batch (5-step mean)",
                                title="Test seeds: PPO gold reward per arm (mean over seeds)"))
        pngs.append(plot_curves(rm_series, out_dir / "token_rm_reward_curves.png",
                                ylabel="training reward (the arm's own RM, raw)",
                                title="Test seeds: PPO training reward per arm (mean over seeds)"))
    lines.append("\nCurves: " + ", ".join(str(p.relative_to(rel)) for p in pngs))
    targets = {}
    lines.append("\n| comparison (gold, per prompt; rows = seed x prompt, CI over prompts) | eval | diff [95 % CI] | p |")
    lines.append("|---|---|---|---|")
    comps = {}
    for a, bb in (("token", "sequence_bt"), ("token", "token_sum")):
        common = sorted(set(by.get(a, {})) & set(by.get(bb, {})))
        if not common:
            continue
        for ev in ("sampled", "greedy"):
            xa = [v for s in common for v in by[a][s]["final"][ev]]
            xb = [v for s in common for v in by[bb][s]["final"][ev]]
            units = [c for s in common for c in by[a][s]["final"]["condition_ids"]]
            d = paired_diff(xa, xb, units=units)
            comps[f"{a}_vs_{bb}/{ev}"] = {**d, "seeds": common}
            lines.append(f"| {a} - {bb} | {ev} | {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | {d['p_boot']:.4f} |")
    if "token_vs_sequence_bt/sampled" in comps:
        targets["token_rm_vs_sequence"] = {**target_ci(comps["token_vs_sequence_bt/sampled"]),
                                           "what": "final gold reward (sampled, 16 per prompt), PPO with dense token-RM "
                                                   "rewards minus PPO with the Bradley-Terry sequence RM, paired over the "
                                                   f"63 prompts, seeds {comps['token_vs_sequence_bt/sampled']['seeds']}",
                                           "token_vs_token_sum": comps.get("token_vs_token_sum/sampled")}
    return {"token_rm": {"arms": rows, "budget": chosen, "comparisons": comps, "png": [str(p.relative_to(rel)) for p in pngs]}}, \
        lines, {**targets, "_ppo_runs": {f"token/{arm}/seed{s}": r for arm, d in rise.items() for s, r in d.items()}}
