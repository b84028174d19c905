"""No PHI in anything medkit writes or says.

Input: a CT series whose headers carry a patient name, ID, birth date, accession
number, institution (name, address, department), physicians, other IDs, study ID and
descriptions, comments and a private-tag MRN; its folder and file names carry the
name, MRN and accession too. Then ``medkit convert`` (folder and single file),
``medkit inspect`` (folder and file), ``medkit run`` (convert pipeline: run folder),
``medkit segment`` and error paths (a truncated slice, an MR series given to
``segment``, an unknown --series-uid) run on it.

Checked for every PHI string (case-insensitive; UTF-8 and UTF-16): every output file
(raw bytes; NIfTI decompressed too, and its header text fields; PNG text chunks, zTXt/iTXt
decompressed), every output file and folder name, stdout/stderr of every command
(log lines), exception messages, and the loaded volume's ``meta``.

Scope, stated in docs/privacy.md: header values never appear anywhere. A case is named
after the path the user typed (or the entry directly under a typed folder); names deeper
inside the input (series folders, slice files) never appear in outputs; an error message
may name the offending input file by its path (it must, to be fixable), and nothing else of it.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medkit.cli import app

from .conftest import check_whole, small_ct

PATIENT = {"PatientName": "ZZDOE^JOHNATHAN", "PatientID": "MRN88442211", "PatientBirthDate": "19510323",
           "PatientSex": "M", "PatientAddress": "42 QUOKKA LANE", "OtherPatientIDs": "OPID7766",
           "PatientTelephoneNumbers": "5550199"}
EXTRA = {"AccessionNumber": "ACC5550123", "InstitutionName": "STMUNGOHOSPITAL",
         "InstitutionAddress": "9 WOMBAT ROAD", "InstitutionalDepartmentName": "KOALAWARD",
         "ReferringPhysicianName": "DRWHOZIT^ALBERT", "PerformingPhysicianName": "DRPLUMTREE",
         "OperatorsName": "TECHGRUMBLE", "StudyID": "STUDYID4242", "StudyDescription": "CT ZZDOE ABDOMEN",
         "ImageComments": "patient JOHNATHAN ZZDOE MRN88442211", "RequestingPhysician": "DRWHOZIT",
         "StationName": "STMUNGOCT1"}
PRIVATE_MRN = "PRIVMRN99887766"
FOLDER_NAME = "ACC5550123_ZZDOE"  # an accession-named study folder inside the input
FILE_PATTERN = "ZZDOE_JOHNATHAN_MRN88442211_{index:04d}.dcm"
PHI = ["ZZDOE", "JOHNATHAN", "MRN88442211", "88442211", "19510323", "1951-03-23", "23.03.1951", "ACC5550123",
       "5550123", "STMUNGO", "QUOKKA", "WOMBAT", "KOALAWARD", "DRWHOZIT", "PLUMTREE", "GRUMBLE", "OPID7766",
       "5550199", "STUDYID4242", PRIVATE_MRN]


def write_phi_series(root: Path, *, index: int = 0, modality: str = "CT", series_seed: int = 5) -> Path:
    """A small CT phantom as a DICOM series full of PHI; returns its folder."""
    import pydicom

    from medkit.io.dicom_write import write_dicom_series

    case = small_ct(index)
    folder = root / FOLDER_NAME / f"series{series_seed}"
    files = write_dicom_series(case.image.astype(np.float64), folder, affine=case.affine, modality=modality,
                               series_description="CT ABDOMEN PORTAL", uid_seed=series_seed, patient=PATIENT,
                               extra=EXTRA, file_pattern=FILE_PATTERN)
    for f in files:
        ds = pydicom.dcmread(f)
        block = ds.private_block(0x0011, "ACME PHI 1.0", create=True)
        block.add_new(0x01, "LO", PRIVATE_MRN)
        block.add_new(0x02, "PN", "ZZDOE^JOHNATHAN")
        ds.save_as(f)
    return folder


def _texts(data: bytes) -> list[bytes]:
    """The byte strings to search: raw, gunzipped, PNG text chunks decompressed."""
    out = [data]
    if data[:2] == b"\x1f\x8b":
        try:
            out.append(gzip.decompress(data))
        except (OSError, EOFError):
            pass
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        i = 8
        while i + 8 <= len(data):
            n = int.from_bytes(data[i:i + 4], "big")
            kind, body = data[i + 4:i + 8], data[i + 8:i + 8 + n]
            if kind in (b"zTXt", b"iTXt"):
                for start in range(len(body)):
                    try:
                        out.append(zlib.decompress(body[start:]))
                        break
                    except zlib.error:
                        continue
            if kind in (b"tEXt", b"iTXt", b"zTXt", b"eXIf"):
                out.append(body)
            i += 12 + n
    return out


def find_phi(data: bytes | str, where: str, allowed_paths: tuple[str, ...] = ()) -> list[str]:
    """PHI strings found in ``data`` (after removing ``allowed_paths``), as 'where: token'."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    hits = []
    for blob in _texts(data):
        for enc in ("utf-8", "utf-16-le"):
            text = blob.decode(enc, errors="ignore") if enc != "utf-8" else blob.decode("utf-8", errors="replace")
            for p in sorted(allowed_paths, key=len, reverse=True):
                text = text.replace(p, "<input path>")
            for tok in PHI:
                if re.search(re.escape(tok), text, flags=re.I):
                    hits.append(f"{where}: {tok!r} ({enc})")
    return sorted(set(hits))


