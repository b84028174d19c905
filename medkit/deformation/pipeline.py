"""``medkit deform``: fit ST-NeRP to a sequence and predict fields at any time.

Writes into ``--output`` (a :class:`medkit.runs.RunDir`):

- ``predictions/ddf_t{t}.nii.gz``: displacement (mm, vector last, pull-back:
  ``I_t(x) ~= I_ref(x + u(x))``) on the input grid;
- ``predictions/warped_t{t}.nii.gz``: the reference warped to time t (HU);
- ``predictions/labels_t{t}.nii.gz``: ``--labels`` propagated to time t (nearest);
- ``predictions/jacdet_t{t}.nii.gz``: Jacobian determinant of ``x -> x + u(x, t)``;
- ``predictions/field_t{t}.png``: warped reference + contours | ``|u|``;
- ``loss.png``, ``summary.json``, ``checkpoints/last.pt`` (resumable with ``--resume``);
- ``cases.csv`` (case id -> source, outputs), ``manifest.json``, ``config.yaml``.

``{t}`` is the time with ``.`` written ``p`` (``t0p875`` = 0.875 in the input's unit).

The input is read and checked completely (every frame through the 3D/4D readers' checks,
at least :data:`MIN_EXTENT` voxels along each axis, the labels' grid, the reference
index) before the output folder is touched, so bad input leaves no run folder behind.
:func:`deform` is the Python call and the body of ``medkit deform``.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import load_config
from ..io import MedkitInputError, load_volume, save_volume
from ..io.checks import check_min_extent
from ..io.errors import OutputError
from ..progress import track
from ..runs import RunDir, pick_device, seed_everything
from .deform_config import DeformConfig, DeformPipelineConfig
from .sequence import LoadedSequence, read_sequence

MIN_EXTENT = 4  # voxels along each axis: the Jacobian and smoothness terms need neighbours
RUN_FILES = ("predictions", "checkpoints", "logs", "loss.png", "summary.json", "manifest.json", "config.yaml",
             "cases.csv")


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


@dataclass
class DeformResult:
    """What :func:`deform` returns.

    Attributes:
        case_id: the sequence's id (its file or folder name, or ``case_id=``).
        summary: ``summary.json`` (per predicted time: max/mean displacement, folding, min Jacobian).
        output: the run folder, or None when nothing was kept.
        paths: time -> {``ddf``, ``warped``, ``jacdet``, ``labels``, ``figure``} paths (with an output).
        arrays: time -> {``ddf`` (3, X, Y, Z) mm, ``warped``, ``jacdet``, ``labels``} NumPy arrays, filled
            when ``output`` was None (the fit ran in a temporary folder that is gone).
    """

    case_id: str
    summary: dict
    output: Path | None
    paths: dict[float, dict[str, Path]] = field(default_factory=dict)
    arrays: dict[float, dict[str, np.ndarray]] = field(default_factory=dict)


def deform(input: str | Path, output: str | Path | None = None, *, reference: int = 0,
           predict_at: list[float] | None = None, labels: str | Path | None = None, device: str = "auto",
           resume: bool = False, overwrite: bool = False, case_id: str | None = None,
           overrides: list[str] | tuple[str, ...] = (), log=None) -> DeformResult:
    """Fit ST-NeRP to a 4D/longitudinal series and predict fields at any time (``medkit deform``).

    Args:
        input: a 4D NIfTI, a folder of phase volumes (``times.json`` optional) or of DICOM series.
        output: the run folder (see the module doc), or None: fit in a temporary folder and return
            the predicted arrays.
        reference: index of the reference time point. predict_at: times to predict (None: every
            imaged time). labels: a label map on the reference grid to propagate.
        device: ``auto``, ``cpu``, ``cuda``. resume: continue an interrupted fit in ``output``.
        overwrite: replace an earlier run of the same case in ``output`` (never another case's).
        case_id: the sequence's id for ``cases.csv`` (default: the input's name).
        overrides: ``key=value`` settings of :class:`DeformConfig` (``iters=2000``).
        log: where progress lines go (default: stderr).
    """
    from ..io.cases import check_case_id, file_case_id

    log = log or (lambda m: print(m, file=sys.stderr))
    model = load_config(None, DeformConfig, list(overrides))
    cfg = DeformPipelineConfig(input=str(input), reference=reference, labels=str(labels) if labels else None,
                               predict_at=predict_at, model=model)
    dev = pick_device(device)
    cid = check_case_id(case_id) if case_id else file_case_id(Path(input))
    _check_inputs(cfg)
    seq = check_sequence(cfg)  # everything about the input, before the output folder is touched
    if output is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="medkit-deform-") as tmp:
            res = _deform_into(Path(tmp) / "run", cfg, seq, cid, dev, device, False, log)
            res.arrays = {t: {k: load_volume(p).as_tensor().numpy()[0] if k not in ("ddf", "figure")
                              else _ddf(p) for k, p in d.items() if k != "figure"} for t, d in res.paths.items()}
            res.paths, res.output = {}, None
        return res
    out = Path(output)
    if overwrite and not resume:
        _clear_previous_run(out, cid)
    return _deform_into(out, cfg, seq, cid, dev, device, resume, log)


def _ddf(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.moveaxis(np.asarray(nib.load(str(path)).dataobj, dtype=np.float32), -1, 0)


def _deform_into(out: Path, cfg, seq, cid: str, dev, device: str, resume: bool, log) -> DeformResult:
    from ..io.outputs import OutputFolder, check_writable

    if out.exists() and not out.is_dir():
        raise OutputError(out, "exists and is a file, not a run folder; choose another --output")
    if out.exists() and any(out.iterdir()) and not resume:
        raise OutputError(out, "run folder exists and is not empty (an earlier deform run?); pass --resume to "
                               "continue it, --overwrite to replace a run of the same case, or choose a new --output")
    check_writable(out, what="run folder")
    run = RunDir.create(out, config=cfg, seed=cfg.model.seed, device=str(dev), command=" ".join(sys.argv),
                        resume=resume)
    run.manifest["case_id"] = cid
    try:
        summary = run_pipeline(cfg, run, device=device, resume=resume, log=log, sequence=seq)
    except BaseException:
        run.finish("failed")
        raise
    run.write_summary(summary)
    run.finish()
    paths = {}
    for r in summary["predictions"]:
        d = {k: out / v for k, v in r["files"].items()}
        paths[r["time"]] = d
    files = [p for d in paths.values() for p in d.values()] + [out / "loss.png", out / "summary.json"]
    folder = OutputFolder(out, "deform", overwrite=True)
    folder.record(cid, files, source=Path(cfg.input), written_at=run.manifest.get("finished_at") or "")
    return DeformResult(cid, summary, out, paths)


def _clear_previous_run(out: Path, cid: str) -> None:
    """``--overwrite``: remove an earlier deform run of the same case from ``out``; a folder
    holding another case's run, or anything that is not a deform run, is refused."""
    import csv

    if not out.exists() or not any(out.iterdir()):
        return
    listed = out / "cases.csv"
    rows = list(csv.DictReader(listed.open(encoding="utf-8"))) if listed.exists() else []
    ids = {r.get("case_id") for r in rows if r.get("command") == "deform"}
    if ids != {cid}:
        what = f"holds the deform run of case {sorted(ids)[0]!r}" if ids else "is not a medkit deform run folder"
        raise OutputError(out, f"{what}; --overwrite only replaces a run of the same case ({cid!r}); "
                               "choose another --output")
    for name in RUN_FILES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def check_sequence(cfg: DeformPipelineConfig) -> LoadedSequence:
    """Read ``cfg.input`` and check it (see the module doc); returns the sequence."""
    inp = _synth_input(cfg)
    seq = read_sequence(inp)
    n = len(seq.frames)
    if not 0 <= cfg.reference < n:
        raise MedkitInputError(inp, f"--reference {cfg.reference} out of range: the sequence has {n} time points")
    check_min_extent(inp, tuple(int(v) for v in seq.frames[0].shape[-3:]), MIN_EXTENT, "ST-NeRP (medkit deform)")
    if cfg.labels:
        lab = load_volume(Path(cfg.labels))
        if tuple(lab.shape[-3:]) != tuple(seq.frames[0].shape[-3:]):
            raise MedkitInputError(cfg.labels, f"label grid {tuple(lab.shape[-3:])} differs from the images' "
                                               f"{tuple(seq.frames[0].shape[-3:])}")
    return seq


