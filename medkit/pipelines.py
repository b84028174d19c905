"""Pipeline specs: ``pipelines/*.yaml`` -> a resolved config -> a run folder.

A spec has two top-level keys::

    pipeline: train-segmentation     # a name in PIPELINES
    config: {...}                    # fields of that pipeline's config dataclass

``medkit run SPEC`` (a path, or a shipped spec's name such as ``convert``) loads the
spec, applies ``--set a.b=value`` overrides, opens the run folder (``config.yaml``,
``manifest.json``; a non-empty folder is refused unless ``--resume``) and calls the
component's ``run_pipeline(cfg, run, *, device, resume, log) -> summary``.
``--dry-run`` stops after resolving and returns the config.

The table below is fixed on purpose (no class lookup by a name read from a file):
adding a pipeline means adding its line here. Roof floor, beside ``cli``.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .assets import find_pipeline
from .config import ConfigError, load_config, read_pipeline_spec


@dataclass(frozen=True)
class Pipeline:
    """One pipeline: where its config class and run function live."""

    module: str
    config_cls: str
    function: str = "run_pipeline"
    kind: str = "train"  # "train" (checkpoints) or "inference"

    def load(self) -> tuple[type, Callable]:
        mod = importlib.import_module(self.module)
        return getattr(mod, self.config_cls), getattr(mod, self.function)


PIPELINES: dict[str, Pipeline] = {
    "convert": Pipeline("medkit.io.convert", "ConvertConfig", kind="inference"),
    "train-segmentation": Pipeline("medkit.segmentation.train", "TrainConfig"),
    "train-report": Pipeline("medkit.report_generation.train", "ReportConfig"),
    "deform": Pipeline("medkit.deformation.pipeline", "DeformPipelineConfig"),
    "dialogue-train": Pipeline("medkit.dialogue.train", "DialogueTrainConfig"),
}


# Component -> (module, config class) of its model folders' config.yaml.
COMPONENTS: dict[str, tuple[str, str]] = {
    "segmentation": ("medkit.segmentation.train_config", "TrainConfig"),
    "report_generation": ("medkit.report_generation.cofe_config", "ReportConfig"),
    "deformation": ("medkit.deformation.deform_config", "DeformPipelineConfig"),
    "dialogue": ("medkit.dialogue.policy", "ModelConfig"),
}


def export_model(run_dir: str | Path, out_dir: str | Path, component: str, *, card: str | Path | None = None,
                 name: str | None = None) -> Path:
    """``medkit model export``: a training run's best checkpoint as a model folder (docs/contract.md).
    ``card``: a Markdown file copied in as MODEL_CARD.md; ``name`` replaces ``cfg.name``."""
    from dataclasses import replace

    from .config import ConfigError
    from .runs import export_model_folder, load_model_source, save_model_folder

    if component not in COMPONENTS:
        raise ConfigError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")
    mod, cls_name = COMPONENTS[component]
    cls = getattr(importlib.import_module(mod), cls_name)
    text = Path(card).read_text(encoding="utf-8") if card is not None else None
    out = export_model_folder(run_dir, out_dir, cls, component=component, card=text)
    if name is not None and hasattr(load_model_source(out, cls).cfg, "name"):
        src = load_model_source(out, cls)
        save_model_folder(out, config=replace(src.cfg, name=name), weights=src.weights, component=component,
                          assets=src.assets, metrics={k: v for k, v in src.metrics.items()
                                                      if k not in ("component", "format", "weights_sha256")},
                          card=text)
    return out


def spec_name(path: Path) -> str:
    """The ``pipeline:`` value of a spec file (checked against :data:`PIPELINES`)."""
    import yaml

    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read pipeline spec ({e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})".replace("\n", " ")) from None
    if not isinstance(spec, dict) or "pipeline" not in spec:
        raise ConfigError(f"{path}: a pipeline spec needs a `pipeline:` key (one of {', '.join(sorted(PIPELINES))})")
    name = spec["pipeline"]
    if name not in PIPELINES:
        raise ConfigError(f"{path}: unknown pipeline {name!r}; available: {', '.join(sorted(PIPELINES))}")
    return name


def resolve(spec: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
            expect: str | None = None) -> tuple[str, Any, Path]:
    """``(pipeline name, resolved config, spec path)``; every problem is a ConfigError or
    MedkitInputError naming the file. ``expect`` refuses a spec of another pipeline."""
    path = find_pipeline(spec)
    name = spec_name(path)
    if expect is not None and name != expect:
        raise ConfigError(f"{path}: this is a {name!r} spec, not {expect!r}")
    cls, _ = PIPELINES[name].load()
    return name, load_config(read_pipeline_spec(path, name), cls, list(overrides)), path


def open_run(name: str, cfg: Any, *, out: str | Path | None = None, resume: bool = False, device: str = "auto",
             overrides: list[str] | tuple[str, ...] = ()):
    """The run folder of a pipeline run (default ``runs/<config name or pipeline>-<time>``). On
    ``--resume`` the run's own ``config.yaml`` replaces the spec's (only the run knows what it ran),
    with ``overrides`` applied on top (a longer ``optim.steps``, say)."""
    from .runs import RunDir, pick_device

    label = getattr(cfg, "name", None) or name
    out = Path(out) if out is not None else Path("runs") / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    if resume and (out / "config.yaml").exists():
        saved = load_config(out / "config.yaml", type(cfg))
        cfg = load_config(out / "config.yaml", type(cfg), list(overrides))
        check_resumable(name, saved, cfg, out)
    dev = str(pick_device(device))
    run = RunDir.create(out, config=cfg, seed=getattr(cfg, "seed", None), device=dev,
                        command=" ".join(sys.argv), resume=resume, kind=PIPELINES[name].kind)
    return cfg, run


def _flat(d: Any, prefix: str = "") -> dict:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


# What a resumed run may change: how long it runs and how often it saves/evaluates, the
# device, and which logged evaluation names the best checkpoint (``evaluation.select``: the
# training itself is the same). Anything else would make the rest of the run a different experiment.
RESUMABLE_SUFFIXES = ("steps", "iters", "ref_iters", "every", "save_every", "eval_every", "val_every",
                      "checkpoint_every", "device", "select")


def check_resumable(name: str, saved: Any, new: Any, out: Path) -> None:
    """Refuse a ``--resume`` whose overrides change anything but step counts and save/eval periods."""
    from .config import to_dict

    a, b = _flat(to_dict(saved)), _flat(to_dict(new))
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                     and not k.rsplit(".", 1)[-1].endswith(RESUMABLE_SUFFIXES))
    if changed:
        diffs = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:5])
        raise ConfigError(f"{out}: --resume with a different config ({diffs}); only step counts may change. "
                          "Start a new run folder to change anything else")


def run_spec(spec: str | Path, *, out: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
             resume: bool = False, device: str = "auto", expect: str | None = None,
             log: Callable[[str], None] | None = None) -> Path:
    """Run a spec end to end; returns the run folder. The manifest ends ``completed`` or ``failed``."""
    from .runs import seed_everything

    log = log or (lambda m: print(m, file=sys.stderr))
    name, cfg, path = resolve(spec, overrides, expect=expect)
    cfg, run = open_run(name, cfg, out=out, resume=resume, device=device, overrides=overrides)
    run.manifest["pipeline"] = {"name": name, "spec": str(path), "overrides": list(overrides)}
    run.save_manifest()
    if getattr(cfg, "seed", None) is not None:
        seed_everything(int(cfg.seed))
    _, fn = PIPELINES[name].load()
    t0 = time.perf_counter()
    try:
        summary = fn(cfg, run, device=device, resume=resume, log=log)
    except BaseException:
        run.finish("failed")
        raise
    run.record_time("total", time.perf_counter() - t0)
    if summary is not None:
        run.write_summary(summary)
    run.finish()
    return run.path
