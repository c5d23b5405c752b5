"""The ``neardup`` command line: a thin layer over library functions.

Each command builds its arguments, calls one library function, and writes the
resolved settings (``config.yaml``) beside its outputs. ``--config FILE.yaml``
supplies any option; flags given on the command line override it. Bad input
ends with one ``Error: ...`` line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import yaml

from neardup import __version__
from neardup.errors import UsageError
from neardup.io_utils import atomic_write_text


class NeardupGroup(click.Group):
    """Turns library UsageErrors (and a few predictable OS errors) into one-line CLI errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted (finished shards and files are kept; re-run to resume)", err=True)
            sys.exit(130)
        except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
            raise click.ClickException(f"{exc.strerror}: {exc.filename}") from None


def _load_yaml_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager ``--config``: the YAML's keys become option defaults, so explicit flags still win."""
    if not value:
        return value
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"file not found: {path}", ctx=ctx, param=param)
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"bad YAML: {str(exc).splitlines()[0]}", ctx=ctx, param=param) from None
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
        raise click.BadParameter(f"unknown keys {unknown}; valid: {sorted(set(alias) - {'config'})}", ctx=ctx, param=param)
    data = {alias[k]: v for k, v in data.items()}
    ctx.default_map = {**(ctx.default_map or {}), **data}
    return value


config_option = click.option("--config", "config", type=click.Path(dir_okay=False), callback=_load_yaml_config,
                             is_eager=True, expose_value=False,
                             help="YAML file of option values (keys as option names); flags override it.")


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
        click.option("--distractors", multiple=True, type=click.Path(), help="Extra feature folders added to the database."),
        click.option("--manifest", type=click.Path(), default=None,
                     help="Ground truth [default: manifest.csv of the folder the queries came from]."),
    ]):
        fn = opt(fn)
    return fn
