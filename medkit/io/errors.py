"""Errors raised on bad input. Every message names the file and the problem.

All inherit :class:`MedkitInputError`, so callers (the CLI, fuzzers) can catch one
type; imaging problems are :class:`VolumeError` subclasses, report-file problems
:class:`ReportDatasetError`.
"""

from __future__ import annotations

from pathlib import Path


class MedkitInputError(ValueError):
    """Bad input: ``path`` is the offending file or folder, ``problem`` the reason."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{problem}")


class VolumeError(MedkitInputError):
    """An image file or folder that cannot become a correct volume."""


class EmptyInputError(VolumeError):
    """The path does not exist, or the folder/zip holds no files."""


class NoDicomError(VolumeError):
    """A folder with files, none of them DICOM."""


class MultipleSeriesError(VolumeError):
    """Several image series where one was expected and no ``series_uid`` was given.

    ``series`` lists ``(uid, description, modality, n_slices)``.
    """

    def __init__(self, path, problem, series: list[tuple[str, str, str, int]]):
        super().__init__(path, problem)
        self.series = series


class SeriesNotFoundError(VolumeError):
    """``series_uid`` names no image series in the input. ``series`` lists what is there,
    as :class:`MultipleSeriesError` does (``(uid, description, modality, n_slices)``)."""

    def __init__(self, path, problem, series: list[tuple[str, str, str, int]] | None = None):
        super().__init__(path, problem)
        self.series = series or []


class SliceSpacingError(VolumeError):
    """Missing slices, duplicated positions or non-uniform slice spacing."""


class GantryTiltError(VolumeError):
    """Slices are not stacked along the normal of their plane (tilted gantry)."""


class NonImageError(VolumeError):
    """A DICOM object that holds no image (SR, RTPLAN, RTSTRUCT, PR, ...)."""


class UnsupportedTransferSyntaxError(VolumeError):
    """Compressed pixel data that no installed decoder reads."""


class CorruptFileError(VolumeError):
    """Truncated or unparsable file, or pixel data whose size does not match its header."""


class DimensionalityError(VolumeError):
    """Wrong number of dimensions or channels (4D where 3D is expected, colour, zero-size)."""


class GeometryError(VolumeError):
    """A sheared, singular or otherwise unusable voxel-to-world affine."""


class ModalityError(VolumeError):
    """The modality is not the one asked for (MR where CT was expected)."""


class ReportDatasetError(MedkitInputError):
    """A malformed report annotation file or entry."""


class OutputError(MedkitInputError):
    """An output location that cannot be used: not writable, a file where a folder is
    needed, or existing outputs that would be replaced without ``--overwrite``."""


class DeviceError(MedkitInputError, RuntimeError):
    """A compute device that is not available (``--device cuda`` without CUDA). Also a
    ``RuntimeError``, which is what asking torch for a missing device raises."""
