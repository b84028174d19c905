"""DICOM series discovery, validation and reading.

Headers are scanned with pydicom (large values deferred, so a 500-slice series
scans in about a second); each series is validated from its headers alone
(one orientation, one matrix, slices stacked along the plane normal, uniform
spacing, pixel data as long as the header promises) before any pixel is decoded.
Pixels are then read with SimpleITK/GDCM, which decodes the compressed transfer
syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE) and applies each slice's rescale
slope/intercept (so CT comes out in HU).

Geometry is built from the headers, in DICOM's LPS patient frame, then turned
into RAS (negate x and y) for the :class:`~monai.data.MetaTensor` affine. Array
axes are ``(X, Y, Z)`` = (column index, row index, slice index sorted by
position along the slice normal).

PHI: nothing that identifies a patient (name, ID, birth date, accession, institution)
is copied out of the headers; :data:`SAFE_META_TAGS` is the whitelist.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from .dicom_geometry import SeriesGeometry, validate_series  # noqa: F401  (validate_series: re-exported for the readers)
from .dicom_records import NON_IMAGE_SOP, DicomInstance, DicomSeries  # noqa: F401  (part of this module's API)
from .errors import (
    CorruptFileError,
    DimensionalityError,
    EmptyInputError,
    MultipleSeriesError,
    NoDicomError,
    NonImageError,
    SeriesNotFoundError,
    UnsupportedTransferSyntaxError,
    VolumeError,
)

# Transfer syntaxes GDCM (inside SimpleITK) decodes. Anything else compressed
# (HTJ2K, JPEG XL, MPEG/HEVC video) is refused up front with its name.
UNCOMPRESSED_TS = {
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
}
GDCM_COMPRESSED_TS = {
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE Lossless",
}

# Image storage SOP classes, whose Pixel Data is mandatory (PS3.3 Image Pixel module, type 1).
IMAGE_SOP = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX Image Storage",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.20": "NM Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
}

# Header fields that are safe to carry into outputs (no PHI).
SAFE_META_TAGS = (
    "Modality",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "SeriesDescription",
    "Manufacturer",
    "ConvolutionKernel",
    "KVP",
    "ContrastBolusAgent",
    "BodyPartExamined",
    "SliceThickness",
)



def _is_dicom_file(path: Path) -> bool:
    """Cheap sniff: Part-10 files carry 'DICM' at byte 128."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def single_file_series(path: Path, series_uid: str | None = None) -> DicomSeries:
    """A one-file DICOM input as a series: its header read, the asked ``series_uid`` and an image
    object checked (the shared start of reading one file's header or its pixels)."""
    inst = read_header(path)
    if series_uid is not None and inst.series_uid != series_uid:
        raise SeriesNotFoundError(path, f"series UID {series_uid} not found: this file belongs to series "
                                        f"{inst.series_uid}")
    if not inst.is_image:
        kind = NON_IMAGE_SOP.get(inst.sop_class, "an object without pixel data")
        raise NonImageError(path, f"not an image: {kind} (SOP class {inst.sop_class})")
    return DicomSeries(inst.series_uid, [inst])


