"""Dataclass configs loaded from YAML, with ``a.b=3`` overrides.

Configs are plain (nested) dataclasses. YAML only sets fields that exist:
an unknown key or a value of the wrong type is a :class:`ConfigError` naming
the dotted key, so a typo never silently falls back to a default. There is no
expression language and no class lookup by name.

Example::

    @dataclass
    class Optim:
        lr: float = 1e-3

    @dataclass
    class TrainConfig:
        steps: int = 100
        optim: Optim = field(default_factory=Optim)

    cfg = load_config("train.yaml", TrainConfig, ["optim.lr=3e-4"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong type."""


def check_ranges(obj: Any, *, at_least: dict[str, float] | None = None, positive: tuple[str, ...] = (),
                 unit: tuple[str, ...] = (), ordered: tuple[str, ...] = (),
                 increasing: tuple[str, ...] = ()) -> None:
    """A dataclass's ``__post_init__`` check: refuse a value out of range, naming the key.

    ``at_least``: key -> minimum (ints: counts, steps); ``positive``: > 0 (every element of a
    tuple); ``unit``: in [0, 1] (probabilities, shares); ``ordered``: ``(low, high)`` pairs with
    low <= high; ``increasing``: with low < high (windows). ``None`` values (optional settings
    left unset) are not checked.
    """

    def each(key):
        v = getattr(obj, key)
        return [] if v is None else (list(v) if isinstance(v, (tuple, list)) else [v])

    for key, lo in (at_least or {}).items():
        if any(x < lo for x in each(key)):
            raise ConfigError(f"{key} must be >= {lo}, got {getattr(obj, key)!r}")
    for key in positive:
        if any(x <= 0 for x in each(key)):
            raise ConfigError(f"{key} must be > 0, got {getattr(obj, key)!r}")
    for key in unit:
        if any(not 0.0 <= x <= 1.0 for x in each(key)):
            raise ConfigError(f"{key} must be in [0, 1], got {getattr(obj, key)!r}")
    for key in ordered:
        v = each(key)
        if len(v) == 2 and v[0] > v[1]:
            raise ConfigError(f"{key} must be (low, high) with low <= high, got {list(v)}")
    for key in increasing:
        v = each(key)
        if len(v) == 2 and v[0] >= v[1]:
            raise ConfigError(f"{key} must be (low, high) with low < high, got {list(v)}")


def load_config(source: str | Path | dict | None, cls: type[T], overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Build ``cls`` from a YAML file (or a dict), then apply ``key.sub=value`` overrides.

    Override values are parsed as YAML scalars/lists (``3``, ``1e-4``, ``true``,
    ``[1,2]``, ``null``).
    """
    if source is None:
        data: dict = {}
        where = "<defaults>"
    elif isinstance(source, dict):
        data, where = dict(source), "<dict>"
    else:
        where = str(source)
        try:
            data = yaml.safe_load(Path(source).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{where}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: invalid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: a config file must hold a mapping at the top level")
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like key.sub=value")
        key, raw = ov.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(data, key.strip(), value)
    return from_dict(cls, data, where=where)


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    d = data
    for p in parts[:-1]:
        nxt = d.get(p)
        if nxt is None:
            nxt = d[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
        d = nxt
    d[parts[-1]] = value


def from_dict(cls: type[T], data: dict, *, where: str = "<dict>", prefix: str = "") -> T:
    """Recursively build dataclass ``cls`` from ``data``, type-checking every field."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        keys = ", ".join(prefix + k for k in unknown)
        raise ConfigError(f"{where}: unknown key(s) {keys}; known: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, where, prefix + name)
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a dataclass's own check (__post_init__): say where, and the full key
        raise ConfigError(f"{where}: {prefix}{e}") from None


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {key} = {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key} = {value!r} must be one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, where=where, prefix=key + ".")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: {key} must have {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, where, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(kt, k, where, key): _coerce(vt, v, where, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{where}: {key} must be a path, got {value!r}")
    return value


def to_dict(cfg: Any) -> dict:
    """A dataclass config as plain YAML-safe data (paths and tuples become str/list)."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def dump_config(cfg: Any) -> str:
    """YAML text of a config, keys in field order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def read_pipeline_spec(path: str | Path, pipeline: str) -> dict:
    """The ``config:`` mapping of a pipeline spec (``pipelines/*.yaml``: top-level keys
    ``pipeline`` and ``config`` only). ``pipeline:`` may be omitted; when given it must be
    ``pipeline``. Every problem is a :class:`ConfigError` naming the file."""
    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: pipeline file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read pipeline spec ({type(e).__name__}: {e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})".replace("\n", " ")) from None
    if not isinstance(spec, dict) or set(spec) - {"pipeline", "config"}:
        raise ConfigError(f"{path}: expected top-level keys `pipeline` and `config`")
    if spec.get("pipeline", pipeline) != pipeline:
        raise ConfigError(f"{path}: pipeline is {spec.get('pipeline')!r}, expected {pipeline}")
    cfg = spec.get("config") or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: `config:` must be a mapping")
    return cfg


def load_pipeline(path: str | Path, pipeline: str, cls: type[T], overrides: list[str] | tuple[str, ...] = ()) -> T:
    """``cls`` from a pipeline spec's ``config:`` block, then ``--set`` overrides."""
    return load_config(read_pipeline_spec(path, pipeline), cls, overrides)
