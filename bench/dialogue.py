"""medkit.dialogue benchmark: LM doctors trained with SFT / SR-PPO / multi-turn GRPO vs the oracle.

    python bench/dialogue.py            # CPU-sized: pipelines/dialogue_tiny.yaml (tiny word-level LM)
    python bench/dialogue.py --full     # GPU-sized: pipelines/dialogue_smollm2.yaml (SmolLM2-135M, LoRA)

Same held-out synthetic cases (split "test", seed 0) and the same persona patient for
every doctor: the base model, SFT on oracle demonstrations, SFT + Self-Rewarding PPO,
SFT + multi-turn GRPO (binary success, WebAgent-R1) with and without DeepPlanner
entropy shaping, and the expected-information-gain oracle that wrote the
demonstrations. Table 1: top-1 / top-3 accuracy with 95 % bootstrap intervals,
mean turns, exam F1, history recall and red-flag recall (rubric proxies),
format-error rate, cumulative train time (SFT included in the RL rows). Table 2 (SAGE error
discovery): distinct agent errors each simulator (persona vs generic) exposes in the
same agent on the same cases. Writes ``bench/results/dialogue-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

ORDER = ("base", "sft", "srppo", "grpo", "grpo_entropy", "oracle")
LABEL = {"base": "base model", "sft": "SFT (oracle demos)", "srppo": "SFT + SR-PPO", "grpo": "SFT + GRPO (multi-turn)",
         "grpo_entropy": "SFT + GRPO + entropy shaping", "oracle": "oracle (EIG over KB)"}


def _ci(m: dict) -> str:
    if m["mean"] is None:
        return "n/a"
    return f"{m['mean']:.3f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]"


def examples(pred_dir: Path, stage: str, n_fail: int = 2) -> list[dict]:
    """One success and ``n_fail`` failures of ``stage`` (transcripts as printed in the report)."""
    recs = [json.loads(x) for x in (pred_dir / f"{stage}.jsonl").read_text().splitlines()]
    ok = [r for r in recs if r["success"]][:1]
    bad = [r for r in recs if not r["success"]][:n_fail]
    keep = ("case_id", "truth", "differential", "success", "turns", "format_errors", "red_flags_missed", "transcript")
    return [{"stage": stage, **{k: r[k] for k in keep}} for r in ok + bad]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="GPU-sized SmolLM2 pipeline (pipelines/dialogue_smollm2.yaml)")
    ap.add_argument("--out", type=Path, default=None, help="keep the run folder here (default: a temp folder)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = ap.parse_args()
    torch.set_num_threads(1 if not torch.cuda.is_available() else torch.get_num_threads())

    import yaml

    from medkit.config import load_config
    from medkit.dialogue.data import load_cases
    from medkit.dialogue.evaluate import error_discovery
    from medkit.dialogue.oracle import OracleDoctor
    from medkit.dialogue.policy import load_policy, make_doctor
    from medkit.dialogue.train import DialogueTrainConfig, run_training
    from medkit.io.atomic import write_json
    from medkit.runs import package_versions

    spec = ROOT / "pipelines" / ("dialogue_smollm2.yaml" if args.full else "dialogue_tiny.yaml")
    cfg = load_config(yaml.safe_load(spec.read_text())["config"], DialogueTrainConfig, args.overrides)
    device = "cuda" if torch.cuda.is_available() and cfg.device in ("auto", "cuda") else "cpu"
    cfg.device = device
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-dialogue-")) / "run"
    t0 = time.perf_counter()
    summary = run_training(cfg, out, log=lambda m: print(f"[{time.perf_counter() - t0:6.0f} s] {m}", flush=True))
    res = summary["results"]

    print(f"\nTable 1: held-out diagnostic dialogue ({summary['n_eval']} synthetic test cases, persona patient, "
          f"max {cfg.max_turns} turns, {device}, model {cfg.model.name})")
    hdr = (f"{'doctor':32s} {'top-1 [95% CI]':22s} {'top-3 [95% CI]':22s} {'turns':>6s} {'exam F1':>8s} "
           f"{'hist rec':>8s} {'RF rec':>7s} {'fmt err':>8s} {'train s':>8s}")
    print(hdr)
    print("-" * len(hdr))
    for k in ORDER:
        if k in res:
            r = res[k]
            hr, rf = r["history_recall"]["mean"], r["red_flag_recall"]["mean"]
            print(f"{LABEL[k]:32s} {_ci(r['top1']):22s} {_ci(r['top3']):22s} {r['turns']['mean']:6.2f} "
                  f"{r['exam_f1']['mean']:8.3f} {hr if hr is not None else float('nan'):8.3f} "
                  f"{rf if rf is not None else float('nan'):7.3f} {r['format_error_rate']:8.3f} {r['train_s']:8.0f}")

    # Table 2: error discovery on the same agents, same cases
    kb, _, held_out = load_cases(cfg.data)
    agents = {"oracle": OracleDoctor(kb, stop_p=cfg.oracle.stop_p, min_gain=cfg.oracle.min_gain,
                                     test_weight=cfg.oracle.test_weight, rationale=cfg.model.rationale)}
    for stage in ("sft", "grpo"):
        if (out / stage / "model.safetensors").exists():
            m, tok, mcfg, _, _ = load_policy(out / stage, device=device)
            agents[stage] = make_doctor(m, tok, mcfg)
    disc = {name: error_discovery(a, held_out, kb, max_turns=cfg.max_turns, seed=cfg.seed) for name, a in agents.items()}
    print(f"\nTable 2: distinct agent errors found (same agent, same {len(held_out)} cases; SAGE error discovery)")
    hdr2 = f"{'agent':32s} {'persona sim':>12s} {'generic sim':>12s} {'ratio':>7s}  {'persona by type'}"
    print(hdr2)
    print("-" * len(hdr2))
    for name, d in disc.items():
        print(f"{LABEL[name]:32s} {d['persona']['n']:12d} {d['generic']['n']:12d} {d['persona_over_generic'] or 0:7.2f}  "
              f"{d['persona']['by_type']}")

    ex = examples(out / "predictions", "grpo" if "grpo" in res else "sft")
    result = {
        "benchmark": "dialogue", "device": device, "full": args.full, "pipeline": str(spec.relative_to(ROOT)),
        "overrides": args.overrides, "seed": cfg.seed, "machine": {"platform": platform.platform(),
                                                                   "python": sys.version.split()[0],
                                                                   "cpus": os.cpu_count(),
                                                                   "torch_threads": torch.get_num_threads()},
        "versions": package_versions(), "n_eval": summary["n_eval"], "eval_case_ids": summary["eval_case_ids"],
        "oracle_demonstrations": summary["oracle_demonstrations"], "results": res,
        "error_discovery": {n: {k: ({kk: vv for kk, vv in v.items()} if isinstance(v, dict) else v) for k, v in d.items()}
                            for n, d in disc.items()},
        "examples": ex, "wall_s": round(time.perf_counter() - t0, 1),
    }
    dest = ROOT / "bench" / "results" / f"dialogue-{'gpu' if device == 'cuda' else 'cpu'}.json"
    write_json(dest, result)
    print(f"\nwrote {dest.relative_to(ROOT)} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
