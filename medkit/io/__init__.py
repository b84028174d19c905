"""Disk <-> tensors with geometry; report datasets; case discovery.

Ground floor of medkit: no ``nn.Module`` here, and heavy libraries (torch,
MONAI, SimpleITK, pydicom) are imported inside the functions that need them.
"""

from .atomic import atomic_path, write_json, write_jsonl, write_text
from .cases import Case, discover_cases
from .errors import (
    CorruptFileError,
    DeviceError,
    DimensionalityError,
    EmptyInputError,
    GantryTiltError,
    GeometryError,
    MedkitInputError,
    ModalityError,
    MultipleSeriesError,
    NoDicomError,
    NonImageError,
    OutputError,
    ReportDatasetError,
    SeriesNotFoundError,
    SliceSpacingError,
    UnsupportedTransferSyntaxError,
    VolumeError,
)
from .reports import ReportEntry, clean_report, load_report_dataset, split_sections
from .volume import load_volume, read_volume, save_volume

__all__ = [
    "Case",
    "CorruptFileError",
    "DeviceError",
    "DimensionalityError",
    "EmptyInputError",
    "GantryTiltError",
    "GeometryError",
    "MedkitInputError",
    "ModalityError",
    "MultipleSeriesError",
    "NoDicomError",
    "NonImageError",
    "OutputError",
    "ReportDatasetError",
    "ReportEntry",
    "SeriesNotFoundError",
    "SliceSpacingError",
    "UnsupportedTransferSyntaxError",
    "VolumeError",
    "atomic_path",
    "clean_report",
    "discover_cases",
    "load_report_dataset",
    "load_volume",
    "read_volume",
    "save_volume",
    "split_sections",
    "write_json",
    "write_jsonl",
    "write_text",
]
