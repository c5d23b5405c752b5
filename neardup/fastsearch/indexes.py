"""faiss indexes named by factory strings: one ``build_index(spec, d, metric)``, training, search, disk, device.

:data:`FAMILIES` is the registry of the index families we support, read by the
CLI and the docs: each a pattern over faiss factory strings, the metrics it
supports (names from :data:`neardup.fastsearch.vectors.METRICS`) and its search
parameters. faiss implements L1 and Jensen-Shannon only for flat storage
(``Flat``, ``HNSW``, ``IVF..,Flat``); other families with those metrics abort
the whole process inside faiss, so they are refused here with a :class:`UsageError`.
Every faiss refusal (a bad string, too few training vectors) becomes one
UsageError line (:func:`faiss_message`).

Specs may hold the literal placeholder ``{nlist}``, filled with
:func:`default_nlist` of the database size (the faiss wiki's guidance of 4 to
16 times sqrt(N) lists, lower end), e.g. ``IVF{nlist},PQ32``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neardup.errors import UsageError
from neardup.fastsearch.vectors import get_metric


# --------------------------------------------------------------------------- index families
@dataclass(frozen=True)
class IndexFamily:
    """A kind of index recognised in a factory string."""

    name: str
    pattern: str  # regex over the resolved factory string (full match)
    metrics: tuple[str, ...]
    params: tuple[str, ...] = ()  # search-time parameters (faiss ParameterSpace names)
    example: str = ""
    doc: str = ""

    @property
    def binary(self) -> bool:
        return self.metrics == ("hamming",)


FLOAT = ("l2", "cosine")
FLAT_STORAGE = ("l2", "cosine", "l1", "js")
_PRE = r"(?:(?:PCAR?\d+|OPQ\d+(?:_\d+)?|RR\d+|L2norm),)*"  # optional pre-transforms
_REFINE = r"(?:,RFlat|,Refine\(Flat\))?"  # optional exact re-ranking of the k * k_factor_rf best
FAMILIES: dict[str, IndexFamily] = {}


def register_family(fam: IndexFamily) -> IndexFamily:
    """Adding an index family is this one call: spec parsing, metric checks, bench, index and cluster follow."""
    if fam.name in FAMILIES:
        raise ValueError(f"index family {fam.name!r} registered twice")
    FAMILIES[fam.name] = fam
    return fam


def unregister_family(name: str) -> None:
    """Remove a family (for tests and plugins that register temporary ones)."""
    FAMILIES.pop(name, None)


for _fam in (
    IndexFamily("flat", r"Flat", FLAT_STORAGE, (), "Flat", "exact brute force"),
    IndexFamily("hnsw", r"HNSW\d+(?:,Flat)?", FLAT_STORAGE, ("efSearch",), "HNSW32", "graph over full vectors"),
    IndexFamily("ivf_flat", r"IVF\d+,Flat", FLAT_STORAGE, ("nprobe",), "IVF{nlist},Flat",
                "inverted lists, full vectors"),
    IndexFamily("ivf_hnsw", _PRE + r"IVF\d+_HNSW\d+,(?:Flat|SQ\d+|SQfp16|PQ\d+(?:x\d+)?(?:fs)?r?)" + _REFINE, FLOAT,
                ("nprobe", "quantizer_efSearch"), "IVF{nlist}_HNSW32,Flat", "IVF with an HNSW coarse quantizer"),
    IndexFamily("ivf_sq", _PRE + r"IVF\d+,(?:SQ\d+|SQfp16)" + _REFINE, FLOAT, ("nprobe",), "IVF{nlist},SQ8",
                "scalar quantised"),
    IndexFamily("ivf_pq", _PRE + r"IVF\d+,PQ\d+(?:x\d+)?(?:fs|fsr)?" + _REFINE, FLOAT, ("nprobe",), "IVF{nlist},PQ8",
                "product quantised (x4fs/x4fsr: fast-scan; ,RFlat: exact re-ranking)"),
    IndexFamily("pre_flat", r"(?:(?:PCAR?\d+|OPQ\d+(?:_\d+)?|RR\d+|L2norm),)+(?:Flat|HNSW\d+|IVF\d+,Flat)", FLOAT,
                ("nprobe", "efSearch"), "PCA16,IVF{nlist},Flat", "PCA/OPQ pre-transform then flat storage"),
    IndexFamily("pq", _PRE + r"PQ\d+(?:x\d+)?(?:fs)?" + _REFINE, FLOAT, (), "PQ8",
                "product quantiser, no inverted lists"),
    IndexFamily("bflat", r"BFlat", ("hamming",), (), "BFlat", "binary brute force"),
    IndexFamily("bivf", r"BIVF\d+(?:_HNSW\d+)?", ("hamming",), ("nprobe",), "BIVF{nlist}", "binary inverted lists"),
    IndexFamily("bhnsw", r"BHNSW\d+", ("hamming",), ("efSearch",), "BHNSW32", "binary HNSW graph"),
):
    register_family(_fam)


def default_nlist(n: int) -> int:
    """faiss' guidance for the number of inverted lists: 4*sqrt(N) (its range is 4-16*sqrt(N)).

    Capped at N/39 so k-means gets the 39 training points per centroid faiss
    asks for (small test sets), and at least 1.
    """
    return max(1, min(int(round(4 * math.sqrt(max(n, 1)))), n // 39))


def resolve_spec(spec: str, n: int | None = None) -> str:
    """Fill ``{nlist}`` with :func:`default_nlist` (n), ``BHNSW`` with ``BHNSW32``; strip blanks."""
    spec = spec.replace(" ", "")
    if "{nlist}" in spec:
        if n is None:
            raise UsageError(f"{spec}: {{nlist}} needs the database size")
        spec = spec.replace("{nlist}", str(default_nlist(n)))
    if spec == "BHNSW":
        spec = "BHNSW32"
    if "{" in spec or "}" in spec:
        raise UsageError(f"{spec}: the only placeholder is {{nlist}}; write other numbers out (OPQ32_128,...)")
    return spec


def family_of(spec: str) -> IndexFamily:
    """The family a resolved factory string belongs to; UsageError listing examples otherwise."""
    for m in re.finditer(r"HNSW(\d+)", spec):
        if int(m.group(1)) < 2:  # faiss aborts the process on HNSW0/HNSW1
            raise UsageError(f"{spec}: HNSW needs at least 2 links per node (e.g. HNSW32), got {m.group(1)}")
    for fam in FAMILIES.values():
        if re.fullmatch(fam.pattern, spec):
            return fam
    raise UsageError(f"unsupported index spec {spec!r}; examples: " + ", ".join(f.example for f in FAMILIES.values()))


def check_metric(spec: str, metric: str) -> IndexFamily:
    """Raise a clear UsageError when ``spec`` cannot use ``metric`` (faiss would fail obscurely or abort)."""
    m, fam = get_metric(metric), family_of(spec)
    metric = m.name
    if m.binary != fam.binary:
        kind = "binary hashes (hamming)" if m.binary else f"float features ({metric})"
        raise UsageError(f"{spec} is a {'binary' if fam.binary else 'float'} index and cannot search {kind}; "
                         f"use {'B' if m.binary else ''}Flat-type specs such as "
                         f"{'BFlat, BIVF{nlist}, BHNSW32' if m.binary else 'Flat, IVF{nlist},Flat, HNSW32'}")
    if metric not in fam.metrics:
        raise UsageError(f"faiss supports metric {metric} only for flat storage (Flat, HNSW<M>, IVF<n>,Flat), "
                         f"not for {spec} ({fam.name}); use l2 or cosine with it")
    return fam


def faiss_message(exc: BaseException, limit: int = 200) -> str:
    """The useful part of a faiss error: the last line of its (often multi-line, C++-traced) message."""
    lines = str(exc).strip().splitlines()
    return lines[-1][-limit:] if lines else type(exc).__name__


def build_index(spec: str, d: int, metric: str, n: int | None = None, ef_construction: int | None = None) -> Any:
    """An empty (untrained) faiss index for ``spec``.

    Args:
        spec: a faiss factory string (``Flat``, ``IVF{nlist},PQ32``, ``BHNSW32``...).
        d: vector dimension (for hamming: the number of bits, 8 x bytes).
        metric: a name from :data:`neardup.fastsearch.vectors.METRICS` (or an alias, e.g. euclidean).
        n: database size, to fill ``{nlist}``.
        ef_construction: HNSW build breadth (graph indexes only) [default: faiss', 40].

    Raises:
        UsageError: unknown spec, metric unsupported by the family, or faiss refusing the string.
    """
    import faiss

    spec = resolve_spec(spec, n)
    m = get_metric(metric)
    check_metric(spec, m.name)
    index: Any
    try:
        if m.binary:
            if d % 8:
                raise UsageError(f"binary indexes need a multiple of 8 bits, got d={d}")
            index = faiss.index_binary_factory(d, spec)
        else:
            index = faiss.index_factory(d, spec, getattr(faiss, m.faiss_metric))
    except RuntimeError as exc:
        raise UsageError(f"faiss cannot build {spec!r} for d={d}: {faiss_message(exc, 1000)}") from None
    if ef_construction is not None:
        graph = faiss.downcast_IndexBinary(index) if m.binary else _unwrap(index)
        if hasattr(graph, "hnsw"):
            graph.hnsw.efConstruction = int(ef_construction)
    if m.binary:
        return index
    _check_transforms(index, spec)
    # the factory turns on polysemous training for (IVF)PQ: slow, and useless without polysemous search
    inner = _unwrap(index)
    with contextlib.suppress(RuntimeError):
        inner = faiss.downcast_index(faiss.extract_index_ivf(index))
    if getattr(inner, "do_polysemous_training", False):
        inner.do_polysemous_training = False
    return index


def _walk(index: Any) -> tuple[list[Any], Any]:
    """(every vector transform of the pre-transform chains, the innermost index), through refine wrappers.

    The caller must keep ``index`` referenced while it uses the results: swig objects borrow from it.
    """
    import faiss

    transforms: list[Any] = []
    index = faiss.downcast_index(index)
    while True:
        if isinstance(index, faiss.IndexRefine):
            index = faiss.downcast_index(index.base_index)
        elif isinstance(index, faiss.IndexPreTransform):
            chain: Any = index.chain  # a swig vector (faiss' stubs call it a list)
            transforms += [faiss.downcast_VectorTransform(chain.at(i)) for i in range(chain.size())]
            index = faiss.downcast_index(index.index)
        else:
            return transforms, index


def _check_transforms(index: Any, spec: str) -> None:
    """PCA can only reduce: faiss accepts ``PCA64`` on 32-d vectors and fails later, in training."""
    import faiss

    for vt in _walk(index)[0]:
        if isinstance(vt, faiss.PCAMatrix) and vt.d_out > vt.d_in:
            raise UsageError(f"{spec}: PCA cannot output {vt.d_out} dimensions from {vt.d_in}; "
                             f"use PCA{vt.d_in} or fewer")


def train_index(index: Any, x: np.ndarray, spec: str) -> None:
    """``index.train(x)``, with faiss' own refusals (after :func:`check_trainable`) as one UsageError line."""
    try:
        index.train(x)
    except RuntimeError as exc:
        raise UsageError(f"faiss cannot train {spec!r} on {len(x)} vectors: {faiss_message(exc)}") from None


def _unwrap(index: Any) -> Any:
    """The index under any pre-transforms (PCA, OPQ...), downcast to its concrete class."""
    import faiss

    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def is_binary(index: Any) -> bool:
    import faiss

    return isinstance(index, faiss.IndexBinary)


def train_size(index: Any, n: int) -> int:
    """How many vectors training needs: 0 for trained indexes, else enough for k-means (64/centroid, >= 10k)."""
    if index.is_trained:
        return 0
    import faiss

    nlist = 0
    try:
        ivf = faiss.extract_index_ivf(index) if not is_binary(index) else faiss.downcast_IndexBinary(index)
        nlist = int(getattr(ivf, "nlist", 0))
    except RuntimeError:
        pass
    return int(min(n, max(64 * nlist, 10_000)))


def min_train_vectors(index: Any) -> tuple[int, str]:
    """The fewest training vectors faiss accepts for ``index``, and which part needs them (0, "" if none).

    k-means needs at least as many points as centroids: ``nlist`` for inverted lists, ``2**nbits`` per
    product quantiser (256 for OPQ's own quantiser), and PCA to ``d_out`` dimensions needs ``d_out``.
    Below these faiss raises obscure errors (or aborts), so callers check first.
    """
    import faiss

    if is_binary(index):
        b = faiss.downcast_IndexBinary(index)
        nlist = int(getattr(b, "nlist", 0)) if isinstance(b, faiss.IndexBinaryIVF) else 0
        return (nlist, f"{nlist} inverted lists") if nlist else (0, "")
    needs: list[tuple[int, str]] = [(0, "")]
    transforms, inner = _walk(index)
    for vt in transforms:
        if isinstance(vt, faiss.OPQMatrix):
            k = 256 if vt.pq is None else 2 ** int(vt.pq.nbits)
            needs.append((k, f"the OPQ rotation's quantiser of {k} centroids"))
        elif isinstance(vt, faiss.PCAMatrix):
            needs.append((int(vt.d_out), f"PCA to {vt.d_out} dimensions"))
    index = inner
    nlist = int(getattr(index, "nlist", 0) or 0)
    if nlist:
        needs.append((nlist, f"{nlist} inverted lists"))
    pq = getattr(index, "pq", None)
    if pq is not None:
        needs.append((2 ** int(pq.nbits), f"a product quantiser of {2 ** int(pq.nbits)} centroids"))
    return max(needs, key=lambda t: t[0])


def check_trainable(index: Any, spec: str, n_train: int, source: str = "") -> None:
    """Refuse, with one clear line, to train ``index`` on fewer vectors than faiss needs.

    Raises:
        UsageError: naming the spec, how many vectors it needs and why, and how many there are (from ``source``).
    """
    if index.is_trained:
        return
    need, why = min_train_vectors(index)
    need = max(need, 1)
    if n_train < need:
        raise UsageError(f"{spec} needs at least {need} training vectors (for {why or 'training'}) but only "
                         f"{n_train} are available{f' ({source})' if source else ''}; use fewer lists or "
                         f"centroids, or an index without training (Flat, HNSW32)")


# --------------------------------------------------------------------------- search
def search_param_names(index: Any) -> set[str]:
    """Search-time parameters this index accepts (nprobe, efSearch, quantizer_efSearch, k_factor_rf)."""
    import faiss

    names: set[str] = set()
    if is_binary(index):
        b = faiss.downcast_IndexBinary(index)
        if isinstance(b, faiss.IndexBinaryIVF):
            names.add("nprobe")
        if isinstance(b, faiss.IndexBinaryHNSW):
            names.add("efSearch")
        return names
    try:
        ivf = faiss.extract_index_ivf(index)
        names.add("nprobe")
        if isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW):
            names.add("quantizer_efSearch")
    except RuntimeError:
        pass
    if isinstance(faiss.downcast_index(index), faiss.IndexRefine):
        names.add("k_factor_rf")
    if isinstance(_unwrap(index), faiss.IndexHNSW):
        names.add("efSearch")
    return names


