"""Fuzz ``load_volume`` on mutated DICOM: headers, pixel data, bytes, layouts.

A clean 4-slice CT series (8 x 6 pixels, rotated, anisotropic) is written once; each
input rewrites it with up to four header mutations (spacing, orientation, position,
rescale, bits, rows/columns, samples, photometric, frames, transfer syntax, SOP class,
modality, series UID, raw garbage under a known tag, deleted tags), an optional
pixel-data length change, slices dropped or duplicated, optional byte-level damage
(truncation, overwritten bytes), and one of three layouts: the folder, a single file,
or a zip of the folder.

Oracles beyond the contract (see conftest): an unmutated series must load exactly
(values and affine); when only the rescale of every slice changed (to finite numbers),
the values must be ``stored * slope + intercept``; a series with a slice missing, a
slice truncated anywhere, or pixel data cut short must never load.
"""

from __future__ import annotations

import io
import tempfile
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from .conftest import check_volume_invariants, fuzz_settings, run_input, warm_up

N_SLICES = 4
ROWS, COLS = 6, 8
TARGET = "load_volume: mutated DICOM"
FINITE = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
ODD_FLOATS = st.one_of(
    FINITE, st.sampled_from([0.0, -0.0, -1.0, 1e-12, 1e-300, 1e30, 1e308, float("nan"), float("inf"), -float("inf")])
)
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.110", "1.2.3.4", "", "garbage",
]
SOP_CLASSES = ["1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.7",
               "1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.481.3", "1.2.840.10008.5.1.4.1.1.66.4",
               "1.2.840.10008.1.3.10", "", "9.9"]


@lru_cache(maxsize=1)
def base_series() -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """``(file bytes per slice, HU array (X, Y, Z), RAS affine)`` of the clean series."""
    from medkit.io.dicom_write import write_dicom_series

    a = np.radians(25.0)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) * [0.7, 0.9, 2.5]
    aff[:3, 3] = [10.0, -30.0, 55.0]
    arr = np.random.default_rng(7).integers(-1000, 1500, size=(COLS, ROWS, N_SLICES)).astype(np.float64)
    d = Path(tempfile.mkdtemp(prefix="medkit-fuzz-base-"))
    paths = write_dicom_series(arr, d, affine=aff, uid_seed=7)
    return [p.read_bytes() for p in paths], arr, aff


def _float_list(n_lo: int, n_hi: int):
    return st.lists(ODD_FLOATS, min_size=n_lo, max_size=n_hi)


