"""Couinaud segmentation benchmark: LiverFormer vs MONAI SwinUNETR and BasicUNet, and
registration augmentation vs none vs random elastic in the 4-label regime.

    python bench/segmentation.py              # CPU-sized default (< 30 min on 2 cores)
    python bench/segmentation.py --full       # GPU-sized (bigger grid, networks, steps)

Same synthetic cases (``medkit.synth.liver_ct``, seed 0), same split, same
preprocessing and training transforms, same optimiser, steps and batch for every
network. Table 1: every network on all training labels, no augmentation.
Table 2: LiverFormer on 4 labelled cases (the other training scans serve as
unlabelled registration targets) with none / elastic / registration augmentation,
3 seeds each. Test metrics: per-segment Dice and HD95 (mm) on held-out cases
(misses count as Dice 0 and the image diagonal). CPU timings are only
meaningful as ratios within one run; on a shared machine use the interleaved speed
table (``--only timing``), which times the networks round-robin so load drift
hits them alike. Peak memory: a fresh subprocess per network
runs one training step; we report its RSS growth over the idle model, sampled
during the step (CPU), or ``torch.cuda.max_memory_allocated`` (GPU).
Writes bench/results/segmentation-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medkit.config import to_dict  # noqa: E402
from medkit.segmentation import COUINAUD_NAMES  # noqa: E402
from medkit.segmentation.network_config import LiverFormerConfig  # noqa: E402
from medkit.segmentation.train_config import (  # noqa: E402
    AugmentConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    PreprocessConfig,
    TrainConfig,
)

SEEDS = (0, 1, 2)


def settings(full: bool) -> dict:
    if full:
        return {"n_train": 16, "n_test": 8, "steps": 3000, "steps_aug": 2000, "batch": 2,
                "synth": {"shape": (192, 192, 160), "spacing_xy_mm": (1.7, 1.9), "spacing_z_mm": (1.25, 2.0)},
                "pre": PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0), grid_shape=(160, 128, 128), patch=(96, 96, 96)),
                "pre_aug": PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0), grid_shape=(160, 128, 128), patch=(96, 96, 96)),
                "lf": LiverFormerConfig(channels=(24, 48, 96, 192, 320), blocks_per_stage=2, embed_dim=320, depth=6,
                                        heads=8, mlp_ratio=4.0, deep_supervision=True),
                "swin": 24, "unet": (32, 32, 64, 128, 256, 32), "max_targets": 12}
    import os
    small = os.environ.get("MEDKIT_BENCH_SMOKE")
    if small:  # a seconds-long run that only checks the script works
        return {"n_train": 5, "n_test": 1, "steps": 2, "steps_aug": 2, "batch": 1, "synth": {},
                "pre": PreprocessConfig(spacing_mm=(8.0, 8.0, 8.0), grid_shape=(64, 32, 32), patch=(64, 32, 32)),
                "pre_aug": PreprocessConfig(spacing_mm=(8.0, 8.0, 8.0), grid_shape=(64, 32, 32), patch=(32, 32, 32)),
                "lf": LiverFormerConfig(channels=(4, 8), embed_dim=8, depth=1, heads=2, deep_supervision=True),
                "swin": 12, "unet": (4, 4, 8, 8, 8, 4), "max_targets": 1}
    # 2 shared CPU cores: SwinUNETR needs >= 64x32x32 patches (its 1/32 bottleneck must hold more
    # than one voxel for instance norm), so table 1 uses that patch at batch 1; table 2 (LiverFormer
    # only) uses 32^3 patches so 9 runs fit.
    # Budget measured here: 300 steps x batch 2 take LiverFormer from Dice 0 to ~0.46 on this grid.
    return {"n_train": 10, "n_test": 3, "steps": 300, "steps_aug": 250, "batch": 2, "synth": {},
            "pre": PreprocessConfig(spacing_mm=(5.0, 5.0, 5.0), grid_shape=(64, 48, 56), patch=(64, 32, 32)),
            "pre_aug": PreprocessConfig(spacing_mm=(5.0, 5.0, 5.0), grid_shape=(64, 48, 56), patch=(32, 32, 32)),
            "lf": LiverFormerConfig(channels=(8, 16, 32, 64), embed_dim=64, depth=2, heads=4, deep_supervision=True),
            "swin": 12, "unet": (8, 8, 16, 32, 64, 8), "max_targets": 4}


def make_cfg(s: dict, arch: str, aug: str, seed: int, steps: int, pre_key: str = "pre") -> TrainConfig:
    return TrainConfig(
        name=f"bench-{arch}-{aug}-{seed}", seed=seed, data=DataConfig(n_val=0),
        preprocess=s[pre_key], augment=AugmentConfig(kind=aug, max_targets=s["max_targets"]),
        model=ModelConfig(arch=arch, liverformer=s["lf"], swin_feature_size=s["swin"], basicunet_features=s["unet"]),
        optim=OptimConfig(steps=steps, batch_size=s["batch"], val_every=10**9))


def load_cases(s: dict, n: int) -> list[dict]:
    from monai.data import MetaTensor

    from medkit.progress import track
    from medkit.segmentation.data import preprocess_transforms
    from medkit.synth.liver_ct import LiverCTConfig, render_case

    scfg = LiverCTConfig(n_cases=n, seed=0, **s["synth"])
    pre = preprocess_transforms(s["pre"])
    out = []
    for i in track(range(n), "render"):
        c = render_case(scfg, i)
        aff = torch.as_tensor(c.affine)
        out.append(pre({"case_id": c.case_id, "image": MetaTensor(torch.from_numpy(c.image[None].astype(np.float32)), affine=aff),
                        "label": MetaTensor(torch.from_numpy(c.labels[None].astype(np.float32)), affine=aff)}))
    return out


@torch.no_grad()
def test_model(model, cfg: TrainConfig, test: list[dict], device) -> dict:
    from medkit.metrics.segmentation import case_row, segment_scores, summarise
    from medkit.segmentation.train import _sliding

    model.eval()
    rows, times = [], []
    for s in test:
        x = s["image"].as_tensor()[None].to(device)
        t0 = time.perf_counter()
        pred = _sliding(model, x, cfg).argmax(1)[0].cpu().numpy()
        times.append(time.perf_counter() - t0)
        sp = np.linalg.norm(np.asarray(s["image"].affine)[:3, :3], axis=0)
        rows.append(case_row(s["case_id"], segment_scores(pred, s["label"][0].numpy().astype(int), list(COUINAUD_NAMES), sp),
                             COUINAUD_NAMES))
    summ = summarise(rows)
    summ["infer_s_per_case"] = float(np.mean(times))
    return summ


def peak_memory_mb(arch: str, full: bool) -> float:
    """One training step of ``arch`` in a fresh process; peak memory growth (MB)."""
    r = subprocess.run([sys.executable, __file__, "--_mem", arch] + (["--full"] if full else []),
                       capture_output=True, text=True, timeout=900)
    try:
        return float(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(r.stderr[-2000:], file=sys.stderr)
        return float("nan")


def _mem_child(arch: str, full: bool) -> None:
    from medkit.segmentation.models import build_model

    s = settings(full)
    cfg = make_cfg(s, arch, "none", 0, 1)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg.model).to(dev).train()
    x = torch.randn(s["batch"], 1, *s["pre"].patch, device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        out = model(x)
        out = out[0] if isinstance(out, list) else out
        out.float().mean().backward()
        print(torch.cuda.max_memory_allocated() / 2**20)
        return
    # CPU: the RSS high-water mark (ru_maxrss) is usually set by the imports, not by one step,
    # so sample the current RSS from a thread during the step and report the growth over it.
    import threading

    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out = model(x)
    out = out[0] if isinstance(out, list) else out
    out.float().mean().backward()
    done.set()
    th.join()
    print((max(peak[0], proc.memory_info().rss) - base) / 2**20)


def interleaved_timing(s: dict, dev, rounds: int, test: list[dict]) -> dict:
    """Train s/step and inference s/case for every network, measured round-robin.

    Table 1 times each network during its own training, minutes apart; on a shared
    machine the load changes between them. Here each round runs one training step
    (forward, backward, AdamW) and one sliding-window inference per network back to
    back, the order rotating every round, so load drift hits all networks alike.
    Medians over rounds (the first round is a warm-up and dropped)."""
    from medkit.segmentation.models import build_model
    from medkit.segmentation.train import _sliding

    archs = ["liverformer", "swinunetr", "basicunet"]
    nets, opts, cfgs = {}, {}, {}
    for a in archs:
        cfgs[a] = make_cfg(s, a, "none", 0, 1)
        torch.manual_seed(0)
        nets[a] = build_model(cfgs[a].model).to(dev)
        opts[a] = torch.optim.AdamW(nets[a].parameters(), lr=1e-4)
    x = torch.randn(s["batch"], 1, *s["pre"].patch, device=dev)
    y = torch.randint(0, 9, (s["batch"], 1, *s["pre"].patch), device=dev).float()
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    img = test[0]["image"].as_tensor()[None].to(dev)
    t_train = {a: [] for a in archs}
    t_inf = {a: [] for a in archs}
    for r in range(rounds + 1):
        for a in archs[r % 3:] + archs[: r % 3]:
            net = nets[a].train()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = net(x)
            loss = loss_fn(out[0] if isinstance(out, list) else out, y)
            opts[a].zero_grad()
            loss.backward()
            opts[a].step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            with torch.no_grad():
                _sliding(net.eval(), img, cfgs[a])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            if r:
                t_train[a].append(t1 - t0)
                t_inf[a].append(t2 - t1)
    return {a: {"train_s_per_step": float(np.median(t_train[a])), "infer_s_per_case": float(np.median(t_inf[a])),
                "rounds": rounds} for a in archs}


def _clean(obj):
    """JSON-safe copy: NaN (e.g. a std of one value) becomes null."""
    return json.loads(json.dumps(obj, default=str).replace("NaN", "null"))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and np.isfinite(a) and np.isfinite(b) else "n/a"


def fmt_row(cells, widths):
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="GPU-sized setting")
    ap.add_argument("--save-model", type=Path, default=None, help="also write the table-1 LiverFormer as a model folder")
    ap.add_argument("--only", choices=["table1", "table2", "timing"], default=None,
                    help="run one part only (timing: the interleaved speed table alone)")
    ap.add_argument("--timing-rounds", type=int, default=8, help="rounds of the interleaved speed table")
    ap.add_argument("--out", type=Path, default=None,
                    help="results JSON (default bench/results/segmentation-<device>.json)")
    ap.add_argument("--steps", type=int, default=None, help="table-1 steps (default: the setting's)")
    ap.add_argument("--steps-aug", type=int, default=None, help="table-2 steps (default: the setting's)")
    ap.add_argument("--_mem", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 16)))
    if args._mem:
        _mem_child(args._mem, args.full)
        return
    import os

    from medkit.runs import package_versions, pick_device
    from medkit.segmentation.train import build_field_bank, fit
    os.environ.setdefault("MEDKIT_NO_PROGRESS", "1")
    s = settings(args.full)
    s["steps"] = args.steps or s["steps"]
    s["steps_aug"] = args.steps_aug or s["steps_aug"]
    dev = pick_device("auto")
    t_all = time.perf_counter()
    cases = load_cases(s, s["n_train"] + s["n_test"])
    train, test = cases[: s["n_train"]], cases[s["n_train"]:]
    res: dict = {"table1": {}, "table2": {}}

    if args.only == "timing":
        tim = interleaved_timing(s, dev, args.timing_rounds, test)
        for a in tim:
            tim[a]["peak_mem_mb"] = peak_memory_mb(a, args.full)
        lines = [f"Speed, interleaved ({args.timing_rounds} rounds, median; batch {s['batch']}, patch {tuple(s['pre'].patch)}, "
                 f"inference = sliding window over a {tuple(test[0]['image'].shape[1:])} grid, device {dev.type})",
                 fmt_row(["network", "train s/step", "infer s/case", "step mem MB", "LF/peer train", "LF/peer infer",
                          "LF/peer mem"], [12, 13, 13, 12, 14, 14, 12])]
        for a, r in tim.items():
            lf = tim["liverformer"]
            lines.append(fmt_row([a, f"{r['train_s_per_step']:.3f}", f"{r['infer_s_per_case']:.3f}",
                                  f"{r['peak_mem_mb']:.0f}",
                                  f"{lf['train_s_per_step'] / r['train_s_per_step']:.2f}",
                                  f"{lf['infer_s_per_case'] / r['infer_s_per_case']:.2f}",
                                  _ratio(lf['peak_mem_mb'], r['peak_mem_mb'])], [12, 13, 13, 12, 14, 14, 12]))
        text = "\n".join(lines)
        print(text)
        from medkit.io import write_json

        write_json(ROOT / "bench" / "results" / f"segmentation-timing-{'cuda' if dev.type == 'cuda' else 'cpu'}.json",
                   _clean({"printed": text, "timing": tim, "machine": {"platform": platform.platform(),
                           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(dev)},
                           "versions": package_versions()}))
        return

    # ---------------------------------------------------------------- table 1: networks
    for arch in ("liverformer", "swinunetr", "basicunet") if args.only != "table2" else ():
        cfg = make_cfg(s, arch, "none", 0, s["steps"])
        t0 = time.perf_counter()
        out = fit(cfg, train, [], device=str(dev))
        summ = test_model(out["model"], cfg, test, dev)
        agg = summ["aggregate"]
        res["table1"][arch] = {
            "dice": {n: agg[f"dice_{n}"]["mean"] for n in COUINAUD_NAMES.values()},
            "hd95": {n: agg[f"hd95_{n}"]["mean"] for n in COUINAUD_NAMES.values()},
            "dice_mean": agg["dice_mean"], "hd95_mean": agg["hd95_mean"], "params": out["params"],
            "train_s_per_step": out["s_per_step"], "infer_s_per_case": summ["infer_s_per_case"],
            "peak_mem_mb": peak_memory_mb(arch, args.full), "wall_s": time.perf_counter() - t0,
            "config": to_dict(cfg), "cases": summ["cases"]}
        print(f"[{arch}] test Dice {agg['dice_mean']['mean']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        from medkit.io import write_json as _wj

        _wj((args.out or ROOT / "bench" / "results" / f"segmentation-{dev.type}.json").with_suffix(".partial.json"),
            _clean({"table1": res["table1"], "note": "written after every table-1 network; the final file replaces it"}))
        if arch == "liverformer" and args.save_model is not None:
            from medkit.config import dump_config
            from medkit.io import write_text
            from medkit.io.atomic import atomic_path

            args.save_model.mkdir(parents=True, exist_ok=True)
            with atomic_path(args.save_model / "model.pt") as tmp:
                torch.save(out["model"].state_dict(), tmp)
            write_text(args.save_model / "config.yaml", dump_config(replace(cfg, name="liverformer-synthetic")))

    # ---------------------------------------------------------------- table 2: augmentation, 4 labels
    labelled, unlabelled = train[:4], train[4:]
    out_path = args.out or ROOT / "bench" / "results" / f"segmentation-{'cuda' if dev.type == 'cuda' else 'cpu'}.json"
    if args.only != "table1":
        t0 = time.perf_counter()
        cfg_r = make_cfg(s, "liverformer", "registration", 0, s["steps_aug"], "pre_aug")
        bank = build_field_bank(cfg_r, labelled, labelled + unlabelled)
        reg_s = time.perf_counter() - t0
        print(f"[registration] {len(bank)} fields in {reg_s:.0f} s", flush=True)
        res["registration"] = {"fields": len(bank), "seconds": reg_s,
                               "records": [{"atlas": r.atlas_id, "target": r.target_id,
                                            **{k: v for k, v in r.info.items() if k.startswith(("mse", "jac", "fold"))}}
                                           for r in bank.records]}
        runs: dict = {aug: [] for aug in ("none", "elastic", "registration")}
        # Seed-major, so an interrupted run still holds every setting at the first seeds.
        for seed in SEEDS:
            for aug in ("registration", "none", "elastic"):
                cfg = make_cfg(s, "liverformer", aug, seed, s["steps_aug"], "pre_aug")
                out = fit(cfg, labelled, [], bank=bank if aug == "registration" else None, device=str(dev))
                summ = test_model(out["model"], cfg, test, dev)
                runs[aug].append({"seed": seed, "dice_mean": summ["aggregate"]["dice_mean"]["mean"],
                                  "hd95_mean": summ["aggregate"]["hd95_mean"]["mean"],
                                  "dice": {n: summ["aggregate"][f"dice_{n}"]["mean"] for n in COUINAUD_NAMES.values()}})
                print(f"[{aug} seed {seed}] test Dice {runs[aug][-1]['dice_mean']:.3f}", flush=True)
                for a, rr in runs.items():
                    if rr:
                        d = [r["dice_mean"] for r in rr]
                        h = [r["hd95_mean"] for r in rr]
                        res["table2"][a] = {"runs": rr, "dice_mean": float(np.mean(d)),
                                            "dice_std": float(np.std(d, ddof=1)) if len(d) > 1 else float("nan"),
                                            "hd95_mean": float(np.mean(h)),
                                            "hd95_std": float(np.std(h, ddof=1)) if len(h) > 1 else float("nan")}
                from medkit.io import write_json

                write_json(out_path.with_suffix(".partial.json"), _clean({k: v for k, v in res.items() if k != "table1"}
                           | {"note": "written after every table-2 run; the final file replaces it"}))

    # ---------------------------------------------------------------- print
    t1 = res["table1"]
    names = list(COUINAUD_NAMES.values())
    lines = []
    hdr = ["network"] + [f"D-{n}" for n in names] + ["Dice", "HD95mm", "params", "s/step", "s/case", "memMB"]
    w = [12] + [6] * 8 + [13, 12, 8, 7, 7, 7]
    lines += [] if not t1 else [f"Table 1: test on {len(test)} held-out synthetic cases, {s['steps']} steps x batch {s['batch']}, patch {tuple(s['pre'].patch)}, "
             f"device {dev.type} (Dice/HD95: mean +- std over cases)", fmt_row(hdr, w)]
    for arch, r in t1.items():
        lines.append(fmt_row([arch] + [f"{r['dice'][n]:.3f}" for n in names]
                             + [f"{r['dice_mean']['mean']:.3f}+-{r['dice_mean']['std']:.3f}",
                                f"{r['hd95_mean']['mean']:.1f}+-{r['hd95_mean']['std']:.1f}", f"{r['params'] / 1e6:.2f}M",
                                f"{r['train_s_per_step']:.3f}", f"{r['infer_s_per_case']:.3f}", f"{r['peak_mem_mb']:.0f}"], w))
    for peer in ("swinunetr", "basicunet") if t1 else ():
        lf = t1["liverformer"]
        p = t1[peer]
        lines.append(f"  LiverFormer / {peer}: Dice {lf['dice_mean']['mean'] - p['dice_mean']['mean']:+.3f} (points x100), "
                     f"params x{lf['params'] / p['params']:.2f}, train s/step x{lf['train_s_per_step'] / p['train_s_per_step']:.2f}, "
                     f"infer s/case x{lf['infer_s_per_case'] / p['infer_s_per_case']:.2f}, "
                     f"memory x{_ratio(lf['peak_mem_mb'], p['peak_mem_mb'])}")
    t2 = res["table2"]
    lines += [] if not t2 else ["", f"Table 2: LiverFormer, 4 labelled cases (+{len(unlabelled)} unlabelled registration targets), "
                  f"{s['steps_aug']} steps x batch {s['batch']}, patch {tuple(s['pre_aug'].patch)}, seeds {list(SEEDS)} (mean +- std over seeds)",
              fmt_row(["augmentation", "Dice", "HD95mm", "per seed Dice"], [14, 14, 12, 24])]
    for aug, r in t2.items():
        lines.append(fmt_row([aug, f"{r['dice_mean']:.3f}+-{r['dice_std']:.3f}", f"{r['hd95_mean']:.1f}+-{r['hd95_std']:.1f}",
                              " ".join(f"{x['dice_mean']:.3f}" for x in r["runs"])], [14, 14, 12, 24]))
    if len(t2) == 3:
        lines.append(f"  registration - none: {100 * (t2['registration']['dice_mean'] - t2['none']['dice_mean']):+.1f} Dice points; "
                 f"registration - elastic: {100 * (t2['registration']['dice_mean'] - t2['elastic']['dice_mean']):+.1f}")
    text = "\n".join(lines)
    print(text)
    res.update({"printed": text, "full": args.full, "seeds": {"data": 0, "training": list(SEEDS)},
                "settings": {k: (to_dict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in s.items()},
                "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "device": str(dev),
                            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
                "versions": package_versions(), "wall_s": time.perf_counter() - t_all})
    from medkit.io import write_json

    write_json(out_path, _clean(res))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
