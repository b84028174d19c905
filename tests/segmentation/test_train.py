"""Smoke training: finite loss, parameters change, checkpoints reload, resume continues the count."""

import json

import pytest
import torch

from medkit.runs import RunDir
from medkit.segmentation.models import build_model
from medkit.segmentation.train import SegmentationData, deep_supervision_loss, fit, split_cases

from .conftest import tiny_cfg


def test_deep_supervision_loss_weights_and_downsampling():
    # Two outputs with constant losses 1 (full) and 3 (half); weights 1, 0.5 -> (1*1 + 0.5*3) / 1.5 = 1.6667
    label = torch.zeros(1, 1, 8, 8, 8)
    outs = [torch.zeros(1, 9, 8, 8, 8), torch.zeros(1, 9, 4, 4, 4)]

    def fake(o, lab):
        assert lab.shape[2:] == o.shape[2:]  # labels follow each output's size
        return torch.tensor(1.0 if o.shape[-1] == 8 else 3.0)

    assert float(deep_supervision_loss(outs, label, fake, (1.0, 0.5))) == pytest.approx(5 / 3)


def test_split_is_deterministic_and_refuses_too_few():
    cfg = tiny_cfg()
    cfg.data.n_val, cfg.data.n_test = 1, 1
    assert split_cases(cfg, list("abcd")) == (["a", "b"], ["c"], ["d"])
    from medkit.config import ConfigError

    with pytest.raises(ConfigError, match="at least one training case"):
        split_cases(cfg, list("ab"))


def test_fit_smoke_checkpoint_and_resume(tiny_samples, tmp_path):
    cfg = tiny_cfg()
    run = RunDir.create(tmp_path / "run", config=cfg, seed=0)
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in build_model(cfg.model).state_dict().items()}
    out = fit(cfg, SegmentationData(tiny_samples[:1], tiny_samples[1:]), run=run, device="cpu")
    assert out["step"] == 3
    after = out["model"].state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2  # trainable parameters moved
    rows = [json.loads(line) for line in (run.path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and torch.isfinite(torch.tensor(rows[-1]["loss"]))
    assert 0.0 <= rows[-1]["dice_mean"] <= 1.0  # validation Dice logged per check
    ck = run.load_checkpoint("last")
    assert ck["step"] == 3 and ck["config"]["model"]["arch"] == "liverformer"
    reloaded = build_model(cfg.model)
    reloaded.load_state_dict(ck["model"])
    assert all(torch.equal(reloaded.state_dict()[k], after[k]) for k in after)
    # Resume to 5 steps: the count continues from 3, not from 0.
    cfg.optim.steps = 5
    out2 = fit(cfg, SegmentationData(tiny_samples[:1], tiny_samples[1:]), run=run, device="cpu", resume=True)
    assert out2["step"] == 5 and run.load_checkpoint("last")["step"] == 5
    steps = [json.loads(line)["step"] for line in (run.path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 5]


def test_export_model_folder_round_trips_through_segment_loader(tiny_samples, tmp_path):
    """A run folder exports to models/<name>/ (safetensors, config.yaml) whose weights equal the
    best checkpoint's, and `medkit segment`'s loader reads it back; a folder without a
    checkpoint is refused."""
    from medkit.io import MedkitInputError
    from medkit.pipelines import export_model
    from medkit.segmentation.predict import load_model

    cfg = tiny_cfg()
    run = RunDir.create(tmp_path / "run", config=cfg, seed=0)
    fit(cfg, SegmentationData(tiny_samples[:1], tiny_samples[1:]), run=run, device="cpu")
    run.write_summary({"test": {"aggregate": {"dice_mean": {"mean": 0.5}}}, "step": 3})
    out = export_model(run.path, tmp_path / "models" / "tiny-export", "segmentation", name="tiny-export")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.json", "model.safetensors"]
    best = run.load_checkpoint("best")["model"]
    net, got_cfg = load_model(out)
    assert got_cfg.name == "tiny-export"
    assert all(torch.equal(net.state_dict()[k], best[k].float()) for k in best)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["aggregate"]["dice_mean"]["mean"] == 0.5 and len(metrics["weights_sha256"]) == 64
    assert metrics["component"] == "segmentation"
    (tmp_path / "run-empty").mkdir()
    with pytest.raises(MedkitInputError, match="not a model folder"):
        export_model(tmp_path / "run-empty", tmp_path / "x", "segmentation")


def test_interrupted_then_resumed_training_is_bitwise_equal(tiny_samples, tmp_path, monkeypatch):
    """Kill after the step-3 checkpoint (simulated: the loop iterator raises), resume to 5:
    the weights equal an uninterrupted 5-step run's exactly (all random states restored)."""
    import medkit.segmentation.train as T

    cfg = tiny_cfg()
    cfg.optim.steps = 5
    ref = fit(cfg, SegmentationData(tiny_samples[:1]), run=RunDir.create(tmp_path / "ref", config=cfg, seed=0), device="cpu")

    def dying_track(it, *a, **k):
        for i, x in enumerate(it):
            if i == 3:
                raise KeyboardInterrupt
            yield x

    run = RunDir.create(tmp_path / "run", config=cfg, seed=0)
    monkeypatch.setattr(T, "track", dying_track)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, SegmentationData(tiny_samples[:1]), run=run, device="cpu")
    assert run.load_checkpoint("last")["step"] == 3
    monkeypatch.undo()
    out = fit(cfg, SegmentationData(tiny_samples[:1]), run=run, device="cpu", resume=True)
    assert out["step"] == 5
    a, b = ref["model"].state_dict(), out["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


def test_fit_without_a_run_folder_still_records_the_validation_curve(tiny_samples):
    """A benchmark trains without a run folder: every check still lands in the history (with
    validation Dice) and reaches on_check with the model, so curves and snapshots need no disk."""
    cfg = tiny_cfg()
    cfg.optim.steps, cfg.optim.val_every = 4, 2
    seen = []
    out = fit(cfg, SegmentationData(tiny_samples[:1], tiny_samples[1:]), device="cpu",
              on_check=lambda step, model, rec: seen.append((step, rec["dice_mean"], type(model).__name__)))
    assert [h["step"] for h in out["history"]] == [2, 4]
    assert [s for s, _, _ in seen] == [2, 4] and all(0.0 <= d <= 1.0 for _, d, _ in seen)
    assert seen[0][2] == "LiverFormer"
