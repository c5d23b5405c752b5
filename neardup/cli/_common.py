"""The ``neardup`` command line: a thin layer over library functions.

Each command builds its arguments, calls one library function, and writes the
resolved settings (``config.yaml``) beside its outputs. ``--config FILE.yaml``
supplies any option; flags given on the command line override it. Bad input
ends with one ``Error: ...`` line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import errno
import math
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from neardup import __version__
from neardup.errors import UsageError
from neardup.io_utils import atomic_write_text, load_yaml


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class NeardupGroup(click.Group):
    """Turns library errors into one ``Error:`` line and a non-zero exit, never a traceback.

    UsageError and click's own errors exit 2 (bad input), environment errors (disk full, permissions)
    exit 1, and anything else is a bug: exit 3 with ``internal error`` (NEARDUP_DEBUG=1 shows the traceback).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except UsageError as exc:
            raise _Fail(_one_line(str(exc)), 2) from None
        except KeyboardInterrupt:
            click.echo("interrupted (finished shards and files are kept; re-run to resume)", err=True)
            sys.exit(130)
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            if exc.errno == errno.ENOSPC:
                raise _Fail(f"disk full writing{where}; free some space, then re-run the same command "
                            "(finished work is kept and resumed)", 1) from None
            raise _Fail(_one_line(f"{exc.strerror or exc}:{where}" if where else str(exc)), 1) from None
        except MemoryError:
            raise _Fail("out of memory; use smaller batches or fewer/lower-dimensional vectors", 1) from None
        except Exception as exc:
            if os.environ.get("NEARDUP_DEBUG"):
                raise
            raise _Fail(f"internal error ({type(exc).__name__}: {_one_line(str(exc))[:300]}); this is a bug in "
                        "neardup, please report it (NEARDUP_DEBUG=1 shows the traceback)", 3) from None


class _Fail(click.ClickException):
    """A one-line ``Error:`` with its own exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]  # click reads it for the process exit status


class FloatIn(click.ParamType):
    """A finite float in [lo, hi] (open ends with ``lo_open``/``hi_open``): nan and inf are refused."""

    name = "float"

    def __init__(self, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                 hi_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            self.fail(f"{value} is below the range {self._range()}", param, ctx)
        if self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)):
            self.fail(f"{value} is above the range {self._range()}", param, ctx)
        return x

    def _range(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def __repr__(self) -> str:
        return f"FloatIn{self._range()}"


def _load_yaml_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager ``--config``: the YAML's keys become option defaults, so explicit flags still win."""
    if not value:
        return value
    try:
        data = load_yaml(value, "--config") or {}
    except UsageError as exc:
        raise click.BadParameter(str(exc).removeprefix("--config "), ctx=ctx, param=param) from None
    if not isinstance(data, dict):
        raise click.BadParameter("the YAML must be a mapping of option names to values", ctx=ctx, param=param)
    # keys may be parameter names or option names (e.g. 'format' for --format -> fmt); the metadata
    # that save_config adds is skipped, so any saved config.yaml can be fed back with --config
    alias = {}
    for p in ctx.command.params:
        alias[p.name] = p.name
        for opt in getattr(p, "opts", []):
            alias[opt.lstrip("-").replace("-", "_")] = p.name
    data = {str(k).replace("-", "_"): v for k, v in data.items() if k not in ("command", "neardup_version")}
    unknown = sorted(k for k in data if k not in alias)
    if unknown:
        raise click.BadParameter(f"unknown keys {unknown}; valid: {sorted(set(alias) - {'config'})}", ctx=ctx,
                                 param=param)
    data = {alias[k]: v for k, v in data.items()}
    by_name = {p.name: p for p in ctx.command.params}
    for name, v in data.items():
        _check_config_value(ctx, by_name[name], v, param)
    ctx.default_map = {**(ctx.default_map or {}), **data}
    return value


def _check_config_value(ctx: click.Context, p: click.Parameter, v: Any, config: click.Parameter) -> None:
    """A YAML value must be what the flag would accept: the right shape (no mappings; lists only for repeatable
    options), no booleans for numbers, and valid for the option's type and range."""
    many = getattr(p, "multiple", False) or p.nargs != 1
    flag = getattr(p, "is_flag", False) or isinstance(p.type, click.types.BoolParamType)
    items = v if isinstance(v, list) and many else [v]
    for item in items:
        bad = isinstance(item, (dict, list)) or (isinstance(item, bool) and not flag)
        if not bad and item is not None:
            try:
                p.type.convert(item, p, ctx)
            except (click.BadParameter, TypeError, ValueError) as exc:
                msg = exc.format_message() if isinstance(exc, click.BadParameter) else str(exc)
                raise click.BadParameter(f"key {p.name!r}: {msg}", ctx=ctx, param=config) from None
        elif bad:
            raise click.BadParameter(f"key {p.name!r}: {item!r} is not a valid value for "
                                     f"{'/'.join(getattr(p, 'opts', [p.name or '']))}", ctx=ctx, param=config)


config_option = click.option("--config", "config", type=click.Path(dir_okay=False), callback=_load_yaml_config,
                             is_eager=True, expose_value=False,
                             help="YAML file of option values (keys as option names); flags override it.")


def default_help(value: object) -> str:
    """The library default, shown in --help (options default to None so the config dataclass's defaults apply)."""
    return f"[default: {value}]"


def save_config(out_dir: str | Path, command: str, params: dict[str, Any]) -> None:
    """Write the resolved options beside a command's outputs, so any run can be repeated."""
    clean = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    atomic_write_text(Path(out_dir) / "config.yaml",
                      yaml.safe_dump({"command": command, "neardup_version": __version__, **clean}, sort_keys=False))




def retrieval_set_options(fn: Any) -> Any:
    """--database/--queries/--distractors/--manifest: the inputs of every retrieval evaluation."""
    for opt in reversed([
        click.option("--database", required=True, type=click.Path(), help="Feature folder of the original images."),
        click.option("--queries", required=True, type=click.Path(), help="Feature folder of the attacked queries."),
        click.option("--distractors", multiple=True, type=click.Path(),
                     help="Extra feature folders added to the database."),
        click.option("--manifest", type=click.Path(), default=None,
                     help="Ground truth [default: manifest.csv of the folder the queries came from]."),
    ]):
        fn = opt(fn)
    return fn


class RegistryHelpOption(click.Option):
    """An option whose help is completed from a registry when --help is shown, not at import."""

    def registry_help(self, text: str) -> str:
        return text

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        base = self.help
        self.help = self.registry_help(base or "")
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = base


class IndexSpecOption(RegistryHelpOption):
    """A faiss factory-string option: its help lists the registered index families with an example each."""

    def registry_help(self, text: str) -> str:
        from neardup.fastsearch.indexes import FAMILIES

        examples = ", ".join(f"{f.name} ({f.example})" for f in FAMILIES.values())
        return f"{text} Families: {examples}."
