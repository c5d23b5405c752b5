"""Helpers for CLI tests: run a command in-process and check the one-line error contract."""

from __future__ import annotations

from typing import Any

import click
from click.testing import CliRunner, Result

from neardup.cli import main


def invoke(*args: Any, ok: bool = True) -> Result:
    """Run ``neardup ARGS`` in-process; with ``ok`` assert it succeeded."""
    res = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + (repr(res.exception) if res.exception else "")
    return res


def assert_one_error(res: Result, message: str | None = None, codes: tuple[int, ...] = (1, 2)) -> str:
    """Exit code 1 or 2, exactly one ``Error:`` line (containing ``message``), no traceback, no internal error."""
    out = res.output
    assert res.exit_code in codes, f"exit {res.exit_code}: {out}{res.exception!r}"
    assert "Traceback" not in out, out
    assert "internal error" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1, out
    if message is not None:
        assert message in errors[0], f"{message!r} not in {errors[0]!r}"
    return errors[0]


def all_commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``group``, e.g. ('search', 'exact')."""
    out: list[tuple[str, ...]] = []
    for name, cmd in sorted(group.commands.items()):
        path = (*prefix, name)
        out.append(path)
        if isinstance(cmd, click.Group):
            out.extend(all_commands(cmd, path))
    return out


def expect_error(*args: Any, message: str | None = None) -> str:
    """Run ``neardup ARGS`` and assert the one-line error contract; returns the error line."""
    return assert_one_error(invoke(*args, ok=False), message)
