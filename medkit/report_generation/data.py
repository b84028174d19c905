"""Studies for report generation: image tensor, cleaned report, CheXpert label vector.

Reads any R2Gen-layout ``annotation.json`` through
:func:`medkit.io.load_report_dataset` (IU-Xray, MIMIC-CXR, the synthetic set).
Reports are normalised with R2Gen's cleaner (:func:`medkit.io.clean_report`),
the text every published BLEU/CIDEr on these sets was computed on. Images are
the ``view``-th entry of ``image_path`` (frontal in IU-Xray and the synthetic
set), read as grayscale, resized to ``image_size`` and scaled to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import clean_report, load_report_dataset
from ..io.errors import MedkitInputError, ReportDatasetError
from ..metrics.clinical import OBSERVATIONS, label_report, label_vector
from .cofe_config import DataConfig

RASTER = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class Study:
    """One study. ``image``: ``(1, S, S)`` float32 tensor in [0, 1]; ``labels``: ``(14,)`` 0/1
    (positive = 1; negative, uncertain and unmentioned = 0, the CE convention)."""

    case_id: str
    image: object
    report: str
    labels: np.ndarray


def load_image(path: str | Path, size: int):
    """A radiograph as a ``(1, size, size)`` float32 tensor in [0, 1].

    PNG/JPEG/TIFF through PIL; DICOM through pydicom (MONOCHROME1 inverted);
    NIfTI through nibabel (a 2D image or the middle slice).

    Raises:
        MedkitInputError: naming the file when it cannot be read as an image.
    """
    import torch
    from PIL import Image

    path = Path(path)
    suffix = "".join(path.suffixes).lower()
    try:
        if suffix.endswith(RASTER):
            arr = np.asarray(Image.open(path).convert("F"), dtype=np.float32)
        elif suffix.endswith(".dcm") or suffix == "":
            import pydicom

            ds = pydicom.dcmread(path)
            arr = ds.pixel_array.astype(np.float32)
            if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
                arr = arr.max() - arr
        elif suffix.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            arr = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
            while arr.ndim > 2:
                arr = arr[..., arr.shape[-1] // 2]
            arr = arr.T[::-1]  # NIfTI (x, y) -> display rows top-down
        else:
            raise MedkitInputError(path, f"not a radiograph file (expected one of {RASTER}, .dcm, .nii[.gz])")
    except MedkitInputError:
        raise
    except Exception as e:  # PIL/pydicom/nibabel raise many types on bad files
        raise MedkitInputError(path, f"cannot read image ({type(e).__name__}: {e})") from None
    if arr.ndim == 3:  # colour stored as (H, W, 3)
        arr = arr.mean(-1)
    if arr.ndim != 2 or min(arr.shape) < 8:
        raise MedkitInputError(path, f"expected a 2D image, got shape {arr.shape}")
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    img = Image.fromarray(arr.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.float32).copy())[None]


def ensure_dataset(cfg: DataConfig) -> Path:
    """The annotation folder; for ``synthetic`` with ``generate_if_missing``, generate it first."""
    root = Path(cfg.root)
    if (root / "annotation.json").exists():
        return root
    if cfg.dataset == "synthetic" and cfg.generate_if_missing:
        from ..synth.cxr import CXRConfig, generate_dataset

        generate_dataset(CXRConfig(n_cases=cfg.synth_n_cases, seed=cfg.synth_seed, size=cfg.synth_size,
                                   lateral=False, write_masks=False), root)
        return root
    raise ReportDatasetError(root / "annotation.json",
                             "no annotation file (R2Gen layout; see data_cards/iu-xray.md, mimic-cxr.md"
                             + (", or set data.generate_if_missing=true" if cfg.dataset == "synthetic" else "") + ")")


def _cleaner(cfg: DataConfig) -> str:
    return "mimic_cxr" if cfg.dataset == "mimic_cxr" else "iu_xray"


def load_studies(cfg: DataConfig, progress=None) -> dict[str, list[Study]]:
    """``{split: [Study]}`` from ``cfg.root`` (train capped by ``max_train``, val/test by ``max_eval``).

    Raises:
        ReportDatasetError: a malformed annotation, a missing image, or an empty training split.
    """
    root = ensure_dataset(cfg)
    ds = load_report_dataset(root, image_dir=cfg.image_dir, check_images=True, dataset=_cleaner(cfg))
    out: dict[str, list[Study]] = {}
    for split, entries in ds.items():
        cap = cfg.max_train if split == "train" else cfg.max_eval
        entries = entries[:cap] if cap is not None else entries
        rows = []
        it = progress(entries, f"load {split}") if progress else entries
        for e in it:
            if cfg.view >= len(e.image_paths):
                raise ReportDatasetError(root / "annotation.json",
                                         f"entry {e.id!r} has {len(e.image_paths)} image(s); view {cfg.view} asked for")
            text = e.report
            if cfg.dataset == "synthetic" and e.extra.get("impression"):
                text = f"{text} {e.extra['impression']}"  # the synthetic set keeps the impression apart
            report = clean_report(text, _cleaner(cfg))
            labels = e.labels if e.labels is not None else label_report(report)
            rows.append(Study(e.id, load_image(e.image_paths[cfg.view], cfg.image_size), report,
                              label_vector(labels)))
        out[split] = rows
    if not out.get("train"):
        raise ReportDatasetError(root / "annotation.json", "no training studies")
    return out


def stack_images(studies: list[Study]):
    """``(N, 1, S, S)`` tensor of the studies' images."""
    import torch

    return torch.stack([s.image for s in studies])


def label_matrix(studies: list[Study]) -> np.ndarray:
    """``(N, 14)`` 0/1 labels in :data:`OBSERVATIONS` order."""
    return np.stack([s.labels for s in studies]) if studies else np.zeros((0, len(OBSERVATIONS)), np.int64)
