"""Train a Couinaud segmenter into a run folder (``medkit run couinaud_synthetic``).

The component contract (docs/contract.md): :class:`TrainConfig` (``train_config.py``);
``fit(cfg, data, *, run, device, resume)``; :func:`run_pipeline` for ``medkit run``;
``load_model`` in :mod:`.predict`.

Reads top to bottom: cases -> preprocessing (cached in memory) -> optional
registration field bank -> the loop (DiceCE, AdamW, bf16 autocast on CUDA,
``accelerate`` for multi-GPU) -> validation Dice every ``val_every`` steps ->
``checkpoints/{last,best}.pt`` (config inside) -> ``summary.json``.
Resuming reloads ``last.pt`` (model, optimiser, step, and every random state: torch, the
case sampler and each MONAI random transform) and continues the count; on CPU a resumed
run ends bitwise-equal to an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..io import write_jsonl
from ..metrics.segmentation import case_row, segment_scores, summarise
from ..progress import track
from ..runs import RunDir, pick_device, seed_everything
from . import COUINAUD_NAMES
from .data import list_cases, load_sample, preprocess_transforms, train_transforms
from .models import build_model
from .train_config import TrainConfig

LABELS = list(COUINAUD_NAMES)


def deep_supervision_loss(outputs, label: torch.Tensor, loss_fn: Callable, weights) -> torch.Tensor:
    """Weighted loss over ``[full, 1/2, 1/4, ...]`` logits; labels ``(B, 1, X, Y, Z)`` are
    downsampled by nearest neighbour to each output. Weights are normalised to sum 1."""
    if not isinstance(outputs, (list, tuple)):
        return loss_fn(outputs, label)
    w = list(weights)[: len(outputs)] + [0.0] * max(0, len(outputs) - len(weights))
    total = sum(w)
    loss = 0.0
    for wi, out in zip(w, outputs):
        if wi == 0:
            continue
        lab = label if out.shape[2:] == label.shape[2:] else F.interpolate(label.float(), size=out.shape[2:],
                                                                             mode="nearest")
        loss = loss + (wi / total) * loss_fn(out, lab)
    return loss


def preprocess_cases(cfg: TrainConfig, cases, progress=track) -> list[dict]:
    """Load and preprocess ``[(case_id, image, label)]`` (kept in memory: the sets are small)."""
    pre = preprocess_transforms(cfg.preprocess, with_label=True)
    out = []
    for cid, img, lab in progress(cases, "preprocess"):
        if lab is None:
            s = load_sample(cid, img, None)
            s["label"] = s["image"] * 0  # unlabelled scans: only registration targets
            s["unlabelled"] = True
        else:
            s = load_sample(cid, img, lab)
        out.append(pre(s))
    return out


def build_field_bank(cfg: TrainConfig, atlases: list[dict], targets: list[dict], root=None, progress=track):
    """Register every atlas to up to ``max_targets`` other training scans; fields in a bank."""
    from ..transforms import FieldBank, register_pair

    bank = FieldBank(root)
    # Unlabelled scans first: the paper's point is to borrow their anatomy; another labelled
    # atlas as a target only adds a shape the labelled set already has.
    ordered = sorted(targets, key=lambda t: not t.get("unlabelled", False))
    pairs = [(a, t) for a in atlases
             for t in [t for t in ordered if t["case_id"] != a["case_id"]][: cfg.augment.max_targets]]
    for a, t in progress(pairs, "registration"):
        # The atlas liver weights the similarity: its vessels carry the Couinaud boundaries.
        ddf, info = register_pair(t["image"], a["image"], a["image"].affine, cfg.augment.registration,
                                  moving_mask=a["label"])
        bank.add(a["case_id"], t["case_id"], ddf, a["image"].affine, info)
    return bank


def check_registration(cfg: TrainConfig, labelled: list[dict], log: Callable[[str], None] = print) -> dict | None:
    """The gate of a registration-augmented run: register up to 3 labelled atlases each to
    another labelled case (for the check only; training targets have no labels to compare
    with) and require :func:`registration_quality`'s gain. Raises ``ConfigError`` when the
    registration carries no anatomy; returns None (logged) with fewer than 2 labelled cases."""
    from ..transforms import FieldBank, register_pair

    gate = cfg.augment.gate_min_gain
    if gate is None:
        return None
    if len(labelled) < 2:
        log("registration quality: one labelled case, no labelled target to check the fields against")
        return None
    bank = FieldBank(None)
    for i, a in enumerate(labelled[:3]):
        t = labelled[(i + 1) % len(labelled)]
        ddf, info = register_pair(t["image"], a["image"], a["image"].affine, cfg.augment.registration,
                                  moving_mask=a["label"])
        bank.add(a["case_id"], t["case_id"], ddf, a["image"].affine, info)
    by_id = {c["case_id"]: c for c in labelled}
    q = registration_quality(bank, by_id, by_id, min_gain=gate, log=log)
    if not q["gate"]["held"]:
        raise ConfigError(f"registration quality gate failed (Couinaud Dice gain {q['gain']:+.3f} < {gate}): the "
                          "fields would not carry anatomy; tune augment.registration or set augment.kind")
    return q


def registration_quality(bank, atlases: dict[str, dict], targets: dict[str, dict], *, min_gain: float = 0.05,
                         log: Callable[[str], None] = lambda m: None) -> dict:
    """The registration-quality gate: do the bank's fields carry anatomy onto their targets?

    For every field whose target has labels (``targets[id]["label"]``, not marked
    ``unlabelled``): the atlas labels warped by the field (nearest neighbour) against the
    target's labels, and the unwarped atlas labels (identity) against them: Couinaud Dice
    (mean over I..VIII) and liver Dice (any segment). The gate holds when the mean Couinaud
    Dice gain over identity is at least ``min_gain``.

    Returns:
        ``{"fields": [...], "n", "warped", "identity", "gain", "fraction_improved",
        "liver_warped", "liver_identity", "gate": {"held", "min_gain"}, "printed"}``
        (``n`` = 0 and the gate not held when no field has a labelled target).
    """
    from ..metrics.segmentation import dice
    from ..transforms import RegistrationAugment

    nearest = RegistrationAugment("nearest")
    rows = []
    for rec in bank.records:
        a, t = atlases.get(rec.atlas_id), targets.get(rec.target_id)
        if a is None or t is None or t.get("unlabelled") or "label" not in t:
            continue
        la = a["label"]
        warped = nearest(la, bank.load(rec), la.affine)[0].numpy().astype(np.int64)
        ident = la[0].numpy().astype(np.int64)
        truth = t["label"][0].numpy().astype(np.int64)
        segs = [lab for lab in LABELS if (truth == lab).any()]
        rows.append({"atlas": rec.atlas_id, "target": rec.target_id,
                     "warped": float(np.mean([dice(warped == k, truth == k) for k in segs])),
                     "identity": float(np.mean([dice(ident == k, truth == k) for k in segs])),
                     "liver_warped": dice(warped > 0, truth > 0), "liver_identity": dice(ident > 0, truth > 0),
                     **{k: rec.info.get(k) for k in ("mse_initial", "mse_affine", "mse_deformable")}})
    out: dict = {"fields": rows, "n": len(rows)}
    if not rows:
        out.update({"gate": {"held": False, "min_gain": min_gain},
                    "printed": "registration quality: no field has a labelled target; nothing to check"})
        log(out["printed"])
        return out
    m = {k: float(np.mean([r[k] for r in rows])) for k in ("warped", "identity", "liver_warped", "liver_identity")}
    gain = m["warped"] - m["identity"]
    improved = float(np.mean([r["warped"] > r["identity"] for r in rows]))
    held = gain >= min_gain
    lines = [f"registration quality: {len(rows)} fields (atlas labels warped onto labelled targets)",
             f"  Couinaud Dice (mean I-VIII): warped {m['warped']:.3f}  identity {m['identity']:.3f}  "
             f"gain {gain:+.3f}  improved in {100 * improved:.0f} % of fields",
             f"  liver Dice:                  warped {m['liver_warped']:.3f}  identity {m['liver_identity']:.3f}",
             f"  gate (gain >= {min_gain:+.3f}): {'PASSED' if held else 'FAILED'}"]
    out.update(m, gain=gain, fraction_improved=improved, gate={"held": bool(held), "min_gain": min_gain},
               printed="\n".join(lines))
    log(out["printed"])
    return out


def _sliding(model, image: torch.Tensor, cfg: TrainConfig, overlap: float | None = None) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(image, roi_size=cfg.preprocess.patch, sw_batch_size=2, predictor=model,
                                    overlap=cfg.sw_overlap if overlap is None else overlap, mode="gaussian")


@torch.no_grad()
def evaluate(model, samples: list[dict], cfg: TrainConfig, device) -> dict:
    """Dice/HD95/ASSD per segment on preprocessed samples (grid spacing from their affine)."""
    model.eval()
    rows = []
    for s in samples:
        img = s["image"].as_tensor()[None].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = _sliding(model, img, cfg)
        pred = logits.float().argmax(1)[0].cpu().numpy()
        truth = s["label"][0].cpu().numpy().astype(np.int64)
        spacing = np.linalg.norm(np.asarray(s["image"].affine)[:3, :3], axis=0)
        rows.append(case_row(s["case_id"], segment_scores(pred, truth, LABELS, spacing), COUINAUD_NAMES))
    model.train()
    return summarise(rows)


def write_curve(history: list[dict], path: Path, name: str) -> None:
    """``logs/curve.png``: validation Dice (and training loss) against steps."""
    from ..viz.curves import plot_curves

    steps = [h["step"] for h in history]
    series = {"val Dice (mean I-VIII)": (steps, [h.get("dice_mean") for h in history])}
    if any(h.get("dice_mean") is not None for h in history):
        plot_curves(series, path, ylabel="Dice", title=f"{name}: validation Dice")


def curve_plateau(history: list[dict]) -> dict:
    """The plateau test (< 0.5 Dice points over the last quarter of the steps) on a run's history."""
    from ..viz.curves import plateau

    return plateau([h["step"] for h in history], [h.get("dice_mean") for h in history], frac=0.25, tol=0.005)


