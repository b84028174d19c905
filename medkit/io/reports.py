"""Radiology report datasets in the R2Gen ``annotation.json`` layout.

The layout (R2Gen, Chen et al. EMNLP 2020; reused by R2GenCMN, PromptMRG, CoFE)::

    annotation.json = {"train": [entry, ...], "val": [...], "test": [...]}
    entry = {"id": str, "report": str, "image_path": [relative paths],
             "split": str, ...}          # MIMIC-CXR adds study_id, subject_id

Image paths are relative to an image folder (``images/`` beside
``annotation.json`` by default, as R2Gen's ``--image_dir``). medkit's synthetic
set adds ``labels`` (CheXpert observation -> 1 / 0 / -1 uncertain / absent).

Text normalisation (:func:`clean_report`) reproduces R2Gen's
``clean_report_iu_xray`` / ``clean_report_mimic_cxr``, which every BLEU/CIDEr
number on these benchmarks was computed after. Two of its quirks are kept on
purpose, because changing them changes the scores: the punctuation class
``[.,?;*!%^&_+():-\\[\\]{}]`` contains the *range* ``:-\\[`` (so ``<=>@`` are
deleted too), and empty sentences are not dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EmptyInputError, ReportDatasetError

SPLITS = ("train", "val", "test")
# R2Gen's class, range quirk included (see module doc).
_PUNCT = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")
_SECTION = re.compile(r"^\s*([A-Z][A-Z /&]{2,40}):", re.MULTILINE)


@dataclass
class ReportEntry:
    """One study: its id, report text, absolute image paths, split and extras."""

    id: str
    report: str
    image_paths: list[Path]
    split: str
    labels: dict[str, int] | None = None
    extra: dict = field(default_factory=dict)


def _iu_cleaner(t: str) -> list[str]:
    for _ in range(3):
        t = t.replace("..", ".")
    return _drop_numbering(t)


def _mimic_cleaner(t: str) -> list[str]:
    t = t.replace("\n", " ")
    for _ in range(7):
        t = t.replace("__", "_")
    for _ in range(6):
        t = t.replace("  ", " ")
    for _ in range(8):
        t = t.replace("..", ".")
    return _drop_numbering(t)


def _drop_numbering(t: str) -> list[str]:
    """R2Gen strips list numbering '1. ' .. '5. ' then splits sentences at '. '."""
    t = t.replace("1. ", "").replace(". 2. ", ". ").replace(". 3. ", ". ").replace(". 4. ", ". ")
    t = t.replace(". 5. ", ". ").replace(" 2. ", ". ").replace(" 3. ", ". ").replace(" 4. ", ". ")
    t = t.replace(" 5. ", ". ")
    return t.strip().lower().split(". ")


def _sent_cleaner(s: str) -> str:
    s = s.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower()
    return _PUNCT.sub("", s)


def clean_report(text: str, dataset: str = "iu_xray") -> str:
    """R2Gen's report normalisation: lower-case, sentences joined by `` . ``.

    >>> clean_report("The heart is normal. No effusion.")
    'the heart is normal . no effusion .'
    """
    sents = _mimic_cleaner(text) if dataset == "mimic_cxr" else _iu_cleaner(text)
    return " . ".join(_sent_cleaner(s) for s in sents) + " ."


def split_sections(text: str) -> dict[str, str]:
    """Split a free-text radiology report at upper-case headers (``FINDINGS:``).

    Returns lower-cased section names -> text, e.g. ``{"findings": ..., "impression": ...}``;
    text before the first header goes under ``"preamble"``. Headers follow the
    MIMIC-CXR convention (``FINDINGS``, ``IMPRESSION``, ``INDICATION``, ...).
    """
    out: dict[str, str] = {}
    matches = list(_SECTION.finditer(text))
    if not matches:
        return {"preamble": text.strip()} if text.strip() else {}
    if text[: matches[0].start()].strip():
        out["preamble"] = text[: matches[0].start()].strip()
    for m, nxt in zip(matches, matches[1:] + [None]):
        body = text[m.end(): nxt.start() if nxt else len(text)]
        name = m.group(1).strip().lower()
        out[name] = (out.get(name, "") + " " + " ".join(body.split())).strip()
    return out


def load_report_dataset(
    path: str | Path, *, image_dir: str | Path | None = None, check_images: bool = True,
    dataset: str | None = None, clean: bool = False,
) -> dict[str, list[ReportEntry]]:
    """Read an R2Gen-style ``annotation.json``.

    Args:
        path: the JSON file, or a folder that contains ``annotation.json``.
        image_dir: folder the ``image_path`` entries are relative to; default
            ``images/`` beside the JSON (else the JSON's own folder).
        check_images: raise if an image file is missing.
        dataset: ``"iu_xray"`` or ``"mimic_cxr"`` (only used when ``clean``).
        clean: apply :func:`clean_report` to every report.

    Returns:
        ``{split: [ReportEntry, ...]}`` for the splits present.

    Raises:
        ReportDatasetError: naming the file and the entry (split, index, id).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "annotation.json"
    if not path.exists():
        raise EmptyInputError(path, "no such annotation file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ReportDatasetError(path, f"not valid JSON ({e})") from None
    except OSError as e:
        raise ReportDatasetError(path, f"cannot read the annotation file ({e.strerror or e})") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        # ValueError: JSONDecodeError, and integers past Python's 4300-digit limit;
        # RecursionError: arrays/objects nested deeper than the interpreter's stack.
        msg = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise ReportDatasetError(path, f"not valid JSON ({msg})") from None
    if not isinstance(data, dict):
        raise ReportDatasetError(path, f"top level must be an object with splits {SPLITS}, got {type(data).__name__}")
    unknown = [k for k in data if k not in SPLITS]
    if unknown:
        raise ReportDatasetError(path, f"unknown split(s) {unknown}; expected {SPLITS}")
    if not data:
        raise ReportDatasetError(path, "no splits")
    if image_dir is None:
        image_dir = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    image_dir = Path(image_dir)
    if dataset is None:
        dataset = "mimic_cxr" if "mimic" in str(path).lower() else "iu_xray"

    out: dict[str, list[ReportEntry]] = {}
    seen: dict[str, str] = {}
    for split, entries in data.items():
        if not isinstance(entries, list):
            raise ReportDatasetError(path, f"split {split!r} must be a list of entries")
        rows = []
        for k, e in enumerate(entries):
            rows.append(_entry(path, split, k, e, image_dir, check_images, seen, dataset if clean else None))
        out[split] = rows
    return out


def _entry(path, split, k, e, image_dir, check_images, seen, clean_as) -> ReportEntry:
    where = f"{split}[{k}]"
    if not isinstance(e, dict):
        raise ReportDatasetError(path, f"entry {where} must be an object, got {type(e).__name__}")
    eid = e.get("id")
    if not isinstance(eid, (str, int)) or str(eid) == "":
        raise ReportDatasetError(path, f"entry {where} has no 'id'")
    eid = str(eid)
    where = f"{where} (id {eid!r})"
    if eid in seen:
        raise ReportDatasetError(path, f"entry {where} repeats an id already in {seen[eid]}")
    seen[eid] = split
    report = e.get("report")
    if not isinstance(report, str):
        raise ReportDatasetError(path, f"entry {where}: 'report' must be a string")
    imgs = e.get("image_path")
    if isinstance(imgs, str):
        imgs = [imgs]
    if not isinstance(imgs, list) or not imgs or not all(isinstance(i, str) and i for i in imgs):
        raise ReportDatasetError(path, f"entry {where}: 'image_path' must be a non-empty list of paths")
    paths = [image_dir / i for i in imgs]
    if check_images:
        missing = [str(p) for p in paths if not _is_file(p)]
        if missing:
            raise ReportDatasetError(path, f"entry {where}: image file(s) not found: {missing}")
    labels = e.get("labels")
    if labels is not None and not (
        isinstance(labels, dict) and all(isinstance(v, int) and v in (-1, 0, 1) for v in labels.values())
    ):
        raise ReportDatasetError(path, f"entry {where}: 'labels' must map observation -> 1 / 0 / -1")
    extra = {key: v for key, v in e.items() if key not in ("id", "report", "image_path", "split", "labels")}
    text = clean_report(report, clean_as) if clean_as else report
    return ReportEntry(eid, text, paths, split, labels, extra)


def _is_file(p: Path) -> bool:
    """``Path.is_file`` that answers False, not OSError, for names the OS refuses (too long)."""
    try:
        return p.is_file()
    except OSError:
        return False
