"""A training run's folder: what it holds, who may write it, and how ``--resume`` picks the run's options.

The main process claims ``--out`` (:mod:`neardup.outdir`) and holds its lock for the whole run; the other
ranks hear its verdict, so a refused folder stops every rank. Free of torch at import.
"""

from __future__ import annotations

import dataclasses
import json
import os
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neardup.errors import UsageError
from neardup.io_utils import atomic_write_text
from neardup.outdir import claim_out_dir, owner
from neardup.simclr.config import flag, run_settings

if TYPE_CHECKING:  # keeps torch out of this module's import
    from neardup.dist import DistInfo

CHECKPOINT = "checkpoint.pt"
#: Everything a run writes in --out (removed by --overwrite, and only these).
OWNED = (CHECKPOINT, "config.yaml", "config.json", "log.jsonl", "summary.json", "best.pt", "last.pt",
         "encoders/epoch_*.pt", "encoders", "tensorboard/events.out.tfevents.*", "tensorboard",
         "evaluation/evaluation.json", "evaluation/geometry.npz", "evaluation/evolution.png", "evaluation/config.yaml",
         "evaluation/.neardup.json", "evaluation/.neardup.lock", "evaluation")
#: Fields never compared on --resume: where the run is, and how this invocation treats it.
_NOT_COMPARED = ("out", "resume", "overwrite")
_PATHS = ("images", "weights", "val_queries", "val_database")

Given = set[str] | frozenset[str] | None


def is_legacy_run(out: Path) -> bool:
    """A run folder written before output markers existed: a checkpoint beside config.json."""
    return (out / CHECKPOINT).is_file() and (out / "config.json").is_file()


def _same_path(a: Any, b: Any) -> bool:
    if a == b:
        return True
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _same(name: str, old: Any, new: Any) -> bool:
    if name in _PATHS:
        return _same_path(old, new)
    if name == "val_distractors":
        old, new = list(old or []), list(new or [])
        return len(old) == len(new) and all(_same_path(a, b) for a, b in zip(old, new, strict=True))
    return old == new


def resume_config(cfg: Any, recorded: dict[str, Any], given: Given = None, source: str = CHECKPOINT) -> Any:
    """The config to resume with: ``cfg``, with the options not in ``given`` taken from the run's ``recorded`` config.

    ``cfg`` is a run config dataclass (FinetuneConfig). ``given=None`` means every option was given (library
    callers). Options that change the trained weights must equal the recorded ones; only the ``resume_safe``
    ones (workers, device, channels_last, val_every, keep_encoders, max_steps) may differ.

    Raises:
        UsageError: listing every changed option, old -> new.
    """
    values = {}
    changed = []
    for f in dataclasses.fields(cfg):
        new = getattr(cfg, f.name)
        if f.name in _NOT_COMPARED or f.name not in recorded:
            values[f.name] = new
            continue
        old = recorded[f.name]
        if given is not None and f.name not in given:
            values[f.name] = old
        else:
            values[f.name] = new
            if not f.metadata.get("resume_safe") and not _same(f.name, old, new):
                changed.append(f"{flag(f.name)} {old!r} -> {new!r}")
    if changed:
        raise UsageError(f"--resume: options that would change the result differ from the run's ({source}): "
                         f"{', '.join(changed)}; resume with the run's values (or leave them out), or start a new "
                         f"run in another --out")
    out = type(cfg)(**values)
    out.validate()
    return out


def trim_log(path: Path, last_epoch: int) -> None:
    """Drop log records of epochs after ``last_epoch`` (a killed epoch that resume runs again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        if isinstance(record, dict) and int(record.get("epoch", -1)) <= last_epoch:
            keep.append(line)
    atomic_write_text(path, "".join(f"{x}\n" for x in keep))


def _remove(out: Path, names: tuple[str, ...]) -> None:
    """Remove these entries of ``out`` (file globs; folders only once empty); called with the folder's lock held."""
    from neardup.outdir import remove_files

    remove_files(out, names)


def write_config(out: Path, cfg: Any, command: str) -> None:
    """config.yaml, once per run, in the layout every command writes (``--config`` reads it back)."""
    import yaml

    from neardup import __version__

    atomic_write_text(out / "config.yaml", yaml.safe_dump(
        {"command": command, "neardup_version": __version__, **run_settings(cfg)}, sort_keys=False))


def open_run(stack: ExitStack, cfg: Any, given: Given, command: str) -> tuple[Any, dict[str, Any] | None]:
    """Main process: claim --out (lock held by ``stack``), check --resume, write config.yaml for a new run.

    Returns:
        The config to run (on resume: the run's, see :func:`resume_config`) and the checkpoint to resume
        from (None for a new run).
    """
    from neardup.simclr.checkpoint import load_checkpoint

    out = Path(cfg.out)
    if cfg.resume:
        if not out.is_dir():
            raise UsageError(f"--resume: {out} does not exist" if not out.exists() else f"--resume: {out} is a file")
        who = owner(out)
        if who != command and not (who is None and is_legacy_run(out)):
            held = f" (it holds the output of `neardup {who}`)" if who else ""
            raise UsageError(f"--resume: {out} is not a neardup {command} run folder{held}")
    own = stack.enter_context(claim_out_dir(out, command, overwrite=cfg.overwrite, owned=OWNED,
                                            recognise=is_legacy_run))
    if not cfg.resume:
        if own and (out / CHECKPOINT).exists():
            raise UsageError(f"--out {out} already holds a {command} run; pass --resume to continue it, --overwrite "
                             f"to replace it, or choose another --out")
        if own:  # a run that stopped before its first checkpoint (e.g. bad input): nothing trained to keep
            _remove(out, OWNED)
        write_config(out, cfg, command)
        return cfg, None
    state = load_checkpoint(out / CHECKPOINT)
    cfg = resume_config(cfg, state["config"], given, str(out / CHECKPOINT))
    trim_log(out / "log.jsonl", state["epoch"])
    return cfg, state


def open_run_on_all_ranks(stack: ExitStack, cfg: Any, given: Given, command: str, info: DistInfo
                          ) -> tuple[Any, dict[str, Any] | None]:
    """:func:`open_run` on the main process; every rank gets its verdict, the config and the checkpoint.

    Raises:
        UsageError: the main process' refusal, on every rank (none waits for a verdict forever).
    """
    from neardup import dist
    from neardup.simclr.checkpoint import load_checkpoint

    error, state = None, None
    if info.is_main:
        try:
            cfg, state = open_run(stack, cfg, given, command)
        except Exception as exc:  # any failure: the other ranks must not wait for a verdict forever
            error = exc
    message = dist.broadcast_object(None if error is None else (str(error) or type(error).__name__))
    if error is not None:
        raise error
    if message is not None:
        raise UsageError(str(message))
    cfg = dist.broadcast_object(cfg)
    if cfg.resume and state is None:
        state = load_checkpoint(Path(cfg.out) / CHECKPOINT)
    return cfg, state
