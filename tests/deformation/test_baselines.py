"""Time interpolation of per-pair fields (the peers of ST-NeRP's unseen-time prediction)."""

import numpy as np
import pytest

from medkit.deformation.baselines import interpolate_in_time


def _fields(times, values):
    return {t: np.full((3, 2, 2, 2), v, dtype=np.float32) for t, v in zip(times, values)}


def test_linear_between_and_outside():
    f = _fields([0.0, 1.0, 3.0], [0.0, 2.0, 6.0])
    assert interpolate_in_time(f, 2.0)[0, 0, 0, 0] == pytest.approx(4.0)      # halfway 1 -> 3: (2 + 6) / 2
    assert interpolate_in_time(f, 5.0)[0, 0, 0, 0] == pytest.approx(6.0)      # no period: nearest
    # one cycle of period 4: after t = 3 the curve returns to the reference (0) at t = 4
    assert interpolate_in_time(f, 3.5, period=4.0)[0, 0, 0, 0] == pytest.approx(3.0)   # (6 + 0) / 2
    assert interpolate_in_time(f, 6.0, period=4.0)[0, 0, 0, 0] == pytest.approx(4.0)   # = t 2.0, next cycle


def test_periodic_cubic_through_the_knots_and_smooth():
    t = [0.0, 0.2, 0.4, 0.7]
    s = [np.sin(np.pi * x) ** 4 for x in t]
    f = _fields(t, s)
    for ti, si in zip(t, s):
        assert interpolate_in_time(f, ti, period=1.0, kind="cubic")[0, 0, 0, 0] == pytest.approx(si, abs=1e-6)
    # the peak (phase 0.5, s = 1) is not imaged: the cubic overshoots the 0.4 -> 0.7 chord (0.69), linear cannot
    lin = interpolate_in_time(f, 0.5, period=1.0)[0, 0, 0, 0]
    cub = interpolate_in_time(f, 0.5, period=1.0, kind="cubic")[0, 0, 0, 0]
    assert lin == pytest.approx(s[2] + (s[3] - s[2]) / 3, abs=1e-6) and cub > lin
    with pytest.raises(ValueError, match="periodic"):
        interpolate_in_time(f, 0.5, kind="cubic")
