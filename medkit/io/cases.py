"""Case discovery: turn an input path into the cases a pipeline runs on, named after the input.

A case id comes from names the user chose, never from header text:

- a file: its name without the image suffix (``ct.nii.gz`` -> ``ct``; a trailing
  ``_0000`` channel tag is dropped), or ``case_id=`` (CLI ``--case-id``);
- a DICOM folder holding one study: the folder's own name (``-i scans/patient07``
  -> ``patient07``); a study with several image series gives ``patient07_s3``,
  ``patient07_s5`` (``_s`` + SeriesNumber, a number, not text);
- a folder of DICOM studies: each study is named after the entry directly under the
  folder that holds it (``-i scans`` with ``scans/A/...``, ``scans/B/...`` -> ``A``, ``B``);
  names deeper down (series folders, slice files such as ``DOE_JOHN_0001.dcm``) never
  name anything;
- a folder of NIfTI/NRRD/MHA files: one case per file, named after the file (LiTS
  pairs ``volume-N.nii`` / ``segmentation-N.nii`` become case ``volume-N`` with its label);
- nnU-Net raw datasets (``imagesTr/{case}_0000.nii.gz``) and Medical Segmentation
  Decathlon task folders as released (``dataset.json`` listing ``./imagesTr/hepaticvessel_001.nii.gz``;
  Task03_Liver's ``imagesTr/liver_N.nii.gz`` with or without ``dataset.json``): the dataset's ids.

SeriesDescription, patient and study text never reach a case id, so they never reach a
file name, CSV row, log line or overlay title (docs/privacy.md). ``Case.source`` is
the path recorded in ``cases.csv``: the input itself, or the entry directly under it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EmptyInputError, MedkitInputError, VolumeError

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})\.nii(\.gz)?$")
_NIFTI = re.compile(r"\.nii(\.gz)?$")
_IMAGE_FILE = re.compile(r"\.(nii(\.gz)?|nrrd|nhdr|mha|mhd)$", re.IGNORECASE)
_LITS_LABEL = re.compile(r"^segmentation-(?P<n>\d+)\.nii(\.gz)?$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")


@dataclass
class Case:
    """One case: its id, where its image(s) and label are, and how to load them.

    ``images`` are channel files in channel order (nnU-Net) or a single path (a
    NIfTI, a DICOM folder, a zip); ``series_uid`` selects a series inside a DICOM
    folder; ``label`` is ``None`` where the layout has none; ``source`` is the path
    ``cases.csv`` records (the input, or the entry under it that holds the case);
    ``series`` the scanned DICOM headers (:class:`medkit.io.dicom.DicomSeries`), so
    loading the case does not scan its folder again.
    """

    case_id: str
    images: list[Path]
    label: Path | None = None
    series_uid: str | None = None
    split: str | None = None  # "train" / "test" for nnU-Net and MSD layouts
    extra: dict = field(default_factory=dict)
    source: Path | None = None
    series: object | None = None


def _nifti_stem(p: Path) -> str:
    return _NIFTI.sub("", p.name)


def file_case_id(path: Path) -> str:
    """A file's case id: its name without the image suffix and without a ``_0000`` channel tag."""
    name = path.name
    m = _CHANNEL.match(name)
    if m:
        return m.group("case")
    low = name.lower()
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".zip", ".dcm", ".ima", ".dicom"):
        if low.endswith(suffix):
            name = name[: len(name) - len(suffix)]
            break
    return name.strip(".") or "case"  # ".nii.gz" alone: no empty id


def check_case_id(case_id: str) -> str:
    """A ``--case-id`` becomes file names: letters, digits, ``._ -``, not starting with a dot."""
    if not case_id or len(case_id) > 120 or not _SAFE_ID.match(case_id):
        raise MedkitInputError(None, f"--case-id {case_id!r}: use letters, digits, '.', '_', '-' or spaces "
                                     "(at most 120, not starting with '.' or a space); it names output files")
    return case_id


def discover_cases(path: str | Path, *, case_id: str | None = None) -> list[Case]:
    """List the cases in ``path`` (see the module doc for layouts and ids), sorted by id.

    Args:
        path: a file or folder.
        case_id: the id to give the one case of ``path`` (a folder holding several is an error).

    Raises:
        EmptyInputError: nothing usable in the folder.
        VolumeError: an inconsistent layout (a label without image, missing channel, two
            files with one id, a dataset.json listing missing files).
    """
    path = Path(path)
    if not path.exists():
        raise EmptyInputError(path, "no such file or folder")
    if path.is_file():
        cases = [Case(file_case_id(path), [path], source=path)]
    elif (path / "dataset.json").exists() or (path / "imagesTr").is_dir() or (path / "imagesTs").is_dir():
        cases = _dataset_cases(path)
    else:
        images = sorted(p for p in path.iterdir() if p.is_file() and _IMAGE_FILE.search(p.name) and not _hidden(p))
        cases = _file_cases(path, images) if images else _dicom_cases(path)
    if case_id is not None:
        check_case_id(case_id)
        if len(cases) != 1:
            raise MedkitInputError(path, f"--case-id names one case, but the input holds {len(cases)} "
                                         f"({', '.join(c.case_id for c in cases[:4])}{', ...' if len(cases) > 4 else ''})")
        cases[0].case_id = case_id
    return cases


