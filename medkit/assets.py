"""Where the shipped pipelines and models are, from any working folder.

``pipelines/*.yaml`` and ``models/<name>/`` live at the top of the source tree. An
editable install (``pip install -e .``, what ``make`` does) finds them beside the
package; a wheel installs them under ``<prefix>/share/medkit/`` (pyproject's
``data-files``); ``MEDKIT_HOME`` (a folder holding ``pipelines/`` and ``models/``)
overrides both. Nothing depends on the current working folder.

Ground floor: imports nothing from medkit but the error type.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .io.errors import MedkitInputError


def _roots() -> list[Path]:
    roots = []
    if os.environ.get("MEDKIT_HOME"):
        roots.append(Path(os.environ["MEDKIT_HOME"]))
    roots.append(Path(__file__).resolve().parents[1])  # the source checkout (editable install)
    roots.append(Path(sys.prefix) / "share" / "medkit")  # a wheel's data-files
    return roots


def asset_dir(kind: str) -> Path | None:
    """The first ``<root>/<kind>`` folder that exists (``kind``: ``pipelines`` or ``models``)."""
    for r in _roots():
        if (r / kind).is_dir():
            return r / kind
    return None


def pipeline_names() -> list[str]:
    d = asset_dir("pipelines")
    return sorted(p.stem for p in d.glob("*.yaml")) if d else []


def find_pipeline(name_or_path: str | Path) -> Path:
    """A spec path as given when it exists, else the shipped ``pipelines/<name>.yaml``.

    Raises:
        MedkitInputError: neither exists; the message lists the shipped names.
    """
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix in ("", ".yaml", ".yml") and len(p.parts) == 1:
        d = asset_dir("pipelines")
        cand = d / f"{p.stem}.yaml" if d else None
        if cand is not None and cand.is_file():
            return cand
    names = ", ".join(pipeline_names()) or "none found"
    raise MedkitInputError(p, f"no such pipeline spec file or shipped pipeline name (shipped: {names})")


def shipped_model(name: str) -> Path | None:
    """``models/<name>`` when it is there, else None."""
    d = asset_dir("models")
    return d / name if d is not None and (d / name).is_dir() else None


def shipped_models() -> list[Path]:
    d = asset_dir("models")
    return sorted(p for p in d.iterdir() if p.is_dir() and (p / "config.yaml").exists()) if d else []