def read_header(path: Path) -> DicomInstance:
    """Parse one file's header; raise :class:`CorruptFileError` when it cannot be trusted."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # defer_size keeps PixelData on disk; its length and offset are still known.
        # force only for preamble-less files that scan_folder/load_volume sniffed as raw
        # DICOM (old RT exports, ACR-NEMA style); Part-10 files are read strictly.
        ds = pydicom.dcmread(path, defer_size=1024, force=not _is_dicom_file(path))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError,
            IndexError, OverflowError, NotImplementedError) as e:
        raise CorruptFileError(path, f"unreadable DICOM header ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - pydicom also raises struct.error (a file cut inside an
        # element header), zlib.error (bad deflated data) and others on damaged files
        raise CorruptFileError(path, f"unreadable DICOM header ({type(e).__name__}: {e})") from None
    try:
        _check_complete(path, ds)
        return _instance_from_dataset(path, ds)
    except VolumeError:
        raise
    except Exception as e:  # noqa: BLE001 - any malformed value is a corrupt header
        raise CorruptFileError(path, f"malformed DICOM header ({type(e).__name__}: {e})") from None


def _check_complete(path: Path, ds) -> None:
    """Refuse a file cut short. pydicom stops quietly at end of file, so a copy cut
    inside an element (or inside the next tag header) parses as a shorter,
    valid-looking dataset, typically one without PixelData."""
    if len(ds) == 0:
        return
    last = ds.get_item(max(ds.keys()))  # top-level elements are stored in tag order
    tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if tell is None or length in (None, 0xFFFFFFFF):
        return
    size = path.stat().st_size
    end = tell + length
    if end > size or 0 < size - end < 8:  # value cut, or a partial tag header left over
        raise CorruptFileError(
            path, f"truncated file: ends at byte {size} inside element {last.tag} (ends at byte {end})"
        )


def _instance_from_dataset(path: Path, ds) -> DicomInstance:
    if len(ds) == 0:
        # pydicom stops quietly at a broken first element (e.g. a file cut inside the
        # dataset) and returns only the file meta: that is a corrupt file, not an
        # object "without pixel data".
        raise CorruptFileError(path, "no data elements could be parsed after the header (truncated or corrupt file)")
    fm = getattr(ds, "file_meta", None)
    ts = str(getattr(fm, "TransferSyntaxUID", "") or "")
    sop = str(ds.get("SOPClassUID", "") or getattr(fm, "MediaStorageSOPClassUID", "") or "")
    rows = int(ds.get("Rows", 0) or 0)
    cols = int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames < 1:  # an empty value means 1 frame; a negative count is a broken header
        raise CorruptFileError(path, f"NumberOfFrames is {frames}: a frame count must be at least 1")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    has_pixels = "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds

    if has_pixels and rows > 0 and cols > 0 and sop not in NON_IMAGE_SOP:
        _check_pixel_length(path, ds, ts, rows, cols, frames, samples)
    elif sop in IMAGE_SOP and not has_pixels:
        # Pixel Data is mandatory (type 1) in these; a copy cut exactly between two header
        # elements parses as a clean, shorter dataset, so this is the only sign of truncation.
        raise CorruptFileError(
            path, f"{IMAGE_SOP[sop]} object without pixel data: truncated or incomplete copy"
        )
    elif sop not in NON_IMAGE_SOP:
        rows = cols = 0  # header-only object: not an image

    pos = _floats(ds.get("ImagePositionPatient"), 3)
    ori = _floats(ds.get("ImageOrientationPatient"), 6)
    ps = _floats(ds.get("PixelSpacing"), 2)
    safe = {k: _plain(ds.get(k)) for k in SAFE_META_TAGS if k in ds}
    inst = ds.get("InstanceNumber")
    series_number = _float_or_none(ds.get("SeriesNumber"))
    return DicomInstance(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID", "") or "(no SeriesInstanceUID)"),
        sop_class=sop,
        modality=str(ds.get("Modality", "") or "OT"),
        description=str(ds.get("SeriesDescription", "") or ""),
        transfer_syntax=ts,
        rows=rows,
        cols=cols,
        frames=frames,
        samples=samples,
        photometric=str(ds.get("PhotometricInterpretation", "") or "").strip().upper(),
        position=pos,
        orientation=ori,
        pixel_spacing=(float(ps[0]), float(ps[1])) if ps is not None else None,
        slice_thickness=_float_or_none(ds.get("SliceThickness")),
        acquisition_time=str(ds.get("AcquisitionTime", "") or "") or None,
        instance_number=int(inst) if inst not in (None, "") else None,
        safe=safe,
        series_number=int(series_number) if series_number is not None and series_number.is_integer() else None,
    )


def _check_pixel_length(path, ds, ts, rows, cols, frames, samples) -> None:
    """Uncompressed pixel data must hold rows*cols*frames*samples*bytes; a shorter
    element or a file that ends before it is a truncated copy."""
    elem = ds.get_item("PixelData")
    if elem is None:
        return
    length = getattr(elem, "length", None)
    if length is None and isinstance(getattr(elem, "value", None), (bytes, bytearray)):
        # pydicom hands small or already-converted elements back as DataElement (no .length).
        length = len(elem.value)
    value_tell = getattr(elem, "value_tell", None)
    size = path.stat().st_size
    if value_tell is not None and length not in (None, 0xFFFFFFFF) and value_tell + length > size:
        raise CorruptFileError(
            path, f"truncated file: pixel data needs {value_tell + length} bytes, file has {size}"
        )
    if ts in UNCOMPRESSED_TS and ts != "1.2.840.10008.1.2.1.99" and length not in (None, 0xFFFFFFFF):
        bits = int(ds.get("BitsAllocated", 16) or 16)
        expected = rows * cols * frames * samples * bits // 8
        if length < expected:
            raise CorruptFileError(
                path,
                f"pixel data is {length} bytes but Rows x Columns x Frames x Samples x "
                f"BitsAllocated ({rows}x{cols}x{frames}x{samples}x{bits}) needs {expected}",
            )


def _floats(value, n: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        return None
    return arr


def _float_or_none(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _plain(v):
    if v is None:
        return None
    if isinstance(v, (int, float, str)):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def scan_folder(folder: Path) -> tuple[dict[str, DicomSeries], int]:
    """Scan every file under ``folder``; return image series by UID and the count of
    non-DICOM files skipped. Files with the DICM magic that fail to parse raise
    (a half-copied folder must fail loudly, not load with slices missing)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise EmptyInputError(folder, "folder is empty")
    by_uid: dict[str, list[DicomInstance]] = defaultdict(list)
    non_dicom = 0
    non_image: list[DicomInstance] = []
    for f in files:
        _check_readable(f)
        if not _is_dicom_file(f):
            if f.suffix.lower() in (".dcm", ".ima") and not _looks_like_raw_dicom(f):
                # An empty or cut-short copy of a slice (no 'DICM' marker left) would otherwise be
                # skipped as "not DICOM", and a lost first or last slice goes unnoticed.
                raise CorruptFileError(f, f"named like a DICOM file but holds no DICOM data "
                                          f"({f.stat().st_size} bytes): empty or truncated copy?")
            # Raw (preamble-less) DICOM is rare enough; try it only for extension-less or .dcm files.
            if f.suffix.lower() not in ("", ".dcm", ".ima") or not _looks_like_raw_dicom(f):
                non_dicom += 1
                continue
        inst = read_header(f)
        if inst.is_image:
            by_uid[inst.series_uid].append(inst)
        else:
            non_image.append(inst)
    if not by_uid:
        if non_image:
            kinds = sorted({NON_IMAGE_SOP.get(i.sop_class, f"no pixel data (SOP {i.sop_class})") for i in non_image})
            raise NonImageError(
                folder, f"no image series: {len(non_image)} DICOM object(s) hold no image ({', '.join(kinds)})"
            )
        raise NoDicomError(folder, f"none of the {len(files)} file(s) is DICOM")
    return {uid: DicomSeries(uid, insts) for uid, insts in by_uid.items()}, non_dicom