def _file_cases(folder: Path, images: list[Path]) -> list[Case]:
    """One case per image file; LiTS ``segmentation-N`` files are the labels of ``volume-N``."""
    labels = {m.group("n"): p for p in images if (m := _LITS_LABEL.match(p.name))}
    cases = []
    for p in images:
        if _LITS_LABEL.match(p.name):
            continue
        lits = re.match(r"^volume-(\d+)\.nii(\.gz)?$", p.name)
        label = labels.get(lits.group(1)) if lits else None
        cases.append(Case(file_case_id(p), [p], label=label, source=p))
    _check_unique(folder, cases)
    return sorted(cases, key=lambda c: c.case_id)


# --------------------------------------------------------------------- nnU-Net and MSD layouts


def _dataset_cases(folder: Path) -> list[Case]:
    meta = _read_dataset_json(folder)
    if isinstance(meta.get("training"), list) or isinstance(meta.get("test"), list):
        return _msd_cases(folder, meta)
    n_channels, file_ending = 1, ".nii.gz"
    if meta:
        ch = meta.get("channel_names") or meta.get("modality") or {"0": "CT"}
        n_channels = len(ch) if isinstance(ch, dict) else 1
        file_ending = str(meta.get("file_ending", file_ending))
    cases: list[Case] = []
    for split, sub in (("train", "imagesTr"), ("test", "imagesTs")):
        d = folder / sub
        if not d.is_dir():
            continue
        files = [p for p in sorted(d.iterdir()) if p.name.endswith(file_ending) and not _hidden(p)]
        if files and not meta and n_channels == 1 and not any(_CHANNEL.match(p.name) for p in files):
            # Decathlon naming without dataset.json (Task03_Liver: imagesTr/liver_N.nii.gz).
            cases += [Case(_nifti_stem(p), [p], _label(folder, split, _nifti_stem(p), file_ending), split=split,
                           source=p) for p in files]
            continue
        groups: dict[str, dict[int, Path]] = {}
        for p in files:
            m = _CHANNEL.match(p.name)
            if not m:
                raise VolumeError(p, "nnU-Net image files are named {case}_{XXXX}" + file_ending
                                  + " (a Decathlon task's dataset.json lists its files under 'training')")
            groups.setdefault(m.group("case"), {})[int(m.group("ch"))] = p
        for cid, chans in groups.items():
            missing = [c for c in range(n_channels) if c not in chans]
            if missing:
                raise VolumeError(d, f"case {cid} lacks channel file(s) {missing} (dataset.json declares {n_channels})")
            cases.append(Case(cid, [chans[c] for c in range(n_channels)], _label(folder, split, cid, file_ending),
                              split=split, source=chans[0]))
    if not cases:
        raise EmptyInputError(folder, "nnU-Net layout without image files in imagesTr/ or imagesTs/")
    _check_unique(folder, cases)
    return sorted(cases, key=lambda c: (c.split or "", c.case_id))


def _label(folder: Path, split: str, cid: str, ending: str) -> Path | None:
    label = folder / ("labelsTr" if split == "train" else "labelsTs") / f"{cid}{ending}"
    return label if label.exists() else None


