"""Fuzz ``load_report_dataset`` on malformed R2Gen ``annotation.json`` files.

Inputs: a near-valid dataset (splits, entries with id / report / image_path / labels)
with random corruptions (wrong types, missing keys, duplicate ids, unknown splits,
odd paths: absolute, ``..``, NUL bytes, very long names), arbitrary JSON values,
and raw text (truncated JSON, invalid UTF-8, deep nesting, a BOM, huge numbers).

Oracle beyond the contract: a successful load returns, per known split, entries
with a string id (unique), a string report, a non-empty list of image paths (which
exist when ``check_images``), and labels in {-1, 0, 1}.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from .conftest import fuzz_settings, run_input

TARGET = "load_report_dataset: annotation.json"
IMAGES = ["a.png", "b/c.png", "d.dcm"]
ODD_PATHS = ["", "missing.png", "../a.png", "/etc/hostname", "a\x00.png", "x" * 300, "y/" * 2000 + "z.png",
             "b", ".", "ü/ß.png"]
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
JSON_ANY = st.recursive(JSON_LEAF, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                        max_leaves=12)


@st.composite
def entry(draw):
    """A valid entry, then 0-2 corruptions (most inputs stay near-valid, to reach deep checks)."""
    e = {"id": draw(st.text(min_size=1, max_size=6)),
         "report": draw(st.sampled_from(["FINDINGS: 1. heart normal. 2. lungs clear. IMPRESSION: none.",
                                         "No acute disease..", ""])) + draw(st.text(max_size=30)),
         "image_path": draw(st.lists(st.sampled_from(IMAGES), min_size=1, max_size=3))}
    if draw(st.booleans()):
        e["labels"] = draw(st.dictionaries(st.sampled_from(["Edema", "Cardiomegaly"]), st.sampled_from([-1, 0, 1])))
    if draw(st.booleans()):
        e["split"] = draw(st.sampled_from(["train", "val", "x"]))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        what = draw(st.sampled_from(["replace", "delete", "odd-path", "path-str", "bad-label", "int-id"]))
        key = draw(st.sampled_from(["id", "report", "image_path", "labels"]))
        if what == "replace":
            e[key] = draw(JSON_ANY)
        elif what == "delete":
            e.pop(key, None)
        elif what == "odd-path":
            e["image_path"] = [*e.get("image_path", []), draw(st.sampled_from(ODD_PATHS))] \
                if isinstance(e.get("image_path"), list) else [draw(st.sampled_from(ODD_PATHS))]
        elif what == "path-str":
            e["image_path"] = draw(st.sampled_from(IMAGES + ODD_PATHS))
        elif what == "bad-label":
            e["labels"] = {"Edema": draw(st.one_of(st.sampled_from([2, -2, 0.5, True, "1"]), JSON_LEAF))}
        else:
            e["id"] = draw(st.integers(-3, 3))
    return e


@st.composite
def annotation_text(draw):
    kind = draw(st.sampled_from(["dataset", "dataset", "dataset", "any-json", "raw", "deep", "truncated"]))
    if kind == "dataset":
        splits = draw(st.lists(st.sampled_from(["train", "val", "test", "train", "val", "TRAIN", ""]),
                               min_size=draw(st.sampled_from([0, 1, 1, 1, 1])), max_size=3, unique=True))
        data = {s: draw(st.lists(entry(), max_size=4) if draw(st.integers(0, 9)) else
                        st.one_of(JSON_LEAF, st.lists(JSON_ANY, max_size=2))) for s in splits}
        return json.dumps(data).encode()
    if kind == "any-json":
        return json.dumps(draw(JSON_ANY)).encode()
    if kind == "deep":
        n = draw(st.sampled_from([10, 1000, 100_000]))
        return draw(st.sampled_from([b"[" * n + b"]" * n, b'{"train": ' + b"[" * n + b"]" * n + b"}", b"[" * n]))
    if kind == "truncated":
        full = json.dumps({"train": [{"id": "1", "report": "ok.", "image_path": ["a.png"]}]}).encode()
        return full[: draw(st.integers(0, len(full) - 1))]
    return draw(st.one_of(st.binary(max_size=64), st.sampled_from([
        b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"NaN", b'{"train": [1e999999]}', b"1" * 5000, b"\x00",
        b'{"train": [{"id": "\\ud800", "report": "x", "image_path": ["a.png"]}]}'])))


@given(annotation_text(), st.booleans(), st.booleans(), st.sampled_from([None, "iu_xray", "mimic_cxr"]),
       st.sampled_from(["file", "folder", "images-dir"]))
@fuzz_settings(default_n=1000)
def test_fuzz_load_report_dataset(fuzz_workdir, text, check_images, clean, dataset, layout):
    from medkit.io import ReportEntry, load_report_dataset

    with tempfile.TemporaryDirectory(dir=fuzz_workdir) as d:
        folder = Path(d)
        images = folder / "images"
        for rel in IMAGES:
            (images / rel).parent.mkdir(parents=True, exist_ok=True)
            (images / rel).write_bytes(b"\x89PNG")
        ann = folder / "annotation.json"
        ann.write_bytes(text)
        arg = folder if layout == "folder" else ann
        kw = {"image_dir": images} if layout == "images-dir" else {}
        out = run_input(TARGET, lambda: load_report_dataset(arg, check_images=check_images, clean=clean,
                                                            dataset=dataset, **kw),
                        [ann, folder], folder, describe=lambda: repr(text[:200]))
        if out is None:
            return
        assert isinstance(out, dict) and set(out) <= {"train", "val", "test"}
        ids = set()
        for split, rows in out.items():
            for r in rows:
                assert isinstance(r, ReportEntry) and r.split == split
                assert isinstance(r.id, str) and r.id and r.id not in ids
                ids.add(r.id)
                assert isinstance(r.report, str)
                assert r.image_paths and all(isinstance(p, Path) for p in r.image_paths)
                if check_images:
                    assert all(p.is_file() for p in r.image_paths)
                assert r.labels is None or all(v in (-1, 0, 1) for v in r.labels.values())
