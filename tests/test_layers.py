"""The package structure, checked: every module imports, imports point down the layers of
docs/architecture.md only, there are no import cycles, and no module reaches into another's
private names. Imports inside functions count as much as those at the top of a module: a cycle
hidden in a function is still a cycle to whoever reads or moves the code."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import tarsier

# Lower number = lower layer. A module may import its own package or any package of a lower
# level; packages that share a level are siblings and may not import each other.
LEVELS = {
    "tarsier.common": 1,      # shared types, file primitives and file formats
    "tarsier.prompts": 1,     # instruction and judge templates (data + a loader)
    "tarsier.engine": 2,      # the inference library: models, decode, scenes, describe, writers
    "tarsier.world": 3,       # the synthetic world (renders with the engine's codecs)
    "tarsier.trainers": 4,    # training and DPO pairs
    "tarsier.evaluation": 4,  # AutoDQ, judges, benchmark tasks
    "tarsier.reports": 4,     # HTML pages and charts, read from the files the others write
    "tarsier": 5,             # the facade: tarsier.load, tarsier.describe, the demo
    "tarsier.cli": 6,         # the Typer commands
}


def _package_dirs() -> dict[str, Path]:
    """Each package's folder as installed (the repository folders, through pyproject's package-dir)."""
    dirs = {}
    for package in LEVELS:
        module = importlib.import_module(package)
        dirs[package] = Path(module.__file__).parent
    return dirs


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in _package_dirs().items():
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out[name] = path
    return out


MODULES = _modules()


def _package_of(module: str) -> str:
    best = ""
    for package in LEVELS:
        if (module == package or module.startswith(package + ".")) and len(package) > len(best):
            best = package
    return best


def _imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported tarsier module, names taken from it, line) for every import statement in the file."""
    out = []
    is_package = path.stem == "__init__"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "tarsier"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base = parts[: len(parts) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "tarsier":
                continue
            names = [a.name for a in node.names]
            # `from tarsier.engine import checkpoint` imports the module tarsier.engine.checkpoint
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            others = [n for n in names if f"{target}.{n}" not in MODULES]
            if others:
                out.append((target, others, node.lineno))
            out += [(s, [], node.lineno) for s in submodules]
    return out


def _edges() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, _names, _line in _imports(module, path):
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    importlib.import_module(module)


def test_imports_point_down_the_layers():
    wrong = []
    for module, path in MODULES.items():
        here = _package_of(module)
        for target, _names, line in _imports(module, path):
            there = _package_of(target)
            if not there or there == here:
                continue
            if LEVELS[there] >= LEVELS[here]:
                kind = "sideways" if LEVELS[there] == LEVELS[here] else "up"
                wrong.append(f"{path.name}:{line} {module} -> {target} ({kind})")
    assert not wrong, "imports that do not point down a layer:\n" + "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles():
    cycles = _cycles(_edges())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_private_names_across_modules():
    wrong = []
    for module, path in MODULES.items():
        for target, names, line in _imports(module, path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != module:
                wrong.append(f"{path.name}:{line} {module} takes {', '.join(private)} from {target}")
    assert not wrong, "private names used across modules:\n" + "\n".join(sorted(wrong))


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The checks above are only as good as their parsing: a planted upward import and a planted
    cycle must be reported."""
    up = tmp_path / "up.py"
    up.write_text("def f():\n    from tarsier.cli.app import app\n    from tarsier.engine import checkpoint\n")
    found = _imports("tarsier.engine.up", up)
    assert ("tarsier.cli.app", ["app"], 2) in found and ("tarsier.engine.checkpoint", [], 3) in found
    assert LEVELS[_package_of("tarsier.cli.app")] > LEVELS[_package_of("tarsier.engine.up")]
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(planted) == [["a", "b", "c"]]


def test_public_entry_points():
    assert callable(tarsier.load) and callable(tarsier.describe)
