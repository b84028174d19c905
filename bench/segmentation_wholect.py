"""Whole-CT cost (issue 17, item 7): a 512 x 512 x 400 CT through ``medkit segment`` against
MONAI SwinUNETR and DynUNet sliding-window inference at the same ROI, in one run.

    python bench/segmentation_wholect.py [--model models/liverformer-synthetic] [--roi 64 32 32]

The CT: a synthetic abdominal phantom (``medkit.synth.liver_ct``, seed 0) upsampled by
nearest neighbour to 512 x 512 x 400 voxels at 0.7 x 0.7 x 1.0 mm (a 358 mm field of view,
400 mm long), stored as an uncompressed int16 NIfTI (200 MiB).

- ``medkit segment``: the CLI in a subprocess with the given LiverFormer model folder (the
  shipped one by default; its ROI set to ``--roi`` when it differs, weights unchanged):
  reorient, resample to the model's spacing, a coarse pass without overlap to find the
  liver, a sliding-window pass (overlap 0.5) on the liver box, probabilities resampled back
  chunk by chunk, NIfTI + statistics + overlay written.
- The peers, what a MONAI user writes: ``LoadImaged -> EnsureChannelFirstd -> Orientationd
  (RAS) -> Spacingd`` (the model's spacing) ``-> ScaleIntensityRanged`` (the same window),
  ``sliding_window_inference`` over the whole resampled CT (same ROI, overlap 0.5,
  gaussian, sw_batch 2), argmax, ``Invertd`` back to the input grid (nearest), ``SaveImage``.
  Untrained weights: the cost of a full sliding window does not depend on them.

Each method runs in a fresh process, ``--rounds`` times in rotating order; wall time and
peak RSS (the process and its children, sampled every 50 ms) per run, medians reported,
with medkit's ratio to each peer. Cells: ``bench/results/segmentation_wholect-cpu/cells``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cells import Bench  # noqa: E402

SHAPE = (512, 512, 400)
SPACING = (0.7, 0.7, 1.0)
METHODS = ("medkit", "swinunetr", "dynunet")


def write_ct(path: Path) -> None:
    """The 512 x 512 x 400 phantom (see the module docstring)."""
    import nibabel as nib
    from scipy import ndimage

    from medkit.synth.liver_ct import LiverCTConfig, render_case

    c = render_case(LiverCTConfig(seed=0), 0)
    zoom = [t / s for t, s in zip(SHAPE, c.image.shape)]
    big = ndimage.zoom(c.image.astype(np.int16), zoom, order=0)[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    aff = np.diag([*SPACING, 1.0])
    aff[:3, 3] = [-179.0, -179.0, -200.0]
    img = nib.Nifti1Image(big, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    nib.save(img, str(path))


def model_with_roi(model: Path, roi: tuple[int, int, int], out: Path) -> Path:
    """``model`` itself when its ROI is ``roi``; else a copy whose config says ``roi`` (same weights)."""
    import shutil

    from medkit.config import dump_config, load_config
    from medkit.segmentation.train_config import TrainConfig

    cfg = load_config(model / "config.yaml", TrainConfig)
    if tuple(cfg.preprocess.patch) == tuple(roi):
        return model
    out.mkdir(parents=True, exist_ok=True)
    for f in ("model.safetensors", "metrics.json"):
        if (model / f).exists():
            shutil.copy(model / f, out / f)
    cfg.preprocess.patch = tuple(roi)
    (out / "config.yaml").write_text(dump_config(cfg))
    return out


def peer_child(arch: str, ct: Path, out: Path, model: Path) -> None:
    """One peer's whole-CT inference (runs in its own process; see the module docstring)."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        Orientationd,
        SaveImage,
        ScaleIntensityRanged,
        Spacingd,
    )

    from medkit.config import load_config
    from medkit.segmentation.models import build_model
    from medkit.segmentation.train_config import ModelConfig, TrainConfig

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = load_config(model / "config.yaml", TrainConfig)
    net = build_model(ModelConfig(arch=arch, swin_feature_size=12, dynunet_filters=(8, 16, 32, 64))).eval()
    pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="RAS"),
                   Spacingd("image", pixdim=cfg.preprocess.spacing_mm, mode="bilinear"),
                   ScaleIntensityRanged("image", *cfg.preprocess.window_hu, b_min=0.0, b_max=1.0, clip=True)])
    d = pre({"image": str(ct)})
    with torch.no_grad():
        logits = sliding_window_inference(d["image"][None], cfg.preprocess.patch, 2, net, overlap=0.5,
                                          mode="gaussian")
    d["pred"] = logits.argmax(1, keepdim=True)[0].float()
    d["pred"].applied_operations = d["image"].applied_operations
    d["pred"].meta = d["image"].meta
    inv = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)
    d = inv(d)
    SaveImage(output_dir=str(out), output_postfix="seg", separate_folder=False, print_log=False,
              output_dtype=np.uint8)(d["pred"])


