"""Read an image sequence (4D CT phases or longitudinal scans) onto one grid.

Inputs ``medkit deform`` accepts:

- one 4D NIfTI (frames along the 4th axis; times = index x pixdim[4], or the index);
- a folder of 3D NIfTI volumes, sorted by name (the ``medkit synth 4dct`` layout
  ``phase_00.nii.gz ...``), with times from ``times.json`` when present;
- a folder of DICOM series, one per time point (4D-Lung: one series per phase),
  ordered and timed by TemporalPositionIndex, else a phase percentage in the
  series description ("Gated, 20.0%"), else AcquisitionTime.

and DIR-Lab 4D CT raw cases (:func:`read_dirlab_case`). Every frame must share
the reference's grid (shape and affine): ST-NeRP's warps are defined on it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import MedkitInputError, load_volume

SINGLE_3D = "one 3D volume: ST-NeRP needs a sequence of at least 2 time points"


@dataclass
class LoadedSequence:
    """``frames``: list of ``MetaTensor`` ``(1, X, Y, Z)`` HU; ``times`` in ``unit``."""

    frames: list
    times: list[float]
    unit: str
    names: list[str]
    landmarks: dict | None = None  # {frame index: (K, 3) voxel indices, 0-based}
    # One breathing cycle in ``unit`` when the series is one cycle (phase-sorted 4D CT: ``times.json``
    # "period", or 100 for phases in %); None for longitudinal series. Selects periodic time in the fit.
    period: float | None = None


def _nii(p: Path) -> bool:
    return p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith(".")


def read_sequence(path: str | Path) -> LoadedSequence:
    """Read a 4D NIfTI, a folder of NIfTI frames or a folder of DICOM series (see module doc).

    Raises:
        MedkitInputError: naming the file: a single 3D volume, frames on different grids,
            or nothing readable.
    """
    path = Path(path)
    if not path.exists():
        raise MedkitInputError(path, "no such file or folder")
    if path.is_file():
        if _nii(path):
            return _read_nifti_4d(path)
        raise MedkitInputError(path, f"{SINGLE_3D} (a single file that is not a 4D NIfTI)")
    niftis = sorted(p for p in path.iterdir() if _nii(p) and not p.name.startswith(("labels", "ddf", "fwd")))
    if niftis:
        frames = [p for p in niftis if p.name.startswith("phase_")] or niftis
        if len(frames) < 2:
            raise MedkitInputError(frames[0], SINGLE_3D)
        return _read_nifti_folder(path, frames)
    return read_dicom_sequence(path)


def _read_nifti_4d(path: Path) -> LoadedSequence:
    """A 4D NIfTI, through :func:`medkit.io.nifti4d.read_nifti_4d` (the 3D reader's checks too)."""
    from monai.data import MetaTensor

    from ..io.nifti4d import nifti_shape, read_nifti_4d

    shape = nifti_shape(path)
    if len(shape) == 3 or (len(shape) == 4 and shape[3] == 1):
        raise MedkitInputError(path, SINGLE_3D)
    seq = read_nifti_4d(path)
    frames = [MetaTensor(seq.array[None, ..., k], affine=seq.affine, meta={"filename_or_obj": str(path)})
              for k in range(seq.array.shape[3])]
    return LoadedSequence(frames, seq.times, seq.unit, [f"frame_{k:02d}" for k in range(len(frames))])


def _same_grid(ref, vol, where: Path) -> None:
    if tuple(vol.shape) != tuple(ref.shape) or not np.allclose(np.asarray(vol.affine), np.asarray(ref.affine), atol=1e-3):
        raise MedkitInputError(where, f"grid {tuple(vol.shape[1:])} differs from the first frame's "
                               f"{tuple(ref.shape[1:])} (or its affine): resample the sequence onto one grid first")


def _read_nifti_folder(folder: Path, files: list[Path]) -> LoadedSequence:
    frames = [load_volume(p) for p in files]
    for p, v in zip(files[1:], frames[1:]):
        _same_grid(frames[0], v, p)
    times, unit, period = [float(k) for k in range(len(files))], "index", None
    tj = folder / "times.json"
    if tj.exists():
        info = json.loads(tj.read_text())
        if len(info.get("times", [])) != len(files):
            raise MedkitInputError(tj, f"{len(info.get('times', []))} times for {len(files)} frames")
        times, unit = [float(t) for t in info["times"]], str(info.get("unit", "s"))
        if info.get("period") is not None:
            period = float(info["period"])
            if not period > max(times) - min(times):
                raise MedkitInputError(tj, f"period {period} must exceed the span of the times "
                                       f"({max(times) - min(times):g}): one breathing cycle holds every frame")
        elif unit == "%":
            period = 100.0
    names = [p.name.split(".")[0] for p in files]
    return LoadedSequence(frames, times, unit, names, period=period)


def _series_time(series) -> tuple[float | None, float | None, float | None]:
    """(TemporalPositionIndex, phase % from the description, AcquisitionTime in s) of a series."""
    import pydicom

    ds = pydicom.dcmread(str(series.instances[0].path), stop_before_pixels=True)
    tpi = ds.get("TemporalPositionIndex")
    m = re.search(r"(\d+(?:\.\d+)?)\s*%", series.description or "")
    acq = series.instances[0].acquisition_time
    acq_s = None
    if acq:
        hh, mm, ss = acq[:2], acq[2:4], acq[4:] or "0"
        try:
            acq_s = int(hh) * 3600 + int(mm) * 60 + float(ss)
        except ValueError:
            acq_s = None
    return (float(tpi) if tpi not in (None, "") else None, float(m.group(1)) if m else None, acq_s)


def read_dicom_sequence(folder: Path) -> LoadedSequence:
    """One DICOM series per time point under ``folder`` (4D-Lung / scanner 4D CT exports)."""
    from ..io.dicom import scan_folder

    series, _ = scan_folder(folder)
    if len(series) < 2:
        raise MedkitInputError(folder, f"{SINGLE_3D} (one DICOM series found)")
    keyed = [(_series_time(s), uid, s) for uid, s in series.items()]
    slot = next((i for i in range(3) if all(k[0][i] is not None for k in keyed)), None)
    if slot is None:
        raise MedkitInputError(folder, "cannot order the series in time: no TemporalPositionIndex, "
                               "phase % in SeriesDescription or AcquisitionTime on every series")
    unit = ("index", "%", "s")[slot]
    keyed.sort(key=lambda k: k[0][slot])
    t0 = keyed[0][0][slot] if unit == "s" else 0.0
    frames = [load_volume(folder, series_uid=uid) for _, uid, _ in keyed]
    for (_, uid, _), v in zip(keyed[1:], frames[1:]):
        _same_grid(frames[0], v, folder / uid)
    times = [k[0][slot] - t0 for k in keyed]
    # Phases in % of the cycle (4D-Lung "Gated, 40.0%"): one breathing cycle is 100 %.
    return LoadedSequence(frames, times, unit, [s.description or uid for _, uid, s in keyed],
                          period=100.0 if unit == "%" else None)


# ----------------------------------------------------------------------------- DIR-Lab
# Published DIR-Lab 4D CT table (Castillo et al., Phys Med Biol 2009, dir-lab.com):
# in-plane dimensions, slices, and voxel size (mm). Verify against the site when using it.
DIRLAB_CASES: dict[int, tuple[tuple[int, int, int], tuple[float, float, float]]] = {
    1: ((256, 256, 94), (0.97, 0.97, 2.5)),
    2: ((256, 256, 112), (1.16, 1.16, 2.5)),
    3: ((256, 256, 104), (1.15, 1.15, 2.5)),
    4: ((256, 256, 99), (1.13, 1.13, 2.5)),
    5: ((256, 256, 106), (1.10, 1.10, 2.5)),
    6: ((512, 512, 128), (0.97, 0.97, 2.5)),
    7: ((512, 512, 136), (0.97, 0.97, 2.5)),
    8: ((512, 512, 128), (0.97, 0.97, 2.5)),
    9: ((512, 512, 128), (0.97, 0.97, 2.5)),
    10: ((512, 512, 120), (0.97, 0.97, 2.5)),
}


def read_dirlab_raw(path: Path, shape: tuple[int, int, int], hu_offset: float = -1024.0) -> np.ndarray:
    """One DIR-Lab ``.img``: headerless int16 little-endian, x fastest, then y, then slices.
    Returns ``(X, Y, Z)`` float32 HU (stored value + ``hu_offset``; DIR-Lab stores HU + 1024)."""
    raw = np.fromfile(path, dtype="<i2")
    if raw.size != int(np.prod(shape)):
        raise MedkitInputError(path, f"{raw.size} int16 values, expected {int(np.prod(shape))} for shape {shape}")
    return raw.reshape(shape[::-1]).transpose(2, 1, 0).astype(np.float32) + hu_offset


def read_landmarks_txt(path: Path) -> np.ndarray:
    """DIR-Lab landmark file: one ``x y z`` per line, 1-based voxel indices -> ``(K, 3)`` 0-based."""
    rows = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    try:
        pts = np.array(rows, dtype=np.float64)
    except ValueError:
        raise MedkitInputError(path, "landmark lines must hold three numbers (x y z, 1-based voxel indices)") from None
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise MedkitInputError(path, f"expected 3 columns, got shape {pts.shape}")
    return pts - 1.0


_PACK = re.compile(r"^case(\d+)pack$", re.IGNORECASE)


def _dirlab_root(folder: Path, case: int) -> Path:
    """The folder holding case ``case``'s files: ``folder`` itself, or its ``Case{case}Pack``
    (any case) when ``folder`` holds several packs. Refuses a folder of packs without that case."""
    if not folder.is_dir():
        raise MedkitInputError(folder, "no such folder (a DIR-Lab case pack, or a folder of Case{n}Pack folders)")
    packs = {int(m.group(1)): p for p in folder.iterdir() if p.is_dir() and (m := _PACK.match(p.name))}
    if case in packs:
        return packs[case]
    if packs:
        raise MedkitInputError(folder, f"no Case{case}Pack here; this folder holds the packs of case(s) "
                               f"{', '.join(str(k) for k in sorted(packs))}")
    return folder


def _walk(root: Path) -> list[Path]:
    """Every file under ``root``, following linked folders (a pack linked into a folder of packs)."""
    import os

    return [Path(d) / f for d, _, fs in os.walk(root, followlinks=True) for f in fs]


def _dirlab_file(root: Path, case: int, pattern: str, what: str) -> Path | None:
    """The one file under ``root`` whose name matches ``pattern`` for ``case``. The case number
    is part of the name (``case8_T00.img``, ``case6_dirLab300_T00_xyz.txt``), so a stray file of
    another case (cases 6, 8 and 9 share a grid) is never picked up; two candidates are refused."""
    rx = re.compile(pattern.format(case=case), re.IGNORECASE)
    hits = sorted(p for p in _walk(root) if rx.match(p.name))
    if len(hits) > 1:
        raise MedkitInputError(root, f"{len(hits)} files could be the {what} of DIR-Lab case {case}: "
                               + ", ".join(str(h.relative_to(root)) for h in hits[:4]))
    return hits[0] if hits else None


def _cases_present(root: Path) -> list[int]:
    rx = re.compile(r"^case(\d+)_", re.IGNORECASE)
    return sorted({int(m.group(1)) for p in _walk(root) if (m := rx.match(p.name))})


def read_dirlab_landmarks(folder: str | Path, case: int, phases: tuple[int, ...] = (0, 50)) -> dict[int, np.ndarray]:
    """DIR-Lab 300-landmark files of ``case`` for ``phases`` (%): ``{phase: (300, 3)}`` 0-based voxels.

    Both distributed formats: cases 1-5 ``ExtremePhases/Case{n}_300_T{ph}_xyz.txt``, cases 6-10
    ``extremePhases/case{n}_dirLab300_T{ph}_xyz.txt``. ``folder`` is a pack or a folder of packs.
    A phase without a file is left out."""
    folder = Path(folder)
    root = _dirlab_root(folder, case)
    out = {}
    for ph in phases:
        hit = _dirlab_file(root, case, rf"^case{{case}}_(dirlab)?300_T{ph:02d}_xyz\.txt$", f"T{ph:02d} landmarks")
        if hit is not None:
            out[ph] = read_landmarks_txt(hit)
    return out


def read_dirlab_case(folder: str | Path, case: int, phases: list[int] | None = None,
                     hu_offset: float = -1024.0) -> LoadedSequence:
    """A DIR-Lab 4D CT case laid out as published (``Case{n}Pack/``): ``Images/case{n}_T{00..90}*.img``
    and ``{E,e}xtremePhases/`` landmark files (:func:`read_dirlab_landmarks`).

    ``folder`` is one case pack, or a folder holding several packs (as the data card says to
    unpack them): the requested case's pack is used, and a folder of packs without it is refused
    with the cases it does hold. File names must carry the case number (DIR-Lab's do), so case
    8 never reads case 6's files although the two share a grid.

    DIR-Lab files carry no orientation: the affine is ``diag(spacing)`` at the origin
    in the raw index frame, the same frame the landmark indices use. Times are the
    phase fractions (0, 10, ..., 90 %, one cycle: ``period`` 100); ``landmarks`` maps
    frame index -> (300, 3) voxels.
    """
    from monai.data import MetaTensor

    folder = Path(folder)
    if case not in DIRLAB_CASES:
        raise MedkitInputError(folder, f"DIR-Lab case must be 1..10, got {case}")
    shape, spacing = DIRLAB_CASES[case]
    aff = np.diag([*spacing, 1.0])
    phases = list(range(0, 100, 10)) if phases is None else phases
    root = _dirlab_root(folder, case)
    frames, names = [], []
    for ph in phases:
        # case1_T00_s.img, case2_T00-ssm.img, case6_T00.img: the case number, then the phase
        hit = _dirlab_file(root, case, rf"^case{{case}}_T{ph:02d}(?!\d)[^/]*\.img$", f"T{ph:02d} image")
        if hit is None:
            others = [c for c in _cases_present(root) if c != case]
            raise MedkitInputError(root, f"no phase T{ph:02d} .img file of DIR-Lab case {case} (case{case}_T{ph:02d}*.img)"
                                   + (f"; files of case(s) {others} are here" if others else ""))
        frames.append(MetaTensor(read_dirlab_raw(hit, shape, hu_offset)[None], affine=aff,
                                 meta={"filename_or_obj": str(hit)}))
        names.append(f"T{ph:02d}")
    found = read_dirlab_landmarks(root, case, tuple(phases))
    lms = {k: found[ph] for k, ph in enumerate(phases) if ph in found}
    return LoadedSequence(frames, [float(p) for p in phases], "%", names, lms or None, period=100.0)
