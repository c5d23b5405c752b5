"""A scan folder end to end: claim it, find the duplicates, write the results and the report.

``--add`` is a scan of the earlier inputs plus the new ones: the caches (hashes, features, calibration scores)
make it encode only the new images, and its groups are those of a full scan of everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from neardup.dedup.find import DedupConfig, DedupResult, find_duplicates, for_extractor
from neardup.dedup.outputs import OWNED, SUMMARY, read_summary, summary, write_outputs
from neardup.errors import UsageError
from neardup.outdir import claim_out_dir

if TYPE_CHECKING:
    from neardup.scaleout.engine import RayConfig


def _owned() -> tuple[str, ...]:
    from neardup.dedup.features import remove_cache_owned
    from neardup.dedup.normalization import owned as background_owned

    return (*OWNED, *remove_cache_owned(), *background_owned(), ".neardup.json", "actions/journal-*.jsonl",
            "actions/journal-*.undone",
            "graph/edges-[0-9][0-9][0-9][0-9][0-9].npz", "graph/job.json", "graph/.*.tmp", "graph")  # --ray's edges


def _check_same_normalization(old: dict[str, object], cfg: DedupConfig, add: bool) -> None:
    """Refuse a run whose score normalisation differs from the earlier scan's: thresholds, calibration scores and
    reported scores of the two are on different scales."""
    from neardup.dedup.normalization import same_options

    before = old.get("normalization")
    norm = cfg.normalization()
    if same_options(before if isinstance(before, dict) else None, norm):
        return

    def says(rec: object) -> str:
        if not isinstance(rec, dict):
            return "no --normalize-scores"
        return (f"--normalize-scores {rec.get('background')} --norm-k {rec.get('k')} --norm-beta {rec.get('beta')} "
                f"--norm-reduction {rec.get('reduction')}")

    now = says(None if norm is None else {**norm.to_dict(), "background": os.path.abspath(norm.background)})
    raise UsageError(f"the earlier scan in this folder used {says(before)}, this run {now}: scores on two scales "
                     f"cannot be mixed; give the same options{'' if add else ', or --overwrite to start over'}")


def is_scan(folder: Path) -> bool:
    return (folder / SUMMARY).is_file() or (folder / "features" / "space.json").is_file()


def run_scan(paths: list[str], out: str | os.PathLike, config: DedupConfig | None = None, *,
             against: list[str] | None = None, add: bool = False, overwrite: bool = False, report: bool = True,
             show_progress: bool = False, extractor: object = None,
             write_config: Callable[[Path], None] | None = None, ray: RayConfig | None = None) -> DedupResult:
    """Scan ``paths`` into the folder ``out`` (claimed for ``dedup``; a re-run reuses its caches).

    ``ray``: a :class:`neardup.scaleout.engine.RayConfig` to extract and search on Ray (the same groups).

    Raises:
        UsageError: bad options or inputs, ``--add`` without an earlier scan, or a folder another command owns.
    """
    cfg = for_extractor((config or DedupConfig()).validate(), extractor)
    out = Path(out)
    if add and overwrite:
        raise UsageError("--add extends an earlier scan; --overwrite starts over: give one of them")
    with claim_out_dir(out, "dedup", overwrite=overwrite, owned=_owned(), recognise=is_scan):
        inputs = [os.path.abspath(p) for p in paths]
        refs = [os.path.abspath(p) for p in against or []]
        if cfg.normalize_scores is not None:
            cfg = replace(cfg, normalize_scores=os.path.abspath(cfg.normalize_scores))
        if (out / SUMMARY).is_file() and not overwrite:
            _check_same_normalization(read_summary(out), cfg, add)
        if add:
            if not (out / SUMMARY).is_file():
                raise UsageError(f"--add needs an earlier scan in {out} (no {SUMMARY}); run without --add first")
            old = read_summary(out)
            if bool(old["against_inputs"]) != bool(refs) and refs:
                raise UsageError("--add keeps the earlier scan's --against; give the same --against or none")
            inputs = list(dict.fromkeys([*old["inputs"], *inputs]))
            refs = refs or list(old["against_inputs"])
        result = find_duplicates(inputs, out, cfg, against=refs or None, extractor=extractor,
                                 show_progress=show_progress, ray=ray)
        if write_config is not None:
            write_config(out)
        write_outputs(result, out, summary(result, inputs, refs, asdict(cfg)))
        if report:
            from neardup.dedup.report import write_report

            write_report(out, show_progress=show_progress)
    return result
