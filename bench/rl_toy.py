"""PPO / GRPO on a toy rule reward: the training-reward curves of the loops themselves.

A tiny random-init LM (1 layer, hidden 32, character vocabulary) with LoRA; reward = the
share of vowels in the completion (6 new tokens). ``scaled``: the same reward as 10 + 5 x
share, the scale of a self-reward (log-ratio sums near 10). ``ppo_old`` is the PPO before
issue 21 (value head on the shared trunk, raw rewards, vf_coef 0.1); ``ppo`` is medkit's
(detached critic, whitened rewards); ``grpo`` is medkit's GRPO. Seconds a cell.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

LOOPS = ("ppo", "ppo_old", "grpo")
TASKS = ("share", "scaled")
DEFAULTS = {"steps": 40, "batch": 16, "max_new_tokens": 6, "lr": 1e-2}
LORA = {"r": 8, "target_modules": ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj", "lm_head"]}


def toy_cell(loop: str, task: str, seed: int) -> dict:
    from medkit.lm import chat_prompt, tiny_causal_lm
    from medkit.rl import GRPOConfig, PPOConfig, train_grpo, train_ppo

    def vowels(prompts, completions, rollout=None, **kw):
        share = [sum(ch in "aeiou" for ch in c) / len(c) if c else 0.0 for c in completions]
        return share if task == "share" else [10.0 + 5.0 * s for s in share]

    o = DEFAULTS
    torch.manual_seed(seed)
    model, tok = tiny_causal_lm(hidden=32, layers=1, lora=LORA, value_head=loop != "grpo", seed=seed)
    prompts = [chat_prompt(tok, f"say {i}") for i in range(8)]
    with tempfile.TemporaryDirectory() as d:
        if loop == "grpo":
            train_grpo(model, tok, prompts, [vowels], GRPOConfig(out_dir=d, steps=o["steps"], prompts_per_step=4, group_size=4,
                                                                max_new_tokens=o["max_new_tokens"], lr=o["lr"], seed=seed,
                                                                device="cpu"))
        else:
            old = {"critic": "shared", "reward_norm": "none", "vf_coef": 0.1} if loop == "ppo_old" else {}
            train_ppo(model, tok, prompts, [vowels], PPOConfig(out_dir=d, steps=o["steps"], batch_size=o["batch"],
                                                              mini_batch_size=8, ppo_epochs=2, max_new_tokens=o["max_new_tokens"],
                                                              lr=o["lr"], kl_coef=0.0, seed=seed, device="cpu", **old))
        log = [json.loads(x) for x in (Path(d) / "logs" / "metrics.jsonl").read_text().splitlines()]
    return {"loop": loop, "task": task, "seed": seed, "reward": [r["reward"] for r in log], "options": o}


def run(b, kb, seeds, settings=LOOPS) -> None:
    for seed in seeds:
        for task in TASKS:
            for loop in settings:
                b.cell(f"toy/{loop}/{task}/seed{seed}", lambda lp=loop, t=task, s=seed: toy_cell(lp, t, s),
                       config={"part": "toy", **DEFAULTS})


def assemble(b, out_dir) -> tuple[dict, list[str], dict]:
    from bench.rl_token import rises
    from medkit.viz.curves import plot_curves

    cells = b.cells("toy/")
    if not cells:
        return {}, [], {}
    rel = out_dir.parents[1]
    lines = ["\n### Toy rule reward (share of vowels; `scaled` = 10 + 5 x share): training reward, mean over seeds",
             "| task | loop | seeds | first 20 % | last 20 % | rise |", "|---|---|---|---|---|---|"]
    rows, ppo_runs, pngs = {}, {}, []
    for task in TASKS:
        series = {}
        for loop in LOOPS:
            rs = [r for r in cells.values() if r["loop"] == loop and r["task"] == task]
            if not rs:
                continue
            ri = [rises(r["reward"]) for r in rs]
            for r, x in zip(rs, ri):
                ppo_runs[f"toy/{loop}/{task}/seed{r['seed']}"] = x
            m = np.mean([r["reward"] for r in rs], 0)
            series[loop] = (list(range(1, len(m) + 1)), m.tolist())
            rows[f"{task}/{loop}"] = {"first": float(np.mean([x["first"] for x in ri])),
                                      "last": float(np.mean([x["last"] for x in ri])), "seeds": len(rs),
                                      "rose_in_every_seed": all(x["rise"] > 0 for x in ri)}
            lines.append(f"| {task} | {loop} | {len(rs)} | {rows[f'{task}/{loop}']['first']:.3f} | "
                         f"{rows[f'{task}/{loop}']['last']:.3f} | {rows[f'{task}/{loop}']['last'] - rows[f'{task}/{loop}']['first']:+.3f} |")
        pngs.append(plot_curves(series, out_dir / f"toy_{task}.png", ylabel="training reward (batch mean)",
                                title=f"Toy reward ({task}): PPO, PPO before issue 21, GRPO (mean over seeds)"))
    lines.append("\nCurves: " + ", ".join(str(p.relative_to(rel)) for p in pngs))
    return {"toy": {"rows": rows, "png": [str(p.relative_to(rel)) for p in pngs]}}, lines, \
        {"_ppo_runs": {k: v for k, v in ppo_runs.items() if "ppo_old" not in k},
         "_old_runs": {k: v for k, v in ppo_runs.items() if "ppo_old" in k}}