def scan_outputs(folder: Path) -> tuple[list[str], dict[str, int]]:
    """PHI hits in every file (content and name) and folder name under ``folder``; file counts by type."""
    hits, kinds = [], {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        hits += find_phi(rel, f"name {rel}")
        if p.is_file():
            data = p.read_bytes()
            hits += find_phi(data, rel)
            kind = ".nii.gz" if p.name.endswith(".nii.gz") else p.suffix
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind in (".nii.gz", ".nii"):
                import nibabel as nib

                h = nib.load(str(p)).header
                for field in ("descrip", "aux_file", "intent_name", "db_name"):
                    if field in h:
                        hits += find_phi(bytes(h[field].tobytes()), f"{rel} header {field}")
    return hits, kinds


def _invoke(args: list[str], capfd) -> tuple[int, str]:
    r = CliRunner().invoke(app, args)
    out = r.output
    try:
        out += r.stderr
    except (ValueError, AttributeError):
        pass
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        out += f"\n{type(r.exception).__name__}: {r.exception}"
    fd = capfd.readouterr()  # anything C libraries (GDCM, ITK) wrote to the real stdout/stderr
    return r.exit_code, out + fd.out + fd.err


@pytest.fixture
def phi_input(tmp_path):
    root = tmp_path / "study"  # the path the user types stays neutral; PHI is below it
    series = write_phi_series(root)
    return root, series


def test_phi_fixture_really_holds_phi(phi_input):
    """The scanner finds the PHI in the input (else every check below is vacuous)."""
    _root, series = phi_input
    f = sorted(series.iterdir())[0]
    found = " ".join(find_phi(f.read_bytes(), "input"))
    for tok in ("ZZDOE", "MRN88442211", "19510323", "ACC5550123", "STMUNGO", PRIVATE_MRN):
        assert tok in found
    assert find_phi(str(f), "name")


def test_no_phi_in_outputs_logs_or_errors(phi_input, tmp_path, capfd, tiny_model_dir):
    from medkit.io import load_volume

    root, series = phi_input
    # A single file is named by the user when typed: its own name becomes the case id (docs/privacy.md),
    # so the typed copy has a neutral name; the header inside is the PHI one.
    first_file = tmp_path / "typed" / "slice1.dcm"
    first_file.parent.mkdir()
    first_file.write_bytes(sorted(series.iterdir())[0].read_bytes())
    out = tmp_path / "outputs"
    hits: list[str] = []
    checked: dict[str, int] = {}
    logs = {}

    # In-process: the loaded volume's meta (what every writer draws from).
    vol = load_volume(root)
    hits += find_phi(repr(vol.meta), "load_volume meta")

    runs = {
        "convert folder": ["convert", str(root), str(out / "convert")],
        "convert file": ["convert", str(first_file), str(out / "convert-file")],
        "inspect folder": ["inspect", str(root)],
        "inspect file": ["inspect", str(first_file)],
        "run convert pipeline": ["run", str(_convert_spec(tmp_path, root)), "--out", str(out / "run")],
        "segment": ["segment", "-i", str(root), "-o", str(out / "segment"), "--model", str(tiny_model_dir),
                    "--device", "cpu", "--fast"],
    }
    for name, args in runs.items():
        code, text = _invoke(args, capfd)
        assert code == 0, f"{name}: {text[-1500:]}"
        logs[name] = text
    # Error paths: a truncated slice; an MR series given to segment; an unknown series UID.
    bad = tmp_path / "bad"
    bad_series = write_phi_series(bad, series_seed=6)
    cut = sorted(bad_series.iterdir())[3]
    cut.write_bytes(cut.read_bytes()[:-500])
    mr = write_phi_series(tmp_path / "mr", modality="MR", series_seed=7)
    errors = {
        "convert truncated": ["convert", str(bad), str(out / "err-convert")],
        "segment truncated": ["segment", "-i", str(bad), "-o", str(out / "err-seg"), "--model", str(tiny_model_dir)],
        "segment MR": ["segment", "-i", str(mr.parent.parent), "-o", str(out / "err-mr"), "--model",
                       str(tiny_model_dir)],
        "inspect unknown series": ["inspect", str(root), "--series-uid", "1.2.3.999"],
    }
    for name, args in errors.items():
        code, text = _invoke(args, capfd)
        assert code == 2, f"{name}: exit {code}: {text[-1500:]}"  # an unknown --series-uid too
        logs[name] = text
    inputs = (*bad.rglob("*"), *mr.parent.parent.rglob("*"), *root.rglob("*"), first_file)
    every_input = tuple(str(p) for p in inputs) + tuple(p.name for p in inputs)
    for name, text in logs.items():
        # A message may name an input file by its path (an error must, to be fixable; inspect
        # titles its table with the path typed, which rich may wrap): the PHI in the names of
        # the typed path is allowed in that command's output, nothing else of the input.
        typed = " ".join({**runs, **errors}[name])
        hits += [h for h in find_phi(text, f"log/error of `{name}`", every_input)
                 if not any(tok in typed for tok in re.findall(r"'([^']+)'", h)[:1])]
    file_hits, kinds = scan_outputs(out)
    hits += file_hits
    checked.update(kinds)
    for kind in (".nii.gz", ".json", ".yaml", ".csv", ".png"):
        assert checked.get(kind, 0) >= 1, f"no {kind} output was produced, so none was checked: {checked}"
    assert not hits, "PHI found:\n" + "\n".join(hits)
    print(f"PHI scan: {sum(checked.values())} output files {checked}, {len(logs)} command logs, 0 hits")


def test_no_phi_in_dicom_seg(phi_input, tmp_path, capfd, tiny_model_dir):
    root, _ = phi_input
    out = tmp_path / "seg"
    code, text = _invoke(["segment", "-i", str(root), "-o", str(out), "--model", str(tiny_model_dir), "--device",
                          "cpu", "--fast", "--output-type", "dicom-seg"], capfd)
    assert code == 0, text[-1500:]
    hits, kinds = scan_outputs(out)
    assert kinds.get(".dcm") == 1, kinds
    check_whole(out)
    assert not hits, "PHI found:\n" + "\n".join(hits)


def test_dicom_seg_copy_identity_is_opt_in(phi_input, tmp_path, capfd, tiny_model_dir):
    """``--copy-identity`` puts the patient identifiers into the SEG, and only there: the scan
    finds them (so a silent copy without the flag would be found too)."""
    root, _ = phi_input
    out = tmp_path / "seg-identity"
    code, text = _invoke(["segment", "-i", str(root), "-o", str(out), "--model", str(tiny_model_dir), "--device",
                          "cpu", "--fast", "--output-type", "dicom-seg", "--copy-identity"], capfd)
    assert code == 0, text[-1500:]
    hits, kinds = scan_outputs(out)
    assert kinds.get(".dcm") == 1
    assert any("'JOHNATHAN'" in h for h in hits) and any("'MRN88442211'" in h for h in hits), hits
    assert all(h.split(":")[0].endswith(".seg.dcm") for h in hits), hits  # nothing else carries them
    assert not any(f"'{PRIVATE_MRN}'" in h for h in hits), hits  # private tags: never copied


def _convert_spec(tmp_path: Path, root: Path) -> Path:
    spec = tmp_path / "convert.yaml"
    spec.write_text(f"pipeline: convert\nconfig:\n  input: {root}\n  modality: CT\n")
    return spec


def test_no_phi_in_exception_messages(tmp_path):
    """In-process errors (what a caller logs) carry no header PHI."""
    from medkit.io import MedkitInputError, discover_cases, load_volume

    root = tmp_path / "study"
    s1 = write_phi_series(root, series_seed=8)
    write_phi_series(root, index=1, series_seed=9)  # two series: MultipleSeriesError lists them
    msgs = []
    for call in (lambda: load_volume(root), lambda: load_volume(root, series_uid="9.9"),
                 lambda: load_volume(s1, modality="MR")):
        with pytest.raises(MedkitInputError) as e:
            call()
        msgs.append(str(e.value))
    f = sorted(s1.iterdir())[2]
    f.write_bytes(f.read_bytes()[:700])
    for call in (lambda: load_volume(s1), lambda: load_volume(f), lambda: discover_cases(root / "none")):
        with pytest.raises(MedkitInputError) as e:
            call()
        msgs.append(str(e.value))
    allowed = tuple(str(p) for p in root.rglob("*")) + tuple(p.name for p in root.rglob("*"))
    hits = [h for i, m in enumerate(msgs) for h in find_phi(m, f"error {i}", allowed)]
    assert not hits, "\n".join(hits + msgs)


def test_no_phi_in_generated_reports(phi_input, tmp_path, capfd):
    """``medkit report`` on DICOM images whose headers hold PHI (the shipped CoFE model):
    reports.jsonl is keyed by the file names, and no output or log line carries the PHI."""
    root, _ = phi_input
    flat = tmp_path / "cxr"
    flat.mkdir()
    import pydicom

    for k, f in enumerate(sorted(root.rglob("*.dcm"))[:2]):
        ds = pydicom.dcmread(f)                # a CT slice is refused: relabel it a radiograph,
        ds.Modality = "DX"                     # keeping every PHI element of the header;
        ds.save_as(flat / f"cxr{k}.dcm")       # the user names the files (they name the cases)
    out = tmp_path / "reports"
    code, text = _invoke(["report", "-i", str(flat), "-o", str(out), "--device", "cpu", "--max-new-tokens", "8"], capfd)
    assert code == 0, text[-1500:]
    rows = [json.loads(line) for line in (out / "reports.jsonl").read_text().splitlines()]
    assert [r["case_id"] for r in rows] == ["cxr0", "cxr1"]  # one key per image, from its file name
    hits, kinds = scan_outputs(out)
    hits += find_phi(text, "log of `report`", (str(flat),))
    assert kinds.get(".jsonl") == 1
    assert not hits, "PHI found:\n" + "\n".join(hits)


def test_a_typed_file_names_its_case_and_case_id_overrides_it(phi_input, tmp_path, capfd):
    """The rule as the user sees it: typing a PHI-named slice names the output after it (the name
    was the user's choice, as nnU-Net and TotalSegmentator do); ``--case-id`` replaces it, and then
    no PHI at all reaches the outputs, header values included."""
    _root, series = phi_input
    f = sorted(series.iterdir())[0]
    code, text = _invoke(["convert", str(f), str(tmp_path / "named")], capfd)
    assert code == 0, text
    assert [p.name for p in sorted((tmp_path / "named").iterdir())] == ["ZZDOE_JOHNATHAN_MRN88442211_0001_0000.nii.gz",
                                                                         "cases.csv"]
    code, text = _invoke(["convert", str(f), str(tmp_path / "pseudo"), "--case-id", "case-0007"], capfd)
    assert code == 0, text
    hits, kinds = scan_outputs(tmp_path / "pseudo")
    hits = [h for h in hits if not h.startswith("cases.csv")]  # cases.csv maps the case to its source path
    assert kinds.get(".nii.gz") == 1 and not hits, hits
    assert (tmp_path / "pseudo" / "case-0007_0000.nii.gz").exists()
