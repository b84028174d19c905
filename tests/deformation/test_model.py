"""ST-NeRP networks and fitting: shapes, the exact reference, a smoke fit with resume."""

import dataclasses
import re

import numpy as np
import pytest
import torch
import yaml

from medkit.config import load_config
from medkit.deformation.deform_config import DeformConfig, DeformPipelineConfig
from medkit.deformation.fit import Sequence, build_models, fit, predict_field
from medkit.deformation.losses import fd_bending, fd_jacobian, offsets, time_acceleration
from medkit.deformation.sequence import read_sequence

TINY = ["iters=12", "ref_iters=10", "points_per_phase=256", "reg_points=64", "width=32", "depth=2",
        "fourier_features=16", "checkpoint_every=5", "ref_points=512"]


def _seq(path) -> Sequence:
    ls = read_sequence(path)
    imgs = torch.stack([torch.as_tensor(np.asarray(f[0])) for f in ls.frames])
    return Sequence(imgs, ls.times, torch.as_tensor(np.asarray(ls.frames[0].affine), dtype=torch.float32), 0)


@pytest.mark.parametrize("svf", [False, True])
@pytest.mark.parametrize("enc", ["hashgrid", "fourier", "siren"])
def test_shapes_and_exact_reference(tiny_sequence, svf, enc):
    cfg = load_config(None, DeformConfig, TINY + [f"svf={svf}", f"ref_encoding={enc}"])
    seq = _seq(tiny_sequence)
    ref, dfm = build_models(seq, cfg, [0, 1, 2], "cpu")
    x = torch.randn(50, 3) * 10
    assert ref(x).shape == (50,)
    with torch.no_grad():  # perturb so a zero output is not just the init
        for p in dfm.net.parameters():
            p.add_(torch.randn_like(p))
    u = dfm.displacement(x, torch.full((50,), 1.0))
    assert u.shape == (50, 3) and u.abs().max() > 0
    u_ref = dfm.displacement(x, torch.full((50,), seq.times[0]))
    assert torch.equal(u_ref, torch.zeros_like(u_ref))  # exactly 0 at t_ref
    field = predict_field(dfm, seq.times[0], tuple(seq.images.shape[1:]), seq.affine)
    assert field.shape == (1, 3, *seq.images.shape[1:]) and torch.equal(field, torch.zeros_like(field))


def test_fd_regularisers_hand_worked():
    # u(x) = M x: det(I + M) exactly; bending 0 (linear). M upper-triangular: det = 1.1*0.8*1.3.
    M = torch.tensor([[0.1, 0.4, 0.0], [0.0, -0.2, 0.5], [0.0, 0.0, 0.3]])
    x = torch.randn(7, 3)
    u = torch.stack([(x + o) @ M.T for o in offsets(0.5)])
    assert torch.allclose(fd_jacobian(u, 0.5), torch.full((7,), 1.1 * 0.8 * 1.3), atol=1e-5)
    assert fd_bending(u, 0.5).abs().max() < 1e-4


def test_smoke_fit_reduces_loss_and_resumes(tiny_sequence):
    cfg = load_config(None, DeformConfig, TINY + ["similarity_source=image", "iters=16", "lr=1e-2",
                                                  "checkpoint_every=4", "points_per_phase=128", "reg_points=32"])
    seq = _seq(tiny_sequence)
    saved = []
    res = fit(seq, cfg, [0, 1, 2], "cpu", save=lambda st: saved.append(st))
    m = res["losses"]["motion"]
    assert np.isfinite(m).all() and np.mean(m[-4:]) < np.mean(m[:4])
    assert [s["it_motion"] for s in saved] == [4, 8, 12, 16]
    # resume from the iteration-8 checkpoint: it continues at 8 and ends at 16
    res2 = fit(seq, cfg, [0, 1, 2], "cpu", state=saved[1])
    assert len(res2["losses"]["motion"]) == 16
    for p in res2["model"].parameters():
        assert torch.isfinite(p).all()
    # a finished state reloads to the same model with no more training
    res3 = fit(seq, dataclasses.replace(cfg), [0, 1, 2], "cpu", state=saved[-1])
    for a, b in zip(res3["model"].state_dict().values(), res["model"].state_dict().values()):
        assert torch.equal(a, b)


def test_time_acceleration_hand_worked():
    t = torch.tensor([0.9, 1.0, 1.1])
    lin = torch.stack([torch.full((4, 3), 2.0) * x for x in t])        # u linear in t: no acceleration
    assert time_acceleration(lin, 0.1).abs().max() < 1e-6
    quad = torch.stack([torch.full((4, 3), 1.0) * x**2 for x in t])    # u = t^2 per axis: d2u/dt2 = 2
    assert torch.allclose(time_acceleration(quad, 0.1), torch.full((4,), 3 * 2.0**2), atol=1e-3)


@pytest.mark.parametrize("opts", [["reg_times=imaged"], ["time_smooth_weight=0.001"]])
def test_fit_time_options_change_the_fit(tiny_sequence, opts):
    base = TINY + ["similarity_source=image", "iters=4"]
    seq = _seq(tiny_sequence)
    ref = fit(seq, load_config(None, DeformConfig, base), [0, 2], "cpu")["losses"]["motion"]   # phase 1 held out
    got = fit(seq, load_config(None, DeformConfig, base + opts), [0, 2], "cpu")["losses"]["motion"]
    assert np.isfinite(got).all()
    assert got != ref          # same seed and data: the option reached the loss (regulariser times / extra term)
    with pytest.raises(ValueError, match="reg_times"):
        fit(seq, load_config(None, DeformConfig, TINY + ["reg_times=never"]), [0, 2], "cpu")


@pytest.mark.parametrize("override,says", [
    ("time_harmonics=0", "time_harmonics must be >= 1"),   # used to fit a network with no output: zero motion
    ("similarity=cc", "similarity must be one of ncc | mse"),
    ("edge_sampling=1.5", "edge_sampling must be in [0, 1]"),
    ("window_hu=[500,-1000]", "window_hu must be (low, high)"),
])
def test_bad_deform_settings_are_refused_naming_the_key(override, says):
    from medkit.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(None, DeformConfig, [override])
    with pytest.raises(ConfigError, match=re.escape("model." + says)):   # nested in a pipeline spec: the full key
        key, value = override.split("=")
        load_config({"model": {key: yaml.safe_load(value)}}, DeformPipelineConfig)
