"""Couinaud segmentation benchmark (issue 17), as resumable cells.

    python bench/segmentation.py --part table1 --nets liverformer dynunet --seeds 0
    python bench/segmentation.py --part quality        # registration bank + quality gate
    python bench/segmentation.py --part few --n-labels 1 2 --seeds 0 1 2 3 4
    python bench/segmentation.py --part timing         # params, s/step, s/case, memory, one run
    python bench/segmentation.py --assemble            # tables + targets from the finished cells
    python bench/segmentation.py                       # every cell in priority order, then assemble
    python bench/segmentation.py --device cuda ...     # the same cells on a GPU: segmentation-cuda tables

``--device auto`` (the default) trains, tests and times on CUDA when there is one; the
tables are per device (``segmentation-cpu`` / ``segmentation-cuda``) and every cell's
provenance names the device it ran on. The registration bank is built on the device its
settings name (CPU) and cached, so both tables share the same fields.

Every (part, network or arm, budget, seed) is a cell (``bench/cells.py``): it writes
``bench/results/segmentation-cpu/cells/<cell>.json`` when it finishes and is skipped
afterwards, so a run can stop anywhere and a later run does the rest; a training cell
stopped midway resumes from its last validation check (its checkpoints live under
``$MEDKIT_BENCH_CACHE/cpu/runs/<device>/`` until the cell's JSON is written). Every command
ends by assembling ``bench/results/segmentation-cpu.json`` from whatever cells exist.

Data: synthetic phantoms (``medkit.synth.liver_ct``, default settings, seed 0), split by
index: train 0-19, validation 20-23, test 24-35 (12 cases). The same preprocessing for
every arm (RAS, 6 mm isotropic, HU window -160..240, body crop, 64 x 40 x 48 grid).

Table 1: every network on the 20 training cases, no augmentation; one loss (Dice + CE),
one optimiser and LR schedule (AdamW 2e-3, poly 0.9 to 0 over the budget), no deep
supervision for anyone, class-balanced patch centres (background and I..VIII drawn
equally), 64 x 32 x 32 patches (the smallest SwinUNETR trains on: its 1/32 bottleneck
needs more than one voxel), batch 2 (on CPU, PyTorch runs batch-1 3D convolutions on its
slow non-oneDNN path: a batch of 2 costs half the time of two batches of 1). Validation Dice every ``val_every`` steps gives
the learning curve; each cell reports the test cases at the budget and at its own
plateau (the first check after which smoothed validation Dice gains < 0.5 points).

Few-label (registration augmentation, Zhao et al. CVPR 2019 / LiverFormer): LiverFormer
on n = 1, 2, 4 labelled cases (seed s draws them from the first 8 training cases; the
n=1 set lies inside n=2 inside n=4), the 12 other training cases serve only as
unlabelled registration targets; none vs random elastic vs registration, paired seeds.
The field bank (every pool case registered to the 12 targets) is gated by a printed
check: warped-atlas Couinaud Dice against the target (whose labels training never
sees) must clearly beat no warp.

Paired comparisons: ``medkit.metrics.stats.paired_diff`` over test cases (rows of one
case across seeds are averaged first). Timing and memory: one process, networks
interleaved round-robin so load drift on a shared machine hits them alike; memory
in a fresh subprocess per network.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cells import Bench  # noqa: E402
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
from medkit.transforms.registration import RegistrationConfig  # noqa: E402

NAMES = list(COUINAUD_NAMES.values())
NETS = ("liverformer", "dynunet", "basicunet", "liverformer_notr", "swinunetr")
AUGS = ("registration", "none", "elastic")
CACHE = Path(os.environ.get("MEDKIT_BENCH_CACHE", Path.home() / ".cache" / "medkit" / "bench-segmentation"))
DEVICE = torch.device("cpu")  # set by main() from --device


def _sync(dev: torch.device) -> None:
    """Wait for queued CUDA kernels, so a wall-clock reading covers the work it claims."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def settings(smoke: bool = False) -> dict:
    """The benchmark's sizes. ``smoke``: seconds-long, only checks that the script works."""
    lf = LiverFormerConfig(channels=(8, 16, 32, 64), embed_dim=64, depth=2, heads=4)
    s = {
        "synth": {"n_cases": 36, "seed": 0}, "n_train": 20, "n_val": 4, "n_test": 12,
        "pre": PreprocessConfig(spacing_mm=(6.0, 6.0, 6.0), grid_shape=(64, 40, 48), patch=(64, 32, 32),
                                patch_sampling="class_balanced"),
        "optim": OptimConfig(lr=2e-3, steps=3000, batch_size=2, val_every=150),
        "models": {
            "liverformer": ModelConfig(arch="liverformer", liverformer=lf),
            "liverformer_notr": ModelConfig(arch="liverformer", liverformer=replace(lf, transformer=False)),
            "dynunet": ModelConfig(arch="dynunet", dynunet_filters=(8, 16, 32, 64)),
            "basicunet": ModelConfig(arch="basicunet", basicunet_features=(8, 8, 16, 32, 64, 8)),
            "swinunetr": ModelConfig(arch="swinunetr", swin_feature_size=12),
        },
        "seeds": {"liverformer": (0, 1, 2), "liverformer_notr": (0, 1, 2), "dynunet": (0, 1, 2),
                  "basicunet": (0, 1, 2), "swinunetr": (0,)},
        "few": {"pool": 8, "n_unlabelled": 12, "n_labels": (1, 2, 4), "seeds": (0, 1, 2, 3, 4),
                "pre": PreprocessConfig(spacing_mm=(6.0, 6.0, 6.0), grid_shape=(64, 40, 48), patch=(32, 32, 32),
                                        patch_sampling="class_balanced"),
                "optim": OptimConfig(lr=2e-3, steps=1500, batch_size=2, val_every=100),
                "augment": AugmentConfig(kind="none", prob=0.6, scale_range=(0.5, 1.0), compose_prob=0.25,
                                         max_targets=12, elastic_sigma=(4.0, 6.0), elastic_magnitude=(100.0, 200.0),
                                         registration=RegistrationConfig(device="cpu"))},
        "gate_min_gain": 0.05,  # warped-atlas Dice must beat no warp by 5 points on average
        "timing_rounds": 8,
    }
    if smoke:
        tiny = LiverFormerConfig(channels=(4, 8), embed_dim=8, depth=1, heads=2)
        s.update({"synth": {"n_cases": 7, "seed": 0, "shape": (48, 48, 24), "spacing_xy_mm": (7.0, 7.5),
                            "spacing_z_mm": (9.0, 10.0), "fine_xy": 1, "fine_z_max_mm": 5.0, "max_tumours": 0},
                  "n_train": 4, "n_val": 1, "n_test": 2,
                  "pre": PreprocessConfig(spacing_mm=(10.0, 10.0, 10.0), grid_shape=(64, 32, 32), patch=(64, 32, 32)),
                  "optim": OptimConfig(lr=2e-3, steps=4, batch_size=1, val_every=2), "timing_rounds": 1,
                  "models": {"liverformer": ModelConfig(arch="liverformer", liverformer=tiny),
                             "liverformer_notr": ModelConfig(arch="liverformer",
                                                             liverformer=replace(tiny, transformer=False)),
                             "dynunet": ModelConfig(arch="dynunet", dynunet_filters=(4, 8, 8)),
                             "basicunet": ModelConfig(arch="basicunet", basicunet_features=(4, 4, 4, 4, 8, 4)),
                             "swinunetr": ModelConfig(arch="swinunetr", swin_feature_size=12)},
                  "seeds": {n: (0,) for n in NETS}, "gate_min_gain": -1.0})
        s["few"] = {**s["few"], "pool": 2, "n_unlabelled": 2, "n_labels": (1,), "seeds": (0,),
                    "pre": PreprocessConfig(spacing_mm=(10.0, 10.0, 10.0), grid_shape=(64, 32, 32),
                                            patch=(16, 16, 16)),
                    "optim": OptimConfig(lr=2e-3, steps=4, batch_size=1, val_every=2),
                    "augment": replace(s["few"]["augment"], max_targets=2,
                                       registration=RegistrationConfig(affine_iters=2, deform_iters=2, device="cpu"))}
        s["models"]["liverformer"] = ModelConfig(arch="liverformer", liverformer=tiny)
    return s


