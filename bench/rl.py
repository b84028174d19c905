"""medkit.rl benchmark (issue 21): every claim of the RL core, in resumable cells.

    python bench/rl.py --part toy --seeds 0-2         # PPO / GRPO on a toy rule reward (seconds a cell)
    python bench/rl.py --part routing --seeds 0-9     # uncertainty routing of judge calls (minutes a cell)
    python bench/rl.py --part token --seeds 0-2       # token-level RM rewards in PPO vs sequence rewards
    python bench/rl.py --part srppo --seeds 0-4       # self-rewarding PPO vs SFT, in-domain and shifted
    python bench/rl.py --part thinkrm --seeds 0       # Think-RM: SmolLM2 judge, SFT on KB traces then GRPO
    python bench/rl.py --assemble                     # print every table, write bench/results/rl-cpu.json

Each (part, setting, seed) cell writes ``bench/results/rl-<device>/cells/<cell>.json`` when it
finishes; a later run skips finished cells. ``--assemble`` prints the tables from the cells
present, draws the curves (``bench/results/rl-<device>/*.png``) and writes the results
file with the ``targets`` the issue names (a target whose cells are missing is not held).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.cells import RESULTS, Bench, target  # noqa: E402

TARGET_NAMES = ("ppo_reward_rises", "srppo_vs_sft_shifted", "routing_vs_random_25pct", "think_rm_vs_untrained",
                "token_rm_vs_sequence")


def seeds_arg(s: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,2"`` -> [0, 2]."""
    out = []
    for part in s.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def parts():
    from bench import rl_routing

    mods = {"routing": rl_routing}
    for name in ("toy", "token", "srppo", "thinkrm"):
        try:
            mods[name] = __import__(f"bench.rl_{name}", fromlist=["run"])
        except ImportError:
            pass
    return mods


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["toy", "routing", "token", "srppo", "thinkrm"])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--settings", default=None, help="comma list (part-specific); default: all")
    ap.add_argument("--assemble", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a shared 2-core box: more threads thrash (see tests/conftest.py)
    warnings.filterwarnings("ignore", message=".*(tie_word_embeddings|is_gradient_checkpointing).*")
    from medkit.synth.knowledge import load_knowledge_base

    mods = parts()
    # every part builds its models with device="cpu" (tiny LMs; the Think-RM judge too), so the
    # table is the CPU table even on a GPU machine: filing CPU cells under rl-cuda would be a lie
    dev = "cpu"
    b = Bench("rl", device=dev, config={"parts": {k: getattr(m, "DEFAULTS", {}) for k, m in mods.items()}})
    if args.part:
        kb = load_knowledge_base()
        kw = {"settings": tuple(args.settings.split(","))} if args.settings else {}
        mods[args.part].run(b, kb, seeds_arg(args.seeds), **kw)
    if args.assemble:
        out_dir = RESULTS / f"rl-{b.tag}"
        out_dir.mkdir(parents=True, exist_ok=True)
        tables, targets, text, ppo_runs = {}, {}, [], {}
        for name, m in mods.items():
            t, lines, tg = m.assemble(b, out_dir)
            ppo_runs.update(tg.pop("_ppo_runs", {}))
            tg.pop("_old_runs", None)
            tables.update(t)
            targets.update(tg)
            text += [f"\n## {name}"] + lines
        if ppo_runs:
            # every PPO / GRPO run of the benchmark: its training reward, last 20 % of steps minus first 20 %
            rose = {k: v["rise"] > 0 for k, v in ppo_runs.items() if "oldppo" not in k}
            targets["ppo_reward_rises"] = {**target(sum(rose.values()) / len(rose), 1.0, ">="),
                                           "what": "share of the benchmark's PPO/GRPO runs (old-PPO ablation excluded) "
                                                   "whose training reward rose (mean of the last 20 % of steps above "
                                                   "the first 20 %)", "runs": ppo_runs}
            tables["ppo_runs"] = ppo_runs
        for k in TARGET_NAMES:
            targets.setdefault(k, {**target(None, 0.0), "note": "cells missing: not run yet"})
        print("\n".join(text))
        print("\n## targets")
        for k in TARGET_NAMES:
            t = targets[k]
            print(f"- {k}: value {t['value']} / target {t['target']} / held {t['held']}")
        path = b.write(tables, targets={k: targets[k] for k in TARGET_NAMES})
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
