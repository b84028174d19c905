"""Think-RM (arXiv 2505.16265) trained: a generative judge on SmolLM2-135M-Instruct.

Pairs: a synthetic case (sex, age, the patient's symptoms and history in words) and two
candidate diagnoses, the true one and the strongest wrong one of the history-only
differential, in random order as A and B. The verifiable label: which is the true diagnosis.

1. Traces from the knowledge-base judge (naive-Bayes posterior given the shown findings):
   "A (<name>) explains <finding>, <finding>. B (<name>) explains <finding>. A is more likely.
   <answer>A</answer>", kept only where the knowledge-base judge is right (rejection sampling).
2. SFT of a LoRA adapter on those traces, then GRPO (``medkit.rl.train_grpo``) with the
   verifiable preference reward: 1 when the strict answer names the true diagnosis, else 0
   (a format failure scores 0).
3. Test pairs: strict format (:func:`medkit.rl.strict_judgement`: one answer tag, ending the
   output); pairwise accuracy with failures counted wrong, for the untrained SmolLM2 judge,
   the SFT judge, the SFT+GRPO judge (Think-RM), a Bradley-Terry reward model on the
   preference-model features of ``bench/rl_data.py`` trained on the same pairs, and the
   knowledge-base judge itself (the teacher). McNemar on paired items.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.rl_data import _lp, features
from medkit.synth.cases import CasesConfig, generate_cases

MODEL = "smollm2-135m-instruct"
DEFAULTS = {"n_train": 400, "n_test": 300, "sft_steps": 150, "sft_batch": 8, "sft_lr": 3e-4, "grpo_steps": 40,
            "prompts_per_step": 4, "group_size": 4, "grpo_lr": 1e-4, "temperature": 1.0, "max_new_tokens": 64,
            "eval_batch": 16, "bt_epochs": 300}
LORA = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
QUESTION = ("Patient: {sex}, {age} years. Findings: {findings}.\nA: {a}\nB: {b}\nWhich diagnosis is more likely? "
            "Reason in one or two short sentences, then end with <answer>A</answer> or <answer>B</answer>.")


def words(e: str) -> str:
    return e.replace("_", " ")


def make_pairs(kb, cases: list[dict], seed: int) -> list[dict]:
    """One pair per case: the truth and the strongest wrong candidate, order random."""
    rng = np.random.default_rng(seed)
    out = []
    for c in cases:
        t = c["diagnosis"]["id"]
        wrong = next(d["id"] for d in c["differential"] if d["id"] != t)
        a, b = (t, wrong) if rng.random() < 0.5 else (wrong, t)
        fs = c["evidences"]["symptom"] + c["evidences"]["history"]
        q = QUESTION.format(sex=c["sex"], age=c["age"], findings=", ".join(words(e) for e in fs),
                            a=kb.condition(a).name, b=kb.condition(b).name)
        lp = _lp(kb, c, ("symptom", "history"))
        kb_pick = "A" if lp[kb.cond_index[a]] >= lp[kb.cond_index[b]] else "B"
        out.append({"case": c, "a": a, "b": b, "truth": "A" if a == t else "B", "question": q, "kb_pick": kb_pick,
                    "trace": trace(kb, fs, a, b, kb_pick)})
    return out


def trace(kb, fs: list[str], a: str, b: str, pick: str) -> str:
    """The knowledge-base judge's short reasoning and strict answer."""
    parts = []
    for letter, cid in (("A", a), ("B", b)):
        c = kb.condition(cid)
        ex = sorted((e for e in fs if c.likelihoods.get(e, 0.0) >= 0.3), key=lambda e: -c.likelihoods[e])[:2]
        parts.append(f"{letter} ({c.name}) explains {' and '.join(words(e) for e in ex)}." if ex
                     else f"{letter} ({c.name}) explains none of the findings.")
    return " ".join(parts) + f" {pick} is more likely. <answer>{pick}</answer>"


@torch.no_grad()
def judge_eval(model, tok, pairs: list[dict], o: dict) -> dict:
    from medkit.lm.generate import chat_prompt, generate
    from medkit.rl import strict_judgement

    model.eval()
    ok, fail, texts = [], [], []
    for b0 in range(0, len(pairs), o["eval_batch"]):
        chunk = pairs[b0:b0 + o["eval_batch"]]
        r = generate(model, tok, [chat_prompt(tok, p["question"]) for p in chunk], max_new_tokens=o["max_new_tokens"],
                     do_sample=False)
        for p, t in zip(chunk, r.texts):
            v = strict_judgement(t)
            fail.append(float(v is None))
            ok.append(float(v is not None and (v > 0) == (p["truth"] == "A")))
            texts.append(t)
    return {"correct": ok, "format_fail": fail, "examples": texts[:4]}