def _read_dataset_json(folder: Path) -> dict:
    ds_json = folder / "dataset.json"
    if not ds_json.exists():
        return {}
    try:
        meta = json.loads(ds_json.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, deep nesting
        raise VolumeError(ds_json, f"invalid JSON ({'nested too deeply' if isinstance(e, RecursionError) else e})") \
            from None
    except OSError as e:  # a folder named dataset.json, unreadable file
        raise VolumeError(ds_json, f"cannot read dataset.json ({e.strerror or e})") from None
    if not isinstance(meta, dict):
        raise VolumeError(ds_json, "dataset.json must hold a JSON object")
    return meta


def _msd_cases(folder: Path, meta: dict) -> list[Case]:
    """A Decathlon task as released: ``training`` = [{"image": "./imagesTr/x.nii.gz", "label": ...}],
    ``test`` = ["./imagesTs/y.nii.gz"]; ids are the image file names. Every listed file must exist."""
    ds_json = folder / "dataset.json"
    cases, missing = [], []
    for split, key in (("train", "training"), ("test", "test")):
        entries = meta.get(key) or []
        if not isinstance(entries, list):
            raise VolumeError(ds_json, f"'{key}' must be a list")
        for k, e in enumerate(entries):
            img_rel, lab_rel = (e.get("image"), e.get("label")) if isinstance(e, dict) else (e, None)
            if not isinstance(img_rel, str) or not img_rel:
                raise VolumeError(ds_json, f"{key}[{k}] has no image path")
            img = (folder / img_rel).resolve()
            if not img.is_relative_to(folder.resolve()):
                raise VolumeError(ds_json, f"{key}[{k}] points outside the task folder: {img_rel}")
            if not img.is_file():
                missing.append(img_rel)
                continue
            label = (folder / lab_rel) if isinstance(lab_rel, str) and lab_rel else None
            cases.append(Case(_nifti_stem(img), [folder / img_rel], label if label and label.exists() else None,
                              split=split, source=folder / img_rel))
    if missing:
        raise VolumeError(ds_json, f"lists {len(missing)} image file(s) that are not in the folder (first: "
                                   f"{missing[0]}); an incomplete download or copy?")
    if not cases:
        raise EmptyInputError(folder, "dataset.json lists no training or test images")
    _check_unique(folder, cases)
    return sorted(cases, key=lambda c: (c.split or "", c.case_id))


def _hidden(p: Path) -> bool:
    """Dot files are not cases: macOS leaves ``._case1.nii.gz`` resource forks on shares (the
    Decathlon tarballs hold them too), and ``.nii.gz`` alone would give an empty case id."""
    return p.name.startswith(".")


# --------------------------------------------------------------------- DICOM


def _dicom_cases(folder: Path) -> list[Case]:
    """One case per image series; series grouped by study (StudyInstanceUID), studies named
    after the input folder (one study) or the entry under it that holds each (several)."""
    from . import dicom as _dcm

    series, _ = _dcm.scan_folder(folder)
    studies: dict[str, list] = {}
    for uid, s in series.items():
        studies.setdefault(str(s.instances[0].safe.get("StudyInstanceUID") or uid), []).append(s)
    names = _study_names(folder, studies)
    cases = []
    for study_uid, members in studies.items():
        name, source = names[study_uid]
        members.sort(key=lambda s: (s.instances[0].series_number is None, s.instances[0].series_number or 0, s.uid))
        numbers = [s.instances[0].series_number for s in members]
        unique = None not in numbers and len(set(numbers)) == len(numbers)
        for k, s in enumerate(members, start=1):
            cid = name if len(members) == 1 else f"{name}_s{numbers[k - 1] if unique else k}"
            cases.append(Case(cid, [source], series_uid=s.uid, source=source, series=s,
                              extra={"n_slices": len(s), "modality": s.modality}))
    _check_unique(folder, cases)
    return sorted(cases, key=lambda c: c.case_id)


def _study_names(folder: Path, studies: dict[str, list]) -> dict[str, tuple[str, Path]]:
    """``study uid -> (name, source path)``: the input's own name for a single study; else the
    entry directly under ``folder`` that holds all of a study's files (``{folder}_study{k}``
    when studies share an entry or lie loose in ``folder`` itself)."""
    base = folder.resolve().name or "study"
    if len(studies) == 1:
        return {uid: (base, folder) for uid in studies}
    tops: dict[str, str | None] = {}
    for uid, members in studies.items():
        firsts = {i.path.relative_to(folder).parts[0] if len(i.path.relative_to(folder).parts) > 1 else None
                  for s in members for i in s.instances}
        tops[uid] = next(iter(firsts)) if len(firsts) == 1 else None
    counts: dict[str | None, int] = {}
    for t in tops.values():
        counts[t] = counts.get(t, 0) + 1
    out = {}
    for k, uid in enumerate(sorted(studies, key=lambda u: (tops[u] or "", u)), start=1):
        t = tops[uid]
        out[uid] = (t, folder / t) if t is not None and counts[t] == 1 else (f"{base}_study{k}", folder)
    return out


def dicom_case_id(description: str, modality: str, series_uid: str) -> str:
    """``{SeriesDescription}-{sha1(SeriesInstanceUID)[:8]}``: the old DICOM case id.

    Deprecated: case ids now come from the input's names (module doc); series text never
    names an output. Kept for readers that still import it.
    """
    desc = re.sub(r"[^A-Za-z0-9]+", "-", description or "").strip("-")[:40] or (modality or "series")
    return f"{desc}-{hashlib.sha1(series_uid.encode()).hexdigest()[:8]}"


def _check_unique(folder: Path, cases: list[Case]) -> None:
    seen: dict[str, Case] = {}
    for c in cases:
        key = f"{c.split}:{c.case_id}"
        if key in seen:
            raise VolumeError(folder, f"two inputs map to case id {c.case_id!r}: {seen[key].images[0].name}, "
                                      f"{c.images[0].name}; rename one")
        seen[key] = c
