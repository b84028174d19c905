"""The checks every reader shares (medkit.io.checks), with the arithmetic of each case spelled out."""

from __future__ import annotations

import numpy as np
import pytest

from medkit.io.checks import check_min_extent, check_values, ct_value_problem
from medkit.io.errors import CorruptFileError, DimensionalityError


def _body_ct(shape=(40, 40, 20), seed=0) -> np.ndarray:
    """Air outside a body of fat (-100), soft tissue (40) and some bone (700), in HU."""
    rng = np.random.default_rng(seed)
    a = np.full(shape, -1000.0)
    a[5:35, 5:35] = -100.0
    a[10:30, 10:30] = 40.0
    a[18:22, 18:22] = 700.0
    return a + rng.normal(0, 10, shape)


def test_ct_value_check_accepts_ct_and_refuses_mr():
    assert ct_value_problem(_body_ct()) is None
    # A liver crop with no air: fat (-100) still puts > 1 % of voxels below -50 HU.
    crop = _body_ct()[6:34, 6:34]
    assert (crop < -50).mean() > 0.01 and ct_value_problem(crop) is None
    rng = np.random.default_rng(1)
    t1 = rng.uniform(800, 12000, (30, 30, 20))          # a T1 in scanner units: 1st percentile ~900
    assert "no air or fat" in ct_value_problem(t1)
    t1[:2] = -600.0                                      # 2 of 30 slabs negative: 1st percentile -600 passes,
    assert "median" in ct_value_problem(t1)              # but a median of ~6000 is far above CT's range
    z = rng.normal(0, 1, (30, 30, 20))                   # z-scored MR: 1st percentile ~ -2.3, not below -50
    assert "no air or fat" in ct_value_problem(z)
    raw = _body_ct() + 1024                              # CT saved without its -1024 intercept
    assert "no air or fat" in ct_value_problem(raw)
    odd = _body_ct()
    odd[10:30, 10:30] = 9000.0                           # a quarter of the voxels at 9000: 99th percentile 9000
    assert "far above CT's range" in ct_value_problem(odd)


def test_value_and_extent_checks_name_the_file():
    a = np.zeros((4, 4, 3), np.float32)
    check_values("x.nii", a)
    a[1, 1, 1] = np.inf
    with pytest.raises(CorruptFileError, match=r"x.nii: 1 voxel\(s\) are NaN or infinite"):
        check_values("x.nii", a)
    check_values("x.nii", np.zeros((3, 3), np.int16))  # integers cannot be NaN: skipped
    with pytest.raises(DimensionalityError, match=r"only 2 voxel\(s\) along one axis \(12x10x2\); T needs at least 4"):
        check_min_extent("y.nii", (12, 10, 2), 4, "T")


def test_quiet_third_party_hides_their_warnings_not_medkits(monkeypatch):
    import warnings

    from medkit.cli import quiet_third_party

    monkeypatch.delenv("MEDKIT_VERBOSE", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party(False)
        warnings.warn_explicit("theirs", FutureWarning, "monai/x.py", 1, module="monai.transforms")
        warnings.warn_explicit("ours", UserWarning, "medkit/x.py", 1, module="medkit.io.volume")
    assert [str(w.message) for w in caught] == ["ours"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party(True)  # --verbose: nothing filtered
        warnings.warn_explicit("theirs", FutureWarning, "monai/x.py", 1, module="monai.transforms")
    assert [str(w.message) for w in caught] == ["theirs"]