def bt_model(kb, train: list[dict], test: list[dict], o: dict, seed: int) -> dict:
    """Bradley-Terry reward model on the preference-model features, same training pairs."""
    from medkit.rl import BTRewardModel, bradley_terry_loss

    def feats(p):
        f = features(kb, p["case"], [p["a"], p["b"]])
        return (f[0], f[1]) if p["truth"] == "A" else (f[1], f[0])   # (truth, wrong)

    torch.manual_seed(seed)
    tr = [feats(p) for p in train]
    xc, xr = torch.stack([x for x, _ in tr]), torch.stack([y for _, y in tr])
    m = BTRewardModel(xc.shape[1])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2, weight_decay=1e-4)
    curve = []
    for _ in range(o["bt_epochs"]):
        loss = bradley_terry_loss(m(xc), m(xr))
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(float(loss.detach()))
    te = [feats(p) for p in test]
    with torch.no_grad():
        ok = [float(m(x[None])[0] > m(y[None])[0]) for x, y in te]
    return {"correct": ok, "loss": [curve[0], curve[-1]]}


def thinkrm_cell(kb, seed: int, **kw) -> dict:
    from medkit.lm import chat_prompt, load_causal_lm
    from medkit.rl import GRPOConfig, SFTConfig, sft, strict_judgement, train_grpo

    o = {**DEFAULTS, **kw}
    cases = generate_cases(CasesConfig(n_cases=o["n_train"] + o["n_test"], seed=7000 + seed), kb)
    pairs = make_pairs(kb, cases, seed)
    train, test = pairs[: o["n_train"]], pairs[o["n_train"]:]
    torch.manual_seed(seed)
    model, tok = load_causal_lm(MODEL, lora=LORA, device="cpu")
    out = {"seed": seed, "options": o, "n_train": len(train), "n_test": len(test),
           "truth": [p["truth"] for p in test], "case_ids": [p["case"]["case_id"] for p in test],
           "example_prompt": test[0]["question"], "example_trace": test[0]["trace"]}
    from medkit.lm.lora import reference

    with reference(model) as untrained:
        out["untrained"] = judge_eval(untrained, tok, test, o)
    out["kb_judge"] = {"correct": [float(p["kb_pick"] == p["truth"]) for p in test]}
    out["bt"] = bt_model(kb, train, test, o, seed)
    sft_pairs = [p for p in train if p["kb_pick"] == p["truth"]]      # rejection sampling: correct traces only
    with tempfile.TemporaryDirectory() as d:
        sft(model, tok, [chat_prompt(tok, p["question"]) for p in sft_pairs], [p["trace"] for p in sft_pairs],
            SFTConfig(out_dir=d, steps=o["sft_steps"], batch_size=o["sft_batch"], lr=o["sft_lr"], max_len=256, seed=seed,
                      device="cpu", save_every=0))
        out["sft_loss"] = [json.loads(x)["loss"] for x in (Path(d) / "logs" / "metrics.jsonl").read_text().splitlines()]
    out["n_sft_traces"] = len(sft_pairs)
    out["sft"] = judge_eval(model, tok, test, o)

    def verifiable(prompts, completions, truth=None, **k):
        return [float(v is not None and (v > 0) == (t == "A")) for v, t in
                zip((strict_judgement(c) for c in completions), truth)]

    with tempfile.TemporaryDirectory() as d:
        train_grpo(model, tok, [chat_prompt(tok, p["question"]) for p in train], [verifiable],
                   GRPOConfig(out_dir=d, steps=o["grpo_steps"], prompts_per_step=o["prompts_per_step"],
                              group_size=o["group_size"], lr=o["grpo_lr"], max_new_tokens=o["max_new_tokens"],
                              temperature=o["temperature"], seed=seed, device="cpu"),
                   prompt_kw=[{"truth": p["truth"]} for p in train])
        log = [json.loads(x) for x in (Path(d) / "logs" / "metrics.jsonl").read_text().splitlines()]
    out["grpo_reward_curve"] = [r["reward"] for r in log]
    out["grpo_resp_len"] = [r["resp_len"] for r in log]
    out["think_rm"] = judge_eval(model, tok, test, o)
    return out


# ----------------------------------------------------------------------------- cells and table
def run(b, kb, seeds, settings=("think_rm",)) -> None:
    for seed in seeds:
        b.cell(f"thinkrm/seed{seed}", lambda s=seed: thinkrm_cell(kb, s), config={"part": "thinkrm", **DEFAULTS})


