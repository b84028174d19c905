"""What ``medkit inspect`` prints, without torch: geometry and values of a volume, the time
axis of a 4D NIfTI, the segments of a DICOM-SEG, or the series/cases a folder holds.

Every function returns plain data (lists of ``(key, value)`` rows or dict rows); the CLI
prints them as plain text, so UIDs and paths are never cut to fit a terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MultipleSeriesError

SEG_SOP = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass
class Description:
    """``title``; ``rows``: ``(key, value)`` lines; ``table``: dict rows (series or cases) with ``note``."""

    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    table: list[dict] = field(default_factory=list)
    note: str = ""


def describe(path: str | Path, *, series_uid: str | None = None) -> Description:
    """Describe ``path`` (see the module doc).

    Raises:
        VolumeError: a subclass naming the file when it cannot be read (a wrong ``series_uid``
            included: :class:`~medkit.io.errors.SeriesNotFoundError`).
    """
    from . import dicom as _dcm
    from .volume import _suffix, read_volume

    path = Path(path)
    if path.is_file() and _suffix(path) in (".nii", ".nii.gz") and series_uid is None:
        from .nifti4d import nifti_shape

        shape = nifti_shape(path)
        if len(shape) == 4 and shape[3] > 1:
            return _describe_4d(path)
    if path.is_file() and series_uid is None and (_dcm._is_dicom_file(path) or _dcm._looks_like_raw_dicom(path)):
        seg = _describe_seg(path)
        if seg is not None:
            return seg
    if path.is_dir() and series_uid is None:
        cases = _folder_cases(path)
        if cases is not None:
            return cases
    try:
        arr, aff, meta = read_volume(path, series_uid=series_uid)
    except MultipleSeriesError as e:  # several series in one folder of one study, e.g. a zip
        return Description(f"{path}: {len(e.series)} image series", table=[
            {"series UID": uid, "modality": mod, "slices": n} for uid, _desc, mod, n in e.series],
            note="choose one with --series-uid UID")
    return Description(str(path), _volume_rows(arr, aff, meta))


def _volume_rows(arr: np.ndarray, aff: np.ndarray, meta: dict) -> list[tuple[str, str]]:
    p1, p99 = np.percentile(arr, [1, 99])
    rows = [("format", str(meta.get("format"))), ("modality", str(meta.get("modality"))),
            ("series UID", str(meta.get("series_uid"))), ("shape (X, Y, Z)", str(tuple(arr.shape))),
            ("spacing (mm)", ", ".join(f"{s:.4g}" for s in meta["original_spacing"])),
            ("orientation", meta["original_orientation"]),
            ("value range", f"{arr.min():.1f} .. {arr.max():.1f} (mean {arr.mean():.1f})"),
            ("1-99th percentile", f"{p1:.1f} .. {p99:.1f}")]
    from .checks import ct_value_problem

    if str(meta.get("modality", "")).upper() in ("UNKNOWN", "CT"):
        problem = ct_value_problem(arr)
        rows.append(("CT in HU?", "plausible" if problem is None else f"no: {problem}"))
    rows.append(("affine (RAS mm)", "\n".join(" ".join(f"{v:9.3f}" for v in row) for row in np.asarray(aff))))
    return rows


def _describe_4d(path: Path) -> Description:
    from .nifti4d import read_nifti_4d
    from .volume import geometry_meta

    seq = read_nifti_4d(path, min_extent=1)
    g = geometry_meta(seq.affine, seq.array.shape)
    arr = seq.array
    return Description(str(path), [
        ("format", "nifti (4D)"), ("shape (X, Y, Z, T)", str(tuple(arr.shape))),
        ("spacing (mm)", ", ".join(f"{s:.4g}" for s in g["original_spacing"])),
        ("orientation", g["original_orientation"]),
        ("time points", f"{arr.shape[3]}: " + ", ".join(f"{t:g}" for t in seq.times) + f" ({seq.unit})"),
        ("value range", f"{arr.min():.1f} .. {arr.max():.1f} (mean {arr.mean():.1f})"),
        ("affine (RAS mm)", "\n".join(" ".join(f"{v:9.3f}" for v in row) for row in seq.affine))],
        note="a sequence: medkit deform -i reads it")


def _describe_seg(path: Path) -> Description | None:
    """A DICOM Segmentation's segments and the series it references; None for other DICOM."""
    import pydicom

    from .dicom import read_header

    inst = read_header(path)  # CorruptFileError on damaged files
    if inst.sop_class != SEG_SOP:
        return None
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    refs = [s.SeriesInstanceUID for s in ds.get("ReferencedSeriesSequence", [])]
    table = []
    for s in ds.get("SegmentSequence", []):
        prop = s.get("SegmentedPropertyTypeCodeSequence")
        table.append({"segment": int(s.get("SegmentNumber", 0)), "label": str(s.get("SegmentLabel", "")),
                      "property": str(prop[0].CodeMeaning) if prop else "",
                      "algorithm": str(s.get("SegmentAlgorithmType", ""))})
    return Description(str(path), [
        ("format", "DICOM Segmentation (SEG)"), ("type", str(ds.get("SegmentationType", ""))),
        ("frames", str(int(ds.get("NumberOfFrames", 0) or 0))),
        ("matrix", f"{int(ds.get('Rows', 0))} x {int(ds.get('Columns', 0))}"),
        ("series UID", str(ds.get("SeriesInstanceUID", ""))),
        ("references series", ", ".join(refs) or "(none)"),
        ("study UID", str(ds.get("StudyInstanceUID", ""))),
        ("software", f"{ds.get('Manufacturer', '')} {ds.get('SoftwareVersions', '')}".strip())], table)


def _folder_cases(path: Path) -> Description | None:
    """A folder that holds several cases (NIfTI files, nnU-Net/Decathlon, DICOM studies): its
    case list; None for a folder that is one series (inspected as a volume)."""
    from .cases import discover_cases

    cases = discover_cases(path)
    if len(cases) == 1:
        return None
    rows = [{"case id": c.case_id, "split": c.split or "", "series UID": c.series_uid or "",
             "modality": c.extra.get("modality", ""), "slices": c.extra.get("n_slices", ""),
             "source": str(c.source or c.images[0])} for c in cases]
    if not any(r["series UID"] for r in rows):
        for r in rows:
            del r["series UID"], r["modality"], r["slices"]
    if not any(r["split"] for r in rows):
        for r in rows:
            del r["split"]
    return Description(f"{path}: {len(cases)} cases", table=rows,
                       note="inspect one with: medkit inspect SOURCE [--series-uid UID]")


def format_table(rows: list[dict]) -> list[str]:
    """Plain aligned text lines; no cell is ever cut (long UIDs stay whole, to be copied)."""
    if not rows:
        return []
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols).rstrip()]
    lines += ["  ".join(str(r.get(c, "")).ljust(width[c]) for c in cols).rstrip() for r in rows]
    return lines
