"""Report-generation benchmark: CoFE vs its ablations vs nearest-neighbour retrieval, on synthetic
radiographs whose findings co-occur and whose training set carries a spurious cue.

    python bench/report.py --only cells --seeds 0     # 1. seed 0 of every arm: their val curves (PNG)
    python bench/report.py --only cells --seeds 1 2   # 2. the other seeds, once the curves plateau
    python bench/report.py --only shipped             # 3. the shipped models/cofe-smollm2 on fresh studies
    python bench/report.py                            # all of it, then the table (bench/results/report-cpu.json)
    python bench/report.py --assemble                 # the table (and curves) from finished cells only

Every trained cell logs its validation CE micro-F1 (generated reports, 100 val studies) every
250 steps; the budget (``BUDGET`` steps after a 1,000-step diagnosis-only warm-up) was set from
the seed-0 curves and every cell's own curve is tested for a plateau (medkit.viz.curves.plateau:
gain < 0.01 over the last quarter) in the results file.

Data (``medkit.synth.cxr``, seed 0, 64 px PA, masks): 3,000 studies, 2,100 train / 300 val /
600 test, findings from the MIMIC-CXR-like co-occurrence model, and the spurious cue
``pacemaker-cardiomegaly``: in train and val a pacemaker goes with cardiomegaly 90 % of the
time (present with 90 % chance when cardiomegaly is positive, 10 % when not), in test it is
independent of it. The *conflict* subset: test studies where the cue disagrees with the label.

Arms, same data, encoder, LM, optimiser, steps and batch; training seeds 0, 1, 2:

- **CoFE**: counterfactual InfoNCE + learnable prompt with factual and counterfactual content;
  counterfactuals built against the labels and rebuilt every ``refresh_every`` steps;
- **no counterfactual**: no counterfactual images (InfoNCE keeps its in-batch negatives, the
  prompt loses its counterfactual tokens);
- **no learnable prompt**: counterfactual training kept, the LM sees the visual tokens only;
- **retrieval (pixels)** / **retrieval (encoder)**: the report of the most similar training image
  by pixel correlation / by the same seed's trained CoFE encoder.

Metrics on the 600 test studies: BLEU-1/4, METEOR 1.5 (pycocoevalcap's jar, through Java),
ROUGE-L, CIDEr (R2Gen convention: whitespace tokens of R2Gen-cleaned text); CE from
medkit.metrics.clinical's labeler on generated vs reference reports (positive = 1): micro-F1 on all
studies and on the conflict subset, per-study (example-based) F1 for the paired bootstrap CIs
(units = study ids, seeds averaged within a study), cardiomegaly accuracy on the conflict subset
(McNemar), and the share of abnormal studies given an all-normal report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cells import RESULTS, Bench, target, target_ci  # noqa: E402
from bench.report_plots import plot_cooccurrence, plot_overlap  # noqa: E402
from medkit.config import load_config  # noqa: E402
from medkit.metrics.clinical import OBSERVATIONS, ce_scores, label_report, label_vector  # noqa: E402
from medkit.metrics.stats import mcnemar, paired_diff  # noqa: E402
from medkit.report_generation.cofe_config import ReportConfig  # noqa: E402
from medkit.runs import pick_device  # noqa: E402
from medkit.viz.curves import plateau, plot_curves  # noqa: E402

SEEDS = (0, 1, 2)
ARMS = {"CoFE": [], "no counterfactual": ["counterfactual.enabled=false"],
        "no learnable prompt": ["decoder.prompt=false"]}
DATA = {"n_cases": 3000, "seed": 0, "size": 64, "lateral": False, "spurious_cue": "pacemaker-cardiomegaly",
        "cue_strength": 0.9, "splits": [0.7, 0.1, 0.2]}
BASE = ["data.dataset=synthetic", "data.image_size=64", "encoder.init_features=16", "encoder.growth_rate=8",
        "encoder.block_config=[2,2,2]", "counterfactual.patch=8", "counterfactual.warmup_steps=1000",
        "counterfactual.refresh_every=500", "counterfactual.text_embedder=minilm", "decoder.lm=tiny-word",
        "decoder.tune=full", "decoder.tiny_hidden=128", "decoder.tiny_layers=2", "decoder.n_context=8",
        "decoder.max_report_tokens=160", "optim.batch_size=16", "optim.lr=2e-3", "optim.lr_lm=2e-3",
        "optim.eval_every=250", "generate.max_new_tokens=140", "evaluation.meteor=jar"]
BUDGET = 2000  # training steps after the warm-up, from the seed-0 curves (report-cpu-curves.png)
CURVE_EVERY, CURVE_VAL = 250, 100  # every cell's val curve: check period (steps), val studies
PLATEAU_TOL = 0.01  # CE micro-F1 gained over the last quarter of the steps that still counts as a plateau
SHIPPED = {"model": "models/cofe-smollm2", "n_cases": 300, "seed": 7}  # fresh studies: another seed
COLUMNS = [("BLEU_1", "B-1"), ("BLEU_4", "B-4"), ("METEOR", "MTR-1.5"), ("ROUGE_L", "R-L"), ("CIDEr", "CIDEr"),
           ("micro_f1", "CE-F1"), ("conflict_micro_f1", "CE-F1 conf"), ("example_f1", "F1ex"),
           ("conflict_cm_acc", "CM acc conf"), ("abnormal_all_normal", "abn->normal")]


# ------------------------------------------------------------------ data

def data_dir() -> Path:
    key = hashlib.sha256(json.dumps(DATA, sort_keys=True).encode()).hexdigest()[:10]
    return (RESULTS if RESULTS != ROOT / "bench" / "results" else ROOT / "runs" / "bench-report") / f"data-{key}"


def ensure_data(log=print) -> Path:
    """The benchmark's synthetic set (generated once, byte-identical from its seed)."""
    from medkit.synth.cxr import CXRConfig, generate_dataset

    root = data_dir()
    if not (root / "annotation.json").exists():
        t = time.perf_counter()
        generate_dataset(CXRConfig(**{**DATA, "splits": tuple(DATA["splits"])}), root)
        log(f"generated {root} in {time.perf_counter() - t:.0f} s")
    return root


