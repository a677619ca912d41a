"""The layout of the product code (README "Architecture"), read with ``ast`` as a reviewer would.

import-linter (``make lint``, contracts in pyproject.toml) enforces the layers; these checks
hold what it does not express: no import cycle between any two modules (imports inside
functions and under TYPE_CHECKING included), no product module importing tools, benchmarks,
tests or policy, the size of modules, and how many modules stay loose at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tools.harness import ROOT

COMPONENTS = ROOT / "components"
LAYER_PACKAGES = ("facts", "config", "aliyun", "kubeadm", "ack", "gpu")
MAX_MODULE_LINES = 500
MAX_LOOSE_MODULES = 6


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_files() -> list[Path]:
    return [*sorted(COMPONENTS.rglob("*.py")), ROOT / "__main__.py"]


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    files = product_files()
    names = {module_name(p) for p in files}
    return {module_name(p): {m for m in imports_of(p) if m in names and m != module_name(p)} for p in files}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_the_product():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_product_imports_no_development_code():
    for path in product_files():
        bad = {m for m in imports_of(path) if m.split(".")[0] in ("tools", "benchmarks", "tests", "policy")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_packages_show_the_layers_and_few_modules_stay_loose():
    packages = {p.parent.name for p in COMPONENTS.glob("*/__init__.py")}
    assert set(LAYER_PACKAGES) <= packages
    loose = sorted(p.name for p in COMPONENTS.glob("*.py"))
    assert len(loose) <= MAX_LOOSE_MODULES, loose
    assert (COMPONENTS / "scripts").is_dir() and (COMPONENTS / "scripts" / "lib" / "common.sh").is_file()


def test_no_product_module_is_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in product_files() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long


def test_the_backend_interface_and_the_backends_do_not_reach_up():
    """backend.py imports no backend; a backend imports neither the GPU stack nor the factory."""
    edges = graph()
    assert not {m for m in edges["components.backend"] if m.startswith(("components.kubeadm", "components.ack"))}
    for name, deps in edges.items():
        if name.startswith(("components.kubeadm", "components.ack", "components.aliyun", "components.config")):
            assert not {m for m in deps if m.startswith(("components.gpu", "components.factory"))}, name
