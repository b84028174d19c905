"""Couinaud labels as a DICOM Segmentation object (highdicom) that references its source series.

The SEG has one frame per source slice that holds any segment, in the source
images' own pixel grid: for every source file we map its pixel centres
(ImagePositionPatient + row/column directions, LPS mm) into the RAS voxel grid the
labels live on and gather the label there. This works for any slice order,
orientation or flip the series came with, and fails loudly if the grids disagree.

Privacy: the SEG must reference the source Study/Series/SOP Instance UIDs (that is
how viewers overlay it). Patient and study identifiers (name, ID, birth date, sex,
accession number, study date/time/ID, referring physician) are type 2 in the
standard (present, may be empty): by default they are written empty, so the SEG
carries no patient identity beyond the UIDs. ``copy_identity=True`` keeps the
values highdicom copies from the source (needed by some PACS that match SEG to
patient by ID). StudyDescription (free text) is dropped unless ``copy_identity``; private
tags and the source site (institution, department, station, operators) are never copied.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import MedkitInputError, VolumeError
from ..io.atomic import atomic_path

#: Type-2 patient/study attributes highdicom copies from the source, blanked by default.
IDENTITY_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                       "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
#: Type-3 free text highdicom copies from the source study, removed unless ``copy_identity``.
IDENTITY_OPTIONAL = ("StudyDescription",)
#: Exactly what ``copy_identity=True`` adds to the SEG (tests/segmentation/test_dicom_seg.py checks
#: that no other source attribute value reaches it, and that these do).
COPIED_WITH_IDENTITY = IDENTITY_ATTRIBUTES + IDENTITY_OPTIONAL
#: Source-site attributes highdicom would copy into ContributingEquipmentSequence; never needed.
SITE_ATTRIBUTES = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
                   "OperatorsName", "PerformingPhysicianName")


def source_datasets(folder: Path, series_uid: str | None):
    """The source series' headers (pydicom datasets, no pixel data) in file order."""
    import pydicom

    from ..io.dicom import choose_series, scan_folder, validate_series

    series, _ = scan_folder(Path(folder))
    chosen = choose_series(Path(folder), series, series_uid)
    geom = validate_series(chosen)
    out = []
    for p in geom.files:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        for name in IDENTITY_ATTRIBUTES:  # type 2: exports that omit them are common; highdicom needs them present
            if name not in ds:
                setattr(ds, name, "")
        for name in SITE_ATTRIBUTES:
            if name in ds:
                delattr(ds, name)
        out.append(ds)
    return out


def labels_on_source_slices(labels: np.ndarray, affine_ras: np.ndarray, datasets) -> np.ndarray:
    """``(n_files, rows, cols)``: ``labels`` (``(X, Y, Z)`` on ``affine_ras``, any dtype) sampled at
    every source pixel centre. Raises if a pixel centre is not (within 0.1 voxel) on the grid."""
    inv = np.linalg.inv(np.asarray(affine_ras, dtype=np.float64))
    out = np.zeros((len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)), dtype=labels.dtype)
    shape = np.asarray(labels.shape)
    for k, ds in enumerate(datasets):
        ipp = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        dr, dc = (float(v) for v in ds.PixelSpacing)  # row spacing (between rows), column spacing
        rows, cols = int(ds.Rows), int(ds.Columns)
        jj, ii = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")  # jj: row index, ii: column index
        lps = ipp + ii[..., None] * dc * iop[:3] + jj[..., None] * dr * iop[3:]
        ras = lps * np.array([-1.0, -1.0, 1.0])
        vox = ras @ inv[:3, :3].T + inv[:3, 3]
        idx = np.rint(vox).astype(np.int64)
        if np.abs(vox - idx).max() > 0.1 or (idx < 0).any() or (idx >= shape).any():
            raise VolumeError(getattr(ds, "filename", None),
                              "source slice does not lie on the segmented volume's grid; cannot write DICOM-SEG")
        out[k] = labels[idx[..., 0], idx[..., 1], idx[..., 2]]
    return out


def write_dicom_seg(labels: np.ndarray, affine_ras: np.ndarray, source_folder: Path, out_path: Path,
                    segment_names: dict[int, str], *, series_uid: str | None = None, model_name: str = "LiverFormer",
                    copy_identity: bool = False) -> Path:
    """Write ``out_path`` (a single-file DICOM SEG, BINARY, one segment per label value)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from .. import __version__

    src = source_datasets(source_folder, series_uid)
    frames = labels_on_source_slices(labels, affine_ras, src)
    present = sorted(int(v) for v in np.unique(frames) if v != 0)
    if not present:
        raise MedkitInputError(source_folder, "the segmentation is empty: no DICOM-SEG written")
    # highdicom wants segment numbers 1..n without gaps: renumber the present labels.
    remap = np.zeros(max(segment_names) + 1, dtype=np.uint8)
    for n, lab in enumerate(present, start=1):
        remap[lab] = n
    algo = hd.AlgorithmIdentificationSequence(name=f"medkit {model_name}", version=__version__,
                                              family=codes.cid7162.ArtificialIntelligence)
    descs = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=f"Couinaud {segment_names[lab]}",
        segmented_property_category=codes.SCT.AnatomicalStructure, segmented_property_type=codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo)
        for n, lab in enumerate(present, start=1)]
    seg = hd.seg.Segmentation(
        source_images=src, pixel_array=remap[frames], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs, series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="medkit", manufacturer_model_name=model_name, software_versions=__version__,
        device_serial_number="none", series_description="Couinaud segments (medkit)", omit_empty_frames=True)
    if not copy_identity:
        for name in IDENTITY_ATTRIBUTES:
            if name in seg:
                setattr(seg, name, "")
        for name in IDENTITY_OPTIONAL:
            if name in seg:
                delattr(seg, name)
    with atomic_path(Path(out_path)) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return Path(out_path)
