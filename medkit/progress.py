"""Progress for long work: a bar on a terminal, plain lines in a log.

``track(xs, "segment")`` yields the items of ``xs``. On a terminal (stderr is a TTY)
it draws a rich progress bar. Otherwise (a pipe, a batch job, CI) it prints a plain
line such as ``segment: 3/10 (30 %), 12 s`` to stderr at most every
``MEDKIT_PROGRESS_EVERY_S`` seconds (default 10) and a last line when done, so a
nightly job's log shows that it is alive, while loops that finish within the
interval print nothing. ``MEDKIT_NO_PROGRESS=1`` silences both.

Ground floor: imports nothing from medkit, so any module may use it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _interval() -> float:
    try:
        return float(os.environ.get("MEDKIT_PROGRESS_EVERY_S", "10"))
    except ValueError:
        return 10.0


def track(iterable: Iterable[T], description: str = "working", total: int | None = None) -> Iterator[T]:
    """Yield from ``iterable`` while showing progress on stderr (see the module docstring)."""
    if os.environ.get("MEDKIT_NO_PROGRESS"):
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import track as _track

        yield from _track(iterable, description=description, total=total, console=Console(stderr=True))
        return
    every = _interval()
    t0 = last = time.monotonic()
    printed = False
    i = 0
    for i, x in enumerate(iterable, 1):
        yield x
        now = time.monotonic()
        if now - last >= every:
            _line(description, i, total, now - t0)
            last, printed = now, True
    if printed:
        _line(description, i, total, time.monotonic() - t0)


def _line(description: str, i: int, total: int | None, seconds: float) -> None:
    of = f"/{total} ({100 * i / total:.0f} %)" if total else ""
    print(f"{description}: {i}{of}, {seconds:.0f} s", file=sys.stderr, flush=True)
