import numpy as np
import pytest

from neardup.errors import UsageError
from neardup.fastsearch.indexes import (
    FAMILIES,
    build_index,
    default_nlist,
    faiss_device,
    family_of,
    index_nbytes,
    read_index,
    resolve_spec,
    search,
    search_param_names,
    set_search_params,
    write_index,
)
from neardup.fastsearch.vectors import METRICS, prepare_vectors

from .conftest import clustered

# every spec family the issue names, with sizes that fit d=32 / 64 bits
ISSUE_SPECS = ["Flat", "IVF{nlist},Flat", "IVF{nlist},SQ8", "IVF{nlist},PQ8", "HNSW16", "IVF{nlist}_HNSW32,Flat",
               "OPQ8_32,IVF{nlist},PQ8x4fsr", "PCA16,IVF{nlist},Flat",
              "IVF{nlist},PQ16x4fsr,RFlat", "BFlat", "BIVF{nlist}", "BHNSW"]


def _data(binary: bool, n: int = 1500):
    if binary:
        rng = np.random.default_rng(0)
        db = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
        gt = rng.choice(n, 50, replace=False)
        q = db[gt].copy()
        q[:, 0] ^= 1  # one bit flipped
        return db, q, gt, 64, "hamming"
    db, q, gt = clustered(n, 32, 50)
    return db, q, gt, 32, "cosine"


@pytest.mark.parametrize("spec", sorted({*ISSUE_SPECS, *(f.example for f in FAMILIES.values())}))
def test_every_family_builds_searches_and_round_trips(spec, tmp_path):
    check_spec(spec, tmp_path)


def check_spec(spec, tmp_path):
    """The registry loop's body: build, train, add, search (best first, accurate), write and read back."""
    binary = spec.startswith("B")
    db, q, gt, d, metric = _data(binary)
    index = build_index(spec, d, metric, n=len(db))
    x, xq = prepare_vectors(db, metric), prepare_vectors(q, metric)
    index.train(x)
    index.add(x)
    assert index.ntotal == len(db)
    if "nprobe" in search_param_names(index):
        set_search_params(index, {"nprobe": 8})
    scores, ids = search(index, xq, 5, metric)
    assert ids.shape == (len(q), 5) and np.all(np.diff(scores, axis=1) <= 1e-5)  # best first
    assert np.mean(ids[:, 0] == gt) > (0.2 if "PQ" in spec or "PCA" in spec else 0.9)  # lossy codes
    path = tmp_path / "index.faiss"
    write_index(index, path)
    back = read_index(path, binary)
    if "nprobe" in search_param_names(back):
        set_search_params(back, {"nprobe": 8})
    scores2, ids2 = search(back, xq, 5, metric)
    assert np.array_equal(ids, ids2) and np.allclose(scores, scores2)
    assert index_nbytes(index) == path.stat().st_size > 0


def brute_force(db: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """Distances (lower is better) in plain numpy."""
    if metric == "l2":
        return ((q[:, None] - db[None]) ** 2).sum(-1)
    if metric == "cosine":
        a, b = q / np.linalg.norm(q, axis=1, keepdims=True), db / np.linalg.norm(db, axis=1, keepdims=True)
        return -(a @ b.T)
    if metric == "l1":
        return np.abs(q[:, None] - db[None]).sum(-1)
    if metric == "js":
        p, r = q / q.sum(1, keepdims=True), db / db.sum(1, keepdims=True)
        p, r = p[:, None].astype(np.float64), r[None].astype(np.float64)
        mid = (p + r) / 2

        def kl(a, b):
            return np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / np.where(b > 0, b, 1)), 0).sum(-1)
        return (kl(p, mid) + kl(r, mid)) / 2
    if metric == "hamming":
        return np.unpackbits(q[:, None] ^ db[None], axis=-1).sum(-1)
    raise AssertionError(metric)


