"""The library never depends on the CLI: every module outside ``neardup.cli`` imports with click blocked."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import neardup

BLOCKER = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "click" or name.startswith("click.") or name == "neardup.cli" or name.startswith("neardup.cli."):
            raise ImportError(f"library module imported {name}")
        return None
sys.meta_path.insert(0, Block())
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
print("ok", len(sys.argv) - 1)
"""


def library_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(neardup.__path__, "neardup."):
        if info.name == "neardup.cli" or info.name.startswith("neardup.cli.") or info.name == "neardup.__main__":
            continue
        names.append(info.name)
    return names


def test_library_imports_without_click_or_cli() -> None:
    mods = library_modules()
    assert len(mods) > 40  # the walk found the package, not nothing
    res = subprocess.run([sys.executable, "-c", BLOCKER, *mods], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == f"ok {len(mods)}"


def test_blocker_catches_a_cli_import() -> None:
    """The check above can fail: importing the CLI itself is refused."""
    res = subprocess.run([sys.executable, "-c", BLOCKER, "neardup.cli"], capture_output=True, text=True)
    assert res.returncode != 0 and "library module imported" in res.stderr


def _module_graph() -> dict[str, set[str]]:
    """Module -> the neardup modules it imports at module level (imports inside functions are lazy by design)."""
    import ast
    from pathlib import Path

    root = Path(neardup.__file__).parent
    mods = {}
    for p in root.rglob("*.py"):
        name = ".".join(("neardup", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        mods[name] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.parse(p.read_text("utf-8")).body:
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            graph[m].update(n for n in names if n in mods and n != m)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path, or None (depth-first search)."""
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return [*path, m, t]
            if t not in state and (found := visit(t, [*path, m])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [])):
            return found
    return None


def test_no_module_level_import_cycle() -> None:
    graph = _module_graph()
    assert len(graph) > 60
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check can fail


def test_the_vector_layer_leaf_imports_no_other_layer() -> None:
    """extract may use fastsearch.vectors (L2, PCA) only because it depends on nothing but errors."""
    assert _module_graph()["neardup.fastsearch.vectors"] <= {"neardup.errors"}