def set_search_params(index: Any, params: dict[str, int]) -> None:
    """Set e.g. ``{"nprobe": 16}`` through faiss' ParameterSpace (handles pre-transforms, binary indexes).

    Raises:
        UsageError: a parameter this index does not have.
    """
    import faiss

    if not params:
        return
    ok = search_param_names(index)
    bad = sorted(set(params) - ok)
    if bad:
        raise UsageError(f"index has no search parameter {', '.join(bad)} "
                         f"(it takes: {', '.join(sorted(ok)) or 'none'})")
    ps = faiss.ParameterSpace()
    for name, value in params.items():
        ps.set_index_parameter(index, name, float(value))


def search(index: Any, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of already-prepared queries: (scores, ids), scores are similarities (higher = better)."""
    dist, ids = index.search(queries, k)
    if get_metric(metric).distance:
        dist = -dist.astype(np.float32, copy=False) + np.float32(0)  # + 0: no "-0.0" scores
    return dist, ids


# --------------------------------------------------------------------------- size, disk, device
def index_nbytes(index: Any) -> int:
    """Size of the serialised index, counted while streaming (no in-memory copy of it)."""
    import faiss

    total = [0]

    def count(buf: bytes) -> int:
        total[0] += len(buf)
        return len(buf)

    writer = faiss.PyCallbackIOWriter(count)  # type: ignore[attr-defined]  # missing from faiss' stubs
    (faiss.write_index_binary if is_binary(index) else faiss.write_index)(index, writer)
    return total[0]


def write_index(index: Any, path: str | os.PathLike) -> None:
    """Write atomically (temp file + rename); binary indexes with ``write_index_binary``."""
    import faiss

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    (faiss.write_index_binary if is_binary(index) else faiss.write_index)(index, str(tmp))
    os.replace(tmp, path)


def read_index(path: str | os.PathLike, binary: bool) -> Any:
    import faiss

    if not Path(path).is_file():
        raise UsageError(f"index file not found: {path}")
    return faiss.read_index_binary(str(path)) if binary else faiss.read_index(str(path))


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "index_cpu_to_gpu") and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def faiss_device(device: str | None) -> tuple[str, str]:
    """Where faiss runs: ``auto|cpu|cuda`` -> (``cpu`` or ``cuda``, note).

    The same policy as the torch devices of extraction (``neardup.extract.base.resolve_device``): an explicit
    ``cuda`` that cannot be honoured is an error, never a silent fallback (a benchmark would report CPU
    timings as GPU ones); ``auto`` takes the GPU when faiss has one, else the CPU with a note saying so.

    Raises:
        UsageError: an unknown device, or ``cuda`` without faiss-gpu or a visible GPU.
    """
    device = device or "auto"
    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device == "cpu":
        return "cpu", ""
    if gpu_available():
        return "cuda", ""
    if device == "cuda":
        raise UsageError("--device cuda: faiss has no GPU support here (faiss-cpu is installed) or sees no GPU; "
                         "use --device cpu or auto")
    return "cpu", "faiss has no GPU support or sees no GPU: ran on cpu"


def to_device(index: Any, device: str) -> tuple[Any, str, str]:
    """Move a built CPU index to the GPU when ``device == 'cuda'``: (index, device used, note).

    Index types faiss-gpu does not implement (HNSW, binary, L1/JS...) stay on the CPU, with a note.
    """
    if device != "cuda":
        return index, "cpu", ""
    import faiss

    if is_binary(index):
        return index, "cpu", "binary indexes run on cpu"
    try:  # pragma: no cover - needs faiss-gpu and a GPU
        res = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(res, 0, index), "cuda", ""
    except (RuntimeError, AttributeError) as exc:  # pragma: no cover
        return index, "cpu", f"faiss-gpu cannot run this index ({faiss_message(exc, 120)}): ran on cpu"


def to_cpu(index: Any) -> Any:
    """The CPU copy of a GPU index (itself when already on the CPU)."""
    import faiss

    if is_binary(index) or not hasattr(faiss, "index_gpu_to_cpu") or "Gpu" not in type(index).__name__:
        return index
    return faiss.index_gpu_to_cpu(index)  # pragma: no cover - needs faiss-gpu
