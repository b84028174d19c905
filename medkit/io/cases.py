"""Case discovery: turn a folder into a list of cases to run a pipeline on.

Layouts recognised (checked in this order):

1. nnU-Net raw dataset: ``dataset.json`` and/or ``imagesTr/``/``imagesTs/`` with
   ``{case}_{XXXX}.nii.gz`` channel files and ``labelsTr/{case}.nii.gz`` labels.
2. A folder of NIfTI files: one case per file (``{case}.nii.gz``; a trailing
   ``_0000`` channel tag is stripped from the id).
3. A folder of DICOM studies: one case per image series, anywhere below.
4. A single file (NIfTI, NRRD, DICOM, zip): one case.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EmptyInputError, VolumeError

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})\.nii(\.gz)?$")
_NIFTI = re.compile(r"\.nii(\.gz)?$")


@dataclass
class Case:
    """One case: where its image(s) and label are and how to load them.

    ``images`` are channel files in channel order (nnU-Net) or a single path (a
    NIfTI, a DICOM folder, a zip); ``series_uid`` selects a series inside a DICOM
    folder; ``label`` is ``None`` where the layout has none.
    """

    case_id: str
    images: list[Path]
    label: Path | None = None
    series_uid: str | None = None
    split: str | None = None  # "train" / "test" for nnU-Net layouts
    extra: dict = field(default_factory=dict)


def _nifti_stem(p: Path) -> str:
    return _NIFTI.sub("", p.name)


def discover_cases(folder: str | Path) -> list[Case]:
    """List the cases in ``folder`` (see the module doc for layouts), sorted by id.

    Raises:
        EmptyInputError: nothing usable in the folder.
        VolumeError: an inconsistent layout (a label without image, missing channel).
    """
    folder = Path(folder)
    if not folder.exists():
        raise EmptyInputError(folder, "no such file or folder")
    if folder.is_file():
        dicom_id = _dicom_file_case_id(folder)
        if dicom_id is not None:
            return [Case(dicom_id, [folder])]
        stem = _nifti_stem(folder) if _NIFTI.search(folder.name) else folder.stem
        return [Case(stem.strip(".") or "case", [folder])]  # ".nii.gz" alone: no empty id
    if (folder / "dataset.json").exists() or (folder / "imagesTr").is_dir() or (folder / "imagesTs").is_dir():
        return _nnunet_cases(folder)
    niftis = sorted(p for p in folder.iterdir() if p.is_file() and _NIFTI.search(p.name) and not _hidden(p))
    if niftis:
        cases = []
        for p in niftis:
            m = _CHANNEL.match(p.name)
            cases.append(Case(m.group("case") if m else _nifti_stem(p), [p]))
        _check_unique(folder, cases)
        return cases
    return _dicom_cases(folder)


def _nnunet_cases(folder: Path) -> list[Case]:
    n_channels = 1
    ds_json = folder / "dataset.json"
    file_ending = ".nii.gz"
    if ds_json.exists():
        try:
            meta = json.loads(ds_json.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, deep nesting
            raise VolumeError(ds_json, f"invalid JSON ({'nested too deeply' if isinstance(e, RecursionError) else e})") from None
        except OSError as e:  # a folder named dataset.json, unreadable file
            raise VolumeError(ds_json, f"cannot read dataset.json ({e.strerror or e})") from None
        if not isinstance(meta, dict):
            raise VolumeError(ds_json, "dataset.json must hold a JSON object")
        ch = meta.get("channel_names") or meta.get("modality") or {"0": "CT"}
        n_channels = len(ch) if isinstance(ch, dict) else 1
        file_ending = str(meta.get("file_ending", file_ending))
    cases: list[Case] = []
    for split, sub in (("train", "imagesTr"), ("test", "imagesTs")):
        d = folder / sub
        if not d.is_dir():
            continue
        groups: dict[str, dict[int, Path]] = {}
        for p in sorted(d.iterdir()):
            if not p.name.endswith(file_ending) or _hidden(p):
                continue
            m = _CHANNEL.match(p.name)
            if not m:
                raise VolumeError(p, "nnU-Net image files are named {case}_{XXXX}" + file_ending)
            groups.setdefault(m.group("case"), {})[int(m.group("ch"))] = p
        for cid, chans in groups.items():
            missing = [c for c in range(n_channels) if c not in chans]
            if missing:
                raise VolumeError(d, f"case {cid} lacks channel file(s) {missing} (dataset.json declares {n_channels})")
            label = folder / ("labelsTr" if split == "train" else "labelsTs") / f"{cid}{file_ending}"
            cases.append(Case(cid, [chans[c] for c in range(n_channels)], label if label.exists() else None, split=split))
    if not cases:
        raise EmptyInputError(folder, "nnU-Net layout without image files in imagesTr/ or imagesTs/")
    _check_unique(folder, cases)
    return sorted(cases, key=lambda c: (c.split or "", c.case_id))


def _hidden(p: Path) -> bool:
    """Dot files are not cases: macOS leaves ``._case1.nii.gz`` resource forks on shares,
    and ``.nii.gz`` alone would give an empty case id (DICOM scanning skips them too)."""
    return p.name.startswith(".")


def _dicom_cases(folder: Path) -> list[Case]:
    from . import dicom as _dcm

    series, _ = _dcm.scan_folder(folder)
    cases = []
    for uid, s in sorted(series.items(), key=lambda kv: (kv[1].description, kv[0])):
        common = Path(*_common_parts([i.path.parent for i in s.instances]))
        cases.append(Case(dicom_case_id(s.description, s.modality, uid), [common], series_uid=uid,
                          extra={"n_slices": len(s)}))
    return cases


def dicom_case_id(description: str, modality: str, series_uid: str) -> str:
    """Case id of a DICOM series: ``{SeriesDescription}-{sha1(SeriesInstanceUID)[:8]}``.

    Case ids become output file names, so they must not carry PHI: the series
    description (a protocol name) and a short hash of the UID, never patient names,
    file names or folder names (which often hold names, MRNs or accession numbers).
    """
    desc = re.sub(r"[^A-Za-z0-9]+", "-", description or "").strip("-")[:40] or (modality or "series")
    return f"{desc}-{hashlib.sha1(series_uid.encode()).hexdigest()[:8]}"


def _dicom_file_case_id(path: Path) -> str | None:
    """The case id of a single DICOM file (from its header), or None if it is not DICOM."""
    from . import dicom as _dcm

    if path.suffix.lower() in (".nii", ".gz", ".zip", ".nrrd", ".nhdr", ".mha", ".mhd"):
        return None
    if not (_dcm._is_dicom_file(path) or (path.suffix.lower() in ("", ".dcm", ".ima")
                                          and _dcm._looks_like_raw_dicom(path))):
        return None
    inst = _dcm.read_header(path)
    return dicom_case_id(inst.description, inst.modality, inst.series_uid)


def _common_parts(paths: list[Path]) -> tuple[str, ...]:
    parts = list(paths[0].parts)
    for p in paths[1:]:
        q = p.parts
        n = 0
        while n < min(len(parts), len(q)) and parts[n] == q[n]:
            n += 1
        parts = parts[:n]
    return tuple(parts) or ("/",)


def _check_unique(folder: Path, cases: list[Case]) -> None:
    seen: dict[str, Case] = {}
    for c in cases:
        key = f"{c.split}:{c.case_id}"
        if key in seen:
            raise VolumeError(folder, f"two files map to case id {c.case_id!r}: {seen[key].images[0].name}, {c.images[0].name}")
        seen[key] = c