# ----------------------------------------------------------------------------- data


def load_cases(s: dict, smoke: bool) -> list[dict]:
    """Render and preprocess the phantoms (cached as .npz: a re-run skips the rendering)."""
    from monai.data import MetaTensor

    from medkit.segmentation.data import preprocess_transforms
    from medkit.synth.liver_ct import LiverCTConfig, render_case

    key = "smoke" if smoke else "cpu"
    pre = preprocess_transforms(s["pre"])
    out = []
    for i in range(s["synth"]["n_cases"]):
        f = CACHE / key / f"case{i:03d}.npz"
        if f.exists():
            z = np.load(f)
            aff = torch.from_numpy(z["affine"])
            out.append({"case_id": str(z["case_id"]), "image": MetaTensor(torch.from_numpy(z["image"]), affine=aff),
                        "label": MetaTensor(torch.from_numpy(z["label"]), affine=aff)})
            continue
        c = render_case(LiverCTConfig(**s["synth"]), i)
        aff = torch.as_tensor(c.affine)
        d = pre({"case_id": c.case_id, "image": MetaTensor(torch.from_numpy(c.image[None].astype(np.float32)), affine=aff),
                 "label": MetaTensor(torch.from_numpy(c.labels[None].astype(np.float32)), affine=aff)})
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f"{f.stem}.{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, case_id=c.case_id, image=d["image"].numpy(), label=d["label"].numpy(),
                            affine=np.asarray(d["image"].affine, dtype=np.float64))
        tmp.replace(f)
        out.append({"case_id": d["case_id"], "image": d["image"], "label": d["label"]})
    return out