def _randomizables(root) -> list:
    """Every MONAI ``Randomizable`` reachable from ``root`` (a Compose), in a fixed order:
    the objects whose ``R`` (``np.random.RandomState``) a resumed run must restore."""
    from monai.transforms import Randomizable

    out, seen = [], set()

    def visit(obj):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, Randomizable) and isinstance(getattr(obj, "R", None), np.random.RandomState):
            out.append(obj)
        children = list(getattr(obj, "transforms", None) or []) if hasattr(obj, "transforms") else []
        children += [v for k, v in sorted(vars(obj).items()) if isinstance(v, Randomizable) and k != "transforms"] \
            if hasattr(obj, "__dict__") else []
        for c in children:
            visit(c)

    visit(root)
    return out


@dataclass
class SegmentationData:
    """What :func:`fit` trains on: preprocessed samples (dicts with ``image``/``label``
    MetaTensors ``(1, X, Y, Z)`` on one grid, ``case_id``).

    Attributes:
        train: labelled training samples (the atlases when augmenting by registration).
        val: validation samples (Dice every ``optim.val_every`` steps; may be empty).
        bank: the registration :class:`~medkit.transforms.FieldBank` (``augment.kind=registration``).
    """

    train: list[dict]
    val: list[dict] = field(default_factory=list)
    bank: object = None


