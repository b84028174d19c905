"""CUDA paths: device placement, bf16 autocast, `--device cuda`. Marked `gpu`: deselected by
default and run where a GPU exists (`pytest -m gpu`); each test skips with the reason when
CUDA is missing, so `-m gpu` on a CPU box reports skips, not passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run `pytest -m gpu` on a GPU)")]

ROOT = Path(__file__).resolve().parents[1]


def test_auto_device_is_cuda():
    from medkit.runs import pick_device

    assert pick_device("auto").type == "cuda" and pick_device("cuda").type == "cuda"


def test_segmentation_fit_bf16_on_cuda(tmp_path):
    """The training loop under accelerate's bf16 autocast on CUDA: finite loss, weights moved,
    checkpoint reloads on the CPU."""
    from medkit.runs import RunDir
    from medkit.segmentation.models import build_model
    from medkit.segmentation.train import SegmentationData, fit, preprocess_cases
    from medkit.segmentation.train_config import TrainConfig
    from medkit.synth.liver_ct import LiverCTConfig, generate_dataset

    generate_dataset(LiverCTConfig(n_cases=2, seed=0), tmp_path / "d")
    cfg = TrainConfig.tiny()
    cases = [(f"liver_00{i}", tmp_path / "d" / "imagesTr" / f"liver_00{i}_0000.nii.gz",
              tmp_path / "d" / "labelsTr" / f"liver_00{i}.nii.gz") for i in range(2)]
    samples = preprocess_cases(cfg, cases)
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in build_model(cfg.model).state_dict().items()}
    run = RunDir.create(tmp_path / "run", config=cfg, seed=0)
    out = fit(cfg, SegmentationData(samples[:1], samples[1:]), run=run, device="cuda")
    after = {k: v.cpu() for k, v in out["model"].state_dict().items()}
    assert next(out["model"].parameters()).is_cuda
    assert sum(not torch.equal(before[k], after[k]) for k in before) > len(before) // 2
    rows = [json.loads(x) for x in (run.path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(rows[-1]["loss"])
    assert run.load_checkpoint("last")["step"] == cfg.optim.steps


def test_segment_cli_on_cuda_matches_cpu(tmp_path):
    """`medkit segment --device cuda` with the shipped model gives (nearly) the CPU labels:
    bf16 autocast may flip a few boundary voxels, not segments."""
    from typer.testing import CliRunner

    from medkit.cli import app
    from medkit.io import load_volume
    from medkit.synth.liver_ct import LiverCTConfig, generate_dataset

    generate_dataset(LiverCTConfig(n_cases=1, seed=3), tmp_path / "d")
    img = tmp_path / "d" / "imagesTr" / "liver_000_0000.nii.gz"
    labels = {}
    for dev in ("cpu", "cuda"):
        r = CliRunner().invoke(app, ["segment", "-i", str(img), "-o", str(tmp_path / dev), "--device", dev],
                               env={"MEDKIT_NO_PROGRESS": "1"})
        assert r.exit_code == 0, r.output
        labels[dev] = np.asarray(load_volume(next((tmp_path / dev).rglob("*.nii.gz")))[0])
    agree = float((labels["cpu"] == labels["cuda"]).mean())
    assert agree > 0.995, agree


def test_deformation_fit_on_cuda_bf16():
    from medkit.deformation.deform_config import DeformConfig
    from medkit.deformation.fit import Sequence, fit

    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(3, 16, 16, 16, generator=g) * 1000 - 800
    aff = torch.diag(torch.tensor([4.0, 4.0, 4.0, 1.0]))
    seq = Sequence(imgs, [0.0, 1.0, 2.0], aff, 0, ["a", "b", "c"])
    cfg = DeformConfig(iters=5, ref_iters=5, points_per_phase=256, reg_points=128, width=32, bf16=True)
    res = fit(seq, cfg, [0, 1, 2], torch.device("cuda"))
    assert all(np.isfinite(v) for v in res["losses"]["motion"])
    assert next(res["model"].parameters()).is_cuda


def test_report_model_generates_on_cuda():
    from medkit.report_generation.predict import load_model

    model, cfg = load_model(ROOT / "models" / "cofe-synthetic", device="cuda")
    x = torch.rand(2, 1, cfg.data.image_size, cfg.data.image_size, device="cuda")
    out = model.generate(x, beams=1, max_new_tokens=8)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