def split(s: dict, cases: list[dict]) -> tuple[list, list, list]:
    n_tr, n_val = s["n_train"], s["n_val"]
    return cases[:n_tr], cases[n_tr:n_tr + n_val], cases[n_tr + n_val:n_tr + n_val + s["n_test"]]


def few_labelled(s: dict, train: list[dict], n: int, seed: int) -> list[dict]:
    """The ``n`` labelled cases of seed ``seed``: a fixed permutation of the pool per seed, first ``n``
    (so the 1-label set lies inside the 2-label set inside the 4-label set)."""
    perm = np.random.default_rng(1000 + seed).permutation(s["few"]["pool"])
    return [train[int(i)] for i in perm[:n]]


# ----------------------------------------------------------------------------- training cells


@torch.no_grad()
def test_cases(model, cfg: TrainConfig, cases: list[dict], device) -> dict:
    """Per-case Dice/HD95 on the test cases (sliding window, the cfg's overlap) and seconds per case."""
    from medkit.metrics.segmentation import case_row, segment_scores
    from medkit.segmentation.train import _sliding

    model.eval()
    rows, times = [], []
    for c in cases:
        x = c["image"].as_tensor()[None].to(device)
        _sync(x.device)
        t0 = time.perf_counter()
        pred = _sliding(model, x, cfg).argmax(1)[0].cpu().numpy()  # .cpu() waits for the kernels
        times.append(time.perf_counter() - t0)
        sp = np.linalg.norm(np.asarray(c["image"].affine)[:3, :3], axis=0)
        row = case_row(c["case_id"], segment_scores(pred, c["label"][0].numpy().astype(int), list(COUINAUD_NAMES),
                                                    sp), COUINAUD_NAMES)
        rows.append({k: v for k, v in row.items() if not k.startswith("assd")})
    return {"cases": rows, "dice_mean": float(np.mean([r["dice_mean"] for r in rows])),
            "hd95_mean": float(np.mean([r["hd95_mean"] for r in rows])),
            "dice": {n: float(np.mean([r[f"dice_{n}"] for r in rows])) for n in NAMES},
            "infer_s_per_case": float(np.mean(times))}


