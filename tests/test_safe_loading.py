"""No pickle from a user-supplied path is ever executed (docs/contract.md, section 7).

A crafted pickle whose unpickling would write a marker file is planted (a) as the only
weights of a model folder and (b) as a run folder's ``checkpoints/best.pt``. Every
component's ``load_model`` must refuse it with one clear error naming the file, and the
marker must never appear.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from medkit.io.errors import MedkitInputError


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: code execution, observable on disk."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"config": {}, "model": _Payload(marker)}, f)


def _loaders():
    from medkit.dialogue.policy import load_model as dialogue_load
    from medkit.report_generation.predict import load_model as report_load
    from medkit.segmentation.predict import load_model as seg_load

    return {"segmentation": seg_load, "report_generation": report_load, "dialogue": dialogue_load}


def test_the_payload_really_executes_when_unpickled(tmp_path):
    """The test's own check: plain pickle.load of the planted file does create the marker,
    so its absence below means medkit never unpickled it."""
    marker = tmp_path / "pwned"
    _plant(tmp_path / "x.pt", marker)
    with open(tmp_path / "x.pt", "rb") as f:
        pickle.load(f)  # noqa: S301 - on purpose
    assert marker.exists()


@pytest.mark.parametrize("component", ["segmentation", "report_generation", "dialogue"])
@pytest.mark.parametrize("name", ["model.pt", "policy.pt", "weights.pkl"])
def test_model_folder_with_pickled_weights_is_refused_unopened(tmp_path, component, name):
    folder = tmp_path / "colleague-model"
    marker = tmp_path / "pwned"
    _plant(folder / name, marker)
    (folder / "config.yaml").write_text("name: x\n")
    with pytest.raises(MedkitInputError) as e:
        _loaders()[component](folder)
    assert str(folder) in str(e.value) and "pickled weights are refused" in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("component", ["segmentation", "report_generation", "dialogue"])
def test_run_folder_checkpoint_with_a_pickled_object_is_refused_unexecuted(tmp_path, component):
    run = tmp_path / "run"
    marker = tmp_path / "pwned"
    _plant(run / "checkpoints" / "best.pt", marker)
    with pytest.raises(MedkitInputError) as e:
        _loaders()[component](run)
    assert "best.pt" in str(e.value) and "refuses to load" in str(e.value)
    assert not marker.exists()


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    """What medkit writes (tensors, NumPy RNG states, plain containers) loads back under
    weights_only=True, so refusing pickles costs nothing."""
    import numpy as np
    import torch

    from medkit.runs import load_checkpoint, save_checkpoint

    rs = np.random.RandomState(3)
    g = np.random.default_rng(5)
    st = {"model": {"w": torch.ones(2)}, "rs": rs.get_state(), "g": g.bit_generator.state, "step": 3,
          "hist": [{"loss": 0.5}], "assets": {"vocab": ["a", "b"]}}
    save_checkpoint(tmp_path / "c.pt", st, config={"name": "x"})
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["step"] == 3 and back["config"] == {"name": "x"} and torch.equal(back["model"]["w"], torch.ones(2))
    assert back["g"] == g.bit_generator.state
    rs2 = np.random.RandomState(0)
    s = back["rs"]
    rs2.set_state((s[0], np.asarray(s[1], dtype=np.uint32), *s[2:]))
    assert rs2.rand() == rs.rand()


def test_model_folder_round_trip_and_wrong_component(tmp_path):
    import torch

    from medkit.runs import load_model_source, save_model_folder
    from medkit.segmentation.train_config import TrainConfig

    cfg = TrainConfig.tiny()
    w = {"a.weight": torch.randn(3, 2), "tied": torch.zeros(2)}
    w["tied2"] = w["tied"]  # shared storage: safetensors needs copies
    out = save_model_folder(tmp_path / "m", config=cfg, weights=w, component="segmentation",
                            assets={"note": [1, 2]}, metrics={"dice": 0.5})
    src = load_model_source(out, TrainConfig, component="segmentation")
    assert src.cfg == cfg and torch.equal(src.weights["a.weight"], w["a.weight"]) and src.assets == {"note": [1, 2]}
    assert src.metrics["dice"] == 0.5 and len(src.metrics["weights_sha256"]) == 64
    with pytest.raises(MedkitInputError, match="segmentation model, not a dialogue model"):
        load_model_source(out, TrainConfig, component="dialogue")
    (out / "config.yaml").write_text("name: x\nnot_a_field: 1\n")
    with pytest.raises(MedkitInputError, match="not_a_field"):
        load_model_source(out, TrainConfig)
