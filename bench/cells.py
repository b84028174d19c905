"""Resumable benchmark cells and results provenance, shared by every ``bench/*.py``.

A benchmark is a grid of cells, one per (method, setting, seed). Each cell writes
its own JSON when it finishes::

    bench/results/<name>-<device>/cells/<cell>.json   {"cell", "result", "provenance"}

so a run can stop after some cells and a later run (another session, another
machine) does the rest: ``Bench.cell`` returns a finished cell's stored result
without running it again. One command then assembles the table from the cells::

    bench/results/<name>-<device>.json    {"provenance", "config", "targets", "tables", ...}

Every results file says where it came from (:func:`provenance`: git SHA and whether
the tree was dirty, the command, the resolved config, package versions, the
device, start and end times) and carries a top-level ``targets`` object whose
entries :func:`target` computes, ``{"value", "target", "held"}``, never typed by hand.

Usage::

    b = Bench("segmentation", device=dev, config=cfg_dict)
    r = b.cell("table1/liverformer/seed0", lambda: train_and_test(...))
    ...
    b.write({"table1": rows}, targets={"liverformer_vs_best_peer": target(d, 0.0, ">", ci=ci)})
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_state() -> dict:
    """``{"git_sha", "git_dirty"}`` of the checkout the benchmark runs from."""

    def git(*args):
        try:
            r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "medkit", "bench", "pipelines")
    return {"git_sha": sha, "git_dirty": bool(dirty) if dirty is not None else None}


def device_info(device: Any = None) -> dict:
    """The machine: CPU model and count, and the GPU name when ``device`` is CUDA."""
    import os

    info = {"device": str(device) if device is not None else "cpu", "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "python": sys.version.split()[0]}
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), None)
        info["cpu"] = cpu
    except OSError:
        pass
    if str(device).startswith("cuda"):
        import torch

        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def provenance(config: Any = None, device: Any = None, started_at: str | None = None) -> dict:
    """The provenance block of a results or cell file (see the module docstring)."""
    from medkit.config import to_dict
    from medkit.runs import package_versions

    cfg = to_dict(config) if config is not None and not isinstance(config, dict) else config
    return {**git_state(), "command": " ".join([Path(sys.executable).name, *sys.argv]), "argv": list(sys.argv),
            "config": cfg, "packages": package_versions(), **device_info(device),
            "started_at": started_at or _now(), "finished_at": _now()}


def target(value: float | None, goal: float, op: str = ">=", **extra) -> dict:
    """``{"value", "target", "held", ...}``: ``held`` is ``value op goal`` (None value: not held).
    ``op``: ``>=``, ``>``, ``<=``, ``<``. Extra keys (a CI, n, the arms) are kept."""
    ops = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}
    held = value is not None and bool(ops[op](value, goal))
    return {"value": value, "target": goal, "op": op, "held": held, **extra}


def target_ci(diff: dict, *, better: str = "higher") -> dict:
    """A paired comparison as a target: held when the 95 % CI of ``a - b`` excludes 0 on the
    better side (``diff`` from :func:`medkit.metrics.stats.paired_diff`)."""
    lo, hi = diff["ci95"]
    value = diff["mean"]
    if better == "higher":
        held = lo is not None and lo > 0
        goal = "ci95 low > 0"
    else:
        held = hi is not None and hi < 0
        goal = "ci95 high < 0"
    return {"value": value, "target": goal, "held": bool(held), "ci95": [lo, hi], "p_boot": diff.get("p_boot"),
            "n_units": diff.get("n_units")}


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, tuples -> lists, paths -> str, numpy -> Python."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


class Bench:
    """One benchmark's cells and results file (see the module docstring).

    Args:
        name: the benchmark (``segmentation``); files are ``<name>-<device_tag>``.
        device: the torch device it runs on; its type is the device tag (cpu / cuda).
        config: the benchmark's resolved settings (goes into every file's provenance).
        root: the results folder (tests use a tmp folder).
    """

    def __init__(self, name: str, *, device: Any = "cpu", config: Any = None, root: Path = RESULTS,
                 tag: str | None = None):
        self.name = name
        self.device = device
        self.tag = tag or str(getattr(device, "type", device)).split(":")[0]
        self.config = config
        self.root = Path(root)
        self.started_at = _now()
        self.ran: list[str] = []

    @property
    def cells_dir(self) -> Path:
        return self.root / f"{self.name}-{self.tag}" / "cells"

    def cell_path(self, key: str) -> Path:
        return self.cells_dir / (_SAFE.sub("_", key.replace("/", "__")) + ".json")

    def done(self, key: str) -> bool:
        return self.cell_path(key).exists()

    def load(self, key: str) -> dict | None:
        p = self.cell_path(key)
        return json.loads(p.read_text())["result"] if p.exists() else None

    def cell(self, key: str, fn: Callable[[], dict], *, config: Any = None, log=print) -> dict:
        """The result of cell ``key``: stored if it finished before, else ``fn()`` run now and
        stored (atomically) with its own provenance and wall time."""
        from medkit.io.atomic import write_json

        stored = self.load(key)
        if stored is not None:
            return stored
        log(f"[{self.name}] cell {key}: running")
        t0, started = time.perf_counter(), _now()
        result = fn()
        wall = time.perf_counter() - t0
        write_json(self.cell_path(key), _clean({"cell": key, "wall_s": round(wall, 2), "result": result,
                                                 "targets": self.cell_targets(),
                                                 "provenance": provenance(config if config is not None else
                                                                          self.config, self.device, started)}))
        self.ran.append(key)
        log(f"[{self.name}] cell {key}: done in {wall:.0f} s")
        return result

    def cell_targets(self) -> dict:
        """What a cell file says about the issue's targets: none is decided by one (method,
        setting, seed) cell; ``--assemble`` computes them over the cells into the results file
        named here (``{"value", "target", "held"}`` each, with the cells still missing)."""
        res = self.root / f"{self.name}-{self.tag}.json"
        return {"decided_in": str(res.relative_to(ROOT)) if res.is_relative_to(ROOT) else str(res),
                "by": "the benchmark's --assemble over its finished cells"}

    def cells(self, prefix: str = "") -> dict[str, dict]:
        """Every finished cell whose key starts with ``prefix``: ``{key: result}``."""
        out = {}
        if not self.cells_dir.exists():
            return out
        for p in sorted(self.cells_dir.glob("*.json")):
            d = json.loads(p.read_text())
            if d["cell"].startswith(prefix):
                out[d["cell"]] = d["result"]
        return out

    def cell_shas(self) -> dict[str, str | None]:
        """The git SHA each finished cell ran at (a table may mix commits; the file says which)."""
        if not self.cells_dir.exists():
            return {}
        return {json.loads(p.read_text())["cell"]: json.loads(p.read_text())["provenance"].get("git_sha")
                for p in sorted(self.cells_dir.glob("*.json"))}

    def write(self, tables: dict, *, targets: dict, extra: dict | None = None, path: Path | None = None) -> Path:
        """The assembled results file: provenance, config, targets, tables, the cells used."""
        from medkit.io.atomic import write_json

        path = path or self.root / f"{self.name}-{self.tag}.json"
        shas = self.cell_shas()
        body = {"benchmark": self.name, "provenance": provenance(self.config, self.device, self.started_at),
                "git_sha": git_state()["git_sha"], "command": " ".join(sys.argv), "config": _clean(self.config),
                "targets": targets, "tables": tables, "cells": {"n": len(shas), "git_shas": sorted(
                    {s for s in shas.values() if s}), "dir": str(self.cells_dir.relative_to(ROOT))
                    if self.cells_dir.is_relative_to(ROOT) else str(self.cells_dir)},
                **(extra or {})}
        write_json(path, _clean(body))
        return path
