"""``medkit deform``: fit ST-NeRP to a sequence and predict fields at any time.

Writes into ``--output`` (a :class:`medkit.runs.RunDir`):

- ``predictions/ddf_t{t}.nii.gz``: displacement (mm, vector last, pull-back:
  ``I_t(x) ~= I_ref(x + u(x))``) on the input grid;
- ``predictions/warped_t{t}.nii.gz``: the reference warped to time t (HU);
- ``predictions/labels_t{t}.nii.gz``: ``--labels`` propagated to time t (nearest);
- ``predictions/jacdet_t{t}.nii.gz``: Jacobian determinant of ``x -> x + u(x, t)``;
- ``predictions/field_t{t}.png``: warped reference + contours | ``|u|``;
- ``loss.png``, ``summary.json``, ``checkpoints/last.pt`` (resumable with ``--resume``).

``{t}`` is the time with ``.`` written ``p`` (``t0p875`` = 0.875 in the input's unit).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from ..config import load_config
from ..io import MedkitInputError, load_volume, save_volume
from ..progress import track
from ..runs import RunDir, pick_device, seed_everything
from .deform_config import DeformConfig, DeformPipelineConfig
from .sequence import read_sequence


def _tag(t: float) -> str:
    return f"t{t:.6g}".replace(".", "p").replace("-", "m")


def predict_outputs(model, ref_img, t: float, affine, labels=None):
    """Dense outputs at time ``t``: (ddf mm ``(3, X, Y, Z)``, warped ``(X, Y, Z)``, labels or None,
    jacobian determinant ``(X, Y, Z)``) as NumPy arrays."""
    import torch

    from ..nn import warp as W
    from .fit import predict_field

    shape = tuple(ref_img.shape[-3:])
    u = predict_field(model, t, shape, affine)  # (1, 3, X, Y, Z) mm
    aff = torch.as_tensor(np.asarray(affine), dtype=torch.float32)
    u_cpu = u.cpu()
    warped = W.warp_mm(torch.as_tensor(np.asarray(ref_img), dtype=torch.float32).reshape(1, 1, *shape), u_cpu, aff)
    lab = None
    if labels is not None:
        lab = W.warp_mm(torch.as_tensor(np.asarray(labels), dtype=torch.float32).reshape(1, 1, *shape), u_cpu, aff,
                        mode="nearest")[0, 0].round().to(torch.int16).numpy()
    jac = W.jacobian_determinant(W.ddf_mm_to_voxel(u_cpu, aff))[0].numpy()
    return u_cpu[0].numpy(), warped[0, 0].numpy(), lab, jac


def deform_cli(*, input: Path, output: Path, reference: int, predict_at: list[float] | None, labels: Path | None,
               device: str, resume: bool, overrides: list[str], log) -> dict:
    """The body of ``medkit deform`` (see the module doc): the flags become a
    :class:`DeformPipelineConfig` (``overrides`` set its ``model`` fields) and run like a spec."""
    model = load_config(None, DeformConfig, overrides)
    cfg = DeformPipelineConfig(input=str(input), reference=reference, labels=str(labels) if labels else None,
                               predict_at=predict_at, model=model)
    _check_inputs(cfg)
    dev = pick_device(device)
    run = RunDir.create(output, config=cfg, seed=model.seed, device=str(dev), command=" ".join(sys.argv),
                        resume=resume)
    try:
        summary = run_pipeline(cfg, run, device=device, resume=resume, log=log)
    except BaseException:
        run.finish("failed")
        raise
    run.write_summary(summary)
    run.finish()
    return summary


def _synth_input(cfg: DeformPipelineConfig) -> Path:
    """``cfg.input``, generated first when it is missing and ``generate_if_missing`` is set."""
    inp = Path(cfg.input)
    if not cfg.input:
        raise MedkitInputError(None, "deform: no input given (--input, or `input:` in the spec)")
    if not inp.exists() and cfg.generate_if_missing:
        from ..synth.motion import Motion4DConfig, generate_4dct_dataset

        root = inp.parent
        generate_4dct_dataset(load_config(dict(cfg.synth), Motion4DConfig), root)
    return inp


def _check_inputs(cfg: DeformPipelineConfig) -> None:
    if cfg.reference < 0:
        raise MedkitInputError(cfg.input, f"--reference {cfg.reference} must be >= 0")


def run_pipeline(cfg: DeformPipelineConfig, run: RunDir, *, device: str = "auto", resume: bool = False,
                 log=lambda m: None) -> dict:
    """Fit ST-NeRP to ``cfg.input`` and write every prediction into ``run`` (``medkit run deform_*``)."""
    import torch

    from ..viz.deformation import field_figure, loss_plot
    from .fit import Sequence, fit

    input = _synth_input(cfg)
    reference, predict_at, output = cfg.reference, cfg.predict_at, run.path
    seq_in = read_sequence(input)
    n = len(seq_in.frames)
    if not 0 <= reference < n:
        raise MedkitInputError(input, f"--reference {reference} out of range: the sequence has {n} time points")
    lab_ref = None
    if cfg.labels:
        labels = Path(cfg.labels)
        lab_vol = load_volume(labels)
        if tuple(lab_vol.shape[-3:]) != tuple(seq_in.frames[0].shape[-3:]):
            raise MedkitInputError(labels, f"label grid {tuple(lab_vol.shape[-3:])} differs from the images' "
                                   f"{tuple(seq_in.frames[0].shape[-3:])}")
        lab_ref = lab_vol[0].numpy()
    dev = pick_device(device)
    seed_everything(cfg.model.seed)
    run.add_input(input)
    like = seq_in.frames[reference]
    affine = torch.as_tensor(np.asarray(like.affine), dtype=torch.float32)
    images = torch.stack([torch.as_tensor(np.asarray(f[0]), dtype=torch.float32) for f in seq_in.frames])
    seq = Sequence(images, seq_in.times, affine, reference, seq_in.names, period=seq_in.period)
    state = run.load_checkpoint("last") if resume else None
    log(f"{n} time points ({seq_in.unit}): {', '.join(f'{t:g}' for t in seq_in.times)}; reference {reference}; "
        f"device {dev}{'; resuming' if state else ''}")
    t0 = time.perf_counter()
    res = fit(seq, cfg.model, list(range(n)), dev, state=state,
              save=lambda st: run.save_checkpoint(st, "last", config=cfg),
              progress=lambda it, desc: track(it, desc), log=log)
    run.record_time("fit", time.perf_counter() - t0)
    loss_plot({"reference INR (MSE)": res["losses"]["reference"], "deformation INR (total)": res["losses"]["motion"]},
              output / "loss.png")
    times = predict_at if predict_at else list(seq_in.times)
    ref_np = images[reference].numpy()
    rows = []
    pred = output / "predictions"
    for t in track(times, "predict"):
        u, warped, lab, jac = predict_outputs(res["model"], ref_np, float(t), affine, lab_ref)
        tag = _tag(float(t))
        save_volume(u, pred / f"ddf_{tag}.nii.gz", like=like)
        save_volume(warped.astype(np.float32)[None], pred / f"warped_{tag}.nii.gz", like=like)
        save_volume(jac.astype(np.float32)[None], pred / f"jacdet_{tag}.nii.gz", like=like)
        if lab is not None:
            save_volume(lab.astype(np.int16)[None], pred / f"labels_{tag}.nii.gz", like=like, dtype=np.int16)
        field_figure(warped, u, pred / f"field_{tag}.png", labels=lab, ref_labels=lab_ref,
                     title=f"t = {t:g} {seq_in.unit}")
        mag = np.linalg.norm(u, axis=0)
        rows.append({"time": float(t), "imaged": any(abs(float(t) - s) < 1e-9 for s in seq_in.times),
                     "max_displacement_mm": float(mag.max()), "mean_displacement_mm": float(mag.mean()),
                     "folding_fraction": float(np.mean(jac <= 0)), "min_jacobian": float(jac.min()),
                     "files": {"ddf": f"predictions/ddf_{tag}.nii.gz", "warped": f"predictions/warped_{tag}.nii.gz"}})
    summary = {"input": str(input), "unit": seq_in.unit, "times_observed": seq_in.times, "reference": reference,
               "fit_seconds": res["seconds"], "final_loss": res["losses"]["motion"][-1] if res["losses"]["motion"] else None,
               "predictions": rows}
    run.record_time("total", time.perf_counter() - t0)
    log(f"wrote {len(rows)} time point(s) to {pred}")
    return summary