def fit(cfg: TrainConfig, data: SegmentationData, *, run: RunDir | None = None, device: str = "auto",
        resume: bool = False, log: Callable[[str], None] = lambda m: None,
        on_check: Callable[[int, torch.nn.Module, dict], None] | None = None) -> dict:
    """The training loop. Returns ``{"model", "history", "best", "step", "s_per_step", "params"}``.

    Every ``optim.val_every`` steps (and at the last) a check records the loss and, when
    ``data.val`` is not empty, the validation Dice: in ``history`` always, and with a
    ``run`` also in ``logs/metrics.jsonl``, ``logs/curve.png`` and ``checkpoints/``.
    ``on_check(step, model, record)`` is then called (a benchmark keeps snapshots with it).
    """
    train, val, bank = data.train, data.val, data.bank
    from accelerate import Accelerator
    from monai.losses import DiceCELoss

    dev = pick_device(device)
    seed_everything(cfg.seed)
    from accelerate.utils import DistributedDataParallelKwargs

    # Without deep supervision the coarse heads get no gradient; DDP must be told (or it hangs).
    acc = Accelerator(cpu=dev.type == "cpu", mixed_precision="bf16" if dev.type == "cuda" else "no",
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    model = build_model(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(cfg.optim.steps, 1)) ** 0.9)
    step, best, history, ck = 0, -1.0, [], {}
    # Each accelerate process draws its own cases and crops (otherwise DDP ranks would see
    # identical batches); process 0 alone matches a single-device run.
    rng = np.random.default_rng(cfg.seed if acc.process_index == 0 else [cfg.seed, acc.process_index])
    if resume and run is not None and (ck := run.load_checkpoint("last")) is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, best, history = ck["step"], ck["best"], ck.get("history", [])
        rng = np.random.default_rng([cfg.seed, step, acc.process_index])  # old checkpoints: a step-keyed stream
        torch.set_rng_state(ck["torch_rng"])
        log(f"resumed at step {step}")
    model, opt = acc.prepare(model, opt)
    tr = train_transforms(cfg.preprocess, cfg.augment, cfg.optim.batch_size, bank)
    tr.set_random_state(seed=int(rng.integers(2**31)))
    if step and ck.get("np_rng") is not None:  # resume exactly where the checkpoint left off
        rng.bit_generator.state = ck["np_rng"]
        for t, st in zip(_randomizables(tr), ck["transform_rng"], strict=True):
            t.R.set_state((st[0], np.asarray(st[1], dtype=np.uint32), *st[2:]))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    model.train()
    t_loop, n_timed = 0.0, 0
    drawn = []  # (step, case_id) this rank trained on: logs/rank{k}.json under several processes
    for _ in track(range(step, cfg.optim.steps), "train", total=cfg.optim.steps - step):
        sample = train[int(rng.integers(len(train)))]
        drawn.append((step, sample["case_id"]))
        crops = tr(sample)
        x = torch.stack([c["image"] for c in crops]).to(acc.device)
        y = torch.stack([c["label"] for c in crops]).to(acc.device)
        t0 = time.perf_counter()
        with acc.autocast():
            loss = deep_supervision_loss(model(x), y, loss_fn, cfg.optim.deep_supervision_weights)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()
        sched.step()
        t_loop += time.perf_counter() - t0
        n_timed += 1
        step += 1
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        last = step == cfg.optim.steps
        checking = run is not None or val or on_check is not None
        if checking and acc.is_main_process and (step % cfg.optim.val_every == 0 or last):
            rec = {"step": step, "loss": float(loss.item()), "lr": sched.get_last_lr()[0]}
            if val:
                summ = evaluate(acc.unwrap_model(model), val, cfg, acc.device)
                agg = summ["aggregate"]
                rec.update({k: v["mean"] for k, v in agg.items() if k.startswith("dice")})
            history.append(rec)
            if on_check is not None:
                on_check(step, acc.unwrap_model(model), rec)
            if run is None:
                continue
            write_jsonl(run.path / "logs" / "metrics.jsonl", history)
            write_curve(history, run.path / "logs" / "curve.png", cfg.name)
            state = {"model": acc.unwrap_model(model).state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "step": step, "best": best, "history": history,
                     "torch_rng": torch.get_rng_state(), "np_rng": rng.bit_generator.state,
                     "transform_rng": [t.R.get_state() for t in _randomizables(tr)]}
            score = rec.get("dice_mean") if rec.get("dice_mean") is not None else -float(rec["loss"])
            if score > best:
                best = state["best"] = score
                run.save_checkpoint(state, "best", config=cfg)
            run.save_checkpoint(state, "last", config=cfg)
            log(f"step {step}: loss {rec['loss']:.4f}" + (f", val Dice {rec['dice_mean']:.3f}" if "dice_mean" in rec
                                                         and rec["dice_mean"] is not None else ""))
    model = acc.unwrap_model(model)
    if acc.num_processes > 1 and run is not None:
        _write_rank_log(run.path / "logs" / f"rank{acc.process_index}.json", drawn, model)
        acc.wait_for_everyone()
    return {"model": model, "history": history, "best": best, "step": step,
            "s_per_step": t_loop / max(n_timed, 1), "params": sum(p.numel() for p in model.parameters())}


