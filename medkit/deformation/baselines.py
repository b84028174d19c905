"""Peers for the ST-NeRP benchmark, all returning pull-back fields in mm on the target grid
(``I_k(y) ~= I_ref(y + u(y))``, the :mod:`medkit.nn.warp` convention), NumPy ``(3, X, Y, Z)``.

- :func:`bspline_pair`: SimpleITK B-spline FFD (Rueckert et al. 1999), LBFGSB, 2 levels.
- :func:`demons_pair`: SimpleITK fast symmetric-forces demons (Vercauteren et al. 2007).
- :func:`inr_pair`: an IDIR-style per-pair INR (Wolterink et al., MIDL 2022): the same
  deformation network as ST-NeRP fitted to one pair, with no temporal model.
- :func:`interpolate_in_time`: linear or periodic cubic interpolation of fields between imaged times.

SimpleITK runs in the grid's index frame scaled by the spacing (origin 0, identity
direction), so its physical displacement is ``spacing * u_vox``; we convert back
through the true affine. Valid for any affine whose columns are orthogonal.
"""

from __future__ import annotations

import numpy as np


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)


def _to_sitk(vol: np.ndarray, spacing: np.ndarray):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(vol, np.float32).transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    return img


def _field_to_mm(disp_zyx3: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """sitk displacement array ``(Z, Y, X, 3)`` in the scaled index frame -> mm ``(3, X, Y, Z)``."""
    u_vox = disp_zyx3.transpose(3, 2, 1, 0) / _spacing(affine)[:, None, None, None]
    return np.einsum("ij,j...->i...", np.asarray(affine, float)[:3, :3], u_vox).astype(np.float32)


def bspline_pair(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray, *, grid_mm: float = 40.0,
                 iters: int = 60, seed: int = 0) -> np.ndarray:
    """Register ``moving`` (the reference) to ``fixed`` (phase k); both ``(X, Y, Z)`` HU."""
    import SimpleITK as sitk

    sp = _spacing(affine)
    f, m = _to_sitk(fixed, sp), _to_sitk(moving, sp)
    mesh = [max(1, int(round(n * s / grid_mm))) for n, s in zip(f.GetSize(), f.GetSpacing())]
    tx = sitk.BSplineTransformInitializer(f, mesh, order=3)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.1, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-6, numberOfIterations=iters,
                             maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=4 * iters)
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1, 0])
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f, m)
    # The fitted transform maps fixed points to moving points: exactly x -> x + u(x).
    disp = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, f.GetSize(), f.GetOrigin(),
                                             f.GetSpacing(), f.GetDirection())
    return _field_to_mm(sitk.GetArrayFromImage(disp), affine)


def demons_pair(fixed: np.ndarray, moving: np.ndarray, affine: np.ndarray, *, iters: int = 80,
                smoothing: float = 1.5) -> np.ndarray:
    """Fast symmetric-forces demons, 2 levels (shrink 2, 1), field smoothing ``smoothing`` voxels."""
    import SimpleITK as sitk

    sp = _spacing(affine)
    f, m = _to_sitk(fixed, sp), _to_sitk(moving, sp)
    dem = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    dem.SetNumberOfIterations(iters)
    dem.SetStandardDeviations(smoothing)
    field = None
    for shrink in (2, 1):
        fs = sitk.Shrink(f, [shrink] * 3) if shrink > 1 else f
        ms = sitk.Shrink(m, [shrink] * 3) if shrink > 1 else m
        if field is not None:
            field = sitk.Resample(field, fs, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = dem.Execute(fs, ms, field)
        else:
            field = dem.Execute(fs, ms)
    return _field_to_mm(sitk.GetArrayFromImage(field), affine)


def inr_pair(images, times: list[float], k: int, affine, cfg, device="cpu", *,
             reference_state: dict | None = None) -> tuple[np.ndarray, float]:
    """The ST-NeRP INR fitted to the one pair (reference 0, phase ``k``), with no temporal model:
    the same config (network, points, iterations, similarity source) on observed ``[0, k]``.
    ``reference_state``: a fitted prior embedding of the same reference to reuse (else fitted
    here). Returns (field mm ``(3, X, Y, Z)``, motion-fit seconds)."""
    import dataclasses

    import torch

    from .fit import Sequence, fit, predict_field

    c = dataclasses.replace(cfg, time_mode="span")  # one moving time: t_n = 1
    seq = Sequence(images, times, torch.as_tensor(np.asarray(affine), dtype=torch.float32), 0)
    res = fit(seq, c, [0, k], device, reference_state=reference_state)
    u = predict_field(res["model"], times[k], tuple(images.shape[1:]), seq.affine)
    return u[0].cpu().numpy(), res["seconds_motion"] if reference_state is not None else res["seconds"]


def interpolate_in_time(fields: dict[float, np.ndarray], t: float, *, period: float | None = None,
                        kind: str = "linear") -> np.ndarray:
    """A field at time ``t`` from fields at imaged times (``fields``: time -> ``(3, X, Y, Z)``,
    the reference's zero field included).

    - ``kind="linear"``: between the nearest imaged times around ``t``; outside the imaged
      range the nearest field, or, with ``period`` (a series that is one breathing cycle),
      around the cycle: the first time comes back at ``t_first + period``.
    - ``kind="cubic"``: a cubic spline through every imaged field, periodic (``period``
      required: the curve closes on the first field one cycle later).
    """
    ts = sorted(fields)
    if period is not None:
        t = ts[0] + (t - ts[0]) % period
        ts_ext = ts + [ts[0] + period]
        vals = [fields[s] for s in ts] + [fields[ts[0]]]
    else:
        ts_ext, vals = ts, [fields[s] for s in ts]
    if kind == "cubic":
        from scipy.interpolate import CubicSpline

        if period is None:
            raise ValueError("cubic interpolation in time is periodic: give the period")
        stack = np.stack(vals)
        return CubicSpline(ts_ext, stack, axis=0, bc_type="periodic")(t).astype(np.float32)
    if kind != "linear":
        raise ValueError(f"kind must be linear | cubic, got {kind!r}")
    if t <= ts_ext[0]:
        return vals[0]
    if t >= ts_ext[-1]:
        return vals[-1]
    hi = next(i for i, s in enumerate(ts_ext) if s >= t)
    a, b = ts_ext[hi - 1], ts_ext[hi]
    w = (t - a) / (b - a)
    return ((1 - w) * vals[hi - 1] + w * vals[hi]).astype(np.float32)