def deform_cli(*, input: Path, output: Path, reference: int, predict_at: list[float] | None, labels: Path | None,
               device: str, resume: bool, overrides: list[str], log, overwrite: bool = False,
               case_id: str | None = None) -> dict:
    """``medkit deform``'s body: :func:`deform`, returning the summary."""
    return deform(input, output, reference=reference, predict_at=predict_at, labels=labels, device=device,
                  resume=resume, overwrite=overwrite, case_id=case_id, overrides=overrides, log=log).summary


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


def label_names(labels: str | Path | None) -> dict[int, str]:
    """Names of the label values, from a ``dataset.json`` beside the label file or one folder up
    (Decathlon ``{"1": "liver"}`` or nnU-Net v2 ``{"liver": 1}``); ``{}`` when there is none."""
    import json

    if not labels:
        return {}
    for folder in (Path(labels).parent, Path(labels).parent.parent):
        f = folder / "dataset.json"
        try:
            raw = json.loads(f.read_text(encoding="utf-8")).get("labels") if f.is_file() else None
        except (OSError, ValueError, AttributeError):
            raw = None
        if isinstance(raw, dict):
            out = {}
            for k, v in raw.items():
                key, name = (k, v) if str(k).lstrip("-").isdigit() else (v, k)
                if isinstance(key, (int, str)) and str(key).lstrip("-").isdigit() and int(key) > 0:
                    out[int(key)] = str(name)
            return out
    return {}


