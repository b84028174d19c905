"""Run folders, seeding, device choice and checkpoints.

Every run leaves one self-contained folder (nnU-Net habit)::

    <run>/config.yaml         resolved config
    <run>/manifest.json       medkit version, git SHA, package versions, seed,
                              device, input sha256s, start/end times, status
    <run>/summary.json        per-case rows and aggregates
    <run>/predictions/        outputs
    <run>/logs/               metrics.jsonl, plots
    <run>/checkpoints/{last,best}.pt   (config inside; training resumes from last)

Every file is written atomically (temp + rename, :mod:`medkit.io.atomic`), so a
killed run never leaves a half-written file under a final name.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import dump_config, to_dict
from .io.atomic import atomic_path, write_json, write_text

TRACKED_PACKAGES = (
    "torch", "monai", "numpy", "nibabel", "SimpleITK", "pydicom", "transformers", "peft",
    "accelerate", "highdicom",
)


def pick_device(device: str = "auto"):
    """``"auto"`` -> CUDA if available, else MPS, else CPU; otherwise ``torch.device(device)``.

    Asking for ``cuda`` without a GPU is an error rather than a silent CPU fallback.
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use --device auto or cpu")
    return dev


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices). ``deterministic`` also asks
    torch for deterministic kernels (slower; needed for bitwise-equal resumes)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (relative names + contents, sorted)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def git_sha(cwd: str | Path | None = None) -> str | None:
    """The commit of the medkit source tree, if it is a git checkout."""
    here = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = None
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunDir:
    """A run's output folder. Create with :meth:`create`; reopen with :meth:`open`.

    Attributes:
        path: the folder.
        manifest: what ``manifest.json`` holds (written on every change).
    """

    path: Path
    manifest: dict = field(default_factory=dict)

    @classmethod
    def create(cls, path: str | Path, *, config: Any = None, seed: int | None = None,
               device: str | None = None, command: str | None = None, resume: bool = False) -> RunDir:
        """Make (or, with ``resume``, reopen) a run folder and write config + manifest.

        A non-empty existing folder without ``resume`` is refused, so one run
        never overwrites another's results.
        """
        from . import __version__

        path = Path(path)
        if path.exists() and any(path.iterdir()) and not resume:
            raise FileExistsError(f"{path}: run folder exists and is not empty; pass --resume or choose a new --out")
        for sub in ("predictions", "logs", "checkpoints"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        run = cls(path)
        old = path / "manifest.json"
        if resume and old.exists():
            import json

            run.manifest = json.loads(old.read_text())
            run.manifest.setdefault("resumed_at", []).append(_now())
            run.manifest["status"] = "running"
        else:
            run.manifest = {
                "medkit_version": __version__,
                "git_sha": git_sha(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "packages": package_versions(),
                "seed": seed,
                "device": device,
                "command": command,
                "inputs": {},
                "started_at": _now(),
                "finished_at": None,
                "status": "running",
                "timings_s": {},
            }
        if config is not None:
            write_text(path / "config.yaml", dump_config(config))
        run.save_manifest()
        return run

    def save_manifest(self) -> None:
        write_json(self.path / "manifest.json", self.manifest)

    def add_input(self, path: str | Path, name: str | None = None) -> str:
        """Record an input file/folder's sha256 in the manifest (under ``name``, default its basename)."""
        digest = sha256_path(path)
        self.manifest["inputs"][name or Path(path).name] = digest
        self.save_manifest()
        return digest

    def record_time(self, name: str, seconds: float) -> None:
        self.manifest.setdefault("timings_s", {})[name] = round(float(seconds), 3)
        self.save_manifest()

    def write_summary(self, summary: dict) -> Path:
        return write_json(self.path / "summary.json", summary)

    def finish(self, status: str = "completed") -> None:
        self.manifest["finished_at"] = _now()
        self.manifest["status"] = status
        self.save_manifest()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, state: dict, name: str = "last", config: Any = None) -> Path:
        """Atomically write ``checkpoints/{name}.pt``; the config goes inside (nanoGPT habit)."""
        import torch

        state = dict(state)
        if config is not None:
            state["config"] = to_dict(config)
        target = self.path / "checkpoints" / f"{name}.pt"
        with atomic_path(target) as tmp:
            torch.save(state, tmp)
        return target

    def load_checkpoint(self, name: str = "last", map_location="cpu") -> dict | None:
        """The checkpoint dict, or ``None`` when there is none yet."""
        return load_checkpoint(self.path / "checkpoints" / f"{name}.pt", map_location=map_location)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict | None:
    """Load a ``.pt`` checkpoint written by :meth:`RunDir.save_checkpoint`; ``None`` if absent."""
    import torch

    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location=map_location, weights_only=False)


def track(iterable, description: str = "working", total: int | None = None):
    """A rich progress bar over ``iterable`` (quiet when stderr is not a terminal
    or ``MEDKIT_NO_PROGRESS`` is set, so logs and CI output stay clean)."""
    if os.environ.get("MEDKIT_NO_PROGRESS") or not sys.stderr.isatty():
        yield from iterable
        return
    from rich.console import Console
    from rich.progress import track as _track

    yield from _track(iterable, description=description, total=total, console=Console(stderr=True))


def open_training_run(pipeline, name: str, cls, *, out=None, overrides=(), resume: bool = False,
                      device: str = "auto"):
    """``(config, RunDir)`` for ``medkit train X PIPELINE``: the spec's ``config:`` plus
    ``--set`` overrides (on ``--resume``, the run's own ``config.yaml`` instead), the run
    folder (default ``runs/<name>-<time>``), and its manifest."""
    import time

    from .config import load_config, load_pipeline

    cfg = load_pipeline(pipeline, name, cls, list(overrides))
    if resume and out is not None and (Path(out) / "config.yaml").exists():
        cfg = load_config(Path(out) / "config.yaml", cls, list(overrides))  # resume with the run's config
    out = Path(out) if out is not None else Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = RunDir.create(out, config=cfg, seed=cfg.seed, device=str(pick_device(device)),
                        command=" ".join(sys.argv), resume=resume)
    return cfg, run
