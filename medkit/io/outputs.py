"""An inference output folder that many runs fill, case by case, without losing track.

``medkit segment``, ``report``, ``convert`` and ``deform`` write into an output folder
through :class:`OutputFolder`:

- ``cases.csv``: one row per (command, case): case id, the source path the case came
  from, its DICOM series UID, the output files (relative, ``;``-separated) and when
  they were written. It is updated after every case, so it is right even when a run
  stops half-way.
- per-case tables (``statistics.csv``, ``reports.jsonl``) accumulate: a run replaces
  the rows of the cases it wrote and keeps every other case's rows.
- existing outputs are never replaced silently: a case whose files (or row) exist is
  refused before anything is written, unless ``overwrite``; then only that case's
  files are replaced (and its old files no longer produced are removed). Another
  case's files are never touched.
- ``manifest.json``: the latest run's manifest (``medkit.runs.inference_manifest``)
  with the earlier runs' manifests under ``previous_runs``; ``config.yaml``: the
  latest run's resolved command config.

Every file is written atomically (:mod:`medkit.io.atomic`). One process per output
folder at a time: two runs writing one folder concurrently can lose rows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .atomic import write_json, write_text
from .errors import OutputError

CASES_CSV = "cases.csv"
CASE_COLUMNS = ["case_id", "command", "source", "series_uid", "outputs", "written_at"]


def check_writable(path: str | Path, *, what: str = "output folder") -> Path:
    """Create ``path`` (a folder) if needed and prove that a file can be written in it.

    Raises:
        OutputError: a file where the folder should be, or a folder that cannot be created
            or written (read-only share, permissions, full disk), naming the folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(path, f"exists and is a file, not a folder; choose another {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".medkit-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(path, f"cannot write the {what} ({e.strerror or type(e).__name__})") from None
    return path


def check_parent_writable(path: str | Path) -> Path:
    """For a single output file: its folder must be writable (see :func:`check_writable`)."""
    return check_writable(Path(path).parent, what="output file's folder")


class OutputFolder:
    """Bookkeeping of one output folder for one ``command`` (see the module doc).

    Args:
        path: the folder (created).
        command: ``segment``, ``report``, ``convert``, ``deform``: the ``command`` column of
            ``cases.csv``, so two commands writing one folder keep their rows apart.
        overwrite: replace existing outputs of the cases this run writes.
    """

    def __init__(self, path: str | Path, command: str, *, overwrite: bool = False):
        self.created = not Path(path).exists()
        self.path = check_writable(path)
        self.command = command
        self.overwrite = overwrite
        self._cases = self._read_cases()

    def discard_if_unused(self) -> None:
        """Remove the folder again when this run created it and wrote nothing into it (a run
        that failed before its first case leaves no empty folder behind)."""
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    # ------------------------------------------------------------------ cases.csv
    def _read_cases(self) -> list[dict]:
        f = self.path / CASES_CSV
        if not f.exists():
            return []
        try:
            rows = list(csv.DictReader(f.open(encoding="utf-8", newline="")))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise OutputError(f, f"cannot read the case list ({type(e).__name__}: {e}); move it away or fix it") \
                from None
        if rows and not {"case_id", "outputs"} <= set(rows[0]):
            raise OutputError(f, f"not a medkit case list (columns {list(rows[0])}); move it away or choose "
                                 "another output folder")
        return rows

    def known(self, case_id: str) -> dict | None:
        """This command's ``cases.csv`` row for ``case_id``, or None."""
        return next((r for r in self._cases if r["case_id"] == case_id and r.get("command", self.command)
                     == self.command), None)

    def relative(self, p: str | Path) -> str:
        p = Path(p)
        try:
            return p.resolve().relative_to(self.path.resolve()).as_posix()
        except ValueError:
            return str(p)

    def claim(self, case_id: str, targets: Iterable[str | Path], source: str | Path | None = None) -> None:
        """Refuse to write ``case_id`` when any of ``targets`` exists or the case is already
        listed, unless ``overwrite``. Call it for every case before writing anything.

        Raises:
            OutputError: naming the first existing file and the way out (``--overwrite``).
        """
        if self.overwrite:
            return
        row = self.known(case_id)
        existing = [Path(t) for t in targets if Path(t).exists()]
        if existing:
            where = (f"written by an earlier run from {row['source']}" if row else "not listed in cases.csv")
            raise OutputError(existing[0], f"exists ({where}); pass --overwrite to replace the outputs of case "
                                           f"{case_id}, or choose another output folder")
        if row:
            raise OutputError(self.path / CASES_CSV, f"case {case_id} is already listed (from {row['source']}); "
                                                    "pass --overwrite to replace it, or --case-id to name this one")

    def record(self, case_id: str, outputs: Iterable[str | Path], *, source: str | Path | None = None,
               series_uid: str | None = None, written_at: str = "") -> None:
        """Add (or replace) ``case_id``'s row in ``cases.csv``; with ``overwrite``, first remove the
        case's earlier output files that this run did not write again."""
        outs = [self.relative(p) for p in outputs]
        old = self.known(case_id)
        if old and self.overwrite:
            for rel in filter(None, old.get("outputs", "").split(";")):
                f = self.path / rel
                if rel not in outs and f.is_file() and f.resolve().is_relative_to(self.path.resolve()):
                    f.unlink()
        self._cases = [r for r in self._cases if r is not old]
        src = "" if source is None else str(Path(source).absolute())
        self._cases.append({"case_id": case_id, "command": self.command, "source": src,
                            "series_uid": series_uid or "", "outputs": ";".join(outs), "written_at": written_at})
        self._cases.sort(key=lambda r: (r.get("command", ""), r["case_id"]))
        write_csv(self.path / CASES_CSV, self._cases, CASE_COLUMNS)

    # ------------------------------------------------------------------ per-case tables
    def upsert_csv(self, name: str, case_id: str, rows: list[dict], columns: list[str]) -> Path:
        """Replace ``case_id``'s rows of ``name`` (a CSV keyed by ``case_id``) with ``rows``."""
        f = self.path / name
        kept = []
        if f.exists():
            try:
                kept = [r for r in csv.DictReader(f.open(encoding="utf-8", newline="")) if r.get("case_id") != case_id]
            except (OSError, UnicodeDecodeError, csv.Error) as e:
                raise OutputError(f, f"cannot read it to add rows ({type(e).__name__}: {e})") from None
        return write_csv(f, sorted(kept + rows, key=lambda r: str(r.get("case_id", ""))), columns)

    def upsert_jsonl(self, name: str, rows: list[dict]) -> Path:
        """Replace the rows of ``name`` (JSONL keyed by ``case_id``) whose case ids ``rows`` hold."""
        f = self.path / name
        ids = {r["case_id"] for r in rows}
        kept = []
        if f.exists():
            try:
                kept = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
            except (OSError, ValueError) as e:
                raise OutputError(f, f"cannot read it to add rows ({type(e).__name__}: {e})") from None
        body = [r for r in kept if r.get("case_id") not in ids] + rows
        body.sort(key=lambda r: str(r.get("case_id", "")))
        return write_text(f, "".join(json.dumps(r, allow_nan=False) + "\n" for r in body))

    # ------------------------------------------------------------------ manifest
    def write_manifest(self, manifest: dict) -> Path:
        """``manifest.json`` = ``manifest``, with the earlier runs' manifests under ``previous_runs``."""
        f = self.path / "manifest.json"
        previous: list = []
        if f.exists():
            try:
                old = json.loads(f.read_text(encoding="utf-8"))
                if isinstance(old, dict) and old.get("run_id") != manifest.get("run_id"):
                    previous = list(old.pop("previous_runs", []) or []) + [old]
                elif isinstance(old, dict):
                    previous = list(old.get("previous_runs", []) or [])
            except (OSError, ValueError):
                previous = []
        return write_json(f, {**manifest, "previous_runs": previous})


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """Atomically write ``rows`` under ``columns`` (extra keys of a row are kept as extra columns)."""
    cols = list(columns) + [k for r in rows for k in r if k not in columns]
    cols = list(dict.fromkeys(cols))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return write_text(path, buf.getvalue())
