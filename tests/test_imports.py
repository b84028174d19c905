"""Import hygiene: cheap top-level imports, a working `medkit --help`, and the
import-direction rule of ARCHITECTURE.md ("Which way imports go")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "medkit"

GROUND = {"io", "config", "runs", "progress", "assets"}
MIDDLE = {"synth", "transforms", "nn", "lm", "metrics", "viz"}
COMPONENTS = {"segmentation", "deformation", "report_generation", "rl"}
# What each floor may import (besides itself and the package root `medkit`).
ALLOWED: dict[str, set[str]] = {
    **{g: GROUND for g in GROUND},  # the ground floor: only each other
    # The middle floor stands on the ground. `nn` holds the tensor operations two
    # or more packages share (warping, encodings), so the rest of the middle floor
    # may use it (registration augmentation in `transforms` warps); `nn` itself
    # stands on the ground only, which keeps the middle floor acyclic.
    **{m: GROUND | {"nn"} for m in MIDDLE - {"nn"}},
    "nn": GROUND,
    **{c: GROUND | MIDDLE for c in COMPONENTS},  # components never import each other
    "dialogue": GROUND | MIDDLE | {"rl"},  # "dialogue may use rl and lm" (lm is middle)
}
# The roof may import anything. demo.py is the body of `medkit demo`, a cli command, and
# pipelines.py the spec -> component table that `medkit run` uses.
ROOF = {"cli", "demo", "pipelines", "__main__"}


def test_import_medkit_is_light():
    code = (
        "import sys, medkit, medkit.io, medkit.config, medkit.runs, medkit.cli\n"
        "heavy = [m for m in ('transformers', 'torch', 'monai', 'SimpleITK') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_medkit_help_subprocess():
    r = subprocess.run([sys.executable, "-c", "from medkit.cli import app; app()", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout and "convert" in r.stdout


def _floor(module: str) -> str | None:
    """'medkit.io.dicom' -> 'io'; 'medkit' (the package root) -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "medkit" else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imported_medkit_modules(path: Path) -> list[tuple[int, str]]:
    """Every medkit module imported anywhere in the file (also inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "medkit"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "medkit":
                continue
            if node.module is None or target == "medkit":
                # `from . import x` / `from medkit import x`: x may itself be a subpackage.
                out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, target))
    return out


def _violations() -> list[str]:
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        floor = _floor(_module_name(path))
        if floor is None or floor in ROOF or path.name == "cli.py":  # a component's typer shell is roof too
            continue
        allowed = ALLOWED.get(floor)
        if allowed is None:
            bad.append(f"{path.relative_to(PKG.parent)}: '{floor}' is not a floor in ARCHITECTURE.md")
            continue
        for line, mod in _imported_medkit_modules(path):
            target = _floor(mod)
            if target is None or target == floor or target == "__version__":
                continue
            if target not in allowed:
                bad.append(f"{path.relative_to(PKG.parent)}:{line}: {floor} imports {mod}")
    return bad


def test_import_direction_rule():
    assert _violations() == []


def test_rule_checker_catches_a_violation(tmp_path, monkeypatch):
    """The checker itself can fail: a fake io module importing synth is reported."""
    fake = tmp_path / "medkit"
    (fake / "io").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "io" / "__init__.py").write_text("")
    (fake / "io" / "bad.py").write_text("def f():\n    from ..synth import shapes\n")
    (fake / "runs.py").write_text("from . import io\nfrom .config import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    assert _violations() == ["medkit/io/bad.py:2: io imports medkit.synth"]


@pytest.mark.parametrize("floor,target,ok", [("synth", "viz", False), ("segmentation", "deformation", False),
                                             ("dialogue", "rl", True), ("dialogue", "segmentation", False),
                                             ("rl", "lm", True), ("config", "io", True),
                                             ("transforms", "nn", True), ("nn", "transforms", False)])
def test_allowed_map_matches_architecture(floor, target, ok):
    assert (target in ALLOWED[floor]) is ok


# --------------------------------------------------------------------------- import circles
def _import_graph(pkg: Path) -> dict[str, set[str]]:
    """Module -> the medkit modules it imports (anywhere in the file, lazily too: a lazy
    import only hides a circle until the function runs). Importing ``a.b.c`` also imports
    the packages ``a.b`` on the way, unless the importer lives inside that package."""
    mods = {}
    for p in pkg.rglob("*.py"):
        rel = p.relative_to(pkg.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    graph: dict[str, set[str]] = {}
    for m, p in mods.items():
        name_pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name_pkg.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    t = ".".join(base + ([node.module] if node.module else []))
                else:
                    t = node.module or ""
                targets = [f"{t}.{a.name}" for a in node.names] + [t]
            for t in targets:
                while t and t not in mods:
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if not t or t == m or m.startswith(t + "."):  # its own package is already importing
                    continue
                edges.add(t)
                bits = t.split(".")
                for k in range(2, len(bits)):
                    parent = ".".join(bits[:k])
                    if parent in mods and not m.startswith(parent + ".") and parent != m:
                        edges.add(parent)
        graph[m] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _floor_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between floors (io, runs, segmentation, ...)."""
    out: dict[str, set[str]] = {}
    for m, edges in graph.items():
        a = _floor(m)
        for t in edges:
            b = _floor(t)
            if a and b and a != b:
                out.setdefault(a, set()).add(b)
    return out


def test_no_import_circles_between_modules():
    assert _cycles(_import_graph(PKG)) == []


def test_no_import_circles_between_floors():
    """Within the ground floor too: io, config, runs, progress and assets must not import each
    other round in a circle (runs -> io -> runs was one)."""
    assert _cycles(_floor_graph(_import_graph(PKG))) == []


def test_circle_checker_finds_planted_circles(tmp_path):
    """A circle inside a package (a.x <-> a.y, lazily) and one between ground-floor modules
    (runs -> io.atomic, io.convert -> runs) are both reported."""
    fake = tmp_path / "medkit"
    (fake / "dialogue").mkdir(parents=True)
    (fake / "io").mkdir()
    for f in ("__init__.py", "dialogue/__init__.py", "io/__init__.py", "io/atomic.py"):
        (fake / f).write_text("")
    (fake / "dialogue" / "train.py").write_text("from .evaluate import run\n")
    (fake / "dialogue" / "evaluate.py").write_text("def f():\n    from .train import fit\n")
    (fake / "runs.py").write_text("from .io.atomic import write\n")
    (fake / "io" / "convert.py").write_text("def g():\n    from ..runs import track\n")
    graph = _import_graph(fake)
    assert _cycles(graph) == [["medkit.dialogue.evaluate", "medkit.dialogue.train"]]
    assert _cycles(_floor_graph(graph)) == [["io", "runs"]]
