"""The shape of the code, checked: dependency direction, no import cycles, module and class size.

The rules are those of docs/architecture.md. Imports are read from the source (every import
statement, also those inside functions and TYPE_CHECKING blocks), so a new one that breaks a
rule fails here, naming the module and what it imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "tftproxy"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 250

# What each part may import from tftproxy (besides itself); the edges (cli, service,
# assemble) may import anything. "store.serving" style entries allow one module only.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "_addr": set(),
    "_paths": set(),
    "_fs": set(),
    "_limits": set(),
    "_human": set(),
    "pxe": {"errors"},
    "logs": set(),
    "_notify": set(),
    "settings": {"errors", "_addr", "jobs.options", "logs"},
    "store": {"errors", "_fs", "_paths", "_human", "pxe"},
    "fetch": {"errors", "_paths", "__init__"},
    "jobs": {"errors", "fetch", "logs", "store"},
    "tftp": {"errors", "_addr", "_limits", "logs", "store.layout", "store.serving"},
    "api": {"errors", "_addr", "_limits", "_human", "__init__", "jobs", "logs", "pxe", "settings",
            "store.aio", "store.serving"},
}
EDGES = {"cli", "service", "assemble", "metrics", "__main__", "__init__"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(tftproxy module imported, whether at module level) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "tftproxy" or name.startswith("tftproxy."):
                found.append((name.removeprefix("tftproxy").lstrip(".") or "__init__",
                              id(node) in top))
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted import name refers to (``store.gc.collect`` -> ``store.gc``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _allowed(importer: str, target: str) -> bool:
    part = importer.split(".")[0]
    if part in EDGES or target.split(".")[0] == part:
        return True
    rules = ALLOWED.get(part)
    assert rules is not None, f"no dependency rule for {importer}: add it to ALLOWED"
    return any(target == r or target.startswith(r + ".") for r in rules)


def test_every_import_follows_the_dependency_direction() -> None:
    modules = _modules()
    bad = []
    for name, path in modules.items():
        for imported, _ in _imports(path):
            target = _resolve(imported, modules)
            if target is not None and not _allowed(name, target):
                bad.append(f"{name} imports {target}")
    assert bad == []


def test_no_import_cycle_between_modules() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported, at_top in _imports(path):
            target = _resolve(imported, modules)
            # A package's __init__ importing its own modules is how packages are built.
            if at_top and target is not None and target != name and not (
                    target.startswith(name + ".")):
                graph[name].add(target)
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_modules_and_classes_stay_small(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            assert node.end_lineno is not None
            assert node.end_lineno - node.lineno + 1 <= MAX_CLASS_LINES, node.name
