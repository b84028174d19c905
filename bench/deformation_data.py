"""Data and metrics shared by ``bench/deformation.py`` and ``bench/deformation_curve.py``.

Patients. Tuning and test patients are different generator seeds, so no test patient
ever shapes a hyper-parameter:

- ``tune``: ``Motion4DConfig(seed=1)`` / ``LongitudinalConfig(seed=1)``, 2 patients;
- ``test``: seed 0, 3 patients.

Both use :data:`medkit.synth.motion.REALISTIC_4DCT` (irregular breathing, hysteresis,
60-100 HU per-phase noise) and :data:`REALISTIC_LONGITUDINAL` on the CPU-small grid
(80x64x64 at 4 mm). Data are generated once into ``$MEDKIT_BENCH_DATA`` (default
``/tmp/medkit-bench-deformation``) and reused.

TRE: landmarks ``q`` at time k (exact), reference ``p``; a pull-back field ``u_k`` on the
time-k grid predicts ``q + u_k(q)``; error ``|q + u_k(q) - p|`` (mm) per landmark, the same
trilinear sampling of a dense field for every method.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from medkit.metrics import deformation as M
from medkit.nn import warp as W

PATIENTS = {"tune": (1, 2), "test": (0, 3)}  # group -> (generator seed, number of patients)
DATA = Path(os.environ.get("MEDKIT_BENCH_DATA", "/tmp/medkit-bench-deformation"))


def dataset(kind: str, group: str) -> Path:
    """The folder of ``kind`` (``4dct`` | ``longitudinal``) patients of ``group``, generated on first use."""
    import shutil

    from medkit.synth import motion

    seed, n = PATIENTS[group]
    out = DATA / f"{kind}-{group}"
    if (out / "dataset.json").exists():
        return out
    tmp = DATA / f".{kind}-{group}.tmp{os.getpid()}"  # two queue jobs may generate at once: rename wins
    if kind == "4dct":
        cfg = motion.Motion4DConfig(n_cases=n, seed=seed, forward_fields=False, **motion.REALISTIC_4DCT)
        motion.generate_4dct_dataset(cfg, tmp)
    elif kind == "longitudinal":
        cfg = motion.LongitudinalConfig(n_cases=n, seed=seed, forward_fields=False, **motion.REALISTIC_LONGITUDINAL)
        motion.generate_longitudinal_dataset(cfg, tmp)
    else:
        raise ValueError(kind)
    try:
        tmp.rename(out)
    except OSError:  # another job finished first: same seed, same arrays
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def patient_ids(kind: str, group: str) -> list[str]:
    return json.loads((dataset(kind, group) / "dataset.json").read_text())["cases"]


class Case:
    """One generated patient: images ``(T, X, Y, Z)`` HU, times, affine, landmarks, labels, period."""

    def __init__(self, folder: Path):
        import nibabel as nib

        from medkit.deformation.sequence import read_sequence

        seq = read_sequence(folder)
        self.folder = folder
        self.id = folder.name
        self.times = seq.times
        self.period = seq.period
        self.affine = np.asarray(seq.frames[0].affine, dtype=np.float64)
        self.images = torch.stack([torch.as_tensor(np.asarray(f[0]), dtype=torch.float32) for f in seq.frames])
        self.lm = json.loads((folder / "landmarks.json").read_text())
        self.labels = [np.asarray(nib.load(folder / f"labels_{k:02d}.nii.gz").dataobj).astype(int)
                       for k in range(len(self.times))]
        info = json.loads((folder / "times.json").read_text())["frames"]
        self.states = [f.get("breathing_state", 0.0) for f in info]

    @property
    def peak(self) -> int:
        """The frame of largest motion (peak inhale): largest mean landmark displacement."""
        return int(np.argmax([self.motion_mm(k) for k in range(len(self.times))]))

    def motion_mm(self, k: int) -> float:
        """Mean landmark displacement of frame k from the reference ("no registration" TRE)."""
        return float(np.linalg.norm(np.asarray(self.lm["frames"][k]["mm"]) - np.asarray(self.lm["reference"]["mm"]),
                                    axis=1).mean())

    def landmark_errors_at_points(self, u_fn, k: int) -> np.ndarray:
        """Per-landmark errors (mm) ``(K,)`` for a displacement function ``u_fn(q_mm (K, 3)) -> (K, 3)``."""
        q = torch.as_tensor(self.lm["frames"][k]["mm"], dtype=torch.float32)
        with torch.no_grad():
            uq = u_fn(q).cpu()
        return np.linalg.norm((q + uq).numpy() - np.asarray(self.lm["reference"]["mm"]), axis=1)


def evaluate(case: Case, u_mm: np.ndarray, k: int, image_metrics: bool = True) -> dict:
    """Metrics of one pull-back field ``(3, X, Y, Z)`` mm for frame ``k``: per-landmark errors,
    folding fraction, and (optionally) NCC/SSIM/PSNR of the warped reference and mean Dice of
    the propagated labels (liver, tumour, lung) against frame k."""
    aff = torch.as_tensor(case.affine, dtype=torch.float32)
    u = torch.as_tensor(u_mm, dtype=torch.float32)[None]
    q = torch.as_tensor(case.lm["frames"][k]["mm"], dtype=torch.float32)
    uq = W.sample_points(u, W.points_mm_to_voxel(q, aff)[None])[0].T
    err = np.linalg.norm((q + uq).numpy() - np.asarray(case.lm["reference"]["mm"]), axis=1)
    jac = W.jacobian_determinant(W.ddf_mm_to_voxel(u, aff))[0].numpy()
    out = {"errors": np.round(err, 4).tolist(), "tre": float(err.mean()), "fold": M.folding_fraction(jac),
           "min_jac": float(jac.min())}
    if image_metrics:
        ref, img_k = case.images[0].numpy(), case.images[k].numpy()
        shp = (1, 1, *ref.shape)
        warped = W.warp_mm(torch.as_tensor(ref).reshape(shp), u, aff)[0, 0].numpy()
        wl = W.warp_mm(torch.as_tensor(case.labels[0], dtype=torch.float32).reshape(shp), u, aff,
                       mode="nearest")[0, 0].numpy()
        d = M.dice(np.round(wl).astype(int), case.labels[k], [1, 2, 3])
        out.update({"ncc": M.ncc(warped, img_k), "ssim": M.ssim3d(warped, img_k),
                    "psnr": M.psnr(warped, img_k, data_range=1500.0), "dice": float(np.mean(list(d.values())))})
    return out


def demons_tre(case: Case, phases: list[int]) -> dict[int, float]:
    """Per-pair SimpleITK demons TRE (mm) at ``phases`` (the peer's level on a curve)."""
    from medkit.deformation import baselines as B

    out = {}
    for k in phases:
        u = B.demons_pair(case.images[k].numpy(), case.images[0].numpy(), case.affine)
        out[k] = evaluate(case, u, k, image_metrics=False)["tre"]
    return out
