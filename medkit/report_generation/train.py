"""Train CoFE into a run folder (``medkit run report_synthetic``).

Component contract (docs/contract.md): :class:`ReportConfig`, ``fit(cfg, data, *, run,
device, resume)``, :func:`run_pipeline`, ``load_model`` in :mod:`.predict`.

Reads top to bottom:

1. studies (R2Gen ``annotation.json``) -> images, cleaned reports, label vectors;
   fixed report embeddings (MiniLM or TF-IDF) for the InfoNCE text side;
2. ``counterfactual.warmup_steps`` diagnosis-only steps, so the head that decides
   "the diagnosis shifted" means something;
3. counterfactual images for every training study (:mod:`.counterfactual`; the
   shift is tested against the two studies' labels), rebuilt every
   ``counterfactual.refresh_every`` steps against the encoder as it trains (0:
   built once), with a few original / counterfactual / mask pictures and every
   build's swapped cells under ``<run>/counterfactuals/``;
4. ``optim.steps`` steps of NLL + BCE + InfoNCE (AdamW, warmup then cosine);
   validation NLL every ``eval_every`` steps (and validation CE micro-F1 of
   generated reports every ``evaluation.val_ce_every``) -> ``checkpoints/{last,best}.pt``;
5. reports for the test split with the best checkpoint ->
   ``predictions/reports.jsonl`` and NLG + CE metrics in ``summary.json``
   (METEOR 1.5 from the jar unless ``evaluation.meteor`` names another).

Resuming reloads ``last.pt`` (model, optimiser, scheduler, step, RNG, the
counterfactual set and its build log) and continues the count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..io import write_jsonl
from ..metrics.clinical import ce_metrics, ce_scores
from ..metrics.text import java_executable, meteor_jar, nlg_metrics
from ..progress import track
from ..runs import RunDir, pick_device, seed_everything
from .cofe_config import ReportConfig
from .counterfactual import (
    cosine_similarity,
    gradient_relevance,
    pick_negatives,
    save_counterfactual_png,
    swap_counterfactual,
)
from .data import Study, label_matrix, load_studies, stack_images
from .embeddings import embed_reports
from .losses import report_nll
from .model import CoFE, bank_indices, build_lm, report_vocab, trainable_groups


def build_model(cfg: ReportConfig, vocab: list[str] | None, text_dim: int) -> CoFE:
    lm, tok = build_lm(cfg, vocab)
    return CoFE(cfg, lm, tok, text_dim)


@torch.no_grad()
def build_counterfactuals(model: CoFE, images: torch.Tensor, labels: np.ndarray, text_emb: np.ndarray,
                          cfg: ReportConfig) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Counterfactual for every study: ``(cf images (N,1,S,S), masks (N,S,S) bool, info rows)``.

    The shift is tested against the labels (``labels[i]`` vs ``labels[j]``), not the model's
    predictions. Info rows: ``index``, ``negative`` (-1: no study with other labels),
    ``n_swapped``, ``shifted``, ``already_shifted`` (the model misread the anchor before any
    swap) and ``cells`` (the swapped patch cells, row-major, most relevant first).
    """
    was = model.encoder.training
    model.encoder.eval()
    if cfg.counterfactual.negatives == "report":
        sim = cosine_similarity(text_emb)
    else:
        sim = cosine_similarity(model.encoder(images)["pooled"].cpu().numpy())
    neg = pick_negatives(sim, labels)
    y = torch.as_tensor(labels, dtype=torch.float32, device=images.device)
    cc = cfg.counterfactual
    rel = None
    if cc.relevance == "gradient":
        rel, jj = [], torch.as_tensor(np.maximum(neg, 0), device=images.device)
        for s in range(0, len(neg), 64):
            rel.append(gradient_relevance(model.encoder.diagnose, images[s:s + 64], images[jj[s:s + 64]], cc.patch,
                                          y[jj[s:s + 64]]))
        rel = torch.cat(rel)
    cfs, masks, info = [], [], []
    for i, j in enumerate(neg):
        if j < 0:  # every other study has the same labels: nothing to contrast
            cfs.append(images[i])
            masks.append(torch.zeros(images.shape[-2:], dtype=torch.bool))
            info.append({"index": i, "negative": -1, "n_swapped": 0, "shifted": False, "already_shifted": False,
                         "cells": []})
            continue
        cf = swap_counterfactual(model.encoder.diagnose, images[i], images[j], cc.patch, max_fraction=cc.max_fraction,
                                 batch=cc.swap_chunk, relevance=rel[i] if rel is not None else None,
                                 target_anchor=y[i], target_negative=y[j])
        cfs.append(cf.image)
        masks.append(cf.mask)
        info.append({"index": i, "negative": int(j), "n_swapped": cf.n_swapped, "shifted": cf.shifted,
                     "already_shifted": cf.already_shifted, "cells": cf.cells})
    model.encoder.train(was)
    return torch.stack(cfs), torch.stack(masks).cpu(), info


