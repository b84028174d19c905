"""medkit: medical imaging and clinical-AI toolkit.

Importing ``medkit`` is cheap on purpose: it pulls in neither torch-heavy
components nor ``transformers``. The one-line calls load their component on
first use::

    import medkit

    seg = medkit.segment("ct.nii.gz", "out/")        # labels, volumes, paths
    fields = medkit.deform("4dct/patient_000", "deform/")
    reports = medkit.report("cxr/", "reports/")
    summary = medkit.evaluate_dialogue("models/dialogue-doctor-synthetic", "DDXPlus/", "test")

They are the functions the command line runs (``medkit segment`` is
:func:`medkit.segment`), with the same checks and the same outputs. I/O lives in
:mod:`medkit.io` (``from medkit.io import load_volume, save_volume``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> (module, attribute): resolved on first access (PEP 562), so `import medkit` stays light.
_LAZY = {
    "segment": ("medkit.segmentation.segment", "segment"),
    "deform": ("medkit.deformation.pipeline", "deform"),
    "report": ("medkit.report_generation.predict", "report"),
    "evaluate_dialogue": ("medkit.dialogue.evaluate", "evaluate"),
    "load_volume": ("medkit.io.volume", "load_volume"),
    "save_volume": ("medkit.io.volume", "save_volume"),
    "discover_cases": ("medkit.io.cases", "discover_cases"),
}
__all__ = ["__version__", "deform", "discover_cases", "evaluate_dialogue", "load_volume", "report", "save_volume", "segment"]

if TYPE_CHECKING:  # pragma: no cover - for editors and type checkers only
    from .deformation.pipeline import deform
    from .dialogue.evaluate import evaluate as evaluate_dialogue
    from .io.cases import discover_cases
    from .io.volume import load_volume, save_volume
    from .report_generation.predict import report
    from .segmentation.segment import segment


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'medkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
