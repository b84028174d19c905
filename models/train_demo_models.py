"""Train the two small text models ``medkit demo`` ships: ``models/cofe-synthetic`` and
``models/dialogue-doctor-synthetic``, from the synthetic sets with seed 0.

    OMP_NUM_THREADS=1 .venv/bin/python models/train_demo_models.py [cofe|dialogue|all] [--work runs/train-demo-models]

Each model is trained by its own public pipeline (``medkit train report`` /
``medkit dialogue train``) with the overrides below, into a run folder under
``--work``; the exported folder then holds only what inference needs (weights
without optimiser state, the resolved config), ``metrics.json`` (held-out
synthetic metrics, copied from the run's ``summary.json``) and ``MODEL_CARD.md``
rendered from those numbers (no hand-copied values). CPU, about 5 minutes each on
two busy cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

# CoFE: the pipelines/report_synthetic.yaml recipe, shortened to fit ~5 CPU minutes.
COFE_OVERRIDES = ["optim.steps=250", "counterfactual.warmup_steps=100", "optim.eval_every=50"]
# Dialogue doctor: the pipelines/dialogue_tiny.yaml recipe, SFT on oracle demonstrations only.
DIALOGUE_OVERRIDES = ["sft.steps=400", "data.n_train=200", "data.n_rl=0", "data.n_eval=24", "data.pool=600",
                      "srppo.enabled=false", "grpo.enabled=false", "grpo_entropy_alpha=0"]

NOT_CLINICAL = ("Trained on synthetic phantoms for demonstration only; **not for clinical use**. It has never "
                "seen a real patient, and its numbers say nothing about real data.")


# The documented command (the work folder only holds the run folders and generated data).
CMD = "OMP_NUM_THREADS=1 .venv/bin/python models/train_demo_models.py {what}"


HEADLINES = {  # model -> (metric shown in the card, where its value is in metrics.json)
    "cofe-synthetic": ("CE micro-F1", ("test", "micro_f1")),
    "dialogue-doctor-synthetic": ("top-1 accuracy", ("test", "top1", "mean")),
}


def with_headline(m: dict) -> dict:
    """``m`` with ``headline: {metric, path, value}``: the one number the card states in bold
    (the segmentation card's ``mean Dice **x**`` counterpart), read from ``m`` itself."""
    metric, path = HEADLINES[m["model"]]
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

    for name, card in (("cofe-synthetic", _cofe_card), ("dialogue-doctor-synthetic", _dialogue_card)):
        m = with_headline(json.loads((MODELS / name / "metrics.json").read_text()))
        write_json(MODELS / name / "metrics.json", m)
        write_text(MODELS / name / "MODEL_CARD.md", card(m))


def train_cofe(work: Path) -> Path:
    import torch

    from medkit.io.atomic import atomic_path, write_json, write_text
    from medkit.report_generation.train import train_from_pipeline

    run = work / "cofe"
    overrides = [f"data.root={work / 'synth-cxr-64'}", *COFE_OVERRIDES]
    train_from_pipeline(ROOT / "pipelines" / "report_synthetic.yaml", out=run, overrides=overrides, device="cpu")
    ck = torch.load(run / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)
    dst = MODELS / "cofe-synthetic"
    keep = {k: ck[k] for k in ("config", "model", "vocab", "text_dim", "step", "best") if k in ck}
    with atomic_path(dst / "model.pt") as tmp:
        torch.save(keep, tmp)
    write_text(dst / "config.yaml", (run / "config.yaml").read_text())
    summ = json.loads((run / "summary.json").read_text())
    test = summ.get("test", {})
    metrics = {"model": "cofe-synthetic", "split": summ.get("split"), "step": summ.get("step"),
               "train_seconds": summ.get("train_seconds"), "test": test, "overrides": COFE_OVERRIDES}
    metrics = with_headline(metrics)
    write_json(dst / "metrics.json", metrics)
    write_text(dst / "MODEL_CARD.md", _cofe_card(metrics))
    return dst


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"


def _cofe_card(m: dict) -> str:
    t = m["test"]
    rows = "\n".join(f"| {k} | {_fmt(t.get(k))} |" for k in
                     ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "micro_f1", "macro_f1"))
    return f"""# cofe-synthetic

CoFE report generator (counterfactual patch swaps, factual/counterfactual InfoNCE,
learnable prompts) at toy scale: a ~12k-parameter DenseNet image encoder, a
projector and prompt vectors in front of a 2-layer word-level decoder, trained on
the **synthetic** chest-radiograph set of `medkit.synth.cxr`. {NOT_CLINICAL}

## Inputs and outputs
- Input: one frontal chest radiograph (PNG/JPEG/DICOM/NIfTI), resized to 64 x 64, grey values scaled to 0..1.
- Output: a free-text findings report (`reports.jsonl`: `case_id`, `report`).
- Use: `medkit report -i FOLDER -o OUT --model models/cofe-synthetic/model.pt`;
  `medkit demo` uses it for its radiographs. Any `medkit train report` run folder works in its place.

## Training data
`medkit synth cxr` (seed 0, 120 studies, 64 px, PA view; generated into the work folder): rendered lungs/heart with
programmatically placed findings (cardiomegaly, effusion, opacity, ...) and a
templated report per study. Split: {m.get('split')}. Metrics are on the held-out
synthetic test split, never seen in training.

## How it was trained
`pipelines/report_synthetic.yaml` with `--set {' --set '.join(m['overrides'])}`
(tiny-word LM, full tuning, MiniLM report embeddings for the counterfactual negatives),
CPU, seed 0, {m.get('step')} steps in {_fmt(m.get('train_seconds'))} s. Reproduce with:

    {CMD.format(what="cofe")}

## Metrics
{headline_line(m)}

Held-out synthetic test split; NLG metrics on whitespace tokens (R2Gen convention),
clinical efficacy (CE) from medkit's rule-based labeler (`medkit.metrics.clinical`)
applied to the generated and the reference report.

| metric | value |
|---|---|
{rows}

## Limitations
- Synthetic radiographs and templated reports only: the vocabulary is a few hundred
  words and the findings are a fixed list; real radiographs are out of distribution.
- Toy scale (64 px, tiny decoder); greedy decoding often repeats the most common template.
- The CE labeler is rule-based and tuned to the template language.
- Not for clinical use.
"""