def cf_build_summary(step: int, info: list[dict], seconds: float) -> dict:
    """One counterfactual build in numbers (logged, and kept in the history)."""
    real = [r for r in info if r["negative"] >= 0]
    return {"step": step, "n": len(info), "shifted": sum(r["shifted"] for r in real),
            "already_shifted": sum(r["already_shifted"] for r in real),
            "mean_swapped": float(np.mean([r["n_swapped"] for r in real])) if real else 0.0,
            "seconds": round(seconds, 2)}


def _lr_lambda(cfg: ReportConfig):
    total = cfg.counterfactual.warmup_steps + cfg.optim.steps
    w = max(cfg.optim.warmup_lr_steps, 1)

    def f(s):
        if s < w:
            return (s + 1) / w
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - w) / max(total - w, 1))))
    return f


def _batches(n: int, bs: int, rng: np.random.Generator):
    while True:
        perm = rng.permutation(n)
        for s in range(0, n - min(bs, n) + 1, min(bs, n)):
            yield perm[s:s + min(bs, n)]


@torch.no_grad()
def val_nll(model: CoFE, val: list[Study], dev, bs: int) -> float:
    """Mean report NLL on ``val`` (counterfactual tokens from the model's test-time path)."""
    if not val:
        return float("nan")
    was = model.training
    model.eval()
    tot, n = 0.0, 0
    for s in range(0, len(val), bs):
        part = val[s:s + bs]
        x = stack_images(part).to(dev)
        q = model.test_time_cf_probs(x)
        pre, _ = model.prefix(x, q)
        ids, mask = model.encode_reports([p.report for p in part], dev)
        emb = model.lm.get_input_embeddings()(ids)
        P = pre.shape[1]
        attn = torch.cat([torch.ones(len(part), P, dtype=torch.long, device=dev), mask], 1)
        tgt = torch.cat([torch.full((len(part), P), -100, dtype=torch.long, device=dev), ids.masked_fill(mask == 0, -100)], 1)
        logits = model.lm(inputs_embeds=torch.cat([pre, emb], 1), attention_mask=attn, use_cache=False).logits
        tot += float(report_nll(logits, tgt)) * len(part)
        n += len(part)
    model.train(was)
    return tot / n


@torch.no_grad()
def val_diag_f1(model: CoFE, val: list[Study], dev, bs: int = 64) -> float:
    """Micro-F1 of the diagnosis head (probability > 0.5) against the val labels: the ceiling a
    decoder that only verbalised the head could reach in CE micro-F1 (same labels, same flavour)."""
    if not val:
        return float("nan")
    was = model.encoder.training
    model.encoder.eval()
    p = torch.cat([model.encoder.diagnose(stack_images(val[s:s + bs]).to(dev)) for s in range(0, len(val), bs)])
    model.encoder.train(was)
    return ce_scores(label_matrix(val), (p > 0.5).cpu().numpy())["micro_f1"]


@dataclass
class ReportData:
    """What :func:`fit` trains on: studies of the train split, and val studies (validation NLL)."""

    train: list[Study]
    val: list[Study] = field(default_factory=list)


