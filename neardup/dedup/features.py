"""Features of each distinct file content of a scan, cached under ``DIR/features`` and never computed twice.

Why parts keyed by content hash: a re-run with the same inputs must reuse everything, ``--add`` must encode only
the new images, and a renamed or copied file must not be encoded again. Each batch of new contents becomes one
``extract`` output (``part-NNNNN/``, resumable and checked by extract itself), listed before it starts in
``part-NNNNN.json`` (paths and their sha256). A killed part is resumed by the next run with the same list.
``space.json`` records the model, so parts of two models are never mixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neardup.dedup.inventory import FileInfo
from neardup.dedup.large import StoredRows
from neardup.errors import UsageError
from neardup.io_utils import atomic_write_json, atomic_write_text, read_json_object

SPACE = "space.json"


@dataclass
class ContentVectors:
    """Unit-norm float32 features, one row per distinct readable content.

    ``row[i]`` is the row of file ``i`` (-1: unreadable, with ``reasons[i]``); ``sha[r]`` the content of row r.
    ``X`` is in memory, or for a large collection rows read from the parts on demand
    (:class:`neardup.dedup.large.StoredRows`).
    """

    X: np.ndarray | StoredRows
    row: np.ndarray
    sha: list[str]
    metric: str
    model: str
    reasons: dict[int, str]


def unit_rows(X: np.ndarray, metric: str) -> np.ndarray:
    """Features as unit vectors, so that cosine similarity is a dot product.

    Hashes (packed bits) become +-1 vectors: their cosine is 1 - 2 * hamming / bits, a similarity in the same
    [-1, 1] scale as the networks' features.
    """
    if metric == "hamming":
        X = np.unpackbits(np.asarray(X, dtype=np.uint8), axis=1).astype(np.float32) * 2 - 1
    from neardup.fastsearch.vectors import l2_normalize

    return l2_normalize(np.ascontiguousarray(X, dtype=np.float32))


class FeatureCache:
    """The feature parts of one scan folder (``DIR/features``)."""

    def __init__(self, root: Path, model: str, weights: str | None, extract_options: dict[str, Any]):
        self.root = root
        self.model, self.weights = model, weights
        self.options = extract_options
        self._extractor: Any = None
        self.adopted: list[Path] = []
        self.ray: Any = None  # a RayConfig: new parts are extracted on Ray (neardup.scaleout.extract)

    # ------------------------------------------------------------------ the model
    def _space_record(self) -> dict[str, Any]:
        from neardup.extract.weights import file_sha256

        return {"model": self.model,
                "weights_sha256": file_sha256(self.weights) if self.weights else None}

    def check_space(self) -> None:
        """Refuse a model other than the one the cached parts were made with (mixing them would be wrong)."""
        path = self.root / SPACE
        if not path.is_file():
            return
        old = read_json_object(path, "dedup feature record")
        new = self._space_record()
        if {k: old.get(k) for k in new} != new:
            raise UsageError(f"{self.root.parent} holds features of model {old.get('model')!r}"
                             f"{' with other weights' if old.get('model') == new['model'] else ''}; "
                             f"give the same --model/--weights, or --overwrite to start over, or another --out")

    def extractor(self) -> Any:
        """The model, loaded once (for new parts and for the calibration's attacked copies)."""
        if self._extractor is None:
            from neardup.extract.registry import create_extractor

            o = self.options
            self._extractor = create_extractor(self.model, weights=self.weights, device=o.get("device", "auto"),
                                               engine=o.get("engine", "auto"))
        return self._extractor

    def use_extractor(self, extractor: Any) -> None:
        self._extractor = extractor

    def adopt(self, stores: list[Path]) -> None:
        """Reuse the vectors of these feature folders (``neardup extract`` outputs given as inputs)."""
        self.adopted = list(stores)

    def _adopted(self, store_cls: Any, files: list[FileInfo], known: dict[str, tuple[str, Any]]) -> None:
        """Vectors of the adopted folders for the contents no part holds, after checking they are this model's."""
        import os

        from neardup.extract.space import FeatureSpace, require_same_space

        if not self.adopted:
            return
        wanted = {f.path: f.sha256 for f in files if f.sha256 not in known}
        mine = FeatureSpace.of_extractor(self.extractor())
        for root in self.adopted:
            store = store_cls.open(root)
            require_same_space([mine, store.space], [f"--model {self.model}", f"feature folder {root}"])
            for r, p in enumerate(store.paths):
                sha = wanted.get(os.path.realpath(p))
                if sha is not None and sha not in known:
                    known[sha] = ("ok", (str(Path(root).resolve()), r))

    # ------------------------------------------------------------------ parts
    def _parts(self) -> list[Path]:
        return sorted(p for p in self.root.glob("part-[0-9][0-9][0-9][0-9][0-9].json"))

    def _extract(self, listing: Path, show_progress: bool) -> None:
        self.extract_into(listing.with_suffix(".txt"), listing.with_suffix(""), show_progress)

    def extract_into(self, images: Path, out: Path, show_progress: bool = False) -> None:
        """Features of ``images`` (a folder or list file) into the feature folder ``out``, with this scan's model
        and options (``neardup extract``: resumed if it was cut short, refused if made differently)."""
        from neardup.extract.config import ExtractConfig
        from neardup.extract.pipeline import extract_features

        o = self.options
        cfg = ExtractConfig(model=self.model, weights=self.weights, batch_size=o.get("batch_size", 32),
                            workers=o.get("workers"), device=o.get("device", "auto"), engine=o.get("engine", "auto"),
                            dtype=o.get("dtype", "float32"))
        if self.ray is not None:
            extract_features(images, out, cfg, show_progress=show_progress, ray=self.ray)
            return
        extract_features(images, out, cfg, extractor=self.extractor(), show_progress=show_progress)

    def vectors(self, files: list[FileInfo], show_progress: bool = False,
                stream_above: int | None = None) -> ContentVectors:
        """Unit features of every distinct content of ``files``, extracting the ones no part holds yet.

        Args:
            stream_above: above this many contents the features are not loaded: ``X`` reads them from the parts
                when asked (None: always loaded).
        """
        from neardup.extract.store import FeatureStore

        self.root.mkdir(parents=True, exist_ok=True)
        self.check_space()
        known = self._index(FeatureStore, show_progress)
        self._adopted(FeatureStore, files, known)
        wanted: dict[str, str] = {}
        for f in files:
            if f.sha256 not in known:
                wanted.setdefault(f.sha256, f.path)
        if wanted:
            n = len(self._parts())
            part = self.root / f"part-{n:05d}.json"
            shas = sorted(wanted)
            if not (self.root / SPACE).is_file():
                atomic_write_json(self.root / SPACE, self._space_record())
            atomic_write_text(part.with_suffix(".txt"), "".join(wanted[s] + "\n" for s in shas))
            atomic_write_json(part, {"paths": [wanted[s] for s in shas], "sha256": shas})
            self._extract(part, show_progress)
            known.update(self._read_part(FeatureStore, part))
        return self._assemble(files, known, FeatureStore, stream_above)

    def _index(self, store_cls: Any, show_progress: bool) -> dict[str, tuple[str, Any]]:
        """sha256 -> ("ok", (part, row)) or ("bad", reason), finishing any part a killed run left unfinished."""
        known: dict[str, tuple[str, Any]] = {}
        for part in self._parts():
            if not (part.with_suffix("") / "meta.json").is_file():
                self._extract(part, show_progress)  # the same list: extract resumes it
            known.update(self._read_part(store_cls, part))
        return known

    def _read_part(self, store_cls: Any, part: Path) -> dict[str, tuple[str, Any]]:
        record = read_json_object(part, "dedup feature part")
        paths, shas = record.get("paths"), record.get("sha256")
        if not isinstance(paths, list) or not isinstance(shas, list) or len(paths) != len(shas):
            raise UsageError(f"damaged dedup feature part {part}; re-run with --overwrite")
        sha_of = dict(zip(paths, shas, strict=True))
        store = store_cls.open(part.with_suffix(""))
        out: dict[str, tuple[str, Any]] = {}
        for r, p in enumerate(store.paths):
            if p in sha_of:
                out[sha_of[p]] = ("ok", (part.stem, r))
        for s in store.meta.get("skipped", []):
            p = s.get("path")
            if p in sha_of:
                out.setdefault(sha_of[p], ("bad", str(s.get("reason", "unreadable"))))
        return out

    def _assemble(self, files: list[FileInfo], known: dict[str, tuple[str, Any]], store_cls: Any,
                  stream_above: int | None = None) -> ContentVectors:
        rows_by_part: dict[str, list[int]] = {}
        order: list[str] = []  # distinct readable contents, in first-file order
        seen: set[str] = set()
        for f in files:
            state, where = known.get(f.sha256, ("bad", "not extracted"))
            if state == "ok" and f.sha256 not in seen:
                seen.add(f.sha256)
                order.append(f.sha256)
                rows_by_part.setdefault(where[0], []).append(where[1])
        if stream_above is not None and len(order) > stream_above:
            return self._streamed(files, known, order, rows_by_part, store_cls)
        pieces: dict[str, np.ndarray] = {}
        metric = model = ""
        for name, rows in rows_by_part.items():
            store = store_cls.open(self.root / name)
            metric, model = store.metric, store.model
            feats = store.features()
            pieces[name] = unit_rows(np.asarray(feats[np.sort(np.asarray(rows))]), metric)
        # rows of each part were gathered sorted: map back to content order
        pos_in_part: dict[tuple[str, int], int] = {}
        for name, rows in rows_by_part.items():
            for k, r in enumerate(sorted(rows)):
                pos_in_part[(name, r)] = k
        dim = next(iter(pieces.values())).shape[1] if pieces else 0
        X = np.empty((len(order), dim), dtype=np.float32)
        for i, sha in enumerate(order):
            name, r = known[sha][1]
            X[i] = pieces[name][pos_in_part[(name, r)]]
        return self._vectors(X, files, known, order, metric, model)

    def _vectors(self, X: np.ndarray | StoredRows, files: list[FileInfo], known: dict[str, tuple[str, Any]],
                 order: list[str], metric: str, model: str) -> ContentVectors:
        content_row = {sha: i for i, sha in enumerate(order)}
        row = np.array([content_row.get(f.sha256, -1) for f in files], dtype=np.int64)
        reasons = {i: str(known.get(f.sha256, ("bad", "not extracted"))[1]) for i, f in enumerate(files)
                   if row[i] < 0}
        return ContentVectors(X, row, order, metric or "cosine", model or self.model, reasons)

    def _streamed(self, files: list[FileInfo], known: dict[str, tuple[str, Any]], order: list[str],
                  rows_by_part: dict[str, list[int]], store_cls: Any) -> ContentVectors:
        """The contents as :class:`StoredRows` over the parts' shards: nothing but their locations is loaded."""
        from neardup.dedup.large import Shard

        shards: list[Shard] = []
        where: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # part -> (shard, row in shard) of each part row
        metric = model = ""
        for name in rows_by_part:
            store = store_cls.open(self.root / name)
            metric, model = store.metric, store.model
            part_shards = Shard.of_store(store)
            counts = [s.rows for s in part_shards]
            where[name] = (np.repeat(np.arange(len(shards), len(shards) + len(part_shards)), counts),
                           np.concatenate([np.arange(c) for c in counts]) if counts else np.zeros(0, np.int64))
            shards.extend(part_shards)
        shard = np.empty(len(order), dtype=np.int32)
        row_in = np.empty(len(order), dtype=np.int64)
        for i, sha in enumerate(order):
            name, r = known[sha][1]
            shard[i], row_in[i] = where[name][0][r], where[name][1][r]
        return self._vectors(StoredRows(shards, shard, row_in), files, known, order, metric, model)


def remove_cache_owned() -> tuple[str, ...]:
    """The globs of what the cache writes (for ``--overwrite``), extract's own files inside each part."""
    from neardup.extract.pipeline import OWNED as EXTRACT_OWNED

    part = "features/part-[0-9][0-9][0-9][0-9][0-9]"
    return (f"{part}.json", f"{part}.txt", *(f"{part}/{g}" for g in EXTRACT_OWNED), f"{part}/.neardup.json",
            f"{part}/.neardup.lock", part, f"features/{SPACE}", "features")