# keyword -> strategy of values; "<delete>" removes the element, bytes are written raw (VR UN)
VALUES = {
    "PixelSpacing": st.one_of(_float_list(0, 3), st.just("abc")),
    "SliceThickness": ODD_FLOATS,
    "ImageOrientationPatient": st.one_of(
        _float_list(6, 6), _float_list(0, 7), st.sampled_from([[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0],
                                                               [1, 0, 0, 0, 0, 1], [0, 1, 0, 1, 0, 0]])),
    "ImagePositionPatient": st.one_of(_float_list(3, 3), _float_list(0, 4)),
    "RescaleSlope": ODD_FLOATS,
    "RescaleIntercept": ODD_FLOATS,
    "BitsAllocated": st.sampled_from([0, 1, 8, 12, 16, 32, 64, 17, 65535]),
    "BitsStored": st.integers(0, 40),
    "HighBit": st.integers(0, 40),
    "PixelRepresentation": st.integers(0, 3),
    "Rows": st.sampled_from([0, 1, ROWS - 1, ROWS + 1, 2 * ROWS, 65535]),
    "Columns": st.sampled_from([0, 1, COLS - 1, COLS + 1, 2 * COLS, 65535]),
    "SamplesPerPixel": st.integers(0, 4),
    "PhotometricInterpretation": st.sampled_from(["MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "", "X"]),
    "NumberOfFrames": st.sampled_from(["0", "1", "2", "4", "-1", "1000000"]),
    "SOPClassUID": st.sampled_from(SOP_CLASSES),
    "Modality": st.sampled_from(["MR", "", "SR", "PT", "RTSTRUCT", "SEG"]),
    "SeriesInstanceUID": st.sampled_from(["1.2.3", "", "1.2.3.4.5.6.7.8"]),
    "InstanceNumber": st.sampled_from(["", "1", "-5", "abc"]),
    "WindowCenter": st.sampled_from(["abc", "", "1e999"]),
}
TAGS = sorted(VALUES) + ["<raw>", "<delete>"]
RAW_TAG_CHOICES = ["Rows", "Columns", "BitsAllocated", "PixelSpacing", "ImageOrientationPatient",
                   "ImagePositionPatient", "RescaleSlope", "SamplesPerPixel", "NumberOfFrames", "PixelData"]


@st.composite
def mutation(draw):
    kind = draw(st.sampled_from(TAGS))
    where = draw(st.one_of(st.just("all"), st.integers(0, N_SLICES - 1)))
    if kind == "<raw>":
        return ("raw", draw(st.sampled_from(RAW_TAG_CHOICES)), draw(st.binary(max_size=12)), where)
    if kind == "<delete>":
        return ("delete", draw(st.sampled_from(sorted(VALUES) + ["PixelData", "SOPClassUID"])), None, where)
    return ("set", kind, draw(VALUES[kind]), where)


@st.composite
def dicom_input(draw):
    return {
        "mutations": draw(st.lists(mutation(), max_size=4)),
        "transfer_syntax": draw(st.one_of(st.none(), st.sampled_from(TRANSFER_SYNTAXES))),
        "pixel_len": draw(st.one_of(st.none(), st.tuples(st.integers(0, N_SLICES - 1), st.integers(-96, 16)))),
        "slices": draw(st.sampled_from(["all", "drop-middle", "drop-last", "duplicate", "one"])),
        "damage": draw(st.one_of(
            st.none(),
            st.tuples(st.just("truncate"), st.integers(0, N_SLICES - 1), st.floats(0, 1)),
            st.tuples(st.just("overwrite"), st.integers(0, N_SLICES - 1), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
        )),
        "layout": draw(st.sampled_from(["folder", "folder", "file", "zip"])),
        "suffix": draw(st.sampled_from([".dcm", "", ".IMA"])),
    }


def _raw(ds, kw: str, value: bytes) -> None:
    """Put ``value`` under ``kw``'s tag as raw bytes (VR UN), bypassing pydicom's checks."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(tag_for_keyword(kw))
    ds._dict[tag] = RawDataElement(tag, "UN", len(value), value, 0, True, True)  # noqa: SLF001


def _apply(ds, kind, kw, value):
    if kind == "delete":
        if kw in ds:
            del ds[kw]
    elif kind == "raw":
        _raw(ds, kw, value)
    else:
        try:
            setattr(ds, kw, value)
        except Exception:  # noqa: BLE001 - pydicom refuses the value: put its text there raw
            text = "\\".join(map(str, value)) if isinstance(value, list) else str(value)
            _raw(ds, kw, text.encode())


def build(spec: dict, folder: Path) -> tuple[Path, list[Path]]:
    """Write the mutated input under ``folder``; return (the path to load, the paths an error may name)."""
    import pydicom

    raw, _, _ = base_series()
    files = list(range(N_SLICES))
    if spec["slices"] == "drop-middle":
        files = [0, 1, 3]
    elif spec["slices"] == "drop-last":
        files = [0, 1, 2]
    elif spec["slices"] == "duplicate":
        files = [0, 1, 1, 2, 3]
    elif spec["slices"] == "one":
        files = [1]
    series = folder / "series"
    series.mkdir()
    written = []
    for n, k in enumerate(files):
        ds = pydicom.dcmread(io.BytesIO(raw[k]))
        for kind, kw, value, where in spec["mutations"]:
            if where == "all" or where == k:
                _apply(ds, kind, kw, value)
        if spec["transfer_syntax"] is not None:
            ds.file_meta.TransferSyntaxUID = spec["transfer_syntax"]
        if spec["pixel_len"] is not None and spec["pixel_len"][0] == k and ds.get("PixelData") is not None:
            pd = bytes(ds.PixelData)
            delta = spec["pixel_len"][1]
            ds.PixelData = pd[: max(len(pd) + delta, 0)] if delta < 0 else pd + b"\0" * delta
        path = series / f"IM{n:04d}{spec['suffix']}"
        buf = io.BytesIO()
        try:
            ds.save_as(buf, enforce_file_format=False)
        except Exception:  # noqa: BLE001 - pydicom refuses to encode this value: write it without
            ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
            for kind, kw, _value, _where in spec["mutations"]:
                if kind == "set" and kw in ds:
                    del ds[kw]
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=False)
        data = bytearray(buf.getvalue())
        dmg = spec["damage"]
        if dmg is not None and dmg[1] == k:
            at = int(dmg[2] * (len(data) - 1))
            if dmg[0] == "truncate":
                data = data[:at]
            else:
                data[at:at + len(dmg[3])] = dmg[3]
        path.write_bytes(bytes(data))
        written.append(path)
    if spec["layout"] == "file":
        return written[min(1, len(written) - 1)], [written[min(1, len(written) - 1)]]
    if spec["layout"] == "zip":
        z = folder / "series.zip"
        with zipfile.ZipFile(z, "w") as zf:
            for p in written:
                zf.write(p, f"study/{p.name}")
        return z, [z]
    return series, [series]


def _loaded_slices(spec: dict) -> list[int]:
    files = {"all": [0, 1, 2, 3], "drop-middle": [0, 1, 3], "drop-last": [0, 1, 2], "duplicate": [0, 1, 1, 2, 3],
             "one": [1]}[spec["slices"]]
    return [files[min(1, len(files) - 1)]] if spec["layout"] == "file" else files


def _oracle(spec: dict, vol) -> None:
    """Exact checks where the right answer is known."""
    _, arr, aff = base_series()
    muts = spec["mutations"]
    plain = spec["transfer_syntax"] in (None, "1.2.840.10008.1.2.1") and spec["damage"] is None
    loaded = _loaded_slices(spec)
    if not muts and plain:
        # A gap in the stack or short pixel data can never give a correct volume.
        assert spec["slices"] != "drop-middle" or spec["layout"] == "file", f"loaded a stack with a gap: {spec}"
        # (-1 is no loss: pydicom pads an odd-length value back to even with a zero byte.)
        short = spec["pixel_len"] is not None and spec["pixel_len"][1] < -1 and spec["pixel_len"][0] in loaded
        assert not short, f"loaded a slice whose pixel data is short: {spec}"
        if spec["slices"] == "all" and spec["layout"] != "file" and spec["pixel_len"] is None:
            np.testing.assert_array_equal(vol[0].numpy(), arr.astype(np.float32))
            np.testing.assert_allclose(np.asarray(vol.affine), aff, atol=1e-5)
    dmg = spec["damage"]
    if not muts and dmg is not None and dmg[0] == "truncate" and dmg[1] in loaded:
        # (An extension-less file cut before its 'DICM' marker cannot be told from any other file.)
        if spec["suffix"] or dmg[2] * (len(base_series()[0][dmg[1]]) - 1) >= 132:
            raise AssertionError(f"loaded a series with a truncated slice: {spec}")
    only_rescale = muts and all(kind == "set" and kw in ("RescaleSlope", "RescaleIntercept") and where == "all"
                                for kind, kw, _v, where in muts)
    if only_rescale and plain and spec["pixel_len"] is None and spec["slices"] == "all" and spec["layout"] != "file":
        slope, inter = 1.0, -1024.0
        for _kind, kw, v, _where in muts:
            if kw == "RescaleSlope":
                slope = float(v)
            else:
                inter = float(v)
        want = (np.round(arr + 1024.0) * slope + inter).astype(np.float32)
        if np.all(np.isfinite(want)) and slope != 0:
            np.testing.assert_allclose(vol[0].numpy(), want, rtol=1e-5, atol=1e-3 * max(1.0, abs(inter)))


@given(dicom_input())
@fuzz_settings(default_n=600)
def test_fuzz_load_volume_dicom(fuzz_workdir, spec):
    from medkit.io import load_volume

    warm_up()
    with tempfile.TemporaryDirectory(dir=fuzz_workdir) as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = Path(d)
        path, names = build(spec, folder)
        vol = run_input(TARGET, lambda: load_volume(path), names, folder, describe=lambda: repr(spec))
        if vol is not None:
            check_volume_invariants(vol, path)
            _oracle(spec, vol)