def own_plateau_step(history: list[dict], tol: float = 0.005, smooth: int = 3) -> int | None:
    """The first check after which the smoothed validation Dice never gains ``tol`` or more.

    Smoothing: trailing mean over ``smooth`` checks (4 validation cases are noisy).
    Worked example: smoothed [0.5, 0.8, 0.85, 0.852, 0.851] -> step of the 0.85 check
    (later values exceed it by only 0.002 < 0.005)."""
    pts = [(h["step"], h.get("dice_mean")) for h in history if h.get("dice_mean") is not None]
    if not pts:
        return None
    v = np.array([p[1] for p in pts], dtype=float)
    v = np.array([v[max(0, i - smooth + 1): i + 1].mean() for i in range(len(v))])
    for i in range(len(v)):
        if v[i:].max() - v[i] < tol:
            return int(pts[i][0])
    return int(pts[-1][0])


def cell_run_dir(key: str) -> Path:
    """Where an unfinished training cell keeps its checkpoints and per-check weights."""
    return CACHE / ("smoke" if SMOKE else "cpu") / "runs" / DEVICE.type / key.replace("/", "__")


def _open_cell_run(cfg: TrainConfig, key: str):
    """The cell's run folder, reopened when it holds a checkpoint of the same config (an
    interrupted cell continues from its last check: ``fit`` restores the weights, optimiser,
    schedule and every random stream), else started afresh."""
    import json
    import shutil

    from medkit.config import to_dict
    from medkit.runs import RunDir, load_checkpoint

    d = cell_run_dir(key)
    ck = load_checkpoint(d / "checkpoints" / "last.pt") if (d / "checkpoints" / "last.pt").exists() else None
    same = ck is not None and json.dumps(ck.get("config"), sort_keys=True, default=list) == \
        json.dumps(to_dict(cfg), sort_keys=True, default=list)
    if not same:
        shutil.rmtree(d, ignore_errors=True)
    run = RunDir.create(d, config=cfg, seed=cfg.seed, device=str(DEVICE), command=f"bench/segmentation.py cell {key}",
                        resume=same)
    return run, (int(ck["step"]) if same else 0)


def train_cell(s: dict, cfg: TrainConfig, train: list[dict], val: list[dict], test: list[dict], bank=None,
               key: str | None = None) -> dict:
    """Train ``cfg`` (validation curve in the history), test at the budget and at its own plateau.

    With ``key`` the cell checkpoints at every check under :func:`cell_run_dir` and a later run
    resumes it there (a SwinUNETR cell is hours on a CPU); the weights of every check go to
    disk (safetensors) for the own-plateau test. Without, everything stays in memory."""
    from safetensors.torch import load_file, save_file

    from medkit.segmentation.train import SegmentationData, curve_plateau, fit

    snaps: dict[int, dict] = {}
    run, resumed_from = _open_cell_run(cfg, key) if key else (None, 0)

    def keep(step, model, rec):
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if run is None:
            snaps[step] = sd
        else:
            (run.path / "snaps").mkdir(exist_ok=True)
            save_file({k: v.contiguous().cpu() for k, v in sd.items()}, str(run.path / "snaps" / f"{step}.safetensors"))

    def snapshot(step):
        if run is None:
            return snaps.get(step)
        f = run.path / "snaps" / f"{step}.safetensors"
        return load_file(str(f)) if f.exists() else None

    dev = DEVICE
    out = fit(cfg, SegmentationData(train, val, bank), run=run, device=str(dev), on_check=keep, resume=resumed_from > 0,
              log=(lambda m: print(f"[segmentation] {key}: {m}", flush=True)) if key else (lambda m: None))
    model = out["model"]
    res = {"steps": cfg.optim.steps, "seed": cfg.seed, "params": out["params"], "train_s_per_step": out["s_per_step"],
           "resumed_from_step": resumed_from,
           "history": [{k: v for k, v in h.items() if k in ("step", "loss", "dice_mean") or k.startswith("dice_")}
                       for h in out["history"]],
           "plateau": curve_plateau(out["history"])}
    res["test"] = test_cases(model, cfg, test, dev)
    own = own_plateau_step(out["history"])
    res["own_plateau_step"] = own
    own_sd = snapshot(own) if own is not None and own != out["step"] else None
    if own_sd is not None:
        model.load_state_dict(own_sd)
        res["test_own_plateau"] = test_cases(model, cfg, test, dev)
    else:
        res["test_own_plateau"] = res["test"]
    return res


