"""Atomic file writes: write a temp file beside the target, then rename.

A killed process leaves at worst a hidden ``.*.tmp-*`` file, never a partial file
under the final name. ``os.replace`` is atomic on POSIX and Windows when source
and target are on the same filesystem, which is why the temp file lives in the
target's own folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path in ``path``'s folder; on success rename it onto ``path``.

    The temp name keeps the full suffix (``.nii.gz``), since writers such as nibabel
    pick the format from it. On any exception the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the mode a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN is refused: it is not JSON)."""
    return write_text(path, json.dumps(obj, indent=2, allow_nan=False, default=_json_default) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    """Atomically write one JSON object per line."""
    body = "".join(json.dumps(r, allow_nan=False, default=_json_default) + "\n" for r in rows)
    return write_text(path, body)


def _json_default(o: Any) -> Any:
    # numpy scalars/arrays and paths appear in summaries all the time.
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