def annotation_sha(root: Path) -> str:
    return hashlib.sha256((root / "annotation.json").read_bytes()).hexdigest()


def load_bench_studies(root: Path):
    from medkit.report_generation.data import load_studies

    cfg = load_config({}, ReportConfig, [f"data.root={root}", *BASE])
    st = load_studies(cfg.data)
    ann = json.loads((root / "annotation.json").read_text())
    cue = {e["id"]: e.get("cue") for rows in ann.values() for e in rows}
    return st, cue


# ------------------------------------------------------------------ scoring

def per_study(refs: dict[str, str], hyps: dict[str, str]) -> dict[str, dict]:
    """Per study: example F1 over the 14 labels, reference/generated label vectors."""
    out = {}
    for i in refs:
        t, p = label_vector(label_report(refs[i])), label_vector(label_report(hyps[i]))
        tp, fp, fn = int((t & p).sum()), int((~t.astype(bool) & p.astype(bool)).sum()), int((t.astype(bool) & ~p.astype(bool)).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        out[i] = {"f1": f1, "ref": t.tolist(), "gen": p.tolist()}
    return out


def score(refs: dict[str, str], hyps: dict[str, str], cue: dict, meteor: str = "jar") -> dict:
    """Every metric of the table for one arm and seed (see the module doc)."""
    from medkit.metrics.text import nlg_metrics

    nlg = nlg_metrics(refs, hyps, tokenize="none", meteor=meteor)
    ps = per_study(refs, hyps)
    ids = sorted(refs)
    T = np.array([ps[i]["ref"] for i in ids], bool)
    P = np.array([ps[i]["gen"] for i in ids], bool)
    ce = ce_scores(T, P)
    conf = [k for k, i in enumerate(ids) if cue.get(i) and cue[i]["conflict"]]
    cm = OBSERVATIONS.index("Cardiomegaly")
    nf = OBSERVATIONS.index("No Finding")
    abn = ~T[:, nf]
    out = {**{k: v for k, v in nlg.items() if k != "per_case"}, **{k: v for k, v in ce.items()},
           "conflict_micro_f1": ce_scores(T[conf], P[conf])["micro_f1"] if conf else None,
           "conflict_cm_acc": float((T[conf, cm] == P[conf, cm]).mean()) if conf else None,
           "abnormal_all_normal": float(P[abn, nf].mean()) if abn.any() else None,
           "n": len(ids), "n_conflict": len(conf)}
    return out


def cf_overlap(root: Path, train, builds: list[dict], patch: int) -> list[dict]:
    """Per counterfactual build: how much of each swap mask lies on the findings that differ between
    anchor and negative (their masks, from ``masks/{id}.png``), against random cells."""
    from medkit.report_generation.counterfactual import cell_hits, swap_precision
    from medkit.synth.cxr import read_masks

    masks = {s.case_id: read_masks(root / "masks" / f"{s.case_id}.png") for s in train}
    out = []
    for b in builds:
        rows, by_obs = [], {}
        for r in b["rows"]:
            if r["negative"] < 0 or not r["cells"]:
                continue
            a, n = train[r["index"]], train[r["negative"]]
            diff = [o for k, o in enumerate(OBSERVATIONS) if o != "No Finding" and a.labels[k] != n.labels[k]]
            m = np.zeros_like(masks[a.case_id]["heart"])
            for o in diff:
                m |= masks[a.case_id][o] | masks[n.case_id][o]
            if not m.any():
                continue
            sp = swap_precision(r["cells"], cell_hits(m, patch))
            rows.append((sp["precision"], sp["random"], r["shifted"], r["already_shifted"]))
            for o in diff:
                by_obs.setdefault(o, []).append((sp["precision"], sp["random"]))
        pr = np.array([x[0] for x in rows])
        rd = np.array([x[1] for x in rows])
        out.append({"step": b["step"], "n": len(rows), "shifted": b["shifted"], "already_shifted": b["already_shifted"],
                    "mean_swapped": b["mean_swapped"], "precision": float(pr.mean()) if rows else None,
                    "random": float(rd.mean()) if rows else None,
                    "precision_vs_random": paired_diff(pr, rd) if rows else None,
                    "by_observation": {o: {"n": len(v), "precision": float(np.mean([x[0] for x in v])),
                                           "random": float(np.mean([x[1] for x in v]))} for o, v in by_obs.items()},
                    "per_study": [[round(x[0], 4), round(x[1], 4)] for x in rows]})
    return out


# ------------------------------------------------------------------ cells

def arm_config(root: Path, arm: str, seed: int, steps: int, *extra: str) -> ReportConfig:
    return load_config({}, ReportConfig, [f"data.root={root}", *BASE, f"seed={seed}", f"optim.steps={steps}",
                                          *ARMS[arm], *extra])


def curve_verdict(history: list[dict], warmup: int) -> dict:
    """The plateau test on one cell's val CE micro-F1 curve (steps counted after the warm-up)."""
    h = [x for x in history if "val_ce_f1" in x]
    return plateau([x["step"] - warmup for x in h], [x["val_ce_f1"] for x in h], tol=PLATEAU_TOL, smooth=2)


def run_arm(root: Path, arm: str, seed: int, steps: int, dev, *, overlap: bool) -> dict:
    """Train one arm/seed, generate the test reports; for CoFE also encoder retrieval."""
    from medkit.report_generation.baselines import encoder_features, retrieve
    from medkit.report_generation.data import stack_images
    from medkit.report_generation.train import ReportData, fit, generate_for

    st, cue = load_bench_studies(root)
    train, test = st["train"], st["test"]
    cfg = arm_config(root, arm, seed, steps, f"evaluation.val_ce_every={CURVE_EVERY}",
                     f"evaluation.val_ce_max={CURVE_VAL}")
    t = time.perf_counter()
    res = fit(cfg, ReportData(train, st["val"]), run=None, device=str(dev), log=lambda m: print("   ", m, flush=True),
              progress=lambda it, *a, **k: it)
    train_s = time.perf_counter() - t
    model = res["model"]
    hyps, gen_s = generate_for(model, test, beams=cfg.generate.beams, max_new_tokens=cfg.generate.max_new_tokens,
                               device=dev)
    refs = {s.case_id: s.report for s in test}
    out = {"arm": arm, "seed": seed, "steps": steps, "train_s": train_s, "reports_per_s": len(test) / gen_s,
           "hyps": dict(zip(refs, hyps)), "scores": score(refs, dict(zip(refs, hyps)), cue),
           "cf_builds": [{k: v for k, v in b.items() if k != "rows"} for b in res["cf_builds"]],
           "history": res["history"], "plateau": curve_verdict(res["history"], cfg.counterfactual.warmup_steps)}
    if overlap and res["cf_builds"]:
        out["cf_overlap"] = cf_overlap(root, train, res["cf_builds"], cfg.counterfactual.patch)
    if arm == "CoFE":
        tq = time.perf_counter()
        hy = retrieve(encoder_features(model.encoder, stack_images(train).to(dev)), [s.report for s in train],
                      encoder_features(model.encoder, stack_images(test).to(dev)))
        out["retrieval_encoder"] = {"hyps": dict(zip(refs, hy)), "scores": score(refs, dict(zip(refs, hy)), cue),
                                    "reports_per_s": len(test) / (time.perf_counter() - tq)}
    return out


def run_pixels(root: Path) -> dict:
    from medkit.report_generation.baselines import pixel_features, retrieve
    from medkit.report_generation.data import stack_images

    st, cue = load_bench_studies(root)
    refs = {s.case_id: s.report for s in st["test"]}
    t = time.perf_counter()
    hy = retrieve(pixel_features(stack_images(st["train"])), [s.report for s in st["train"]],
                  pixel_features(stack_images(st["test"])))
    return {"hyps": dict(zip(refs, hy)), "scores": score(refs, dict(zip(refs, hy)), cue),
            "reports_per_s": len(refs) / (time.perf_counter() - t)}


def run_shipped(dev) -> dict:
    """models/cofe-smollm2 on fresh synthetic studies (another seed; no cue; default label model)."""
    import tempfile

    from medkit.report_generation.data import load_studies
    from medkit.report_generation.predict import load_model
    from medkit.report_generation.train import generate_for
    from medkit.synth.cxr import CXRConfig, generate_dataset

    folder = ROOT / SHIPPED["model"]
    model, cfg = load_model(folder, str(dev))
    with tempfile.TemporaryDirectory() as tmp:
        # the loader wants a training split: draw twice the studies, score the test half only
        generate_dataset(CXRConfig(n_cases=2 * SHIPPED["n_cases"], seed=SHIPPED["seed"], size=cfg.data.synth_size,
                                   lateral=False, write_masks=False, splits=(0.5, 0.0, 0.5)), tmp)
        dcfg = load_config({}, ReportConfig, [f"data.root={tmp}", f"data.image_size={cfg.data.image_size}"])
        test = load_studies(dcfg.data)["test"]
        t = time.perf_counter()
        hyps, gen_s = generate_for(model, test, beams=cfg.generate.beams, max_new_tokens=cfg.generate.max_new_tokens,
                                   device=dev)
    refs = {s.case_id: s.report for s in test}
    sc = score(refs, dict(zip(refs, hyps)), {})
    weights = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    return {"model": SHIPPED["model"], "weights_sha256": weights, "n": len(test), "scores": sc,
            "reports_per_s": len(test) / gen_s, "seconds": time.perf_counter() - t,
            "examples": [{"case_id": s.case_id, "generated": h, "reference": s.report} for s, h in zip(test[:5], hyps)]}


# ------------------------------------------------------------------ the table

def not_below(diff: dict) -> dict:
    """Non-inferiority as a target: held when the 95 % CI of ``a - b`` reaches 0 or above."""
    lo, hi = diff["ci95"]
    return {"value": diff["mean"], "target": "ci95 high >= 0 (not below)", "held": hi is not None and hi >= 0,
            "ci95": [lo, hi], "p_boot": diff.get("p_boot"), "n_units": diff.get("n_units")}


def paired(cells_a: list[dict], cells_b: list[dict], ids: list[str]) -> dict | None:
    """Paired bootstrap of per-study F1, rows = (study, seed) with the same seed on both sides
    (a cell without ``seed``, retrieval by pixels, pairs with every seed). None: no common seed."""
    by_b = {cb.get("seed"): cb for cb in cells_b}
    a, b, u, seeds = [], [], [], []
    for ca in cells_a:
        cb = by_b.get(ca.get("seed"), by_b.get(None))
        if cb is None:
            continue
        seeds.append(ca.get("seed"))
        refs = ca["refs"]
        sa = per_study({i: refs[i] for i in ids}, {i: ca["hyps"][i] for i in ids})
        sb = per_study({i: refs[i] for i in ids}, {i: cb["hyps"][i] for i in ids})
        for i in ids:
            a.append(sa[i]["f1"])
            b.append(sb[i]["f1"])
            u.append(i)
    if not a:
        return None
    return {**paired_diff(a, b, units=u), "seeds": seeds}


def missing_target(goal: str, why: str) -> dict:
    """A target that cannot be computed yet: not held, with the cells it waits for."""
    return {"value": None, "target": goal, "held": False, "reason": why}


def fmt(vals) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return f"{np.mean(vals):.3f}+-{np.std(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def plot_seed0_curves(b: Bench) -> list[str]:
    """report-cpu-curves.png from the seed-0 cells; returns the arms drawn."""
    W = int(next(x for x in BASE if x.startswith("counterfactual.warmup_steps=")).split("=")[1])
    series, drawn = {}, []
    for arm in ARMS:
        c = b.load(f"arm/{arm}/seed0")
        if c is None:
            continue
        drawn.append(arm)
        h = [x for x in c["history"] if "val_ce_f1" in x]
        series[f"{arm}: val CE-F1 (reports)"] = ([x["step"] - W for x in h], [x["val_ce_f1"] for x in h])
        series[f"{arm}: val F1 (diagnosis head)"] = ([x["step"] - W for x in h], [x.get("val_diag_f1") for x in h])
    if series:
        plot_curves(series, RESULTS / "report-cpu-curves.png", xlabel="step (after the diagnosis-only warm-up)",
                    ylabel="micro-F1", title=f"seed 0, {CURVE_VAL} val studies, every {CURVE_EVERY} steps; "
                                             f"budget {BUDGET} steps")
    return drawn


def shipped_key() -> str:
    """The shipped model's cell, keyed by its weights (a retrained model gets a new cell)."""
    sha = hashlib.sha256((ROOT / SHIPPED["model"] / "model.safetensors").read_bytes()).hexdigest()
    return f"shipped/{sha[:12]}"


def collect(b: Bench, refs: dict[str, str]) -> tuple[dict[str, list[dict]], list[str]]:
    """Every finished cell by method (``seed`` on each), and the keys of the cells still missing."""
    runs: dict[str, list[dict]] = {m: [] for m in [*ARMS, "retrieval (pixels)", "retrieval (encoder)"]}
    missing = []
    for seed in SEEDS:
        for arm in ARMS:
            c = b.load(f"arm/{arm}/seed{seed}")
            if c is None:
                missing.append(f"arm/{arm}/seed{seed}")
                continue
            runs[arm].append({**c, "refs": refs})
            if arm == "CoFE":  # the same seed's encoder, as a retrieval model
                runs["retrieval (encoder)"].append({**c["retrieval_encoder"], "seed": seed, "refs": refs,
                                                    "train_s": c["train_s"]})
    pix = b.load("retrieval-pixels")
    if pix is None:
        missing.append("retrieval-pixels")
    else:  # deterministic: no seed, pairs with every seed of the other arm
        runs["retrieval (pixels)"] = [{**pix, "refs": refs, "train_s": 0.0}]
    return runs, missing


def assemble(b: Bench, root: Path, dev, *, partial: bool) -> Path:
    """The table, paired comparisons, figures and targets from whatever cells have finished
    (a missing cell leaves its row out and its targets not held, with the reason)."""
    st, cue = load_bench_studies(root)
    test = st["test"]
    refs = {s.case_id: s.report for s in test}
    ids = sorted(refs)
    conflict = [i for i in ids if cue[i]["conflict"]]
    runs, missing = collect(b, refs)
    if not runs["CoFE"]:
        raise SystemExit("no CoFE cell yet: run the cells first (python bench/report.py --only cells --seeds 0)")
    skey = shipped_key()
    shipped = b.load(skey)
    if shipped is None:
        missing.append(skey)
    widths = [22] + [13] * len(COLUMNS) + [9, 9]
    head = ["method"] + [c[1] for c in COLUMNS] + ["train s", "seeds"]
    lines = [f"Report generation, synthetic CXR with a train-only spurious cue (pacemaker ~ cardiomegaly 90 % in "
             f"train, independent in test): {len(st['train'])}/{len(st['val'])}/{len(test)} studies "
             f"({len(conflict)} conflict), 64 px, tiny word LM, {BUDGET} steps after a 1,000-step warm-up; "
             "mean+-std over the seeds listed",
             "METEOR: METEOR 1.5 (meteor-1.5.jar via Java); CE: medkit labeler, positive=1, micro-F1 (CE-F1), "
             "example-based (F1ex); abn->normal: abnormal studies given an all-normal report",
             "".join(h.ljust(w) for h, w in zip(head, widths))]
    agg = {}
    for m, rs in runs.items():
        if not rs:
            continue
        agg[m] = {k: {"mean": float(np.mean([r["scores"][k] for r in rs])), "std": float(np.std([r["scores"][k] for r in rs]))}
                  for k, _ in COLUMNS}
        agg[m]["seeds"] = [r.get("seed") for r in rs]
        row = [m] + [fmt([r["scores"][k] for r in rs]) for k, _ in COLUMNS] + [
            f"{np.mean([r['train_s'] for r in rs]):.0f}", ",".join("-" if r.get("seed") is None else str(r["seed"])
                                                                   for r in rs)]
        lines.append("".join(c.ljust(w) for c, w in zip(row, widths)))
    cofe, nocf, enc = runs["CoFE"], runs["no counterfactual"], runs["retrieval (encoder)"]
    comparisons = {"conflict": ("CoFE - no counterfactual, per-study F1, conflict", paired(cofe, nocf, conflict)),
                   "all": ("CoFE - no counterfactual, per-study F1, all", paired(cofe, nocf, ids)),
                   "encoder_retrieval": ("CoFE - retrieval (encoder), per-study F1, all", paired(cofe, enc, ids)),
                   "pixel_retrieval": ("CoFE - retrieval (pixels), per-study F1, all",
                                       paired(cofe, runs["retrieval (pixels)"], ids)),
                   "no_prompt": ("CoFE - no learnable prompt, per-study F1, all",
                                 paired(cofe, runs["no learnable prompt"], ids))}
    for name, d in comparisons.values():
        if d is None:
            lines.append(f"  {name}: n/a (no seed with both cells yet)")
            continue
        lines.append(f"  {name}: {d['mean']:+.4f} (95 % CI {d['ci95'][0]:+.4f}..{d['ci95'][1]:+.4f}, "
                     f"p={d['p_boot']:.4f}, {d['n_units']} studies, seeds {d['seeds']})")
    cm = OBSERVATIONS.index("Cardiomegaly")

    def cm_right(rs):  # conflict studies x seeds: did the report get cardiomegaly right?
        return [label_vector(label_report(r["hyps"][i]))[cm] == label_vector(label_report(refs[i]))[cm]
                for r in rs for i in conflict]
    common = sorted({r["seed"] for r in cofe} & {r["seed"] for r in nocf})
    mc = None
    if common:
        mc = mcnemar(cm_right([r for r in cofe if r["seed"] in common]), cm_right([r for r in nocf if r["seed"] in common]))
        lines.append(f"  cardiomegaly right on conflict studies (study x seed, seeds {common}): CoFE {mc['acc_a']:.3f} vs "
                     f"no counterfactual {mc['acc_b']:.3f}, McNemar p={mc['p']:.4f} (only CoFE {mc['only_a']}, "
                     f"only no-cf {mc['only_b']})")
    ov = (b.load("arm/CoFE/seed0") or {}).get("cf_overlap")
    if ov:
        for o in ov:
            lines.append(f"  counterfactuals at step {o['step']}: {o['shifted']} shifted ({o['already_shifted']} misread "
                         f"before any swap), {o['mean_swapped']:.1f} patches; swap cells on differing findings "
                         f"{o['precision']:.3f} vs random {o['random']:.3f} ({o['n']} studies)")
        plot_overlap(ov, RESULTS / "report-cpu-cf-overlap.png")
    if shipped is not None:
        s = shipped["scores"]
        lines.append(f"  shipped {shipped['model']} ({skey}) on {shipped['n']} fresh synthetic studies: CE micro-F1 "
                     f"{s['micro_f1']:.3f}; abnormal studies given an all-normal report {s['abnormal_all_normal']:.3f}")
    if missing:
        lines.append(f"  missing cells ({len(missing)}): {', '.join(missing)}")
    text = "\n".join(lines)
    print(text)
    c0 = b.load("arm/CoFE/seed0")
    n0 = b.load("arm/no counterfactual/seed0")
    ex_ids = [i for i in ids if not cue[i]["conflict"] and "no acute" not in refs[i]][:2] + conflict[:1]
    examples = [{"case_id": i, "conflict": cue[i]["conflict"], "cue_present": cue[i]["present"],
                 "cardiomegaly": cue[i]["target_positive"], "reference": refs[i], "generated": c0["hyps"][i],
                 "generated_no_counterfactual": n0["hyps"][i] if n0 else None}
                for i in ex_ids] if c0 else []

    def why(*arms) -> str:
        return "no seed with cells of both " + " and ".join(arms) + f" yet (missing: {', '.join(missing)})"
    d_conf, d_all, d_enc = (comparisons[k][1] for k in ("conflict", "all", "encoder_retrieval"))
    targets = {
        "cofe_vs_no_counterfactual_conflict": target_ci(d_conf) if d_conf else missing_target(
            "ci95 low > 0", why("CoFE", "no counterfactual")),
        "cofe_vs_no_counterfactual_all": not_below(d_all) if d_all else missing_target(
            "ci95 high >= 0 (not below)", why("CoFE", "no counterfactual")),
        "cofe_vs_encoder_retrieval": target_ci(d_enc) if d_enc else missing_target("ci95 low > 0", why("CoFE")),
        "shipped_ce_f1": target(shipped["scores"]["micro_f1"], 0.60, ">=",
                                abnormal_all_normal=shipped["scores"]["abnormal_all_normal"], n=shipped["n"],
                                weights_sha256=shipped["weights_sha256"]) if shipped else missing_target(
            ">= 0.60", f"cell {skey} (models/cofe-smollm2 on fresh studies) not run yet")}
    for k, d in (("cofe_vs_no_counterfactual_conflict", d_conf), ("cofe_vs_no_counterfactual_all", d_all),
                 ("cofe_vs_encoder_retrieval", d_enc)):
        if d:
            targets[k]["seeds"] = d["seeds"]
    from medkit.synth.cxr_cooccurrence import mimic_rates

    gen = json.loads((root / "summary.json").read_text())["cooccurrence"]
    plot_cooccurrence(gen, mimic_rates(), RESULTS / "report-cpu-cooccurrence.png")
    return b.write({"printed": text, "aggregate": agg},
                   targets=targets,
                   extra={"partial": partial, "missing_cells": missing,
                       "budget": {"steps": BUDGET, "warmup": 1000, "rule": f"plateau(tol={PLATEAU_TOL}, frac=0.25, "
                                  f"smooth=2) on each cell's val CE micro-F1 ({CURVE_VAL} val studies, every "
                                  f"{CURVE_EVERY} steps)", "plateau": {f"{m}/seed{r['seed']}": r.get("plateau")
                                                                      for m in ARMS for r in runs[m]}},
                       "curves_png": "bench/results/report-cpu-curves.png",
                       "cf_overlap_png": "bench/results/report-cpu-cf-overlap.png",
                       "cooccurrence_png": "bench/results/report-cpu-cooccurrence.png",
                       "paired": {**{k: d for k, (_, d) in comparisons.items()}, "cardiomegaly_conflict_mcnemar": mc},
                       "cf_overlap": [{k: v for k, v in o.items() if k != "per_study"} for o in ov] if ov else None,
                       "shipped": {k: v for k, v in shipped.items() if k != "hyps"} if shipped else None,
                       "examples": examples, "data": {**DATA, "annotation_sha256": annotation_sha(root),
                                                      "split": {k: len(v) for k, v in st.items()},
                                                      "conflict": len(conflict)},
                       "generator_cooccurrence": gen, "mimic_cxr_rates": mimic_rates(),
                       "curves": {f"{m}/seed{r['seed']}": [{k: x.get(k) for k in ("step", "val_ce_f1", "val_diag_f1",
                                                                                   "val_nll")} for x in r["history"]]
                                  for m in ARMS for r in runs[m]}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["cells", "shipped", "pixels"], default=None)
    ap.add_argument("--arm", choices=list(ARMS), default=None, help="with --only cells: this arm only")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--assemble", action="store_true", help="only assemble the table from finished cells")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--smoke", type=Path, default=None, metavar="DIR",
                    help="a seconds-sized run of the whole flow into DIR (checks the script, measures nothing)")
    args = ap.parse_args()
    global BUDGET, CURVE_EVERY, CURVE_VAL, RESULTS
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    os.environ.setdefault("MEDKIT_NO_PROGRESS", "1")
    if args.smoke is not None:
        DATA.update(n_cases=40, splits=[0.5, 0.25, 0.25])
        BUDGET, CURVE_EVERY, CURVE_VAL, RESULTS = 6, 3, 4, Path(args.smoke)
        BASE.extend(["counterfactual.warmup_steps=2", "counterfactual.refresh_every=3", "decoder.tiny_hidden=32",
                     "decoder.tiny_layers=1", "generate.max_new_tokens=12", "counterfactual.text_embedder=tfidf",
                     "optim.batch_size=4"])
        SHIPPED.update(n_cases=3)
    dev = pick_device(args.device)
    root = ensure_data()
    settings = {"data": {**DATA, "annotation_sha256": annotation_sha(root)}, "base": BASE, "arms": ARMS,
                "budget": BUDGET, "curve": {"every": CURVE_EVERY, "val": CURVE_VAL, "tol": PLATEAU_TOL},
                "shipped": SHIPPED}
    b = Bench("report", device=dev, config=settings, root=RESULTS)
    if args.only in (None, "cells") and not args.assemble:
        for seed in args.seeds:  # seed 0 of every arm first
            for arm in ARMS:
                if args.arm in (None, arm):
                    b.cell(f"arm/{arm}/seed{seed}", lambda arm=arm, seed=seed: run_arm(
                        root, arm, seed, BUDGET, dev, overlap=arm == "CoFE" and seed == 0))
    if args.only in (None, "pixels") and not args.assemble:
        b.cell("retrieval-pixels", lambda: run_pixels(root))
    if args.only in (None, "shipped") and not args.assemble and not (args.smoke and args.only is None):
        b.cell(shipped_key(), lambda: run_shipped(dev))
    drawn = plot_seed0_curves(b)
    if drawn:
        print(f"curves of {drawn} (seed 0): {RESULTS / 'report-cpu-curves.png'}")
    if args.only is None or args.assemble:
        done = all(b.done(f"arm/{a}/seed{s}") for a in ARMS for s in SEEDS)
        print(f"wrote {assemble(b, root, dev, partial=not done)}")


if __name__ == "__main__":
    main()