def _drop_run(key: str) -> None:
    """A finished cell's JSON is its result: its checkpoints and per-check weights go."""
    import shutil

    shutil.rmtree(cell_run_dir(key), ignore_errors=True)


def table1_cfg(s: dict, net: str, seed: int) -> TrainConfig:
    return TrainConfig(name=f"bench-{net}", seed=seed, data=DataConfig(n_val=0), preprocess=s["pre"],
                       augment=AugmentConfig(kind="none"), model=s["models"][net], optim=s["optim"])


def table1_key(s: dict, net: str, seed: int) -> str:
    return f"table1/{net}/steps{s['optim'].steps}/seed{seed}"


def few_cfg(s: dict, aug: str, seed: int) -> TrainConfig:
    f = s["few"]
    return TrainConfig(name=f"bench-few-{aug}", seed=seed, data=DataConfig(n_val=0), preprocess=f["pre"],
                       augment=replace(f["augment"], kind=aug), model=s["models"]["liverformer"], optim=f["optim"])


def few_key(s: dict, n: int, aug: str, seed: int) -> str:
    return f"few/n{n}/{aug}/steps{s['few']['optim'].steps}/seed{seed}"


# ----------------------------------------------------------------------------- registration bank + gate


def field_bank(s: dict, train: list[dict], smoke: bool, log=print):
    """Every pool case registered to the unlabelled targets (cached on disk: registration is
    deterministic, and every few-label cell shares the bank)."""
    from medkit.segmentation.train import build_field_bank
    from medkit.transforms import FieldBank

    f = s["few"]
    pool, targets = train[:f["pool"]], train[f["pool"]:f["pool"] + f["n_unlabelled"]]
    cfg = few_cfg(s, "registration", 0)
    root = CACHE / ("smoke" if smoke else "cpu") / "bank"
    want = {(a["case_id"], t["case_id"]) for a in pool for t in targets}
    import fcntl
    import shutil

    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / "bank.lock", "w") as lock:  # two queued jobs: one builds, the other waits
        fcntl.flock(lock, fcntl.LOCK_EX)
        bank = FieldBank(root)
        if {(r.atlas_id, r.target_id) for r in bank.records} >= want:
            return bank
        log(f"registering {len(pool)} atlases to {len(targets)} unlabelled targets")
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        bank = build_field_bank(cfg, pool, [dict(t, unlabelled=True) for t in targets], root=root)
        log(f"{len(bank)} fields in {time.perf_counter() - t0:.0f} s")
    return bank


def quality_cell(s: dict, train: list[dict], smoke: bool) -> dict:
    """The registration-quality check of the bank (printed; the few-label registration arm
    refuses to run when it fails)."""
    from medkit.segmentation.train import registration_quality

    bank = field_bank(s, train, smoke)
    by_id = {c["case_id"]: c for c in train}
    q = registration_quality(bank, by_id, by_id, min_gain=s["gate_min_gain"])
    q["registration_config"] = {k: v for k, v in vars(few_cfg(s, "registration", 0).augment.registration).items()}
    return q


# ----------------------------------------------------------------------------- timing


