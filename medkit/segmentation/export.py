"""Turn a training run folder into a small model folder (``models/<name>/``).

A model folder holds ``config.yaml`` (the resolved :class:`TrainConfig`),
``model.pt`` (the best checkpoint's weights only, float32 state dict, loadable with
``torch.load(weights_only=True)``) and ``metrics.json`` (the run's held-out test
summary, copied, with the run's manifest for provenance). ``medkit segment --model``
accepts either kind of folder.

    python -m medkit.segmentation.export runs/liverformer-synthetic models/liverformer-synthetic
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from ..config import dump_config, load_config
from ..io import MedkitInputError, write_json, write_text
from ..io.atomic import atomic_path
from ..runs import load_checkpoint, sha256_path
from .train_config import TrainConfig


def export_model(run_dir: Path, out_dir: Path, name: str | None = None) -> Path:
    """Write ``out_dir/{config.yaml, model.pt, metrics.json}`` from ``run_dir``'s best checkpoint."""
    import torch

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    state = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    if state is None:
        raise MedkitInputError(run_dir, "no checkpoints/best.pt: not a finished training run folder")
    cfg = load_config(state["config"], TrainConfig)
    if name:
        cfg = replace(cfg, name=name)
    weights = {k: v.detach().float().cpu().contiguous() for k, v in state["model"].items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save(weights, tmp)
    write_text(out_dir / "config.yaml", dump_config(cfg))
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
    write_json(out_dir / "metrics.json", {
        "test": summary.get("test"), "split": summary.get("split"), "best_val_dice_mean": summary.get("best_val_dice_mean"),
        "steps": summary.get("step"), "params": summary.get("params"),
        "provenance": {k: manifest.get(k) for k in ("medkit_version", "git_sha", "seed", "device", "command", "packages")},
        "model_sha256": sha256_path(out_dir / "model.pt")})
    return out_dir


if __name__ == "__main__":  # pragma: no cover - thin CLI
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m medkit.segmentation.export RUN_DIR OUT_DIR [NAME]")
    print(export_model(Path(sys.argv[1]), Path(sys.argv[2]), *(sys.argv[3:4] or [None])))
