"""What the BSDS500 benchmarks share: the 58 default attacks of the val photos, feature folders, exact scores.

Everything is written under one work folder and reused by the next run (attack and extract resume their own
output), so a second run of a benchmark costs only what it measures.
"""

from __future__ import annotations

from pathlib import Path

import neardup._compat  # noqa: F401
from neardup.data.generate import generate_attacks, load_attack_config
from neardup.extract.config import ExtractConfig
from neardup.extract.pipeline import ExtractReport, extract_features
from neardup.fastsearch.dataset import load_retrieval_set
from neardup.fastsearch.exact import RetrievalResult, evaluate
from neardup.fastsearch.normalize import BackgroundNormalizer

#: where the shared photos usually are, relative to a checkout in /work/<name> or /work/wt/<name>
CANDIDATES = [Path(__file__).resolve().parents[i] / "shared" / "data" / "bsds500" for i in (2, 3)]


def default_data() -> Path:
    return next((p for p in CANDIDATES if (p / "val").is_dir()), CANDIDATES[0])


def val_attacks(data: Path, work: Path, workers: int | None = None) -> Path:
    """The default 58 attacks of the 100 val photos (5800 queries), seed 0, in ``work``/val_attacks."""
    out = work / "val_attacks"
    if not (out / "manifest.csv").is_file():
        generate_attacks(data / "val", out, load_attack_config("default"), seed=0, workers=workers,
                         show_progress=False)
    return out


def extract(src: Path, out: Path, **options: object) -> ExtractReport:
    """``neardup extract`` of ``src`` into ``out`` (resumed: a finished folder is only checked)."""
    return extract_features(src, out, ExtractConfig(**options), show_progress=False)  # type: ignore[arg-type]


def scores(database: Path, queries: Path, normalizer: BackgroundNormalizer | None = None) -> RetrievalResult:
    """Exact cosine search of ``queries`` in ``database``, scored against the attack manifest."""
    return evaluate(load_retrieval_set(database, queries), k=10, normalizer=normalizer)