def timing_cell(s: dict, test: list[dict], rounds: int) -> dict:
    """Train s/step and inference s/case per network, interleaved round-robin in one process
    (medians over rounds, the first dropped), then peak memory per network in a fresh process."""
    from monai.losses import DiceCELoss

    from medkit.segmentation.models import build_model
    from medkit.segmentation.train import _sliding

    dev = DEVICE
    nets, opts, cfgs = {}, {}, {}
    for n in NETS:
        cfgs[n] = table1_cfg(s, n, 0)
        torch.manual_seed(0)
        nets[n] = build_model(cfgs[n].model).to(dev)
        opts[n] = torch.optim.AdamW(nets[n].parameters(), lr=1e-4)
    b, patch = s["optim"].batch_size, s["pre"].patch
    x = torch.rand(b, 1, *patch, device=dev)
    y = torch.randint(0, 9, (b, 1, *patch), device=dev).float()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    img = test[0]["image"].as_tensor()[None].to(dev)
    t_train = {n: [] for n in NETS}
    t_inf = {n: [] for n in NETS}
    for r in range(rounds + 1):
        for n in NETS[r % len(NETS):] + NETS[: r % len(NETS)]:
            net = nets[n].train()
            _sync(dev)
            t0 = time.perf_counter()
            loss = loss_fn(net(x), y)
            opts[n].zero_grad()
            loss.backward()
            opts[n].step()
            _sync(dev)
            t1 = time.perf_counter()
            with torch.no_grad():
                _sliding(net.eval(), img, cfgs[n])
            _sync(dev)
            t2 = time.perf_counter()
            if r:
                t_train[n].append(t1 - t0)
                t_inf[n].append(t2 - t1)
    out = {}
    for n in NETS:
        out[n] = {"params": sum(p.numel() for p in nets[n].parameters()),
                  "train_s_per_step": float(np.median(t_train[n])), "infer_s_per_case": float(np.median(t_inf[n])),
                  **peak_memory_mb(n), "rounds": rounds}
    out["_grid"] = list(img.shape[2:])
    out["_device"] = str(dev)
    return out


