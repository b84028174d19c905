"""Report-generation benchmark: CoFE vs its ablations vs nearest-neighbour retrieval.

    python bench/report.py              # CPU-sized default (~15 min on one core)
    python bench/report.py --full       # GPU-sized (SmolLM2-135M + LoRA, DenseNet121, 224 px)

Same synthetic radiograph set (``medkit.synth.cxr``, data seed 0, PA view,
R2Gen split), same encoder, LM, optimiser, steps and batch for every variant;
training seeds 0, 1, 2. Methods:

- **CoFE**: counterfactual InfoNCE + learnable prompt with factual and counterfactual content;
- **no counterfactual**: the same without counterfactual images (InfoNCE keeps in-batch negatives,
  the prompt loses its counterfactual tokens);
- **no learnable prompt**: counterfactual training kept, the LM sees the visual tokens only;
- **retrieval (pixels)** / **retrieval (encoder)**: the report of the most similar training image,
  by pixel correlation / by the trained CoFE encoder's pooled features (same seed).

Metrics on the test split: BLEU-1..4, METEOR, ROUGE-L, CIDEr (medkit.metrics.text, pycocoevalcap
definitions, R2Gen convention: whitespace tokens of R2Gen-cleaned text) and CE precision / recall /
F1 from medkit.metrics.clinical's labeler on generated vs reference reports (positive = 1;
micro, macro, and example-based as PromptMRG). Throughput: test reports generated per second
(greedy, batch 16, including the test-time counterfactual). CPU timings compare only within one run.
Writes bench/results/report-<device>.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medkit.config import load_config, to_dict  # noqa: E402
from medkit.report_generation.baselines import encoder_features, pixel_features, retrieve  # noqa: E402
from medkit.report_generation.cofe_config import ReportConfig  # noqa: E402
from medkit.report_generation.data import load_studies, stack_images  # noqa: E402
from medkit.report_generation.train import fit, generate_for, score_reports  # noqa: E402
from medkit.runs import package_versions, pick_device  # noqa: E402

SEEDS = (0, 1, 2)
VARIANTS = {"CoFE": [], "no counterfactual": ["counterfactual.enabled=false"],
            "no learnable prompt": ["decoder.prompt=false"]}
COLUMNS = [("BLEU_1", "B-1"), ("BLEU_4", "B-4"), ("METEOR", "MTR"), ("ROUGE_L", "R-L"), ("CIDEr", "CIDEr"),
           ("micro_precision", "CE-P"), ("micro_recall", "CE-R"), ("micro_f1", "CE-F1"),
           ("macro_f1", "F1mac"), ("example_f1", "F1ex")]


def settings(full: bool) -> dict:
    if full:
        return {"n_cases": 2000, "synth_size": 256, "config": [
            "data.image_size=224", "encoder.init_features=64", "encoder.growth_rate=32",
            "encoder.block_config=[6,12,24,16]", "counterfactual.patch=16", "counterfactual.warmup_steps=1000",
            "counterfactual.text_embedder=minilm", "decoder.lm=smollm2-135m-instruct", "decoder.tune=lora",
            "decoder.lora_r=16", "decoder.n_context=16", "optim.steps=4000", "optim.batch_size=16", "optim.lr=3e-4",
            "optim.lr_lm=2e-4", "generate.max_new_tokens=96"]}
    return {"n_cases": 300, "synth_size": 64, "config": [
        "data.image_size=64", "encoder.init_features=16", "encoder.growth_rate=8", "encoder.block_config=[2,2,2]",
        "counterfactual.patch=8", "counterfactual.warmup_steps=150", "counterfactual.text_embedder=minilm",
        "decoder.lm=tiny-word", "decoder.tune=full", "decoder.tiny_hidden=128", "decoder.tiny_layers=2",
        "decoder.n_context=8", "optim.steps=400", "optim.batch_size=8", "optim.lr=2e-3", "optim.lr_lm=2e-3",
        "generate.max_new_tokens=80"]}


def _fmt(vals: list[float]) -> str:
    return f"{np.mean(vals):.3f}+-{np.std(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="GPU-sized settings")
    ap.add_argument("--data", type=Path, default=None, help="synthetic set folder (default: a temp folder)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--n-cases", type=int, default=None, help="studies to generate (default per settings)")
    ap.add_argument("--set", dest="set_", action="append", default=[], help="extra config override key=value")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    os.environ.setdefault("MEDKIT_NO_PROGRESS", "1")
    dev = pick_device(args.device)
    s = settings(args.full)
    if args.n_cases:
        s["n_cases"] = args.n_cases
    s["config"] = s["config"] + args.set_
    t_all = time.perf_counter()
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="medkit-bench-report-")
        args.data = Path(tmp.name) / "synth-cxr"
    base = [f"data.root={args.data}", "data.dataset=synthetic", "data.generate_if_missing=true",
            f"data.synth_n_cases={s['n_cases']}", "data.synth_seed=0", f"data.synth_size={s['synth_size']}"] + s["config"]
    cfg0 = load_config({}, ReportConfig, base)
    t0 = time.perf_counter()
    studies = load_studies(cfg0.data)
    train, val, test = studies["train"], studies.get("val", []), studies["test"]
    print(f"data: {len(train)} train / {len(val)} val / {len(test)} test studies "
          f"({time.perf_counter() - t0:.1f} s incl. generation); device {dev}", flush=True)
    refs = {x.case_id: x.report for x in test}
    train_reports = [x.report for x in train]
    runs: dict[str, list[dict]] = {m: [] for m in [*VARIANTS, "retrieval (pixels)", "retrieval (encoder)"]}
    examples = []

    tq = time.perf_counter()
    hy = retrieve(pixel_features(stack_images(train)), train_reports, pixel_features(stack_images(test)))
    pix = score_reports(refs, dict(zip(refs, hy)))
    pix.update(train_s=0.0, reports_per_s=len(test) / (time.perf_counter() - tq))
    for _ in args.seeds:
        runs["retrieval (pixels)"].append(pix)  # deterministic: the same for every seed

    for seed in args.seeds:
        for name, extra in VARIANTS.items():
            cfg = load_config({}, ReportConfig, [*base, f"seed={seed}", *extra])
            t1 = time.perf_counter()
            res = fit(cfg, train, val, device=str(dev), log=lambda m: print("   ", m, flush=True),
                      progress=lambda it, *a, **k: it)
            train_s = time.perf_counter() - t1
            model = res["model"]
            hyps, secs = generate_for(model, test, beams=cfg.generate.beams,
                                      max_new_tokens=cfg.generate.max_new_tokens, device=dev)
            sc = score_reports(refs, dict(zip(refs, hyps)))
            sc.update(train_s=train_s, reports_per_s=len(test) / secs)
            if res["counterfactuals"]:
                sc["cf_shifted_fraction"] = float(np.mean([r["shifted"] for r in res["counterfactuals"]]))
                sc["cf_mean_patches"] = float(np.mean([r["n_swapped"] for r in res["counterfactuals"]]))
            runs[name].append(sc)
            print(f"seed {seed} {name:20s} B-4 {sc['BLEU_4']:.3f} CIDEr {sc['CIDEr']:.3f} "
                  f"CE-F1 {sc['micro_f1']:.3f} ({train_s:.0f} s train, {sc['reports_per_s']:.1f} rep/s)", flush=True)
            if name == "CoFE":
                if seed == args.seeds[0]:
                    examples = [{"case_id": x.case_id, "generated": h, "reference": x.report}
                                for x, h in zip(test[:3], hyps[:3])]
                tq = time.perf_counter()
                hy = retrieve(encoder_features(model.encoder, stack_images(train).to(dev)), train_reports,
                              encoder_features(model.encoder, stack_images(test).to(dev)))
                enc = score_reports(refs, dict(zip(refs, hy)))
                enc.update(train_s=train_s, reports_per_s=len(test) / (time.perf_counter() - tq))
                runs["retrieval (encoder)"].append(enc)
            del model, res

    widths = [22] + [13] * len(COLUMNS) + [9, 9]
    head = ["method"] + [c[1] for c in COLUMNS] + ["train s", "rep/s"]
    lines = [f"Report generation on synthetic CXR ({len(train)}/{len(val)}/{len(test)} studies, "
             f"{cfg0.data.image_size} px, {cfg0.decoder.lm} LM), seeds {args.seeds}, mean+-std over seeds",
             "".join(h.ljust(w) for h, w in zip(head, widths))]
    agg = {}
    for m, rs in runs.items():
        agg[m] = {k: {"mean": float(np.mean([r[k] for r in rs])), "std": float(np.std([r[k] for r in rs]))}
                  for k in [c[0] for c in COLUMNS] + ["train_s", "reports_per_s", "macro_precision", "macro_recall",
                                                       "example_precision", "example_recall", "BLEU_2", "BLEU_3"]}
        row = [m] + [_fmt([r[k] for r in rs]) for k, _ in COLUMNS]
        row += [f"{np.mean([r['train_s'] for r in rs]):.0f}", f"{np.mean([r['reports_per_s'] for r in rs]):.1f}"]
        lines.append("".join(c.ljust(w) for c, w in zip(row, widths)))
    c = agg["CoFE"]
    for peer in [m for m in runs if m != "CoFE"]:
        p = agg[peer]
        lines.append(f"  CoFE / {peer}: CE-F1 (micro) x{c['micro_f1']['mean'] / max(p['micro_f1']['mean'], 1e-9):.2f}, "
                     f"BLEU-4 x{c['BLEU_4']['mean'] / max(p['BLEU_4']['mean'], 1e-9):.2f}")
    lines.append(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (whole process)")
    text = "\n".join(lines)
    print(text)
    res_all = {"printed": text, "full": args.full, "aggregate": agg, "runs": runs, "examples": examples,
               "seeds": {"data": 0, "training": args.seeds}, "settings": {**s, "resolved": to_dict(cfg0)},
               "split": {"train": len(train), "val": len(val), "test": len(test)},
               "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                           "torch_threads": torch.get_num_threads(), "device": str(dev),
                           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
               "versions": package_versions(), "wall_s": time.perf_counter() - t_all}
    out = args.out or ROOT / "bench" / "results" / f"report-{'cuda' if dev.type == 'cuda' else dev.type}.json"
    from medkit.io import write_json

    write_json(out, res_all)
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
