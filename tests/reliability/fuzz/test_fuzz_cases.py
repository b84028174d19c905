"""Fuzz ``discover_cases`` on odd folders: half-copied, mixed, mislabelled, linked.

Each input is a small random tree: nnU-Net folders (``imagesTr``, ``labelsTr``,
``imagesTs``), plain and odd (spaces, non-ASCII) folders; files named like channel
files, labels, DICOM slices or nothing in particular; contents that are a valid
NIfTI, a valid DICOM slice, a DICOM slice cut short, garbage, empty, or one of many
``dataset.json`` variants; folders where files are expected; symlinks that dangle,
loop, or point back up the tree. The call is ``discover_cases(root)`` (or on one
file of the tree).

Oracle beyond the contract: cases come back sorted with unique ids per split, and
every image path exists inside the tree.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from .conftest import fuzz_settings, run_input

TARGET = "discover_cases: odd folders"
DIRS = ["", "", "imagesTr", "imagesTr", "labelsTr", "imagesTs", "study 1", "ü", "a/b"]
NAMES = ["case1_0000.nii.gz", "case1_0001.nii.gz", "case2_0000.nii.gz", "case1.nii.gz", "case1.nii", "case1_0000.nii",
         "dataset.json", "IM0001.dcm", "IM0002.dcm", "IM0003", "x.IMA", "notes.txt", ".hidden.nii.gz",
         "case1_000.nii.gz", "_0000.nii.gz", ".nii.gz", "a b_0000.nii.gz"]
KINDS = ["nifti", "nifti", "dicom", "dicom", "dicom-cut", "empty", "garbage", "json", "dir", "symlink-missing",
         "symlink-loop", "symlink-up"]
DATASET_JSONS = [b"{}", b'{"channel_names": {"0": "CT", "1": "MR"}}', b'{"file_ending": ".nii"}',
                 b'{"file_ending": ""}', b"[]", b"garbage", b'{"channel_names": []}', b'{"file_ending": 5}',
                 b'{"file_ending": null}', b'{"modality": {"0": "CT"}}', b"\xff\xfe", b"[" * 50000,
                 b'{"channel_names": "CT"}', b'{"file_ending": "/"}']


@lru_cache(maxsize=1)
def _blobs() -> dict[str, bytes]:
    import nibabel as nib

    from medkit.io.dicom_write import write_dicom_series

    img = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16) - 100, np.diag([2.0, 2.0, 3.0, 1.0]))
    nifti = gzip.compress(img.to_bytes(), mtime=0)
    d = Path(tempfile.mkdtemp(prefix="medkit-fuzz-blobs-"))
    paths = write_dicom_series(np.zeros((4, 4, 3)) - 100, d, affine=np.diag([1.0, 1.0, 2.0, 1.0]), uid_seed=3)
    return {"nifti": nifti, "dicom": paths[0].read_bytes(), "dicom2": paths[1].read_bytes()}


@st.composite
def tree(draw):
    n = draw(st.integers(0, 6))
    entries = [(draw(st.sampled_from(DIRS)), draw(st.sampled_from(NAMES)), draw(st.sampled_from(KINDS)),
                draw(st.integers(0, len(DATASET_JSONS) - 1))) for _ in range(n)]
    return {"entries": entries, "call_on": draw(st.sampled_from(["root", "root", "root", "first-file", "missing"]))}


def build(spec: dict, root: Path) -> Path:
    blobs = _blobs()
    first = None
    for k, (sub, name, kind, j) in enumerate(spec["entries"]):
        folder = root / sub if sub else root
        if folder.exists() and not folder.is_dir():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        if path.exists() or path.is_symlink():
            continue
        if kind == "dir":
            path.mkdir()
            continue
        if kind.startswith("symlink"):
            target = {"symlink-missing": "nowhere", "symlink-loop": name, "symlink-up": os.path.relpath(root, folder)}
            path.symlink_to(target[kind])
            continue
        if name == "dataset.json" or kind == "json":
            data = DATASET_JSONS[j]
        elif kind == "dicom":
            data = blobs["dicom" if k % 2 else "dicom2"]
        elif kind == "dicom-cut":
            data = blobs["dicom"][: 132 + j * 40]
        elif kind == "nifti":
            data = blobs["nifti"]
        elif kind == "garbage":
            data = bytes(range(256)) * (j + 1)
        else:
            data = b""
        path.write_bytes(data)
        first = first or path
    if spec["call_on"] == "first-file" and first is not None:
        return first
    if spec["call_on"] == "missing":
        return root / "no-such-folder"
    return root


@given(tree())
@fuzz_settings(default_n=600)
def test_fuzz_discover_cases(fuzz_workdir, spec):
    from medkit.io import discover_cases

    with tempfile.TemporaryDirectory(dir=fuzz_workdir) as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = Path(d) / "data"
        root.mkdir()
        arg = build(spec, root)
        cases = run_input(TARGET, lambda: discover_cases(arg), [root], Path(d), describe=lambda: repr(spec))
        if cases is None:
            return
        assert cases, "an empty case list must be an error instead"
        keys = [(c.split, c.case_id) for c in cases]
        assert len(set(keys)) == len(keys), keys
        for c in cases:
            assert c.case_id and c.images
            for p in c.images:
                assert p.exists() or p.is_symlink(), p  # a dangling link fails later, at load, naming it
                assert os.path.abspath(p).startswith(os.path.abspath(root)) or p == arg, p


def test_fuzz_cases_blob_sanity():
    """The building blocks are what they claim (else the fuzz would test nothing)."""
    import pydicom

    b = _blobs()
    assert pydicom.dcmread(io.BytesIO(b["dicom"])).Rows == 4
    assert gzip.decompress(b["nifti"])[344:347] == b"n+1"