def peak_memory_mb(net: str) -> dict:
    """Peak memory (MB) over the idle model during one training step and one sliding-window
    inference, each in a fresh process: RSS growth on the CPU (the process high-water mark is
    set by the imports), ``torch.cuda.max_memory_allocated`` growth on CUDA."""
    import json
    import subprocess

    res = {}
    for what in ("train", "infer"):
        r = subprocess.run([sys.executable, __file__, "--_mem", net, what, "--device", str(DEVICE)]
                           + (["--smoke"] if SMOKE else []),
                           capture_output=True, text=True, timeout=1800, env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            res[f"{what}_mem_mb"] = float(json.loads(r.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            print(r.stderr[-2000:], file=sys.stderr)
            res[f"{what}_mem_mb"] = None
    return res


def _mem_child(net: str, what: str) -> None:
    import threading

    import psutil

    from medkit.segmentation.models import build_model
    from medkit.segmentation.train import _sliding

    s = settings(SMOKE)
    cfg = table1_cfg(s, net, 0)
    torch.manual_seed(0)
    dev = DEVICE
    model = build_model(cfg.model).to(dev)
    x = torch.rand(s["optim"].batch_size, 1, *s["pre"].patch, device=dev)
    img = torch.rand(1, 1, *s["pre"].grid_shape, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        if what == "train":
            model.train()
            model(x).float().mean().backward()
        else:
            with torch.no_grad():
                _sliding(model.eval(), img, cfg)
        torch.cuda.synchronize(dev)
        print((torch.cuda.max_memory_allocated(dev) - base) / 2**20)
        return
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
    if what == "train":
        model.train()
        model(x).float().mean().backward()
    else:
        with torch.no_grad():
            _sliding(model.eval(), img, cfg)
    done.set()
    th.join()
    print((max(peak[0], proc.memory_info().rss) - base) / 2**20)


# ----------------------------------------------------------------------------- main


SMOKE = bool(os.environ.get("MEDKIT_BENCH_SMOKE"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["table1", "quality", "few", "timing", "all"], default="all")
    ap.add_argument("--nets", nargs="+", choices=NETS, default=None)
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the setting's seeds per part")
    ap.add_argument("--n-labels", nargs="+", type=int, default=None)
    ap.add_argument("--augs", nargs="+", choices=AUGS, default=None)
    ap.add_argument("--assemble", action="store_true", help="only assemble the tables from finished cells")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (also MEDKIT_BENCH_SMOKE=1)")
    ap.add_argument("--results-root", type=Path, default=None, help="default bench/results")
    ap.add_argument("--device", default="auto",
                    help="auto (CUDA when there is one, else CPU), cpu or cuda[:N]; tables are per device")
    ap.add_argument("--_mem", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global SMOKE, DEVICE
    SMOKE = SMOKE or args.smoke
    from medkit.io.errors import DeviceError
    from medkit.runs import pick_device

    try:
        DEVICE = pick_device(args.device)
    except DeviceError as e:
        raise SystemExit(f"bench/segmentation.py: {e}") from None
    if DEVICE.type not in ("cpu", "cuda"):
        DEVICE = torch.device("cpu")  # MPS: the 3D networks' ops are not all there; measure on the CPU
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args._mem:
        _mem_child(*args._mem)
        return
    from bench.segmentation_tables import assemble
    from medkit.config import to_dict

    s = settings(SMOKE)
    root = args.results_root or (ROOT / "bench" / "results" if not SMOKE else CACHE / "smoke-results")
    bench = Bench("segmentation", device=DEVICE, root=root,
                  config={k: (to_dict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in s.items()
                          if k not in ("models", "few")}
                  | {"models": {k: to_dict(v) for k, v in s["models"].items()},
                     "few": {k: (to_dict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in s["few"].items()}})
    if not args.assemble:
        cases = load_cases(s, SMOKE)
        train, val, test = split(s, cases)
        parts = ["table1", "quality", "few", "timing"] if args.part == "all" else [args.part]
        for part in parts:
            if part == "table1":
                nets = args.nets or NETS
                seeds = sorted({k for n in nets for k in (args.seeds or s["seeds"][n])})
                for seed in seeds:  # seed-major: every network at seed 0 first
                    for n in nets:
                        if args.seeds is None and seed not in s["seeds"][n]:
                            continue
                        cfg = table1_cfg(s, n, seed)
                        bench.cell(table1_key(s, n, seed),
                                   lambda cfg=cfg, n=n, seed=seed: {"net": n, **train_cell(
                                       s, cfg, train, val, test, key=table1_key(s, n, seed))})
                        _drop_run(table1_key(s, n, seed))
            elif part == "quality":
                q = bench.cell("registration/quality", lambda: quality_cell(s, train, SMOKE))
                print(q["printed"])
            elif part == "few":
                q = bench.cell("registration/quality", lambda: quality_cell(s, train, SMOKE))
                print(q["printed"])
                bank = None
                for seed in args.seeds or s["few"]["seeds"]:
                    for n in args.n_labels or s["few"]["n_labels"]:
                        for aug in args.augs or AUGS:
                            if bench.done(few_key(s, n, aug, seed)):
                                continue
                            if aug == "registration":
                                if not q["gate"]["held"]:
                                    raise SystemExit("registration quality gate failed: not running the "
                                                     "registration arm (see the check above)")
                                bank = bank or field_bank(s, train, SMOKE)
                            lab = few_labelled(s, train, n, seed)
                            cfg = few_cfg(s, aug, seed)
                            bench.cell(few_key(s, n, aug, seed), lambda cfg=cfg, lab=lab, aug=aug, bank=bank,
                                       k=few_key(s, n, aug, seed): {
                                "n_labelled": len(lab), "aug": aug, "labelled": [c["case_id"] for c in lab],
                                **train_cell(s, cfg, lab, val, test, bank if aug == "registration" else None,
                                             key=k)})
                            _drop_run(few_key(s, n, aug, seed))
            elif part == "timing":
                bench.cell(f"timing/rounds{s['timing_rounds']}", lambda: timing_cell(s, test, s["timing_rounds"]))
    print(assemble(bench, s))


if __name__ == "__main__":
    main()
