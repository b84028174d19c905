"""The ``encoder.arch=vit`` option: shapes, token order, counterfactuals, a tiny CoFE run, bad configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from medkit.config import ConfigError, load_config
from medkit.report_generation.cofe_config import EncoderConfig, ReportConfig
from medkit.report_generation.counterfactual import swap_counterfactual
from medkit.report_generation.encoder import ImageEncoder

from .conftest import tiny_overrides

PIPE = Path(__file__).resolve().parents[2] / "pipelines" / "report_synthetic.yaml"
# A ViT smaller than the config defaults: one block, width 32, 16 px patches (16 tokens at 64 px).
TINY_VIT = ["encoder.arch=vit", "encoder.vit_patch=16", "encoder.vit_hidden=32", "encoder.vit_layers=1",
            "encoder.vit_heads=2", "encoder.vit_mlp=64"]


@pytest.mark.parametrize("size, patch", [(64, 8), (64, 16), (48, 8), (32, 4)])
def test_vit_shapes_and_token_count(size, patch):
    enc = ImageEncoder(EncoderConfig(arch="vit", vit_patch=patch), image_size=size)
    out = enc(torch.rand(3, 1, size, size))
    n = (size // patch) * (size // patch)  # e.g. 64 px / 8 px = 8 x 8 = 64 patches, no class token
    assert enc.token_grid == (size // patch, size // patch)
    assert enc.channels == 64  # = vit_hidden (the config default)
    assert out["tokens"].shape == (3, n, 64)
    assert out["pooled"].shape == (3, 64) and out["logits"].shape == (3, 14)
    assert torch.allclose(out["pooled"], out["tokens"].mean(1), atol=1e-6)
    p = enc.diagnose(torch.rand(1, 1, size, size))
    assert p.shape == (1, 14) and bool(((p > 0) & (p < 1)).all())


def test_vit_tokens_are_row_major():
    """Changing only patch (row 1, col 2) of a 4 x 4 grid changes only token 1 * 4 + 2 = 6 of the
    patch embedding (the transformer blocks then mix tokens, so look before them)."""
    enc = ImageEncoder(EncoderConfig(arch="vit", vit_patch=16), image_size=64).eval()
    x = torch.zeros(1, 1, 64, 64)
    y = x.clone()
    y[..., 16:32, 32:48] = 1.0
    with torch.no_grad():
        d = (enc.trunk.patch_embedding(y) - enc.trunk.patch_embedding(x)).abs().sum(-1)[0]
    assert d.shape == (16,)
    assert torch.nonzero(d > 1e-6).flatten().tolist() == [6]


def test_cnn_token_grid_matches_tokens():
    for arch, grid in (("densenet", (4, 4)), ("resnet", (2, 2))):  # 64 px: DenseNet /16, ResNet /32
        enc = ImageEncoder(EncoderConfig(arch=arch))
        assert enc.token_grid == grid
        assert enc(torch.rand(1, 1, 64, 64))["tokens"].shape[1] == grid[0] * grid[1]


def test_vit_counterfactual_patch_swap():
    torch.manual_seed(0)
    enc = ImageEncoder(EncoderConfig(arch="vit", vit_patch=8), image_size=64).eval()
    anchor, negative = torch.rand(1, 64, 64), torch.rand(1, 64, 64)
    cf = swap_counterfactual(enc.diagnose, anchor, negative, patch=8, max_fraction=0.5)
    assert cf.image.shape == (1, 64, 64) and cf.mask.shape == (64, 64)
    assert 1 <= cf.n_swapped <= 32 and len(cf.order) == 64  # 8 x 8 cells, at most half swapped
    assert int(cf.mask.sum()) == cf.n_swapped * 64  # each swapped cell is 8 x 8 pixels
    assert torch.equal(cf.image[:, cf.mask], negative[:, cf.mask])
    assert torch.equal(cf.image[:, ~cf.mask], anchor[:, ~cf.mask])


def test_tiny_cofe_training_with_vit(cxr_dir, tmp_path):
    from medkit.pipelines import run_spec
    from medkit.report_generation.predict import load_model, report
    from medkit.runs import load_checkpoint

    ov = tiny_overrides(cxr_dir) + TINY_VIT + ["optim.steps=3", "optim.eval_every=3",
                                               "counterfactual.warmup_steps=2", "counterfactual.patch=16",
                                               "counterfactual.n_pictures=1"]
    run = run_spec(PIPE, expect="train-report", out=tmp_path / "run", overrides=ov, device="cpu")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 5 and summary["counterfactuals"]["n"] > 0
    hist = [json.loads(x) for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert hist and all(math.isfinite(h["total"]) and math.isfinite(h["nce"]) for h in hist)
    ck = load_checkpoint(run / "checkpoints" / "best.pt")
    assert ck["config"]["encoder"]["arch"] == "vit"
    assert any(k.startswith("encoder.trunk.blocks.0.attn") for k in ck["model"])
    net, cfg = load_model(run, "cpu")
    assert net.encoder.is_vit and net.encoder.token_grid == (4, 4) and net.encoder.channels == 32
    out = report(cxr_dir / "images" / "CXR0001", tmp_path / "rep", model=run, device="cpu",
                 max_new_tokens=4).paths["reports"]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 1 and isinstance(rows[0]["report"], str)


@pytest.mark.parametrize("extra, match", [
    (["encoder.vit_patch=12"], r"data.image_size \(64\) must be a multiple of encoder.vit_patch \(12\)"),
    (["encoder.vit_hidden=30", "encoder.vit_heads=4"], r"encoder.vit_hidden \(30\).*encoder.vit_heads \(4\)"),
    (["encoder.vit_layers=0"], r"encoder.vit_layers must be >= 1"),
])
def test_bad_vit_config_is_a_clear_error(extra, match):
    with pytest.raises(ConfigError, match=match):  # ranges: refused by the config; shapes: by the encoder
        cfg = load_config({}, ReportConfig, ["encoder.arch=vit", *extra])
        ImageEncoder(cfg.encoder, image_size=cfg.data.image_size)
    assert issubclass(ConfigError, ValueError)


def test_bad_vit_config_via_the_cli(cxr_dir, tmp_path):
    from typer.testing import CliRunner

    from medkit.cli import app

    args = ["train", "report", str(PIPE), "--out", str(tmp_path / "run"), "--device", "cpu"]
    for o in tiny_overrides(cxr_dir) + ["encoder.arch=vit", "data.image_size=60"]:
        args += ["--set", o]
    r = CliRunner().invoke(app, args, env={"MEDKIT_NO_PROGRESS": "1"})
    assert r.exit_code == 2, r.output
    assert "data.image_size (60)" in r.output and "encoder.vit_patch (8)" in r.output
