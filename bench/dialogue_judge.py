"""LLM rubric judge vs the rule judge: does a small local model score dialogues like the rule does?

    python bench/dialogue_judge.py [--cases 20] [--lm smollm2-135m-instruct] [--device cpu]

Dialogues: held-out synthetic cases (split "test", seed 0), each played by three doctors
of different thoroughness against the persona patient: the oracle (stop at p >= 0.95),
a hasty oracle (stop at p >= 0.5, so fewer questions) and the shipped tiny SFT doctor
(models/dialogue-doctor-synthetic, constrained actions). Every applicable (dialogue, rubric item) pair is
scored by the deterministic :class:`medkit.dialogue.judge.RuleJudge` (the reference:
its levels follow from the case sheet by definition) and by the LLM judge in both
modes: ``generate`` (reason, then ``<answer>N</answer>``) and ``scored`` (G-Eval digit
probabilities). Reported per mode: parse failures, and on the pairs it scored Pearson r,
Spearman rho and mean absolute difference to the rule levels (0..1 scale), and the
time ratio scored / generate (measured in this run). Writes
``bench/results/dialogue_judge-<device>.json`` (``bench/cells.py`` provenance; the one
target, ``judge_default_mode_parses``, holds when the CLI's default judge mode
(``scored``) parses every pair).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for v in np.unique(x):                      # average ranks of ties
        r[x == v] = r[x == v].mean()
    return r


def _f(v) -> str:
    return f"{v:.3f}" if v is not None else "n/a"


def agreement(ref: list[float], got: list[float | None]) -> dict:
    pairs = [(a, b) for a, b in zip(ref, got) if b is not None]
    out = {"n_scored": len(pairs), "n_failed": len(ref) - len(pairs)}
    if len(pairs) < 3:
        return {**out, "pearson": None, "spearman": None, "mae": None}
    a, b = (np.array(v, dtype=float) for v in zip(*pairs))
    pear = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None
    spear = float(np.corrcoef(_rank(a), _rank(b))[0, 1]) if a.std() > 0 and b.std() > 0 else None
    return {**out, "pearson": pear, "spearman": spear, "mae": float(np.abs(a - b).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--lm", default="smollm2-135m-instruct")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))

    from bench.cells import Bench, target
    from medkit.dialogue.data import load_split
    from medkit.dialogue.evaluate import evaluate_doctor
    from medkit.dialogue.judge import RUBRIC, LLMJudge, RuleJudge
    from medkit.dialogue.oracle import OracleDoctor
    from medkit.dialogue.policy import load_policy, make_doctor
    from medkit.dialogue.train_config import DataConfig
    from medkit.lm.load import load_causal_lm

    kb, cases = load_split(DataConfig(seed=0, pool=200 + 20 * args.cases), "test", args.cases)
    m, tok, mcfg, _, _ = load_policy(ROOT / "models" / "dialogue-doctor-synthetic")
    doctors = {"oracle": OracleDoctor(kb, stop_p=0.95), "hasty oracle": OracleDoctor(kb, stop_p=0.5),
               "tiny SFT doctor": make_doctor(m, tok, mcfg)}
    all_cases, records = [], []
    for doc in doctors.values():
        recs, _ = evaluate_doctor(doc, cases, kb, judge=None, max_turns=15)
        all_cases += cases
        records += recs
    rule = RuleJudge()(all_cases, records, kb)
    keys = [(i, k) for i, r in enumerate(rule) for k in RUBRIC if r[k] is not None]
    ref = [rule[i][k] for i, k in keys]

    lm, ltok = load_causal_lm(args.lm, device=args.device)
    lm.eval()
    res, times, examples = {}, {}, {}
    for mode in ("scored", "generate"):
        judge = LLMJudge.from_model(lm, ltok, mode=mode, max_new_tokens=args.max_new_tokens)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = judge(all_cases, records, kb)
        times[mode] = time.perf_counter() - t0
        got = [out[i][k] for i, k in keys]
        res[mode] = {**agreement(ref, got), "stats": dict(judge.stats),
                     "mean_level": float(np.mean([g for g in got if g is not None])) if any(
                         g is not None for g in got) else None}
        examples[mode] = [{"item": k, "rule": rule[i][k], "llm": out[i][k], "reply": out[i]["replies"][k][:600]}
                          for i, k in keys[:3]]
        print(f"{mode}: {res[mode]}", flush=True)

    lines = [f"LLM judge ({args.lm}, {args.device}) vs rule judge: {len(keys)} (dialogue, item) pairs from "
             f"{len(records)} dialogues ({', '.join(doctors)}) on {len(cases)} held-out cases; rule mean level "
             f"{np.mean(ref):.3f}",
             f"{'mode':10s} {'scored':>7s} {'failed':>7s} {'pearson':>8s} {'spearman':>9s} {'MAE':>6s} {'mean':>6s}"]
    for mode, r in res.items():
        lines.append(f"{mode:10s} {r['n_scored']:7d} {r['n_failed']:7d} {_f(r['pearson']):>8s} {_f(r['spearman']):>9s} "
                     f"{_f(r['mae']):>6s} {_f(r['mean_level']):>6s}")
    lines.append(f"time ratio scored / generate (same run): {times['scored'] / times['generate']:.3f}")
    text = "\n".join(lines)
    print("\n" + text)
    dev = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    bench = Bench("dialogue_judge", device=dev, config=vars(args))
    sc = res["scored"]
    path = bench.write({"modes": res}, targets={"judge_default_mode_parses": target(
        sc["n_failed"], 0, "<=", n_pairs=len(keys), mode="scored")},
        extra={"printed": text, "lm": args.lm, "n_cases": len(cases), "n_pairs": len(keys),
               "rule_mean": float(np.mean(ref)), "seconds": times, "examples": examples,
               "torch_threads": torch.get_num_threads()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