def _check_readable(path: Path) -> None:
    """An unreadable file (permissions, a broken network share) is named as such, not taken
    for a file "without DICOM data"."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise CorruptFileError(path, f"cannot read the file ({e.strerror or type(e).__name__})") from None


def _looks_like_raw_dicom(path: Path) -> bool:
    """Preamble-less DICOM starts with a group-0002 or group-0008 element (little or big endian)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:2] in (b"\x08\x00", b"\x02\x00", b"\x00\x08")


def choose_series(folder: Path, series: dict[str, DicomSeries], series_uid: str | None,
                  modality: str | None = None) -> DicomSeries:
    """Pick ``series_uid``, or the only series; several without a choice is an error.

    Raises:
        SeriesNotFoundError: ``series_uid`` names none of the series (all are listed, UIDs whole).
        MultipleSeriesError: several series and no choice; when ``modality`` is given and one
            series has it, the message names the files of the others (a stray MR slice in a CT
            folder is then found at once).
    """
    if series_uid is not None:
        if series_uid not in series:
            raise SeriesNotFoundError(
                folder, f"series UID {series_uid} not found; the folder holds: " + _series_list(series, folder),
                _rows(series))
        return series[series_uid]
    if len(series) > 1:
        want = [s for s in series.values() if modality and s.modality.upper() == modality.upper()]
        if len(want) == 1:
            others = [s for s in series.values() if s is not want[0]]
            raise MultipleSeriesError(
                folder, f"besides the {want[0].modality} series {want[0].uid} ({len(want[0])} slices) the folder "
                f"holds {len(others)} other series: " + _series_list({s.uid: s for s in others}, folder)
                + f"; remove them or pass --series-uid {want[0].uid}", _rows(series))
        raise MultipleSeriesError(
            folder,
            f"{len(series)} image series found; pass series_uid= (CLI: --series-uid) to choose one: "
            + _series_list(series, folder),
            _rows(series),
        )
    return next(iter(series.values()))