ARMS = {"untrained": "SmolLM2 untrained judge", "sft": "SFT on KB traces", "think_rm": "SFT + GRPO (Think-RM)",
        "bt": "Bradley-Terry RM (features)", "kb_judge": "knowledge-base judge (teacher)"}


def assemble(b, out_dir) -> tuple[dict, list[str], dict]:
    from bench.cells import target_ci
    from bench.rl_token import rises
    from medkit.metrics.stats import mcnemar, paired_diff
    from medkit.viz.curves import plot_curves

    runs = {r["seed"]: r for r in b.cells("thinkrm/").values()}
    if not runs:
        return {}, [], {}
    rel = out_dir.parents[1]
    seeds = sorted(runs)
    n = sum(len(runs[s]["truth"]) for s in seeds)
    lines = [f"\n### Think-RM on SmolLM2-135M ({len(seeds)} seed(s), {n} test pairs; accuracy counts a format failure "
             "as wrong; McNemar vs Think-RM on the same pairs)",
             "| judge | format failures | pairwise accuracy | McNemar p vs Think-RM |", "|---|---|---|---|"]
    cat = {k: [v for s in seeds for v in runs[s][k]["correct"]] for k in ARMS}
    rows = {}
    for k, label in ARMS.items():
        ff = [v for s in seeds for v in runs[s][k].get("format_fail", [])]
        mc = mcnemar(cat["think_rm"], cat[k]) if k != "think_rm" else None
        rows[k] = {"accuracy": float(np.mean(cat[k])), "format_fail_rate": float(np.mean(ff)) if ff else None,
                   "mcnemar_vs_think_rm": mc}
        lines.append(f"| {label} | {f'{np.mean(ff) * 100:.1f} %' if ff else '-'} | {np.mean(cat[k]):.3f} | "
                     f"{mc['p']:.4g} |" if mc else f"| {label} | {f'{np.mean(ff) * 100:.1f} %' if ff else '-'} | "
                     f"{np.mean(cat[k]):.3f} | - |")
    series, ppo_runs = {}, {}
    for s in seeds:
        c = runs[s]["grpo_reward_curve"]
        k = min(5, len(c))
        series[f"seed {s}"] = (list(range(k, len(c) + 1)), np.convolve(c, np.ones(k) / k, mode="valid").tolist())
        ppo_runs[f"thinkrm/grpo/seed{s}"] = rises(c)
    pngs = [plot_curves(series, out_dir / "thinkrm_grpo_reward.png", ylabel="verifiable reward (5-step mean)",
                        title="Think-RM GRPO training reward")]
    sl = {f"seed {s}": (list(range(1, 1 + len(runs[s]["sft_loss"]))), runs[s]["sft_loss"]) for s in seeds}
    pngs.append(plot_curves(sl, out_dir / "thinkrm_sft_loss.png", ylabel="SFT loss (nats/token)",
                            title="Think-RM SFT on knowledge-base traces"))
    r0 = runs[seeds[0]]
    lines.append("\nGRPO reward first->last 20 %: " + ", ".join(f"seed {s}: {ppo_runs[f'thinkrm/grpo/seed{s}']['first']:.2f}"
                                                          f" -> {ppo_runs[f'thinkrm/grpo/seed{s}']['last']:.2f}" for s in seeds))
    lines.append(f"Example prompt: {r0['example_prompt']!r}\nExample KB trace: {r0['example_trace']!r}")
    for k in ("untrained", "sft", "think_rm"):
        lines.append(f"Example output ({k}): {r0[k]['examples'][0]!r}")
    lines.append("\nCurves: " + ", ".join(str(p.relative_to(rel)) for p in pngs))
    d = paired_diff(cat["think_rm"], cat["untrained"])
    held = target_ci(d)
    ff = rows["think_rm"]["format_fail_rate"]
    targets = {"_ppo_runs": ppo_runs, "think_rm_vs_untrained": {
        **held, "held": bool(held["held"] and ff is not None and ff < 0.05), "format_fail_rate": ff,
        "target": "ci95 low > 0 and format failures < 5 %",
        "what": "pairwise accuracy of the trained Think-RM minus the untrained SmolLM2 judge on the same test pairs",
        "vs_bt": paired_diff(cat["think_rm"], cat["bt"]), "mcnemar_vs_untrained": rows["untrained"]["mcnemar_vs_think_rm"]}}
    return {"think_rm": {"rows": rows, "seeds": seeds, "png": [str(p.relative_to(rel)) for p in pngs]}}, lines, targets