def fit(cfg: ReportConfig, data: ReportData, *, run: RunDir | None = None, device: str = "auto",
        resume: bool = False, log: Callable[[str], None] = lambda m: None, progress=track) -> dict:
    """The training loop. Returns ``{"model", "history", "step", "seconds", "counterfactuals", "best"}``."""
    train, val = data.train, data.val
    dev = pick_device(device)
    seed_everything(cfg.seed)
    reports = [s.report for s in train]
    text_np = embed_reports(reports, cfg.counterfactual.text_embedder).astype(np.float32)
    vocab = report_vocab(reports) if cfg.decoder.lm == "tiny-word" else None
    model = build_model(cfg, vocab, text_np.shape[1]).to(dev)
    images = stack_images(train).to(dev)
    labels_np = label_matrix(train)
    labels = torch.as_tensor(labels_np, dtype=torch.float32, device=dev)
    text_emb = torch.as_tensor(text_np, device=dev)
    bank = torch.as_tensor(bank_indices(len(train), cfg.counterfactual.bank_size, cfg.seed))
    model.bank_images = images[bank].clone()
    model.bank_labels = labels[bank].clone()
    opt = torch.optim.AdamW(trainable_groups(model, cfg), weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    rng = np.random.default_rng(cfg.seed)
    step, best, history, cf_images, cf_info, cf_builds = 0, float("inf"), [], None, [], []
    before = 0.0  # training seconds of earlier chunks of a resumed run (None: not recorded, unknown)
    if resume and run is not None and (ck := run.load_checkpoint("last")) is not None:
        model.load_saved_state(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, best, history = ck["step"], ck["best"], ck.get("history", [])
        before = ck.get("train_seconds")
        cf_images = ck.get("cf_images")
        cf_images = cf_images.to(dev) if cf_images is not None else None
        cf_info, cf_builds = ck.get("cf_info", []), ck.get("cf_builds", [])
        torch.set_rng_state(ck["torch_rng"])
        rng = np.random.default_rng([cfg.seed, step])
        log(f"resumed at step {step}")
        if ck.get("best_rule", "val_nll") != cfg.evaluation.select:  # selection rule changed on resume
            best = _reselect(run, cfg, ck, log)
    W, total = cfg.counterfactual.warmup_steps, cfg.counterfactual.warmup_steps + cfg.optim.steps
    R, V = cfg.counterfactual.refresh_every, cfg.evaluation.val_ce_every
    batches = _batches(len(train), cfg.optim.batch_size, rng)
    t0 = time.perf_counter()
    model.train()
    for _ in progress(range(step, total), "train report", total=total - step):
        due = cf_images is None or (R > 0 and step > W and (step - W) % R == 0)
        if step >= W and cfg.counterfactual.enabled and due:
            tc = time.perf_counter()
            cf_images, cf_masks, cf_info = build_counterfactuals(model, images, labels_np, text_np, cfg)
            build = cf_build_summary(step, cf_info, time.perf_counter() - tc)
            cf_builds.append({**build, "rows": [{k: r[k] for k in ("index", "negative", "shifted", "already_shifted",
                                                                  "cells")} for r in cf_info]})
            log(f"counterfactuals at step {step}: {build['shifted']}/{build['n']} shifted against the labels "
                f"({build['already_shifted']} misread before any swap), mean {build['mean_swapped']:.1f} patches "
                f"swapped ({build['seconds']:.1f} s)")
            if run is not None and len(cf_builds) == 1:
                for r in cf_info[: cfg.counterfactual.n_pictures]:
                    i, j = r["index"], r["negative"]
                    save_counterfactual_png(run.path / "counterfactuals" / f"{train[i].case_id}.png", images[i].cpu(),
                                            cf_images[i].cpu(), cf_masks[i],
                                            images[j].cpu() if j >= 0 else None)
            if run is not None:
                write_jsonl(run.path / "counterfactuals" / "counterfactuals.jsonl",
                            [{**r, "step": b_["step"], "case_id": train[r["index"]].case_id,
                              "negative_id": train[r["negative"]].case_id if r["negative"] >= 0 else None}
                             for b_ in cf_builds for r in b_["rows"]])
        idx = torch.as_tensor(next(batches), device=dev)
        if step < W:  # diagnosis-only warm-up of the encoder
            loss_d = {"diag": torch.nn.functional.binary_cross_entropy_with_logits(
                model.encoder(images[idx])["logits"], labels[idx])}
            loss = loss_d["diag"]
        else:
            loss_d = model.losses(images[idx], [reports[i] for i in idx.tolist()], labels[idx], text_emb[idx],
                                  cf_images[idx] if cf_images is not None else None)
            loss = loss_d["total"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        sched.step()
        step += 1
        last = step == total
        ce_due = V > 0 and step > W and ((step - W) % V == 0 or last)
        if step > W and ((step - W) % cfg.optim.eval_every == 0 or last or ce_due) and (run is not None or ce_due):
            rec = {"step": step, **{k: round(float(v.detach()), 5) for k, v in loss_d.items()},
                   "lr": sched.get_last_lr()[0], "val_nll": val_nll(model, val[:cfg.evaluation.val_max], dev,
                                                                    cfg.optim.batch_size),
                   "val_diag_f1": val_diag_f1(model, val[:cfg.evaluation.val_max], dev)}
            if ce_due and val:
                part = val[: cfg.evaluation.val_ce_max]
                hyps, _ = generate_for(model, part, beams=cfg.generate.beams,
                                       max_new_tokens=cfg.generate.max_new_tokens, device=dev)
                rec["val_ce_f1"] = ce_metrics({s_.case_id: s_.report for s_ in part},
                                              {s_.case_id: h for s_, h in zip(part, hyps)})["micro_f1"]
                model.train()
            history.append(rec)
            log(f"step {step}: loss {loss.item():.3f} (nll {rec.get('nll', float('nan')):.3f}), "
                f"val nll {rec['val_nll']:.3f}, val diagnosis-head F1 {rec['val_diag_f1']:.3f}"
                + (f", val CE-F1 {rec['val_ce_f1']:.3f}" if "val_ce_f1" in rec else ""))
            if run is None:
                continue
            write_jsonl(run.path / "logs" / "metrics.jsonl", history)
            state = {"model": model.saved_state(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "step": step, "best": best, "history": history, "torch_rng": torch.get_rng_state(),
                     "cf_images": cf_images.cpu() if cf_images is not None else None, "cf_info": cf_info,
                     "cf_builds": cf_builds,
                     "assets": {"vocab": vocab, "text_dim": int(text_np.shape[1])},
                     "best_rule": cfg.evaluation.select,
                     "train_seconds": None if before is None else before + time.perf_counter() - t0}
            score = selection_score(rec, cfg.evaluation.select)
            if score is not None and score < best:
                best = state["best"] = score
                run.save_checkpoint({k: v for k, v in state.items() if k not in ("optimizer", "cf_images")}, "best",
                                    config=cfg)
            run.save_checkpoint(state, "last", config=cfg)
    return {"model": model, "history": history, "step": step,
            "seconds": None if before is None else before + time.perf_counter() - t0,  # all chunks
            "counterfactuals": cf_info, "cf_builds": cf_builds, "best": best}


def generate_for(model: CoFE, studies: list[Study], *, beams: int = 1, max_new_tokens: int = 96, bs: int = 16,
                 device="cpu") -> tuple[list[str], float]:
    """Generated reports for ``studies`` and the generation time in seconds."""
    t0 = time.perf_counter()
    out = []
    for s in range(0, len(studies), bs):
        out += model.generate(stack_images(studies[s:s + bs]).to(device), beams=beams, max_new_tokens=max_new_tokens)
    return out, time.perf_counter() - t0


def score_reports(refs: dict[str, str], hyps: dict[str, str], meteor: str = "jar") -> dict:
    """NLG (R2Gen convention: whitespace tokens of the cleaned text; METEOR 1.5 from the jar unless
    ``meteor`` names the approximation or none) + CE metrics."""
    return {**nlg_metrics(refs, hyps, tokenize="none", meteor=meteor), **ce_metrics(refs, hyps)}


def check_meteor(cfg: ReportConfig) -> None:
    """Fail before training, not after, when ``evaluation.meteor=jar`` cannot run here."""
    if cfg.evaluation.meteor == "jar":
        from ..metrics.text import MeteorUnavailable

        try:
            meteor_jar()
            java_executable()
        except MeteorUnavailable as e:
            raise ConfigError(f"evaluation.meteor=jar: {e}") from None


def selection_score(rec: dict, rule: str) -> float | None:
    """Lower is better; None where this evaluation cannot be ranked by ``rule`` (no val CE-F1)."""
    if rule == "val_ce_f1":
        return -rec["val_ce_f1"] if "val_ce_f1" in rec else None
    v = rec.get("val_nll", float("nan"))
    return v if math.isfinite(v) else rec.get("total")


def _reselect(run: RunDir, cfg: ReportConfig, last: dict, log) -> float:
    """A resumed run whose ``evaluation.select`` changed: rank its logged evaluations by the new
    rule and make ``best.pt`` the winner's checkpoint when one was kept (the resumed step, or the
    current ``best.pt``); refuse otherwise rather than call another step best."""
    scored = [(sc, r["step"]) for r in last.get("history", [])
              if (sc := selection_score(r, cfg.evaluation.select)) is not None]
    if not scored:
        raise ConfigError(f"{run.path}: evaluation.select={cfg.evaluation.select}: no logged evaluation to rank by it")
    score, step = min(scored)  # ties: the earlier step, as during training
    old = run.load_checkpoint("best")
    if step == last["step"]:
        run.save_checkpoint({k: v for k, v in {**last, "best": score, "best_rule": cfg.evaluation.select}.items()
                             if k not in ("optimizer", "cf_images")}, "best", config=cfg)
    elif old is None or old.get("step") != step:
        raise ConfigError(f"{run.path}: evaluation.select={cfg.evaluation.select} picks step {step}, whose checkpoint "
                          f"was not kept (last.pt is step {last['step']}); start a new run with this rule")
    log(f"evaluation.select={cfg.evaluation.select}: best.pt is step {step} (score {score:.4f})")
    return score


def run_pipeline(cfg: ReportConfig, run: RunDir, *, device: str = "auto", resume: bool = False,
                 log: Callable[[str], None] = lambda m: None) -> dict:
    """``medkit run`` body of ``pipeline: train-report``: fit, then the test split with the best
    checkpoint (``predictions/reports.jsonl``, NLG + CE metrics). Returns the summary."""
    dev = pick_device(device)
    check_meteor(cfg)
    studies = load_studies(cfg.data, progress=track)
    run.add_input(Path(cfg.data.root) / "annotation.json")
    train, val, test = studies.get("train", []), studies.get("val", []), studies.get("test", [])
    log(f"{len(train)} train, {len(val)} val, {len(test)} test studies")
    res = fit(cfg, ReportData(train, val), run=run, device=device, resume=resume, log=log)
    model = res["model"]
    best = run.load_checkpoint("best")
    if best is not None:
        model.load_saved_state(best["model"])
    secs = res["seconds"]
    summary = {"step": res["step"], "train_seconds": None if secs is None else round(secs, 2), "history": res["history"],
               "counterfactuals": {"n": len(res["counterfactuals"]),
                                   "shifted": sum(r["shifted"] for r in res["counterfactuals"]),
                                   "mean_swapped": float(np.mean([r["n_swapped"] for r in res["counterfactuals"]]))
                                   if res["counterfactuals"] else 0.0,
                                   "builds": [{k: v for k, v in b.items() if k != "rows"} for b in res["cf_builds"]]},
               "split": {k: len(v) for k, v in studies.items()}}
    if test:
        hyps, secs = generate_for(model, test, beams=cfg.generate.beams, max_new_tokens=cfg.generate.max_new_tokens,
                                  device=dev)
        write_jsonl(run.path / "predictions" / "reports.jsonl",
                    [{"case_id": s.case_id, "report": h, "reference": s.report} for s, h in zip(test, hyps)])
        scores = score_reports({s.case_id: s.report for s in test}, {s.case_id: h for s, h in zip(test, hyps)},
                               meteor=cfg.evaluation.meteor)
        summary["test"] = {**scores, "reports_per_s": len(test) / max(secs, 1e-9)}
        log(f"test: BLEU-4 {scores['BLEU_4']:.3f}, CIDEr {scores['CIDEr']:.3f}, "
            f"CE micro-F1 {scores['micro_f1']:.3f}")
    return summary
