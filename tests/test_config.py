"""Dataclass configs from YAML with dotted overrides; unknown keys and wrong types are errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from medkit.config import ConfigError, dump_config, load_config, to_dict


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Model:
    name: Literal["unet", "liverformer"] = "unet"
    channels: list[int] = field(default_factory=lambda: [16, 32])
    dropout: Optional[float] = None


@dataclass
class TrainConfig:
    steps: int = 100
    amp: bool = False
    out: Path = Path("runs/x")
    optim: Optim = field(default_factory=Optim)
    model: Model = field(default_factory=Model)


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_nested_from_yaml(tmp_path):
    p = _yaml(tmp_path, "steps: 7\noptim:\n  lr: 1e-4\n  betas: [0.5, 0.9]\nmodel:\n  name: liverformer\n"
                        "  channels: [8, 16, 32]\n  dropout: 0.1\nout: /tmp/run\n")
    cfg = load_config(p, TrainConfig)
    assert cfg.steps == 7 and cfg.optim.lr == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a str
    assert cfg.optim.betas == (0.5, 0.9) and isinstance(cfg.optim.betas, tuple)
    assert cfg.model == Model("liverformer", [8, 16, 32], 0.1)
    assert cfg.out == Path("/tmp/run") and cfg.amp is False


def test_overrides(tmp_path):
    cfg = load_config(_yaml(tmp_path, "optim:\n  lr: 0.1\n"), TrainConfig,
                      ["optim.lr=3e-4", "steps=3", "model.channels=[4,8]", "model.dropout=null", "amp=true"])
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.steps == 3
    assert cfg.model.channels == [4, 8] and cfg.model.dropout is None and cfg.amp is True
    assert load_config(None, TrainConfig, ["optim.betas=[0.1, 0.2]"]).optim.betas == (0.1, 0.2)


@pytest.mark.parametrize("source,overrides,words", [
    ({"optim": {"lrr": 1}}, [], ["optim.lrr", "unknown"]),
    ({}, ["model.depth=3"], ["model.depth", "unknown"]),
    ({"steps": "ten"}, [], ["steps", "integer"]),
    ({"steps": 1.5}, [], ["steps", "integer"]),
    ({"amp": "yes"}, [], ["amp", "true/false"]),
    ({"model": {"name": "resnet"}}, [], ["model.name", "one of", "liverformer"]),
    ({"optim": {"betas": [0.9]}}, [], ["optim.betas", "2 items"]),
    ({"model": {"channels": [8, "x"]}}, [], ["model.channels[1]", "integer"]),
    ({"model": {"dropout": "high"}}, [], ["model.dropout"]),
    ({"optim": 3}, [], ["optim", "mapping"]),
    ({}, ["steps"], ["key.sub=value"]),
])
def test_errors_name_the_dotted_key(source, overrides, words):
    with pytest.raises(ConfigError) as ei:
        load_config(source, TrainConfig, overrides)
    for w in words:
        assert w in str(ei.value), str(ei.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml", TrainConfig)
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_yaml(tmp_path, "steps: [1\n"), TrainConfig)
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(_yaml(tmp_path, "- 1\n- 2\n"), TrainConfig)


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, TrainConfig, ["steps=9", "model.name=liverformer", "optim.betas=[0.8, 0.95]"])
    d = to_dict(cfg)
    assert d["out"] == "runs/x" and d["optim"]["betas"] == [0.8, 0.95]  # plain YAML types
    text = dump_config(cfg)
    assert list(yaml.safe_load(text)) == ["steps", "amp", "out", "optim", "model"]  # field order
    again = load_config(_yaml(tmp_path, text), TrainConfig)
    assert again == cfg


def test_read_pipeline_spec_checks_name_keys_and_shape(tmp_path):
    from medkit.config import read_pipeline_spec

    p = tmp_path / "p.yaml"
    p.write_text("pipeline: deform\nconfig: {iters: 5}\n")
    assert read_pipeline_spec(p, "deform") == {"iters": 5}
    with pytest.raises(ConfigError, match="expected train-report"):
        read_pipeline_spec(p, "train-report")
    p.write_text("config: [1, 2]\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        read_pipeline_spec(p, "deform")
    p.write_text("pipeline: deform\nextra: 1\n")
    with pytest.raises(ConfigError, match="top-level keys"):
        read_pipeline_spec(p, "deform")
    with pytest.raises(ConfigError, match="not found"):
        read_pipeline_spec(tmp_path / "nope.yaml", "deform")


@pytest.mark.parametrize("cls_path, override, says", [
    ("medkit.segmentation.train_config:TrainConfig", "optim.steps=0", "optim.steps must be >= 1, got 0"),
    ("medkit.segmentation.train_config:TrainConfig", "augment.prob=1.5", "augment.prob must be in [0, 1]"),
    ("medkit.segmentation.train_config:TrainConfig", "preprocess.spacing_mm=[4,0,4]", "preprocess.spacing_mm must be > 0"),
    ("medkit.segmentation.train_config:TrainConfig", "augment.scale_range=[1.0,0.5]", "augment.scale_range must be (low, high)"),
    ("medkit.segmentation.train_config:TrainConfig", "sw_overlap=1.0", "sw_overlap must be in [0, 1)"),
    ("medkit.segmentation.train_config:TrainConfig", "preprocess.window_hu=[240,240]",
     "preprocess.window_hu must be (low, high) with low < high"),
    ("medkit.report_generation.cofe_config:ReportConfig", "optim.batch_size=0", "optim.batch_size must be >= 1"),
    ("medkit.report_generation.cofe_config:ReportConfig", "loss.temperature=0", "loss.temperature must be > 0"),
    ("medkit.report_generation.cofe_config:ReportConfig", "counterfactual.max_fraction=2",
     "counterfactual.max_fraction must be in [0, 1]"),
    ("medkit.report_generation.cofe_config:ReportConfig", "generate.beams=0", "generate.beams must be >= 1"),
])
def test_component_configs_refuse_out_of_range_values_naming_the_key(tmp_path, cls_path, override, says):
    """Segmentation and report settings are checked when the config is built (a YAML file or a
    ``--set``), naming the file and the full dotted key, not minutes into a run (or never)."""
    import importlib
    import re

    mod, name = cls_path.split(":")
    cls = getattr(importlib.import_module(mod), name)
    load_config(None, cls)  # the defaults pass their own checks
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(None, cls, [override])
    key, value = override.split("=")
    nested: dict = {}
    d = nested
    *parents, leaf = key.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = yaml.safe_load(value)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(nested))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {says}")):
        load_config(path, cls)