def measure(cmd: list[str], env: dict) -> dict:
    """Wall seconds and peak RSS (GiB, process + children, 50 ms sampling) of ``cmd``."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)]))
        except psutil.Error:
            pass
        time.sleep(0.05)
    log = proc.communicate()[0]
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}):\n{log[-3000:]}")
    return {"wall_s": wall, "peak_rss_gib": peak / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "liverformer-synthetic")
    ap.add_argument("--roi", type=int, nargs=3, default=(64, 32, 32),
                    help="sliding-window ROI for every method (SwinUNETR needs >= 64 on one axis)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--results-root", type=Path, default=None)
    ap.add_argument("--_peer", nargs=4, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._peer:
        peer_child(args._peer[0], Path(args._peer[1]), Path(args._peer[2]), Path(args._peer[3]))
        return
    roi = tuple(args.roi)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "MEDKIT_NO_PROGRESS": "1",
           "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}
    bench = Bench("segmentation_wholect", device="cpu", root=args.results_root or ROOT / "bench" / "results",
                  config={"shape": SHAPE, "spacing_mm": SPACING, "roi": roi, "model": str(args.model),
                          "rounds": args.rounds, "overlap": 0.5, "threads": env["OMP_NUM_THREADS"]})
    medkit_exe = Path(sys.executable).parent / "medkit"
    with tempfile.TemporaryDirectory(prefix="wholect-") as tmp:
        tmp = Path(tmp)
        ct = tmp / "ct512x512x400.nii"
        model = model_with_roi(args.model, roi, tmp / "model")
        ran: dict[str, list[dict]] = {m: [] for m in METHODS}
        for r in range(args.rounds):
            for m in METHODS[r % 3:] + METHODS[: r % 3]:
                def run(m=m, r=r):
                    if not ct.exists():
                        write_ct(ct)
                    out = tmp / f"out-{m}-{r}"
                    if m == "medkit":
                        cmd = [str(medkit_exe), "segment", "-i", str(ct), "-o", str(out), "--model", str(model),
                               "--device", "cpu"]
                    else:
                        cmd = [sys.executable, __file__, "--_peer", m, str(ct), str(out), str(model)]
                    res = measure(cmd, env)
                    files = sorted(p.name for p in out.rglob("*.nii.gz"))
                    return {**res, "outputs": files}
                ran[m].append(bench.cell(f"{m}/roi{'x'.join(map(str, roi))}/round{r}", run))
    med = {m: {k: float(np.median([x[k] for x in v])) for k in ("wall_s", "peak_rss_gib")} for m, v in ran.items()}
    lines = [f"Whole-CT inference, {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} at {SPACING} mm, ROI {roi}, overlap 0.5, "
             f"CPU {env['OMP_NUM_THREADS']} thread(s), median of {args.rounds} run(s) in rotating order "
             f"(model spacing from {args.model.name})",
             f"{'method':28s} {'wall s':>8s} {'peak RSS GiB':>13s} {'medkit/x wall':>14s} {'medkit/x RSS':>13s}"]
    names = {"medkit": "medkit segment (LiverFormer)", "swinunetr": "MONAI SwinUNETR sw-inference",
             "dynunet": "MONAI DynUNet sw-inference"}
    for m in METHODS:
        lines.append(f"{names[m]:28s} {med[m]['wall_s']:8.1f} {med[m]['peak_rss_gib']:13.2f} "
                     f"{med['medkit']['wall_s'] / med[m]['wall_s']:14.2f} "
                     f"{med['medkit']['peak_rss_gib'] / med[m]['peak_rss_gib']:13.2f}")
    text = "\n".join(lines)
    print(text)
    path = bench.write({"median": med, "runs": ran}, targets={}, extra={"printed": text})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
