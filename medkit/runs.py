"""Run folders, seeding, device choice, checkpoints and model folders.

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

A model folder (``models/<name>/``, or what ``medkit model export`` writes) is the
one format every component ships and reads (``docs/contract.md``)::

    MODEL_CARD.md       what it is, the data it saw, its metrics, its limits
    config.yaml         the component's resolved config: read by ``load_model``
    model.safetensors   the weights (no pickle)
    assets.json         plain data the model needs besides weights (a vocabulary, ...)
    metrics.json        held-out metrics, provenance, the weights' sha256

Nothing read from a path a user gives is unpickled: weights are safetensors, configs
YAML/JSON, and checkpoints load with ``torch.load(weights_only=True)``, which refuses
any pickled Python object other than tensors and plain containers.
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

from .config import dump_config, load_config, to_dict
from .io.atomic import atomic_path, write_json, write_text
from .io.errors import MedkitInputError

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
    from .io.errors import DeviceError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(None, f"--device {device!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(None, f"--device {device}: CUDA is not available on this machine (torch "
                                f"{torch.__version__}); use --device auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(None, f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(None, f"--device {device}: MPS is not available on this machine; use --device auto or cpu")
    return dev


def process_rank() -> int:
    """This process's rank under ``accelerate launch`` / ``torchrun`` (``RANK``), else 0."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


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


def inference_manifest(command: str, *, device: str | None, inputs: dict[str, str | Path] | None = None,
                       model: str | Path | None = None, seed: int | None = None) -> dict:
    """The manifest of an inference run (``medkit segment``/``report``/``deform``): what
    :meth:`RunDir.create` records (versions, git SHA, packages, device, command line, start
    time), plus each input's sha256 (``inputs``: name -> path) and the model folder's.
    ``medkit.io.outputs.OutputFolder`` writes it beside the outputs."""
    import uuid

    from . import __version__

    return {
        "run_id": uuid.uuid4().hex[:12], "medkit_version": __version__, "git_sha": git_sha(),
        "python": sys.version.split()[0], "platform": platform.platform(), "packages": package_versions(),
        "kind": "inference",
        "command": command, "argv": " ".join(sys.argv), "seed": seed, "device": device,
        "model": None if model is None else {"path": str(model), "sha256": sha256_path(model)},
        "inputs": {k: sha256_path(v) for k, v in (inputs or {}).items()},
        "started_at": _now(), "finished_at": None, "status": "running", "timings_s": {},
    }


def now_utc() -> str:
    """The current UTC time as ISO 8601 (seconds), as manifests record it."""
    return _now()


@dataclass
class RunDir:
    """A run's output folder. Create with :meth:`create`; reopen with :meth:`open`.

    Attributes:
        path: the folder.
        manifest: what ``manifest.json`` holds (written on every change).
    """

    path: Path
    manifest: dict = field(default_factory=dict)
    readonly: bool = False  # a non-zero rank of a multi-process run: rank 0 writes, the others do not

    @classmethod
    def create(cls, path: str | Path, *, config: Any = None, seed: int | None = None,
               device: str | None = None, command: str | None = None, resume: bool = False,
               kind: str = "train") -> RunDir:
        """Make (or, with ``resume``, reopen) a run folder and write config + manifest.

        A non-empty existing folder without ``resume`` is refused, so one run
        never overwrites another's results. ``kind="inference"`` makes no
        ``checkpoints/`` folder.
        """
        from . import __version__

        path = Path(path)
        if process_rank() > 0:
            # Under `accelerate launch`, rank 0 owns the folder; other ranks keep a read-only view
            # (their loops save nothing; the resume checkpoint is read from rank 0's files).
            return cls(path, {"status": "running", "rank": process_rank()}, readonly=True)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"{path}: exists and is a file, not a run folder; choose a new --out")
        if path.exists() and any(path.iterdir()) and not resume:
            raise FileExistsError(f"{path}: run folder exists and is not empty; pass --resume or choose a new --out")
        subs = ("predictions", "logs", "checkpoints") if kind == "train" else ("logs",)
        try:
            for sub in subs:
                (path / sub).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MedkitInputError(path, f"cannot create the output folder ({e.strerror or e})") from None
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
                "kind": kind,
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
        if not self.readonly:
            write_json(self.path / "manifest.json", self.manifest)

    def add_input(self, path: str | Path, name: str | None = None) -> str:
        """Record an input file/folder's sha256 in the manifest (under ``name``, default its basename)."""
        if self.readonly:
            return ""
        digest = sha256_path(path)
        self.manifest["inputs"][name or Path(path).name] = digest
        self.save_manifest()
        return digest

    def record_time(self, name: str, seconds: float) -> None:
        self.manifest.setdefault("timings_s", {})[name] = round(float(seconds), 3)
        self.save_manifest()

    def write_summary(self, summary: dict) -> Path:
        if self.readonly:
            return self.path / "summary.json"
        return write_json(self.path / "summary.json", summary)

    def finish(self, status: str = "completed") -> None:
        self.manifest["finished_at"] = _now()
        self.manifest["status"] = status
        self.save_manifest()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, state: dict, name: str = "last", config: Any = None) -> Path:
        """Atomically write ``checkpoints/{name}.pt``; the config goes inside (nanoGPT habit).
        See :func:`save_checkpoint`."""
        if self.readonly:
            return self.path / "checkpoints" / f"{name}.pt"
        return save_checkpoint(self.path / "checkpoints" / f"{name}.pt", state, config=config)

    def load_checkpoint(self, name: str = "last", map_location="cpu") -> dict | None:
        """The checkpoint dict, or ``None`` when there is none yet."""
        return load_checkpoint(self.path / "checkpoints" / f"{name}.pt", map_location=map_location)


