"""Helpers for the reliability tests: the medkit CLI as a subprocess, small CT phantoms,
a tiny segmentation model, and a checker that every output file is whole."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TINY_TRAIN_SETS = [  # `medkit train segmentation pipelines/couinaud_synthetic.yaml --set ...`: seconds on CPU
    "data.synth.n_cases=3", "data.synth.shape=[48,48,24]", "data.synth.spacing_xy_mm=[7.0,7.5]",
    "data.synth.spacing_z_mm=[9.0,10.0]", "data.synth.fine_xy=1", "data.synth.fine_z_max_mm=5.0",
    "data.synth.max_tumours=0", "data.n_val=1", "data.n_test=0", "preprocess.spacing_mm=[10.0,10.0,10.0]",
    "preprocess.grid_shape=[32,24,24]", "preprocess.patch=[16,16,16]", "augment.kind=none",
    "model.liverformer.channels=[4,8,16]", "model.liverformer.embed_dim=16", "model.liverformer.depth=1",
    "model.liverformer.heads=2", "optim.batch_size=1",
]
REPO = Path(__file__).resolve().parents[2]


def medkit_cmd(*args: str) -> list[str]:
    """The ``medkit`` console script of this interpreter's environment."""
    exe = Path(sys.executable).parent / "medkit"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "medkit.cli", *args]


def cli_env(**extra: str) -> dict:
    """One thread (a shared CPU box), no progress bars, no warnings noise."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MEDKIT_NO_PROGRESS="1", PYTHONWARNINGS="ignore",
               CUDA_VISIBLE_DEVICES="")
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run(medkit_cmd(*args), cwd=cwd, env=cli_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def small_ct(index: int, seed: int = 0):
    """One small abdominal CT phantom (48 x 48 x 24 voxels, ~7 x 7 x 10 mm): ``LiverCase``."""
    from medkit.synth.liver_ct import LiverCTConfig, render_case

    cfg = LiverCTConfig(seed=seed, shape=(48, 48, 24), spacing_xy_mm=(7.0, 7.5), spacing_z_mm=(9.0, 10.0),
                        fine_xy=1, fine_z_max_mm=5.0, max_tumours=0)
    return render_case(cfg, index)


def tiny_train_cfg():
    """The tiny segmentation config, one step at a time (checkpoint after every step)."""
    from dataclasses import replace

    from medkit.segmentation.train_config import OptimConfig, TrainConfig

    return replace(TrainConfig.tiny(), optim=OptimConfig(steps=1, batch_size=1, val_every=1))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A model folder (``config.yaml`` + ``model.safetensors``) holding an untrained tiny LiverFormer."""
    import torch

    from medkit.segmentation.models import build_model

    d = tmp_path_factory.mktemp("tiny-model")
    cfg = tiny_train_cfg()
    torch.manual_seed(0)
    from medkit.runs import save_model_folder

    save_model_folder(d, config=cfg, weights=build_model(cfg.model).state_dict(), component="segmentation")
    return d


def write_nifti_cases(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` small CT phantoms as ``{case}.nii.gz`` in ``folder``; returns the case ids."""
    import torch
    from monai.data import MetaTensor

    from medkit.io import save_volume

    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        c = small_ct(i, seed)
        save_volume(MetaTensor(torch.from_numpy(c.image.astype(np.int16))[None], affine=torch.as_tensor(c.affine)),
                    folder / f"{c.case_id}.nii.gz")
        ids.append(c.case_id)
    return ids


def is_temp_leftover(p: Path) -> bool:
    """The hidden temp file an atomic write leaves when killed (``.{name}.tmp-XXXX{suffix}``)."""
    return p.name.startswith(".") and ".tmp-" in p.name


def check_whole(folder: Path) -> dict:
    """Open every output file completely; raise if one is partial or unparsable.

    Returns ``{"files": n, "by_type": {suffix: n}, "temp_leftovers": [names]}``.
    Kinds parsed: NIfTI (header + all voxels), JSON, JSONL, YAML, CSV, PNG (decoded),
    torch checkpoints, HTML (closing tag), text logs (UTF-8), DICOM (SEG: header and pixel data).
    """
    import nibabel as nib
    import yaml
    from PIL import Image

    out = {"files": 0, "by_type": {}, "temp_leftovers": []}
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        if is_temp_leftover(p):
            out["temp_leftovers"].append(str(p.relative_to(folder)))
            continue
        name = p.name.lower()
        kind = next((s for s in (".nii.gz", ".nii", ".jsonl", ".json", ".yaml", ".csv", ".png", ".pt", ".html",
                                 ".txt", ".log", ".dcm") if name.endswith(s)), p.suffix or "(none)")
        try:
            if kind in (".nii.gz", ".nii"):
                img = nib.load(str(p))
                np.asarray(img.dataobj)
            elif kind == ".json":
                json.loads(p.read_text(encoding="utf-8"))
            elif kind == ".jsonl":
                for line in p.read_text(encoding="utf-8").splitlines():
                    json.loads(line)
            elif kind == ".yaml":
                yaml.safe_load(p.read_text(encoding="utf-8"))
            elif kind == ".csv":
                rows = list(csv.reader(p.open(encoding="utf-8")))
                assert rows and all(len(r) == len(rows[0]) for r in rows), "ragged CSV"
            elif kind == ".png":
                with Image.open(p) as im:
                    im.load()
            elif kind == ".pt":
                import torch

                torch.load(p, map_location="cpu", weights_only=False)
            elif kind == ".html":
                assert "</html>" in p.read_text(encoding="utf-8").lower(), "HTML without its end"
            elif kind == ".dcm":
                import pydicom

                pydicom.dcmread(p).get("PixelData")
            elif kind in (".txt", ".log"):
                p.read_text(encoding="utf-8")
            else:
                raise AssertionError(f"unknown output type {kind}: add a parser here")
        except Exception as e:  # noqa: BLE001 - name the file whatever broke
            raise AssertionError(f"{p}: partial or unreadable {kind} output ({type(e).__name__}: {e})") from e
        out["files"] += 1
        out["by_type"][kind] = out["by_type"].get(kind, 0) + 1
    return out
