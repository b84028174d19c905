"""Couinaud labels as a DICOM Segmentation object (highdicom) that references its source series.

The SEG has one frame per source slice that holds any segment, in the source
images' own pixel grid: for every source file we map its pixel centres
(ImagePositionPatient + row/column directions, LPS mm) into the RAS voxel grid the
labels live on and gather the label there. This works for any slice order,
orientation or flip the series came with, and fails loudly if the grids disagree.

Privacy: the SEG must reference the source Study/Series/SOP Instance UIDs (that is
how viewers overlay it). highdicom copies much more from the source images it is given
(patient age, size, weight, birth time, comments, history, occupation, the source
equipment), so it is given copies of the source headers that hold only a whitelist
(:data:`SOURCE_KEEP`: UIDs, geometry, pixel format) plus the patient and study
identifiers the standard makes type 2 (present, may be empty): those are written empty
by default, so the SEG carries no patient identity beyond the UIDs. ``copy_identity=True``
copies exactly :data:`COPIED_WITH_IDENTITY` (needed by some PACS that match a SEG to its
patient by ID); nothing else of the source header ever reaches the SEG
(tests/segmentation/test_dicom_seg.py plants a marker in every identifying attribute).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import MedkitInputError, VolumeError
from ..io.atomic import atomic_path

#: Type-2 patient/study attributes (present in a SEG, may be empty): blank by default.
IDENTITY_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
                       "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")
#: Type-3 free text of the source study, only with ``copy_identity``.
IDENTITY_OPTIONAL = ("StudyDescription",)
#: Exactly what ``copy_identity=True`` adds to the SEG (tests/segmentation/test_dicom_seg.py checks
#: that no other source attribute value reaches it, and that these do); the --copy-identity help lists it.
COPIED_WITH_IDENTITY = IDENTITY_ATTRIBUTES + IDENTITY_OPTIONAL
#: What the SEG needs of each source header: UIDs, geometry and pixel format.
SOURCE_KEEP = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
               "Modality", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
               "SpacingBetweenSlices", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
               "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "InstanceNumber", "SeriesNumber",
               "PositionReferenceIndicator", "NumberOfFrames", "SpecificCharacterSet")


def source_datasets(folder: Path, series_uid: str | None, *, copy_identity: bool = False):
    """Whitelisted copies of the source series' headers (pydicom datasets, no pixel data) in file
    order: :data:`SOURCE_KEEP`, and :data:`COPIED_WITH_IDENTITY` (empty unless ``copy_identity``)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset

    from ..io.dicom import choose_series, scan_folder, validate_series

    series, _ = scan_folder(Path(folder))
    chosen = choose_series(Path(folder), series, series_uid)
    geom = validate_series(chosen)
    out = []
    for p in geom.files:
        src = pydicom.dcmread(p, stop_before_pixels=True)
        ds = Dataset()
        ds.file_meta = FileMetaDataset(src.file_meta) if hasattr(src, "file_meta") else FileMetaDataset()
        for name in SOURCE_KEEP:
            if name in src:
                setattr(ds, name, src.data_element(name).value)
        for name in IDENTITY_ATTRIBUTES:  # type 2: present, empty unless copied
            setattr(ds, name, src.get(name, "") if copy_identity else "")
        if copy_identity:
            for name in IDENTITY_OPTIONAL:
                if name in src:
                    setattr(ds, name, src.data_element(name).value)
        ds.filename = str(p)
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

    src = source_datasets(source_folder, series_uid, copy_identity=copy_identity)
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
    with atomic_path(Path(out_path)) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return Path(out_path)