def plain_state(obj: Any) -> Any:
    """``obj`` with NumPy arrays as tensors and NumPy scalars as Python numbers, so that
    ``torch.load(weights_only=True)`` can read it back (RNG states hold both)."""
    import numpy as np
    import torch

    if isinstance(obj, dict):
        return {k: plain_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [plain_state(v) for v in obj]
        return tuple(out) if isinstance(obj, tuple) else out
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.astype(np.int64) if obj.dtype == np.uint32 else obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_checkpoint(path: str | Path, state: dict, *, config: Any = None) -> Path:
    """The one checkpoint writer: ``state`` (tensors, numbers, strings, lists, dicts; NumPy
    arrays are converted) plus the resolved ``config`` under ``"config"``, written atomically.

    The conventional keys: ``model`` (the state dict :func:`load_model` needs), ``assets``
    (plain data, e.g. a vocabulary), ``step``, ``optimizer``, RNG states.
    """
    import torch

    state = plain_state(dict(state))
    if config is not None:
        state["config"] = to_dict(config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict | None:
    """Load a checkpoint written by :func:`save_checkpoint`; ``None`` if absent.

    ``weights_only=True``: tensors and plain containers only. A file holding any other
    pickled object (which could run code when unpickled) is refused with
    :class:`MedkitInputError` and is never executed.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MedkitInputError(path, "not a medkit checkpoint: it holds pickled Python objects other than "
                                     f"tensors and plain data, which medkit refuses to load ({first[:160]})") from None
    if not isinstance(state, dict):
        raise MedkitInputError(path, "not a medkit checkpoint (expected a mapping)")
    return state


# ---------------------------------------------------------------------- model folders
MODEL_FILES = ("config.yaml", "model.safetensors")
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")


@dataclass
class LoadedModel:
    """What a model source holds: the component's config, its weights and its assets.

    Attributes:
        cfg: the component's config dataclass, built from ``config.yaml`` (unknown keys are errors).
        weights: ``{name: tensor}`` from ``model.safetensors`` (or a checkpoint's ``model``).
        assets: plain data saved beside the weights (``assets.json``), ``{}`` when none.
        metrics: ``metrics.json`` (``{}`` for a run folder).
        path: the folder it came from.
    """

    cfg: Any
    weights: dict
    assets: dict
    metrics: dict
    path: Path


def save_model_folder(path: str | Path, *, config: Any, weights: dict, component: str,
                      assets: dict | None = None, metrics: dict | None = None, card: str | None = None) -> Path:
    """Write a model folder (see the module docstring). Weights are saved as float tensors
    in ``model.safetensors``; ``metrics.json`` gains ``component``, ``format`` and the
    weights' sha256. Every file is written atomically."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    # clone(): safetensors refuses tensors that share storage (tied embeddings).
    flat = {k: v.detach().cpu().clone().contiguous() for k, v in weights.items() if isinstance(v, torch.Tensor)}
    if len(flat) != len(weights):
        bad = sorted(k for k, v in weights.items() if not isinstance(v, torch.Tensor))[:5]
        raise TypeError(f"weights must be tensors; not tensors: {bad}")
    with atomic_path(path / "model.safetensors") as tmp:
        save_file(flat, str(tmp), metadata={"format": "pt"})  # one key: a byte-reproducible header
    write_text(path / "config.yaml", dump_config(config))
    if assets:
        write_json(path / "assets.json", assets)
    out_metrics = {"component": component, "format": "medkit-model/1", **(metrics or {}),
                   "weights_sha256": sha256_file(path / "model.safetensors")}
    write_json(path / "metrics.json", out_metrics)
    if card is not None:
        write_text(path / "MODEL_CARD.md", card)
    return path


def load_model_source(path: str | Path, cls: type, *, component: str | None = None) -> LoadedModel:
    """Read a model folder, or a training run folder (``checkpoints/best.pt``, else
    ``last.pt``), into a :class:`LoadedModel` with ``cls`` as the config class.

    Raises:
        MedkitInputError: a missing folder, a folder that is neither, a model folder of
            another component, weights that are not safetensors (a pickle is never opened),
            or a checkpoint holding pickled objects.
    """

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .config import ConfigError, from_dict

    path = Path(path)
    if not path.exists():
        raise MedkitInputError(path, "model folder not found")
    if path.is_file():
        raise MedkitInputError(path, "expected a model folder (config.yaml + model.safetensors) or a training "
                                     "run folder (checkpoints/best.pt), not a file")
    if (path / "model.safetensors").exists():
        if not (path / "config.yaml").exists():
            raise MedkitInputError(path, "model folder has model.safetensors but no config.yaml")
        metrics = _read_json(path / "metrics.json")
        if component and metrics.get("component") not in (None, component):
            raise MedkitInputError(path, f"this is a {metrics.get('component')} model, not a {component} model")
        try:
            cfg = load_config(path / "config.yaml", cls)
        except ConfigError as e:
            raise MedkitInputError(path / "config.yaml", f"does not match this component's config ({e})") from None
        try:
            weights = load_file(str(path / "model.safetensors"))
        except (SafetensorError, OSError, ValueError) as e:
            raise MedkitInputError(path / "model.safetensors", f"unreadable safetensors file ({e})") from None
        assets = _read_json(path / "assets.json")
        return LoadedModel(cfg, weights, assets, metrics, path)
    for name in ("best.pt", "last.pt"):
        ck = path / "checkpoints" / name
        if ck.exists():
            state = load_checkpoint(ck)
            if "config" not in state or "model" not in state:
                raise MedkitInputError(ck, "not a medkit training checkpoint (no config/model inside)")
            try:
                cfg = from_dict(cls, state["config"], where=str(ck))
            except ConfigError as e:
                raise MedkitInputError(ck, f"its config does not match this component ({e})") from None
            return LoadedModel(cfg, state["model"], dict(state.get("assets") or {}), {}, path)
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise MedkitInputError(path, f"holds {', '.join(pickles)} but no model.safetensors: pickled weights are "
                                     "refused (they can run code when loaded); export the model with "
                                     "`medkit model export`")
    raise MedkitInputError(path, "not a model folder: expected config.yaml + model.safetensors (models/<name>/) "
                                 "or checkpoints/best.pt (a training run folder)")


def _read_json(path: Path) -> dict:
    import json

    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MedkitInputError(path, f"invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise MedkitInputError(path, "expected a JSON object")
    return data


def export_model_folder(run_dir: str | Path, out_dir: str | Path, cls: type, *, component: str,
                        card: str | None = None, metrics: dict | None = None) -> Path:
    """A training run folder's best checkpoint as a model folder: its config, ``model``
    weights (as float32) and ``assets``, with the run's test summary and manifest as
    provenance in ``metrics.json``."""
    import json

    src = load_model_source(run_dir, cls, component=component)
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").exists() else {}
    out = {"test": summary.get("test"), "split": summary.get("split"), "steps": summary.get("step"),
           "plateau": summary.get("plateau"), "history": summary.get("history"),
           "provenance": {k: manifest.get(k) for k in ("medkit_version", "git_sha", "seed", "device", "command",
                                                       "packages", "started_at", "finished_at")},
           **(metrics or {})}
    weights = {k: (v.float() if v.is_floating_point() else v) for k, v in src.weights.items()}
    return save_model_folder(out_dir, config=src.cfg, weights=weights, component=component, assets=src.assets,
                             metrics=out, card=card)
