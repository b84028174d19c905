"""Geometry of a DICOM series, checked from its headers alone (no pixel decoded): one
orientation, one matrix, slices stacked along the plane normal with uniform spacing, no
gantry tilt; the slices sorted along the normal and the LPS voxel->world affine built.
:func:`validate_series` is called by the readers in :mod:`medkit.io.dicom` (and re-exported
there); a failed check raises the :mod:`medkit.io.errors` class naming the file and the problem.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dicom_records import DicomInstance, DicomSeries
from .errors import (
    DimensionalityError,
    GantryTiltError,
    GeometryError,
    ModalityError,
    SliceSpacingError,
)

ORTHO_TOL = 1e-3  # |cos| between row and column direction, and tilt tolerance
SPACING_REL_TOL = 0.05  # relative deviation of a slice gap from the median gap


@dataclass
class SeriesGeometry:
    """Validated geometry: files in slice order and the LPS voxel->world affine."""

    files: list[Path]
    affine_lps: np.ndarray  # (4, 4)
    spacing: tuple[float, float, float]  # (X, Y, Z) mm


def validate_series(series: DicomSeries) -> SeriesGeometry:
    """Check a multi-file series from its headers and sort it along the slice normal."""
    insts = series.instances
    first = insts[0]
    where = first.path.parent
    if any(i.samples != 1 for i in insts):
        raise DimensionalityError(first.path, f"colour image (SamplesPerPixel={first.samples}); a grey-level volume is expected")
    colour = next((i for i in insts if i.photometric not in ("", "MONOCHROME1", "MONOCHROME2")), None)
    if colour is not None:
        # PALETTE COLOR stores lookup-table indices, not intensities.
        raise DimensionalityError(
            colour.path, f"colour image (PhotometricInterpretation {colour.photometric}); a grey-level volume is expected"
        )
    mods: dict[str, list[DicomInstance]] = defaultdict(list)
    for i in insts:
        mods[i.modality].append(i)
    if len(mods) > 1:
        main = max(mods, key=lambda m: len(mods[m]))
        odd = [i for m, group in mods.items() if m != main for i in group]
        raise ModalityError(odd[0].path, f"{odd[0].modality} file in a {main} series ({len(odd)} of {len(insts)} files "
                                         f"of series {series.uid} are not {main}: "
                                         + ", ".join(i.path.name for i in odd[:3]) + ")")
    if len(insts) == 1:
        return _single_file_geometry(first)
    if any(i.frames > 1 for i in insts):
        raise DimensionalityError(where, "series mixes several multi-frame files; load one file at a time")
    shapes = {(i.rows, i.cols) for i in insts}
    if len(shapes) > 1:
        raise DimensionalityError(where, f"slices of series {series.uid} have different matrix sizes: {sorted(shapes)}")
    missing = [i.path.name for i in insts if i.position is None or i.orientation is None]
    if missing:
        raise GeometryError(
            where, f"cannot order slices: ImagePositionPatient/ImageOrientationPatient missing in {missing[:3]}"
        )
    ori0 = first.orientation
    for i in insts:
        if not np.allclose(i.orientation, ori0, atol=1e-4):
            raise GeometryError(i.path, "slices of one series have different ImageOrientationPatient")
    row_dir, col_dir = _orientation_axes(first.path, ori0)
    normal = np.cross(row_dir, col_dir)
    spacings = {i.pixel_spacing for i in insts}
    if None in spacings:
        raise GeometryError(where, "PixelSpacing missing; cannot place voxels in millimetres")
    if len(spacings) > 1:
        raise GeometryError(where, f"slices have different PixelSpacing: {sorted(spacings)}")
    dy, dx = first.pixel_spacing  # DICOM order: (between rows, between columns)
    if dx <= 0 or dy <= 0:
        raise GeometryError(first.path, f"non-positive PixelSpacing {first.pixel_spacing}")

    dist = np.array([float(np.dot(i.position, normal)) for i in insts])
    order = np.argsort(dist, kind="stable")
    insts = [insts[k] for k in order]
    dist = dist[order]
    gaps = np.diff(dist)
    if np.any(gaps < 1e-3):
        k = int(np.argmin(gaps))
        raise SliceSpacingError(
            where,
            f"two slices at the same position ({dist[k]:.2f} mm along the normal: "
            f"{insts[k].path.name}, {insts[k + 1].path.name}); several acquisitions or echoes in one series?",
        )
    # Tilt: the step between slice origins must be along the plane normal.
    step = insts[-1].position - insts[0].position
    cos = abs(float(np.dot(step, normal))) / (np.linalg.norm(step) + 1e-12)
    if 1 - cos > ORTHO_TOL:
        angle = float(np.degrees(np.arccos(min(1.0, cos))))
        raise GantryTiltError(
            where, f"slices are stacked {angle:.1f} deg off their plane normal (gantry tilt); resample before use"
        )
    dz = float(np.median(gaps))
    bad = np.abs(gaps - dz) > SPACING_REL_TOL * dz
    if np.any(bad):
        raise SliceSpacingError(where, _spacing_problem(gaps, bad, dz, insts))
    aff = np.eye(4)
    aff[:3, 0] = row_dir * dx
    aff[:3, 1] = col_dir * dy
    aff[:3, 2] = normal * dz
    aff[:3, 3] = insts[0].position
    return SeriesGeometry([i.path for i in insts], aff, (dx, dy, dz))


def _spacing_problem(gaps: np.ndarray, bad: np.ndarray, dz: float, insts: list[DicomInstance]) -> str:
    """The diagnosis of irregular slice gaps. Missing slices leave a few gaps that are whole
    multiples of the spacing; anything else (two stacks interleaved, a variable-spacing
    reconstruction, slices from two acquisitions) is reported as non-uniform spacing with
    the range of gaps, never as "missing" slices."""
    k = int(np.flatnonzero(bad)[0])
    a, b = insts[k].path.name, insts[k + 1].path.name
    multiples = [int(round(g / dz)) for g in gaps[bad]]
    whole = all(m >= 2 and abs(g - m * dz) < 0.1 * dz for g, m in zip(gaps[bad], multiples))
    n_bad, n = int(bad.sum()), len(gaps)
    if whole and n_bad <= max(2, n // 10):
        n_missing = sum(m - 1 for m in multiples)
        return (f"{n_missing} missing slice(s): gap of {gaps[k]:.2f} mm between {a} and {b} (slice spacing "
                f"{dz:.2f} mm; {n_bad} gap(s) of {n} are whole multiples of it)")
    return (f"non-uniform slice spacing: gaps between {gaps.min():.2f} and {gaps.max():.2f} mm; {n_bad} of {n} "
            f"gaps differ from the median {dz:.2f} mm by more than {SPACING_REL_TOL:.0%} (first between {a} and "
            f"{b}); two interleaved stacks or acquisitions in one series, or a variable-spacing reconstruction? "
            "Resample onto a uniform grid first")


def _orientation_axes(path: Path, ori: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    row_dir, col_dir = ori[:3], ori[3:]
    nr, nc = np.linalg.norm(row_dir), np.linalg.norm(col_dir)
    if nr < 1e-6 or nc < 1e-6:
        raise GeometryError(path, f"degenerate ImageOrientationPatient {ori.tolist()}")
    row_dir, col_dir = row_dir / nr, col_dir / nc
    if abs(float(np.dot(row_dir, col_dir))) > ORTHO_TOL:
        raise GeometryError(path, f"ImageOrientationPatient row and column directions are not orthogonal (sheared): {ori.tolist()}")
    return row_dir, col_dir


def _single_file_geometry(inst: DicomInstance) -> SeriesGeometry:
    """One file: a single slice, or a multi-frame object (geometry from SimpleITK then)."""
    if inst.orientation is not None:
        row_dir, col_dir = _orientation_axes(inst.path, inst.orientation)
    else:
        row_dir, col_dir = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    dy, dx = inst.pixel_spacing if inst.pixel_spacing else (1.0, 1.0)
    if dx <= 0 or dy <= 0:
        raise GeometryError(inst.path, f"non-positive PixelSpacing {inst.pixel_spacing}; cannot place voxels in millimetres")
    dz = inst.slice_thickness if inst.slice_thickness and inst.slice_thickness > 0 else 1.0
    aff = np.eye(4)
    aff[:3, 0] = row_dir * dx
    aff[:3, 1] = col_dir * dy
    aff[:3, 2] = np.cross(row_dir, col_dir) * dz
    aff[:3, 3] = inst.position if inst.position is not None else 0.0
    return SeriesGeometry([inst.path], aff, (dx, dy, dz))
