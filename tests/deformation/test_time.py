"""ST-NeRP time encodings: breathing phase (periodic) for one cycle, span-normalised for longitudinal series."""

import math

import numpy as np
import pytest
import torch

from medkit.config import load_config
from medkit.deformation.deform_config import DeformConfig
from medkit.deformation.fit import Sequence, build_models, fit, resolve_period
from medkit.deformation.model import DeformationINR, GridFrame

FRAME = GridFrame(torch.diag(torch.tensor([4.0, 4.0, 4.0, 1.0])), (8, 7, 6))


def _seq(times, period=None):
    return Sequence(torch.zeros(len(times), 8, 7, 6), list(times), torch.diag(torch.tensor([4.0, 4.0, 4.0, 1.0])),
                    0, period=period)


def _perturbed(model):
    with torch.no_grad():  # away from the near-zero init, so equalities below are not trivially 0 == 0
        for p in model.net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def test_resolve_period_auto_periodic_span():
    cfg = lambda *o: load_config(None, DeformConfig, list(o))  # noqa: E731
    assert resolve_period(_seq([0, 1, 2], period=4.0), cfg()) == 4.0          # one cycle: breathing phase
    assert resolve_period(_seq([0, 21, 42]), cfg()) is None                    # longitudinal: span time
    assert resolve_period(_seq([0, 1, 2], period=4.0), cfg("time_mode=span")) is None
    assert resolve_period(_seq([0, 1, 2]), cfg("time_mode=periodic", "period=5.0")) == 5.0
    with pytest.raises(ValueError, match="needs the breathing period"):
        resolve_period(_seq([0, 1, 2]), cfg("time_mode=periodic"))
    with pytest.raises(ValueError, match="time_mode"):
        resolve_period(_seq([0, 1, 2]), cfg("time_mode=cyclic"))


def test_periodic_model_is_periodic_and_exact_at_the_reference():
    torch.manual_seed(0)
    m = _perturbed(DeformationINR(FRAME, t_ref=0.5, t_span=3.0, period=4.0, time_harmonics=2))
    x = torch.randn(20, 3) * 8 + 14
    full = lambda t: torch.full((20,), float(t))  # noqa: E731
    for t_ref_again in (0.5, 4.5, -3.5):  # the reference, one cycle later, one cycle earlier
        assert torch.equal(m(x, full(t_ref_again)), torch.zeros(20, 3))
    u = m(x, full(1.7))
    assert u.abs().max() > 1e-3
    torch.testing.assert_close(m(x, full(1.7 + 4.0)), u, atol=1e-4, rtol=1e-4)  # same phase, next cycle
    assert m.time_norm(torch.tensor([0.5, 2.5, 4.4])).tolist() == pytest.approx([0.0, 0.5, 0.975])


def test_two_harmonics_hold_lujans_breathing_curve_exactly():
    # sin^4(pi phi) = 3/8 - cos(2 pi phi)/2 + cos(4 pi phi)/8 = (1 - cos 2 pi phi)/2 - (1 - cos 4 pi phi)/8:
    # basis columns [sin 2pi phi, sin 4pi phi, 1 - cos 2pi phi, 1 - cos 4pi phi] with weights (0, 0, 1/2, -1/8).
    m = DeformationINR(FRAME, t_ref=0.0, t_span=1.0, period=1.0, time_harmonics=2)
    phi = torch.linspace(0, 1, 41, dtype=torch.float64)
    basis, _ = m.time_basis(phi, torch.float64)
    curve = basis @ torch.tensor([0.0, 0.0, 0.5, -0.125], dtype=torch.float64)
    torch.testing.assert_close(curve, torch.sin(math.pi * phi) ** 4)
    # one harmonic cannot: the least-squares residual is large (sin^2 vs sin^4)
    b1, _ = DeformationINR(FRAME, 0.0, 1.0, period=1.0, time_harmonics=1).time_basis(phi, torch.float64)
    coef = torch.linalg.lstsq(b1, (torch.sin(math.pi * phi) ** 4)[:, None]).solution
    assert (b1 @ coef)[:, 0].sub(torch.sin(math.pi * phi) ** 4).abs().max() > 0.05


def test_span_time_for_longitudinal_series():
    m = _perturbed(DeformationINR(FRAME, t_ref=0.0, t_span=63.0, time_harmonics=1))
    assert m.period is None
    assert m.time_norm(torch.tensor([0.0, 21.0, 63.0, 84.0])).tolist() == pytest.approx([0.0, 1 / 3, 1.0, 4 / 3])
    x = torch.randn(10, 3) * 8 + 14
    assert torch.equal(m(x, torch.zeros(10)), torch.zeros(10, 3))
    assert not torch.allclose(m(x, torch.full((10,), 63.0)), m(x, torch.full((10,), 126.0)))  # not periodic