def train_dialogue(work: Path) -> Path:
    import shutil

    from medkit.dialogue.train import train_from_pipeline
    from medkit.io.atomic import atomic_path, write_json, write_text

    run = work / "dialogue"
    train_from_pipeline(ROOT / "pipelines" / "dialogue_tiny.yaml", out=run, overrides=DIALOGUE_OVERRIDES,
                        log=lambda s: print(s, file=sys.stderr))
    dst = MODELS / "dialogue-doctor-synthetic"
    with atomic_path(dst / "policy.pt") as tmp:
        shutil.copyfile(run / "sft" / "policy.pt", tmp)
    write_text(dst / "config.yaml", (run / "config.yaml").read_text())
    summ = json.loads((run / "summary.json").read_text())
    res = summ["results"]
    metrics = {"model": "dialogue-doctor-synthetic", "stage": "sft", "n_eval": summ["n_eval"],
               "patient": summ["patient"], "test": res["sft"], "oracle": res["oracle"], "base": res["base"],
               "overrides": DIALOGUE_OVERRIDES}
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


def _dialogue_card(m: dict) -> str:
    rows = "\n".join(f"| {name} | {_ci(m[k], 'top1')} | {_ci(m[k], 'turns')} |"
                     for name, k in (("this model (SFT)", "test"), ("untrained base", "base"), ("oracle", "oracle")))
    return f"""# dialogue-doctor-synthetic

A tiny doctor policy for diagnostic dialogue: a 2-layer Llama-architecture model
(hidden 128) over a word vocabulary, fine-tuned on the oracle doctor's turns on
**synthetic** clinical cases (`medkit.synth.cases`). It asks about symptoms,
orders tests and names a diagnosis. {NOT_CLINICAL}

## Inputs and outputs
- Input: the dialogue so far (patient's words and test results) as chat messages.
- Output: one action per turn: `ASK <finding>`, `TEST <test>` or `DIAGNOSE <condition>`.
- Use: `medkit dialogue eval --model models/dialogue-doctor-synthetic`; `medkit demo` plays it beside
  the oracle (`--set 'doctors=[model]'` for it alone). Any stage folder of `medkit dialogue train` works.

## Training data
Synthetic cases from `medkit.synth.cases` (seed 0): a small knowledge base of
conditions, findings and tests; {DIALOGUE_OVERRIDES[1].split('=')[1]} training cases with oracle
(expected-information-gain) demonstrations. Evaluation: {m['n_eval']} held-out
synthetic cases against the rule-based persona patient.

## How it was trained
`pipelines/dialogue_tiny.yaml` with `--set {' --set '.join(m['overrides'])}` (SFT
stage only; the RL stages are left to the full recipe), CPU, seed 0, SFT in {_fmt(m['test'].get('train_s'))} s.
Reproduce with:

    {CMD.format(what="dialogue")}

## Metrics
{headline_line(m)}

Held-out synthetic cases, persona patient, at most 10 turns; top-1 = the final
diagnosis is the case's condition; mean with a 95 % bootstrap CI.

| doctor | top-1 accuracy | turns |
|---|---|---|
{rows}

## Limitations
- Not the SmolLM2 + LoRA doctor of the full recipe: a tiny random-init model that
  only knows the synthetic knowledge base's words; it cannot talk to a real patient.
- Far below the oracle it imitates; short SFT only, no RL.
- Not for clinical use.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", default="all", choices=["cofe", "dialogue", "all", "cards"])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "train-demo-models")
    a = ap.parse_args()
    if a.what == "cards":
        render_cards()
        return
    if a.what in ("cofe", "all"):
        print(train_cofe(a.work))
    if a.what in ("dialogue", "all"):
        print(train_dialogue(a.work))


if __name__ == "__main__":
    main()
