"""Studies for report generation: image tensor, cleaned report, CheXpert label vector.

Reads any R2Gen-layout ``annotation.json`` through
:func:`medkit.io.load_report_dataset` (IU-Xray, MIMIC-CXR, the synthetic set).
Reports are normalised with R2Gen's cleaner (:func:`medkit.io.clean_report`),
the text every published BLEU/CIDEr on these sets was computed on. Images are
the ``view``-th entry of ``image_path`` (frontal in IU-Xray and the synthetic
set), read as grayscale, resized to ``image_size`` and scaled to [0, 1]
(:func:`load_image`, also the reader of ``medkit report``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import clean_report, load_report_dataset
from ..io.errors import CorruptFileError, DimensionalityError, MedkitInputError, ReportDatasetError
from ..metrics.clinical import OBSERVATIONS, label_report, label_vector
from .cofe_config import DataConfig

RASTER = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = RASTER + DICOM_SUFFIXES + NIFTI_SUFFIXES
# Slices of these are refused: the model reads projection radiographs (CR, DX, ...).
CROSS_SECTIONAL = {"CT": "computed tomography", "MR": "magnetic resonance", "PT": "PET", "NM": "nuclear medicine",
                   "US": "ultrasound"}


@dataclass
class Study:
    """One study. ``image``: ``(1, S, S)`` float32 tensor in [0, 1]; ``labels``: ``(14,)`` 0/1
    (positive = 1; negative, uncertain and unmentioned = 0, the CE convention)."""

    case_id: str
    image: object
    report: str
    labels: np.ndarray


def load_image(path: str | Path, size: int):
    """A radiograph as a ``(1, size, size)`` float32 tensor in [0, 1] (min-max scaled, bilinear resize).

    The one reader of training and ``medkit report``. PNG/JPEG/TIFF through PIL (colour
    averaged to grey); DICOM through pydicom, any file name (:func:`_vetted_dicom`:
    cross-sectional modalities and multi-frame objects refused; rescale applied;
    MONOCHROME1 inverted); NIfTI through nibabel, 2D or depth 1 only (a volume is
    refused, never sliced).

    Raises:
        MedkitInputError: naming the file and the problem (corrupt, not 2D, not a radiograph).
    """
    import torch
    from PIL import Image

    path = Path(path)
    kind = image_kind(path)
    if kind is None:
        raise MedkitInputError(path, f"not a radiograph file (expected one of {IMAGE_SUFFIXES}, or DICOM)")
    if kind == "dicom":
        arr = _dicom_pixels(path)
    else:
        nii = _load_nifti_2d(path) if kind == "nifti" else None
        try:
            if nii is None:
                arr = np.asarray(Image.open(path).convert("F"), dtype=np.float32)
            else:
                arr = np.asarray(nii.dataobj, dtype=np.float32).reshape(nii.shape[:2])  # depth 1 checked
                arr = arr.T[::-1]  # NIfTI (x, y) -> display rows top-down
        except Exception as e:  # PIL/nibabel raise many types on bad files
            raise CorruptFileError(path, f"cannot read image ({type(e).__name__}: {e})") from None
    if arr.ndim != 2 or min(arr.shape) < 8:
        raise DimensionalityError(path, f"expected a 2D radiograph, got an image of shape {arr.shape}")
    from ..io.checks import check_values

    check_values(path, arr, "pixel")  # the 3D reader's check: NaN/inf pixels would become a NaN image
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    img = Image.fromarray(arr.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.float32).copy())[None]


def image_kind(path: Path) -> str | None:
    """``raster`` / ``nifti`` / ``dicom`` by suffix; suffix-less or UID-named files (``1.2.840...``,
    the usual names in DICOM exports) are DICOM when they carry the Part-10 ``DICM`` marker."""
    from ..io.dicom import _is_dicom_file

    name = path.name.lower()
    if name.endswith(RASTER):
        return "raster"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES) or _is_dicom_file(path):
        return "dicom"
    return None


def _vetted_dicom(path: Path):
    """The header (:class:`medkit.io.dicom.DicomInstance`) of a DICOM file that can be one radiograph.

    Raises:
        CorruptFileError: an unreadable or truncated file.
        NonImageError: an object without pixels (SR, RTSTRUCT, ...).
        ModalityError: a slice of a cross-sectional study (:data:`CROSS_SECTIONAL`).
        DimensionalityError: more than one frame (a CT/MR volume or a cine), not a 2D radiograph.
    """
    from ..io.dicom import read_header
    from ..io.errors import ModalityError, NonImageError

    inst = read_header(path)  # CorruptFileError on a damaged or truncated file
    if not inst.is_image:
        raise NonImageError(path, f"DICOM {inst.modality} object without pixel data (not an image object, "
                                  "or a damaged file): not a radiograph")
    if inst.modality in CROSS_SECTIONAL:
        raise ModalityError(path, f"DICOM modality {inst.modality} ({CROSS_SECTIONAL[inst.modality]}): "
                                  "a slice of a cross-sectional study, not a radiograph (expected CR, DX or another "
                                  "projection modality)")
    if inst.frames > 1:
        raise DimensionalityError(path, f"DICOM {inst.modality} object with {inst.frames} frames "
                                        f"({inst.rows} x {inst.cols} x {inst.frames}): a 3D volume or cine, "
                                        "not a 2D radiograph")
    return inst


def dicom_case_id(path: Path) -> str:
    """The PHI-free output key of one DICOM radiograph, ``{SeriesDescription}-{sha1(SOPInstanceUID)[:8]}``
    (as the io layer names series); refuses what :func:`_vetted_dicom` refuses, and a file without
    SOPInstanceUID (:class:`CorruptFileError`)."""
    import pydicom

    from ..io.cases import dicom_case_id as case_id

    inst = _vetted_dicom(path)
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)  # read_header already vetted it
    uid = str(ds.get("SOPInstanceUID", "") or "")
    if not uid:
        raise CorruptFileError(path, "DICOM file without SOPInstanceUID: cannot name its report without PHI")
    return case_id(inst.description, inst.modality, uid)


def _dicom_pixels(path: Path) -> np.ndarray:
    """``(rows, cols)`` float32 pixels with the modality rescale applied and MONOCHROME1
    (white = low values) inverted, so that, as in MONOCHROME2 and the training PNGs, bone and
    devices are bright. VOI windows are not applied: training images are min-max scaled too."""
    import pydicom

    from ..io.dicom import UNCOMPRESSED_TS
    from ..io.errors import UnsupportedTransferSyntaxError

    inst = _vetted_dicom(path)
    try:
        ds = pydicom.dcmread(path, force=True)
        arr = np.asarray(ds.pixel_array, dtype=np.float32)
    except Exception as e:  # noqa: BLE001 - pydicom raises many types on undecodable pixel data
        cls = CorruptFileError if (not inst.transfer_syntax or inst.transfer_syntax in UNCOMPRESSED_TS) \
            else UnsupportedTransferSyntaxError
        raise cls(path, f"DICOM pixel data could not be decoded ({type(e).__name__}: {e})") from None
    if inst.samples == 3 and arr.ndim == 3:  # RGB secondary capture: grey = channel mean
        arr = arr.mean(-1)
    if arr.ndim != 2:
        raise DimensionalityError(path, f"expected a 2D radiograph, DICOM pixel data has shape {arr.shape}")
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    arr = arr * slope + intercept
    if inst.photometric == "MONOCHROME1":
        arr = arr.max() - arr
    return arr


def _load_nifti_2d(path: Path):
    """The nibabel image of a radiograph stored as NIfTI: 2D, or 3D (4D) with depth 1; a volume
    is refused rather than a slice picked."""
    import nibabel as nib

    try:
        nii = nib.load(str(path))
    except Exception as e:  # noqa: BLE001 - nibabel raises many types on damaged files
        raise CorruptFileError(path, f"unreadable NIfTI file ({type(e).__name__}: {e})") from None
    shape = tuple(int(n) for n in nii.shape)
    if len(shape) < 2 or any(n != 1 for n in shape[2:]):
        what = f"a 3D volume of {shape[2]} slices" if len(shape) >= 3 and shape[2] > 1 else "not a 2D image"
        raise DimensionalityError(path, f"NIfTI image of shape {shape}: {what}; a radiograph is 2D "
                                        "(or 3D with depth 1)")
    return nii


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