def _write_rank_log(path: Path, drawn: list, model) -> None:
    """What one rank of a multi-process run drew, and a digest of its final weights (DDP keeps
    the ranks' weights identical; tests/segmentation/test_distributed.py checks both)."""
    import hashlib

    from ..io.atomic import write_json

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"drawn": drawn, "weights_sha256": h.hexdigest()})


def split_cases(cfg: TrainConfig, cases: list) -> tuple[list, list, list]:
    """Deterministic split by sorted case id: ``train | test (n_test) | val (n_val)`` from the end."""
    n = len(cases)
    n_val, n_test = cfg.data.n_val, cfg.data.n_test
    if n - n_val - n_test < 1:
        raise ConfigError(f"{n} case(s) cannot give n_val={n_val}, n_test={n_test} and at least one training case")
    return cases[: n - n_val - n_test], cases[n - n_val - n_test: n - n_val], cases[n - n_val:]


def run_pipeline(cfg: TrainConfig, run: RunDir, *, device: str = "auto", resume: bool = False,
                 log: Callable[[str], None] = lambda m: None) -> dict:
    """``medkit run`` body of ``pipeline: train-segmentation``: split, preprocess, (register),
    :func:`fit`, then the held-out test cases with the best checkpoint. Returns the summary."""
    cases = list_cases(cfg.data)
    train_c, test_c, val_c = split_cases(cfg, cases)
    n_lab = cfg.data.n_labelled if cfg.data.n_labelled is not None else len(train_c)
    labelled = [c for c in train_c if c[2] is not None][:n_lab]
    if not labelled:
        raise ConfigError(f"{cfg.data.root}: no labelled training case")
    unlabelled = [(cid, img, None) for cid, img, _ in train_c if cid not in {c[0] for c in labelled}]
    log(f"{len(labelled)} labelled + {len(unlabelled)} unlabelled training, {len(val_c)} val, {len(test_c)} test")
    train_s = preprocess_cases(cfg, labelled)
    val_s = preprocess_cases(cfg, val_c)
    bank = None
    quality = None
    if cfg.augment.kind == "registration":
        quality = check_registration(cfg, train_s, log)
        others = preprocess_cases(cfg, unlabelled) if unlabelled else []
        bank = build_field_bank(cfg, train_s, train_s + others, root=run.path / "fields")
    res = fit(cfg, SegmentationData(train_s, val_s, bank), run=run, device=device, resume=resume, log=log)
    summary = {"step": res["step"], "best_val_dice_mean": res["best"], "params": res["params"],
               "s_per_step": res["s_per_step"], "history": res["history"],
               "plateau": curve_plateau(res["history"]),
               "registration_quality": None if quality is None else {k: v for k, v in quality.items() if k != "fields"},
               "split": {"train": [c[0] for c in labelled], "unlabelled": [c[0] for c in unlabelled],
                         "val": [c[0] for c in val_c], "test": [c[0] for c in test_c]}}
    if test_c:
        best = run.load_checkpoint("best")
        model = build_model(cfg.model)
        model.load_state_dict(best["model"])
        summary["test"] = evaluate(model.to(pick_device(device)), preprocess_cases(cfg, test_c), cfg,
                                   pick_device(device))
    return summary
