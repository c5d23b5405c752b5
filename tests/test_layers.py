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