def _check_inputs(cfg: DeformPipelineConfig) -> None:
    if cfg.reference < 0:
        raise MedkitInputError(cfg.input, f"--reference {cfg.reference} must be >= 0")


def run_pipeline(cfg: DeformPipelineConfig, run: RunDir, *, device: str = "auto", resume: bool = False,
                 log=lambda m: None, sequence: LoadedSequence | None = None) -> dict:
    """Fit ST-NeRP to ``cfg.input`` and write every prediction into ``run`` (``medkit run deform_*``).
    ``sequence``: the input already read and checked (:func:`check_sequence`), else it is read here."""
    import torch

    from ..viz.deformation import field_figure, loss_plot
    from .fit import Sequence, fit

    input = _synth_input(cfg)
    reference, predict_at, output = cfg.reference, cfg.predict_at, run.path
    seq_in = sequence if sequence is not None else check_sequence(cfg)
    n = len(seq_in.frames)
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
    log(f"fitting ST-NeRP ({cfg.model.ref_iters} reference + {cfg.model.iters} deformation iterations)")
    t0 = time.perf_counter()
    res = fit(seq, cfg.model, list(range(n)), dev, state=state,
              save=lambda st: run.save_checkpoint(st, "last", config=cfg),
              progress=lambda it, desc: track(it, desc), log=log)
    run.record_time("fit", time.perf_counter() - t0)
    loss_plot({"reference INR (MSE)": res["losses"]["reference"], "deformation INR (total)": res["losses"]["motion"]},
              output / "loss.png")
    times = predict_at if predict_at else list(seq_in.times)
    names = label_names(cfg.labels)
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
                     title=f"t = {t:g} {seq_in.unit}", affine=np.asarray(like.affine), label_names=names)
        mag = np.linalg.norm(u, axis=0)
        files = {"ddf": f"predictions/ddf_{tag}.nii.gz", "warped": f"predictions/warped_{tag}.nii.gz",
                 "jacdet": f"predictions/jacdet_{tag}.nii.gz", "figure": f"predictions/field_{tag}.png"}
        if lab is not None:
            files["labels"] = f"predictions/labels_{tag}.nii.gz"
        rows.append({"time": float(t), "imaged": any(abs(float(t) - s) < 1e-9 for s in seq_in.times),
                     "max_displacement_mm": float(mag.max()), "mean_displacement_mm": float(mag.mean()),
                     "folding_fraction": float(np.mean(jac <= 0)), "min_jacobian": float(jac.min()),
                     "files": files})
    summary = {"input": str(input), "unit": seq_in.unit, "times_observed": seq_in.times, "reference": reference,
               "fit_seconds": res["seconds"], "final_loss": res["losses"]["motion"][-1] if res["losses"]["motion"] else None,
               "predictions": rows}
    run.record_time("total", time.perf_counter() - t0)
    log(f"wrote {len(rows)} time point(s) to {pred}")
    return summary