def _rows(series: dict[str, DicomSeries]) -> list[tuple[str, str, str, int]]:
    """``(uid, description, modality, n_slices)`` per series, for callers that let a user choose
    (descriptions stay in memory; messages and ``medkit inspect`` do not print them)."""
    return [(s.uid, s.description, s.modality, len(s)) for s in series.values()]


def _where(s: DicomSeries, folder: Path | None) -> str:
    """The file of a one-file series, or the folder of a series, relative to ``folder``."""
    paths = [i.path for i in s.instances]
    target = paths[0] if len(paths) == 1 else Path(*_common(paths))
    if folder is not None:
        try:
            return str(target.relative_to(folder)) or "."
        except ValueError:
            pass
    return str(target)


def _common(paths: list[Path]) -> tuple[str, ...]:
    parts = list(paths[0].parent.parts)
    for p in paths[1:]:
        q = p.parent.parts
        n = 0
        while n < min(len(parts), len(q)) and parts[n] == q[n]:
            n += 1
        parts = parts[:n]
    return tuple(parts) or ("/",)


def _series_list(series: dict[str, DicomSeries], folder: Path | None = None) -> str:
    """UID (whole), modality, SeriesNumber, slices and where, per series. No SeriesDescription:
    it is free text that some sites type patient names into (docs/privacy.md)."""
    def one(s: DicomSeries) -> str:
        num = s.instances[0].series_number
        n = len(s)
        return (f"{s.uid} ({s.modality}{f', series {num}' if num is not None else ''}, {n} slice{'s' if n != 1 else ''}"
                f", in {_where(s, folder)})")

    return "; ".join(one(s) for s in series.values())


def check_transfer_syntax(inst: DicomInstance) -> None:
    ts = inst.transfer_syntax
    if ts and ts not in UNCOMPRESSED_TS and ts not in GDCM_COMPRESSED_TS:
        try:
            from pydicom.uid import UID

            name = UID(ts).name
        except Exception:  # noqa: BLE001
            name = ts
        raise UnsupportedTransferSyntaxError(
            inst.path, f"compressed pixel data in transfer syntax {name} ({ts}); no installed decoder reads it"
        )


def read_pixels(geom: SeriesGeometry, inst0: DicomInstance):
    """Decode pixels with SimpleITK/GDCM (rescale applied).

    Returns:
        ``(array, image)``: float32 ``(X, Y, Z)`` and the SimpleITK image (for its
        own geometry, used for multi-frame objects).
    """
    import SimpleITK as sitk

    try:
        if len(geom.files) == 1:
            img = sitk.ReadImage(str(geom.files[0]), sitk.sitkFloat32)
        else:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames([str(f) for f in geom.files])
            reader.SetOutputPixelType(sitk.sitkFloat32)
            img = reader.Execute()
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        if inst0.transfer_syntax in GDCM_COMPRESSED_TS:
            raise UnsupportedTransferSyntaxError(
                inst0.path, f"could not decode {GDCM_COMPRESSED_TS[inst0.transfer_syntax]} pixel data ({msg})"
            ) from None
        raise CorruptFileError(inst0.path, f"pixel data could not be read ({msg})") from None
    arr = sitk.GetArrayFromImage(img)  # (Z, Y, X)
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DimensionalityError(inst0.path, "colour/vector pixels; a grey-level volume is expected")
    if arr.ndim == 2:
        arr = arr[None]
    return np.ascontiguousarray(np.transpose(arr, (2, 1, 0))).astype(np.float32, copy=False), img


def sitk_affine_lps(img) -> np.ndarray:
    """Voxel (i, j, k) -> LPS mm affine of a SimpleITK image."""
    d = np.asarray(img.GetDirection(), dtype=np.float64).reshape(img.GetDimension(), img.GetDimension())
    sp = np.asarray(img.GetSpacing(), dtype=np.float64)
    org = np.asarray(img.GetOrigin(), dtype=np.float64)
    dim = img.GetDimension()
    aff = np.eye(4)
    aff[:dim, :dim] = d * sp[None, :]
    aff[:dim, 3] = org
    return aff