def test_build_models_picks_the_encoding_from_the_series():
    cfg = load_config(None, DeformConfig, ["width=16", "depth=1", "fourier_features=8"])
    _, dfm = build_models(_seq([0.0, 1.0, 2.0], period=4.0), cfg, [0, 1, 2], "cpu")
    assert dfm.period == 4.0 and dfm.harmonics == cfg.time_harmonics and dfm.n_basis == 2 * cfg.time_harmonics
    _, dfm = build_models(_seq([0.0, 21.0, 42.0]), cfg, [0, 1, 2], "cpu")
    assert dfm.period is None and dfm.t_span == 42.0 and dfm.harmonics == cfg.span_harmonics


def test_periodic_fit_regularises_the_whole_cycle_and_reaches_the_loss(tiny_sequence):
    """With a period the same data give a different fit (the time encoding reaches the loss)."""
    from medkit.deformation.sequence import read_sequence

    ls = read_sequence(tiny_sequence)
    imgs = torch.stack([torch.as_tensor(np.asarray(f[0])) for f in ls.frames])
    aff = torch.as_tensor(np.asarray(ls.frames[0].affine), dtype=torch.float32)
    cfg = load_config(None, DeformConfig, ["iters=6", "ref_iters=0", "similarity_source=image", "points_per_phase=128",
                                           "reg_points=32", "width=16", "depth=1", "fourier_features=8"])
    span = fit(Sequence(imgs, ls.times, aff, 0), cfg, [0, 1, 2], "cpu")
    per = fit(Sequence(imgs, ls.times, aff, 0, period=3.0), cfg, [0, 1, 2], "cpu")
    assert per["model"].period == 3.0 and span["model"].period is None
    assert np.isfinite(per["losses"]["motion"]).all() and per["losses"]["motion"] != span["losses"]["motion"]


def test_symmetric_periodic_time_is_the_same_in_and_out():
    torch.manual_seed(1)
    m = _perturbed(DeformationINR(FRAME, t_ref=0.0, t_span=1.0, period=4.0, time_harmonics=2, time_symmetric=True))
    assert m.n_basis == 2
    x = torch.randn(15, 3) * 8 + 14
    u_in, u_out = m(x, torch.full((15,), 1.0)), m(x, torch.full((15,), 3.0))  # phases 0.25 and 0.75
    torch.testing.assert_close(u_in, u_out, atol=1e-5, rtol=1e-5)
    assert u_in.abs().max() > 1e-3 and torch.equal(m(x, torch.zeros(15)), torch.zeros(15, 3))
    from medkit.deformation.losses import antisymmetric_energy

    # hand-worked: u(phi) = (1, 0, 0), u(1 - phi) = (-1, 2, 0): |(2, -2, 0)|^2 / 4 = 2
    assert antisymmetric_energy(torch.tensor([[1.0, 0, 0]]), torch.tensor([[-1.0, 2, 0]])).item() == 2.0


def test_symmetry_weight_reaches_the_loss(tiny_sequence):
    from medkit.deformation.sequence import read_sequence

    ls = read_sequence(tiny_sequence)
    imgs = torch.stack([torch.as_tensor(np.asarray(f[0])) for f in ls.frames])
    aff = torch.as_tensor(np.asarray(ls.frames[0].affine), dtype=torch.float32)
    base = ["iters=4", "ref_iters=0", "similarity_source=image", "points_per_phase=128", "reg_points=32", "width=16",
            "depth=1", "fourier_features=8"]
    seq = Sequence(imgs, ls.times, aff, 0, period=3.0)
    a = fit(seq, load_config(None, DeformConfig, base), [0, 1, 2], "cpu")["losses"]["motion"]
    b = fit(seq, load_config(None, DeformConfig, base + ["time_symmetry_weight=1.0"]), [0, 1, 2], "cpu")["losses"]["motion"]
    assert np.isfinite(b).all() and a != b  # the penalty reached the loss


def test_frame_latents_apply_at_imaged_times_only():
    torch.manual_seed(2)
    m = _perturbed(DeformationINR(FRAME, t_ref=0.0, t_span=3.0, period=4.0, time_harmonics=2, frame_times=[1.0, 3.0]))
    x = torch.randn(12, 3) * 8 + 14
    full = lambda t: torch.full((12,), float(t))  # noqa: E731
    base1, base2, between = m(x, full(1.0)), m(x, full(3.0)), m(x, full(2.0))
    with torch.no_grad():
        m.frame_logamp.copy_(torch.tensor([math.log(2.0), 0.0]))  # frame 1: twice the mean cycle
        m.frame_dphase.copy_(torch.tensor([0.0, 0.25]))            # frame 2: a quarter cycle later
    torch.testing.assert_close(m(x, full(1.0)), 2 * base1)
    m.frame_dphase.data[1] = 0.0
    torch.testing.assert_close(m(x, full(3.0)), base2)
    m.frame_dphase.data[1] = 0.25
    # phase 0.75 + 0.25 = 1.0 -> the reference state: exactly zero motion
    assert torch.equal(m(x, full(3.0)), torch.zeros(12, 3))
    torch.testing.assert_close(m(x, full(2.0)), between)                 # not an imaged time: the mean cycle
    assert torch.equal(m(x, full(0.0)), torch.zeros(12, 3))              # the reference stays exact
    # span mode (longitudinal) has no latents
    assert len(DeformationINR(FRAME, 0.0, 3.0, frame_times=[1.0]).frame_times) == 0
