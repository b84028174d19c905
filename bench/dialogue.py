"""medkit.dialogue benchmark: the constrained SmolLM2 doctor, its RL arms, DDXPlus, and SAGE fault recall.

Every piece is a resumable cell (``bench/cells.py``); run one with ``--cell``, every
missing one in order with ``--all``, and assemble the tables with ``--assemble``::

    python bench/dialogue.py --list                           # the cells, done or not, in run order
    python bench/dialogue.py --cell sage/seed3                # one cell
    python bench/dialogue.py --cell rl/grpo/seed0             # an RL arm from the shipped SFT doctor
    python bench/dialogue.py --cell eval/grpo/seed0/ddxplus_test
    python bench/dialogue.py --all [--only eval/]             # every missing cell (seed 0 of every arm first)
    python bench/dialogue.py --assemble                       # tables, PNGs, targets -> dialogue-cpu.json

Arms (one SFT doctor, ``models/dialogue-doctor-smollm2``, fine-tuned on oracle dialogues
of synthetic and DDXPlus training cases; each RL arm a fresh LoRA adapter on it, trained
on further training cases without demonstrations): ``sft``; ``srppo`` (Self-Rewarding
PPO); ``grpo`` (multi-turn GRPO, binary success); ``grpo_entropy`` (GRPO + DeepPlanner
entropy shaping); and the ``oracle`` that wrote the demonstrations. Every doctor acts
under the grammar of legal actions. Splits: 400 held-out synthetic test cases
(``synth_test``), all 1,311 genuine DDXPlus test rows (``ddxplus_test``), and the
validation sets the shipped arm is chosen on (``synth_val``, ``ddxplus_val``).
Comparisons are paired over cases (RL seeds averaged per case):
:func:`medkit.metrics.stats.paired_diff` (bootstrap) and :func:`~medkit.metrics.stats.mcnemar`.

SAGE: the oracle with one planted fault, played against the persona and the generic
simulator on 10 seeds x 100 synthetic cases; recall = share of cases whose episode shows
an error the fault-free oracle does not show (:mod:`medkit.dialogue.sage`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DDXPLUS = Path(os.environ.get("MEDKIT_DDXPLUS", ROOT.parent / "shared" / "realformat" / "ddxplus"))
SFT_MODEL = ROOT / "models" / "dialogue-doctor-smollm2"
WORK = ROOT / "runs" / "bench-dialogue"
MAX_TURNS = 15
SEEDS = (0, 1, 2)
SAGE_SEEDS = tuple(range(1, 11))
SAGE_CASES = 100
SPLITS = {  # name -> (source, split, n cases (None: all rows))
    "synth_test": ("synth", "test", 400), "ddxplus_test": ("ddxplus", "test", None),
    "synth_val": ("synth", "validate", 200), "ddxplus_val": ("ddxplus", "validate", 300)}
# RL arms: settings fixed before any held-out evaluation (see the module docstring of each loop)
RL = {
    "srppo": {"kind": "srppo", "steps": 30, "cases_per_step": 16, "lr": 2e-5, "vf_lr": 1e-3, "temperature": 1.0},
    "grpo": {"kind": "grpo", "steps": 30, "cases_per_step": 4, "group_size": 8, "lr": 2e-5, "temperature": 1.0,
             "entropy_alpha": 0.0},
    "grpo_entropy": {"kind": "grpo", "steps": 30, "cases_per_step": 4, "group_size": 8, "lr": 2e-5,
                     "temperature": 1.0, "entropy_alpha": 0.2, "entropy_kappa": 2.0},
}
RL_LORA = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"]}
ARMS = ("sft", *RL)
LABEL = {"oracle": "oracle (EIG over the KB)", "sft": "SFT (oracle dialogues)", "srppo": "SFT + SR-PPO",
         "grpo": "SFT + GRPO (multi-turn)", "grpo_entropy": "SFT + GRPO + entropy shaping"}
CONFIG = {"sft_model": str(SFT_MODEL.relative_to(ROOT)), "ddxplus": "../shared/realformat/ddxplus",
          "max_turns": MAX_TURNS, "seeds": SEEDS, "sage_seeds": SAGE_SEEDS, "sage_cases": SAGE_CASES,
          "splits": SPLITS, "rl": RL, "rl_lora": RL_LORA, "patient": "persona",
          "rl_data": {"source": "both", "pool": 12000, "n_train": 800, "n_rl": 200, "seed": 0}}


def cell_keys() -> list[str]:
    """Every cell, in run order: SAGE; seed 0 of every arm (train, then test) first; the rest after."""
    keys = [f"sage/seed{s}" for s in SAGE_SEEDS]
    keys += [f"eval/{a}/seed0/{sp}" for a in ("oracle", "sft") for sp in ("synth_test", "ddxplus_test")]
    for seed in SEEDS:
        for arm in RL:
            keys.append(f"rl/{arm}/seed{seed}")
            keys += [f"eval/{arm}/seed{seed}/{sp}" for sp in ("synth_test", "ddxplus_test")]
    keys += [f"eval/{a}/seed0/{sp}" for a in ARMS for sp in ("synth_val", "ddxplus_val")]
    return keys


# --------------------------------------------------------------------------- cells
def _threads():
    import torch

    torch.set_num_threads(1)


def run_sage(seed: int) -> dict:
    from medkit.dialogue.data import load_split
    from medkit.dialogue.sage import fault_recall
    from medkit.dialogue.train_config import DataConfig

    kb, cases = load_split(DataConfig(source="synth", pool=SAGE_CASES * 14, seed=100 + seed), "test", SAGE_CASES)
    r = fault_recall(cases, kb, max_turns=MAX_TURNS)
    return {"seed": seed, "case_ids": [c["case_id"] for c in cases], "exposure": r}


def rl_parts():
    from medkit.dialogue.data import load_parts
    from medkit.dialogue.train_config import DataConfig

    d = CONFIG["rl_data"]
    return load_parts(DataConfig(source="both", root=str(DDXPLUS), pool=d["pool"], n_train=d["n_train"],
                                 n_rl=d["n_rl"], n_eval=1, seed=d["seed"]))


def rl_folder(arm: str, seed: int) -> Path:
    return WORK / f"{arm}-seed{seed}"


def run_rl(arm: str, seed: int) -> dict:
    """Train one RL arm from the shipped SFT doctor; the stage is saved as a model folder under runs/."""
    from dataclasses import replace

    from medkit.dialogue.policy import build_base, load_policy, save_policy
    from medkit.dialogue.stages import grpo_stage, srppo_stage
    from medkit.dialogue.train_config import DialogueTrainConfig, GRPOStage, SRPPOStage
    from medkit.rl.common import MetricsLog
    from medkit.runs import sha256_file

    _threads()
    spec = RL[arm]
    sft, tok, mcfg, layers, vocab = load_policy(SFT_MODEL)
    mcfg = replace(mcfg, rl_lora=dict(RL_LORA))
    cfg = DialogueTrainConfig(seed=seed, max_turns=MAX_TURNS, model=mcfg)
    parts = rl_parts()
    out = rl_folder(arm, seed)
    t0 = time.perf_counter()
    log = lambda m: print(f"[{arm} seed {seed} {time.perf_counter() - t0:6.0f} s] {m}", flush=True)  # noqa: E731
    if spec["kind"] == "srppo":
        cfg.srppo = SRPPOStage(steps=spec["steps"], cases_per_step=spec["cases_per_step"], lr=spec["lr"],
                               vf_lr=spec["vf_lr"], temperature=spec["temperature"])
        base, _ = build_base(mcfg, vocab)     # pi_base: the model SFT started from
        model, layer, row = srppo_stage(sft, base, tok, parts, cfg, out, seed=seed, resume=True, log=log)
    else:
        cfg.grpo = GRPOStage(steps=spec["steps"], cases_per_step=spec["cases_per_step"],
                             group_size=spec["group_size"], lr=spec["lr"], temperature=spec["temperature"],
                             entropy_kappa=spec.get("entropy_kappa", 2.0))
        model, layer, row = grpo_stage(sft, tok, parts, cfg, out, entropy_alpha=spec["entropy_alpha"], seed=seed,
                                       resume=True, log=log)
    save_policy(out / "stage", mcfg, vocab, [*layers, layer], {"seed": seed, "stage": arm, "max_turns": MAX_TURNS,
                                                                "sources": ["synth", "ddxplus"]})
    curve = [r for r in MetricsLog(out / "loop").read() if "reward" in r]
    return {"arm": arm, "seed": seed, "settings": spec, "curve": curve, "last": row,
            "train_s": round(time.perf_counter() - t0, 1), "stage": str(out / "stage"),
            "weights_sha256": sha256_file(out / "stage" / "model.safetensors"),
            "sft_sha256": sha256_file(SFT_MODEL / "model.safetensors")}


def run_eval(arm: str, seed: int, split: str) -> dict:
    from medkit.dialogue.evaluate import evaluate_doctor, load_eval_cases
    from medkit.dialogue.oracle import OracleDoctor
    from medkit.dialogue.policy import load_policy, make_doctor
    from medkit.runs import sha256_file

    _threads()
    source, sp, n = SPLITS[split]
    kb, cases, _ = load_eval_cases(DDXPLUS if source == "ddxplus" else None, sp, n)
    if arm == "oracle":
        doc, sha = OracleDoctor(kb, stop_p=0.95, confidence=False), None
    else:
        folder = SFT_MODEL if arm == "sft" else rl_folder(arm, seed) / "stage"
        if not (folder / "model.safetensors").exists():
            raise SystemExit(f"{folder}: not trained yet (run the cell rl/{arm}/seed{seed} first)")
        m, tok, mcfg, _, _ = load_policy(folder)
        doc, sha = make_doctor(m, tok, mcfg), sha256_file(folder / "model.safetensors")
    t0 = time.perf_counter()
    recs, summ = evaluate_doctor(doc, cases, kb, patient="persona", max_turns=MAX_TURNS, judge="rule", batch_size=32,
                                 progress=lambda d, k: print(f"[eval {arm} {split}] {d}/{k}", flush=True))
    secs = time.perf_counter() - t0
    keep = [{"case_id": r["case_id"], "truth": r["truth"]["id"], "predicted": r["predicted"], "success": r["success"],
             "top3": r["top3"], "turns": r["turns"], "format_errors": r["format_errors"],
             "invented": sum(p is None for p in r["predicted"]), "diagnosed": r["diagnosed"]} for r in recs]
    # three transcripts kept in full (one success, two failures) for the report
    ok = [r for r in recs if r["success"]][:1]
    bad = [r for r in recs if not r["success"]][:2]
    return {"arm": arm, "seed": seed, "split": split, "n": len(recs), "summary": summ, "cases": keep,
            "weights_sha256": sha, "seconds": round(secs, 1), "s_per_turn": round(secs / max(sum(r["turns"] for r in recs), 1), 3),
            "transcripts": [{k: r[k] for k in ("case_id", "truth", "differential", "success", "turns", "transcript")}
                            for r in ok + bad]}


def run_cell(bench, key: str) -> dict:
    parts = key.split("/")
    if parts[0] == "sage":
        return bench.cell(key, lambda: run_sage(int(parts[1][4:])))
    if parts[0] == "rl":
        return bench.cell(key, lambda: run_rl(parts[1], int(parts[2][4:])))
    if parts[0] == "eval":
        return bench.cell(key, lambda: run_eval(parts[1], int(parts[2][4:]), parts[3]))
    raise SystemExit(f"unknown cell {key!r}; --list shows them")


# --------------------------------------------------------------------------- assembly
def _fmt_ci(d: dict) -> str:
    lo, hi = d["ci95"]
    return "n/a" if d["mean"] is None else f"{d['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def assemble(bench) -> None:
    import numpy as np

    from bench.cells import target, target_ci
    from medkit.metrics.stats import mcnemar, paired_diff
    from medkit.viz.curves import plot_curves

    cells = bench.cells()
    tables: dict = {}
    targets: dict = {}
    missing = [k for k in cell_keys() if k not in cells]

    # ---- Table 1: every arm on every split
    evals = {k: v for k, v in cells.items() if k.startswith("eval/")}
    rows = []
    for split in SPLITS:
        for arm in ("oracle", *ARMS):
            got = [v for k, v in evals.items() if v["arm"] == arm and v["split"] == split]
            if not got:
                continue
            succ = [np.mean([c["success"] for c in g["cases"]]) for g in got]
            rows.append({"split": split, "arm": arm, "seeds": sorted(g["seed"] for g in got), "n": got[0]["n"],
                         "top1": float(np.mean(succ)), "top1_seeds": [float(x) for x in succ],
                         "top3": float(np.mean([np.mean([c["top3"] for c in g["cases"]]) for g in got])),
                         "mean_turns": float(np.mean([np.mean([c["turns"] for c in g["cases"]]) for g in got])),
                         "format_errors": int(sum(c["format_errors"] for g in got for c in g["cases"])),
                         "invented_conditions": int(sum(c["invented"] for g in got for c in g["cases"])),
                         "s_per_turn": float(np.mean([g["s_per_turn"] for g in got]))})
    tables["arms"] = rows
    print("\nTable 1: top-1 / top-3 by arm and split (persona patient, constrained actions, "
          f"at most {MAX_TURNS} turns; RL arms: mean over seeds)")
    print(f"{'split':13s} {'arm':30s} {'seeds':8s} {'n':>5s} {'top-1':>6s} {'top-3':>6s} {'turns':>6s} "
          f"{'fmt err':>7s} {'invented':>8s}")
    for r in rows:
        print(f"{r['split']:13s} {LABEL[r['arm']]:30s} {len(r['seeds']):8d} {r['n']:5d} {r['top1']:6.3f} "
              f"{r['top3']:6.3f} {r['mean_turns']:6.2f} {r['format_errors']:7d} {r['invented_conditions']:8d}")

    # ---- Table 2: paired comparisons against SFT (units = cases; RL seeds averaged per case)
    comps = []
    for split in ("synth_test", "ddxplus_test"):
        base = evals.get(f"eval/sft/seed0/{split}")
        if base is None:
            continue
        ref = {c["case_id"]: float(c["success"]) for c in base["cases"]}
        for arm in RL:
            got = [v for k, v in evals.items() if v["arm"] == arm and v["split"] == split]
            if not got:
                continue
            a, b, u = [], [], []
            for g in got:
                for c in g["cases"]:
                    a.append(float(c["success"]))
                    b.append(ref[c["case_id"]])
                    u.append(c["case_id"])
            d = paired_diff(a, b, units=u, seed=0)
            mc = [mcnemar([c["success"] for c in g["cases"]], [ref[c["case_id"]] for c in g["cases"]]) for g in got]
            comps.append({"split": split, "arm": arm, "seeds": sorted(g["seed"] for g in got), "diff": d,
                          "mcnemar_per_seed": mc})
    tables["vs_sft"] = comps
    print("\nTable 2: top-1 of each RL arm minus SFT, paired over cases (95 % bootstrap CI; McNemar p per seed)")
    for c in comps:
        print(f"{c['split']:13s} {LABEL[c['arm']]:30s} seeds {len(c['seeds'])}  {_fmt_ci(c['diff'])}  "
              f"p_boot {c['diff']['p_boot']:.3f}  McNemar p {[round(m['p'], 3) for m in c['mcnemar_per_seed']]}")

    def comp(arm):
        both = [c for c in comps if c["arm"] == arm]
        if not both:
            return {"value": None, "target": "ci95 low > 0", "held": False, "note": "not run"}
        # the two test sets pooled: every case is one unit
        a, b, u = [], [], []
        for c in both:
            g = [v for k, v in evals.items() if v["arm"] == arm and v["split"] == c["split"]]
            ref = {x["case_id"]: float(x["success"]) for x in evals[f"eval/sft/seed0/{c['split']}"]["cases"]}
            for gg in g:
                for x in gg["cases"]:
                    a.append(float(x["success"]))
                    b.append(ref[x["case_id"]])
                    u.append(x["case_id"])
        return {**target_ci(paired_diff(a, b, units=u, seed=0)), "splits": [c["split"] for c in both],
                "seeds": both[0]["seeds"]}

    targets["grpo_vs_sft"] = comp("grpo")
    targets["srppo_vs_sft"] = comp("srppo")
    shipped = {r["split"]: r for r in rows if r["arm"] == "sft"}
    s_syn, s_ddx = shipped.get("synth_test"), shipped.get("ddxplus_test")
    targets["shipped_top1_synthetic"] = target(s_syn["top1"] if s_syn else None, 0.70, ">=", n=s_syn and s_syn["n"],
                                               format_errors=s_syn and s_syn["format_errors"],
                                               invented_conditions=s_syn and s_syn["invented_conditions"])
    targets["ddxplus_top1"] = target(s_ddx["top1"] if s_ddx else None, 0.80, ">=", n=s_ddx and s_ddx["n"],
                                     format_errors=s_ddx and s_ddx["format_errors"],
                                     invented_conditions=s_ddx and s_ddx["invented_conditions"])

    # ---- RL reward curves (looked at before any comparison)
    rl = {k: v for k, v in cells.items() if k.startswith("rl/")}
    if rl:
        series = {}
        for _k, v in sorted(rl.items()):
            st = [r["step"] for r in v["curve"]]
            rw = [r["reward"] for r in v["curve"]]
            sm = [float(np.mean(rw[max(0, i - 4): i + 1])) for i in range(len(rw))]   # 5-step running mean
            series[f"{v['arm']} seed {v['seed']}"] = (st, sm)
        png = ROOT / "bench" / "results" / "dialogue-rl-reward-cpu.png"
        plot_curves(series, png, xlabel="RL step", ylabel="training reward (5-step running mean)",
                    title="RL arms from the SFT doctor: GRPO reward = success; SR-PPO reward = self-reward")
        tables["rl_curves"] = {k: {"png": str(png.relative_to(ROOT)),
                                   "first5": float(np.mean([r["reward"] for r in v["curve"][:5]])),
                                   "last5": float(np.mean([r["reward"] for r in v["curve"][-5:]])),
                                   "zero_adv_groups": [r.get("zero_adv_groups") for r in v["curve"]],
                                   "cap_binds": [r.get("cap_binds") for r in v["curve"]],
                                   "cap_binds_nonzero": [r.get("cap_binds_nonzero") for r in v["curve"]],
                                   "train_s": v["train_s"]} for k, v in rl.items()}
        print("\nRL training reward (mean of the first 5 vs the last 5 steps), zero-advantage GRPO groups")
        for k, v in tables["rl_curves"].items():
            za = [x for x in v["zero_adv_groups"] if x is not None]
            print(f"  {k:28s} {v['first5']:.3f} -> {v['last5']:.3f}"
                  + (f"   zero-adv groups {np.mean(za):.2f}" if za else ""))

    # ---- SAGE fault recall
    sage = [v for k, v in cells.items() if k.startswith("sage/")]
    if sage:
        from medkit.dialogue.sage import FAULTS

        st = []
        pa, ga, units = [], [], []
        for f in FAULTS:
            p = [x for v in sage for x in v["exposure"]["persona"][f]]
            g = [x for v in sage for x in v["exposure"]["generic"][f]]
            u = [f"{v['seed']}:{c}" for v in sage for c in v["case_ids"]]
            st.append({"fault": f, "persona": float(np.mean(p)), "generic": float(np.mean(g)), "n": len(p),
                       "mcnemar": mcnemar(p, g), "diff": paired_diff(p, g, units=u, seed=0)})
            pa += p
            ga += g
            units += [f"{f}:{x}" for x in u]
        tables["sage"] = {"seeds": len(sage), "cases_per_seed": SAGE_CASES, "faults": st,
                          "clean_top1": {s: float(np.mean([v["exposure"][s]["clean_top1"] for v in sage]))
                                         for s in ("persona", "generic")}}
        print(f"\nTable 3: SAGE fault recall ({len(sage)} seeds x {SAGE_CASES} synthetic cases; share of cases on "
              "which the fault shows an error the fault-free oracle does not)")
        print(f"{'fault':24s} {'persona':>8s} {'generic':>8s} {'persona - generic [95% CI]':>30s} {'McNemar p':>10s}")
        for r in st:
            print(f"{r['fault']:24s} {r['persona']:8.3f} {r['generic']:8.3f} {_fmt_ci(r['diff']):>30s} "
                  f"{r['mcnemar']['p']:10.3f}")
        targets["sage_persona_recall_vs_generic"] = {
            **target_ci(paired_diff(pa, ga, units=units, seed=0)), "persona": float(np.mean(pa)),
            "generic": float(np.mean(ga)), "seeds": len(sage)}

    # ---- the shipped doctor's card: its test-set numbers, when the cells evaluated these very weights
    _card_test_numbers({k: shipped[k] for k in ("synth_test", "ddxplus_test") if k in shipped}, evals)

    # ---- transcripts for the report (shipped doctor on genuine DDXPlus rows)
    ex = evals.get("eval/sft/seed0/ddxplus_test")
    extra = {"missing_cells": missing, "transcripts_ddxplus": ex["transcripts"] if ex else [],
             "sft_model_sha256": (ex or {}).get("weights_sha256")}
    path = bench.write(tables, targets=targets, extra=extra)
    print(f"\nwrote {path.relative_to(ROOT)}; {len(missing)} cells missing")
    for k, t in targets.items():
        print(f"  target {k}: value {t.get('value')}, target {t.get('target')}, held {t.get('held')}")


def _card_test_numbers(rows: dict, evals: dict) -> None:
    """Write the SFT doctor's test rows into models/dialogue-doctor-smollm2/metrics.json and re-render
    its card, only if every eval cell used ran on the weights now in the folder (sha256)."""
    from bench.shipped_models import render_cards
    from medkit.io.atomic import write_json
    from medkit.runs import sha256_file

    mfile = SFT_MODEL / "metrics.json"
    if not rows or not mfile.exists():
        return
    sha = sha256_file(SFT_MODEL / "model.safetensors")
    if any(evals[f"eval/sft/seed0/{k}"]["weights_sha256"] != sha for k in rows):
        print("the SFT eval cells are of other weights than models/dialogue-doctor-smollm2: card not updated")
        return
    m = json.loads(mfile.read_text())
    m["test"] = {k.split("_")[0]: {f: r[f] for f in ("n", "top1", "top3", "mean_turns", "format_errors",
                                                     "invented_conditions")} for k, r in rows.items()}
    write_json(mfile, m)
    render_cards()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", action="append", default=[], help="run this cell (repeatable)")
    ap.add_argument("--all", action="store_true", help="run every missing cell in order")
    ap.add_argument("--only", default="", help="with --all: only cells whose key starts with this")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--assemble", action="store_true")
    a = ap.parse_args()
    from bench.cells import Bench

    bench = Bench("dialogue", device="cpu", config=CONFIG)
    if a.list:
        for k in cell_keys():
            print(("done  " if bench.done(k) else "      ") + k)
        return
    keys = list(a.cell)
    if a.all:
        keys += [k for k in cell_keys() if k.startswith(a.only) and not bench.done(k)]
    for k in keys:
        run_cell(bench, k)
    if a.assemble or (a.all and not a.only):
        assemble(bench)


if __name__ == "__main__":
    main()