@pytest.mark.parametrize("metric", list(METRICS))
def test_flat_equals_numpy_bruteforce(metric):
    if metric == "hamming":
        rng = np.random.default_rng(1)
        db, q = rng.integers(0, 256, (300, 8), dtype=np.uint8), rng.integers(0, 256, (20, 8), dtype=np.uint8)
        index = build_index("BFlat", 64, metric)
    else:
        db, q, _ = clustered(300, 16, 20, noise=0.5)
        index = build_index("Flat", 16, metric)
    index.add(prepare_vectors(db, metric))
    scores, ids = search(index, prepare_vectors(q, metric), 10, metric)
    dist = brute_force(db, q, metric)
    ref = np.take_along_axis(dist, ids, 1)
    # same neighbours up to ties: the returned distances are the 10 smallest, in order
    assert np.allclose(ref, np.sort(dist, axis=1)[:, :10], rtol=1e-3, atol=1e-4)
    if metric != "hamming":
        assert np.mean(ids == np.argsort(dist, axis=1, kind="stable")[:, :10]) > 0.99
    if metric in ("l2", "l1", "hamming"):
        assert np.allclose(-scores, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("spec,metric", [("IVF8,PQ4", "l1"), ("IVF8,SQ8", "js"), ("PCA8,Flat", "l1"),
                                         ("IVF8_HNSW32,Flat", "l1"), ("OPQ4_16,IVF8,PQ4x4fsr", "js")])
def test_l1_js_refused_outside_flat_storage(spec, metric):
    with pytest.raises(UsageError, match="only for flat storage"):
        build_index(spec, 16, metric)


@pytest.mark.parametrize("spec", ["Flat", "HNSW16", "IVF8,Flat"])
@pytest.mark.parametrize("metric", ["l1", "js"])
def test_l1_js_work_with_flat_storage(spec, metric):
    db, q, gt = clustered(600, 16, 20)
    index = build_index(spec, 16, metric)
    x = prepare_vectors(db, metric)
    index.train(x)
    index.add(x)
    if "nprobe" in search_param_names(index):
        set_search_params(index, {"nprobe": 8})
    _, ids = search(index, prepare_vectors(q, metric), 1, metric)
    assert np.mean(ids[:, 0] == gt) > 0.9


def test_clear_errors():
    with pytest.raises(UsageError, match="binary index"):
        build_index("BFlat", 32, "cosine")
    with pytest.raises(UsageError, match="float index"):
        build_index("Flat", 64, "hamming")
    with pytest.raises(UsageError, match="unsupported index spec"):
        build_index("LSH", 16, "l2")
    with pytest.raises(UsageError, match="unknown metric"):
        build_index("Flat", 16, "manhattan")
    with pytest.raises(UsageError, match="non-negative"):
        prepare_vectors(np.array([[1.0, -1.0]]), "js")
    with pytest.raises(UsageError, match="hamming"):
        prepare_vectors(np.zeros((2, 8), np.uint8), "cosine")
    with pytest.raises(UsageError, match="no search parameter efSearch"):
        set_search_params(build_index("IVF4,Flat", 8, "l2"), {"efSearch": 3})
    with pytest.raises(UsageError, match="placeholder"):
        resolve_spec("OPQ{m}_64,IVF{nlist},PQ{m}", 10000)


def test_nlist_placeholder_and_families():
    assert default_nlist(1_000_000) == 4000
    assert default_nlist(2000) == 51  # capped at N/39 training points per list
    assert resolve_spec("IVF{nlist}_HNSW32,Flat", 1_000_000) == "IVF4000_HNSW32,Flat"
    assert resolve_spec("BHNSW") == "BHNSW32"
    assert family_of("OPQ32_128,IVF4096,PQ32x4fsr").name == "ivf_pq"
    assert family_of("PCA256,IVF4096,SQ8").name == "ivf_sq"
    assert family_of("BIVF1024").binary
    assert family_of("IVF1024,PQ32x4fsr,RFlat").name == "ivf_pq"
    assert "k_factor_rf" in search_param_names(build_index("IVF4,SQ8,RFlat", 8, "l2"))


def test_faiss_device_auto_falls_back_with_a_note_and_explicit_cuda_is_refused():
    from neardup.fastsearch.indexes import gpu_available

    if gpu_available():
        pytest.skip("a GPU is present")
    assert faiss_device("cpu") == ("cpu", "")
    dev, note = faiss_device("auto")
    assert dev == "cpu" and "ran on cpu" in note
    assert faiss_device(None) == (dev, note)
    with pytest.raises(UsageError, match="--device cuda: faiss has no GPU support"):
        faiss_device("cuda")
    with pytest.raises(UsageError, match="unknown device"):
        faiss_device("tpu")
    from neardup.fastsearch.bench import BenchConfig

    with pytest.raises(UsageError, match="--device cuda"):  # refused before any input is read
        BenchConfig(device="cuda").validate()
