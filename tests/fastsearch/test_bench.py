import json
import time

import numpy as np
import pytest

from neardup.errors import UsageError
from neardup.fastsearch.bench import BenchConfig, BenchPoint, BenchResult, format_frontier, pareto_front, run_bench
from neardup.fastsearch.groundtruth import exact_knn, merge_topk
from neardup.fastsearch.metrics import recall_at_k
from neardup.fastsearch.schema import errors, validate
from neardup.fastsearch.synthetic import BLOCK, Database, LowRankGaussian, fit_generator
from neardup.fastsearch.timing import Timer, percentiles_ms
from neardup.fastsearch.vectors import prepare_vectors

from .conftest import clustered


@pytest.mark.parametrize("metric", ["l2", "cosine", "l1", "js"])
def test_streamed_exact_knn_equals_one_shot(metric):
    db, q, _ = clustered(700, 16, 30, noise=0.3)
    xq = prepare_vectors(q, metric)
    one = exact_knn([(0, db)], xq, 10, metric)
    for size in (7, 128, 1000):
        many = exact_knn(((o, db[o:o + size]) for o in range(0, len(db), size)), xq, 10, metric)
        assert np.array_equal(one[1], many[1])
        assert np.allclose(one[0], many[0], atol=1e-5)


def test_merge_topk_keeps_best_and_lower_id_on_ties():
    s, i = merge_topk(np.array([[0.9, 0.5]]), np.array([[4, 7]]), np.array([[0.5, 0.95]]), np.array([[2, 9]]), 3)
    assert i.tolist() == [[9, 4, 2]] and s.tolist() == [[0.95, 0.9, 0.5]]


def test_ann_recall_on_a_hand_made_case():
    # two groups on a line, each becomes one IVF list; the exact nearest neighbour of query 0 (x=7.3)
    # is the lone point at 4.9 (cell A), but its coarse centroid is B's: nprobe=1 misses it, nprobe=2 finds it
    a = np.linspace(0, 1, 40)
    b = np.linspace(10, 11, 40)
    xs = np.concatenate([a, [4.9], b])
    db = np.stack([xs, np.zeros_like(xs)], 1).astype(np.float32)
    q = np.array([[7.3, 0], [0.001, 0]], dtype=np.float32)
    gt = np.array([40, 0])
    cfg = BenchConfig(specs=("IVF2,Flat",), metrics=("l2",), nprobe=(1, 2), ks=(1,), latency_queries=2, warmup=1)
    res = run_bench(Database([db]), q, gt, cfg, default_metric="l2", show_progress=False)
    by_nprobe = {r.params["nprobe"]: r for r in res.records}
    assert by_nprobe[1].ann_recall_1_at_1 == 0.5 and by_nprobe[1].recall_at_1 == 0.5
    assert by_nprobe[2].ann_recall_1_at_1 == 1.0 and by_nprobe[2].recall_at_1 == 1.0
    assert by_nprobe[1].ann_recall_10_at_10 is None and by_nprobe[1].recall_at_10 is None  # k=1 < 10
    assert res.exact["l2"]["recall_at_1"] == 1.0


def test_latency_percentiles_come_from_per_call_timings():
    delays = [0.001] * 97 + [0.03] * 3
    calls = []
    timer = Timer(warmup=2)
    secs = timer.per_call(lambda d: (calls.append(d), time.sleep(d)), delays)
    assert len(calls) == 102 and len(secs) == 100  # 2 untimed warm-up calls, then one timing per item
    assert np.all(secs[:97] >= 0.001) and np.all(secs[97:] >= 0.03)
    pct = percentiles_ms(secs)
    assert 1.0 <= pct["p50"] < 15 and pct["p99"] >= 30
    assert pct["p50"] == pytest.approx(np.median(secs) * 1e3)


def test_timer_repeats_until_min_seconds():
    t = Timer(repeats=1, min_seconds=0.02, max_repeats=50)
    assert t.run(lambda: time.sleep(0.004) or 7) == 7
    assert 2 <= len(t.times) <= 50 and t.best <= t.total


def _small_bench(**kw):
    db, q, gt = clustered(1200, 16, 60, noise=0.25)
    gen = fit_generator(db, rank=8, seed=1)
    cfg = BenchConfig(**{"specs": ("Flat", "IVF{nlist},Flat", "HNSW16"), "nprobe": (1, 8), "ef_search": (16, 64),
                         "ks": (10,), "latency_queries": 20, "chunk_size": 500, **kw})
    return db, q, gt, run_bench(Database([db], gen, 800), q, gt, cfg, default_metric="cosine", show_progress=False)


def test_bench_records_flat_matches_numpy_and_json_validates(tmp_path):
    db, q, gt, res = _small_bench()
    assert [(r.factory, r.params) for r in res.records] == [
        ("Flat", {}), ("IVF51,Flat", {"nprobe": 1}), ("IVF51,Flat", {"nprobe": 8}),
        ("HNSW16", {"efSearch": 16}), ("HNSW16", {"efSearch": 64})]
    flat = res.records[0]
    # numpy brute force over the real + synthetic database, cosine
    full_db = Database([db], fit_generator(db, rank=8, seed=1), 800)
    full = np.concatenate([c for _, c in full_db.chunks()])
    sim = prepare_vectors(q, "cosine") @ prepare_vectors(full, "cosine").T
    ref = np.argsort(-sim, axis=1)[:, :10]
    expected = recall_at_k(ref, full_db.real_positions[gt], (1,))[1]
    assert flat.recall_at_1 == expected == res.exact["cosine"]["recall_at_1"]
    assert 0.5 < expected < 1.0  # the synthetic distractors do get in the way sometimes
    assert flat.ann_recall_1_at_1 == 1.0 and flat.ann_recall_10_at_10 == 1.0
    assert flat.bytes_per_vector == pytest.approx(16 * 4, rel=0.05) and flat.n_database == 2000
    for r in res.records:
        assert 0 < r.latency_ms_p50 <= r.latency_ms_p99 and r.latency_queries == 20
        assert r.qps > 0 and r.threads >= 1 and r.device == "cpu"
    doc = json.loads(json.dumps(res.to_dict()))
    validate(doc)
    assert doc["schema"] == "neardup.search.bench/1"
    assert BenchResult.from_dict(doc).records == res.records
    bad = json.loads(json.dumps(doc))
    del bad["records"][0]["qps"]
    bad["records"][1]["k"] = "10"
    errs = errors(bad)
    assert any("missing 'qps'" in e for e in errs) and any("records[1].k" in e for e in errs)
    assert "Pareto frontier" in format_frontier(res)


def test_bench_checks_metrics_before_working():
    db, q, gt = clustered(200, 16, 10)
    cfg = BenchConfig(specs=("Flat", "IVF4,PQ4"), metrics=("l1",))
    with pytest.raises(UsageError, match="only for flat storage"):
        run_bench(Database([db]), q, gt, cfg, default_metric="cosine", show_progress=False)


def test_pareto_front():
    def pt(r, qps):
        return BenchPoint("x", "x", "f", "l2", {}, 10, 1, 1, 1, 0, 0, 1, 1, 1, qps, 1, 1, 1, r, r, r, r, r, r, 1, 1,
                          "cpu")
    pts = [pt(0.9, 100), pt(0.8, 50), pt(0.95, 10), pt(0.7, 1000), pt(0.95, 5)]
    assert [(p.recall_at_1, p.qps) for p in pareto_front(pts)] == [(0.7, 1000), (0.9, 100), (0.95, 10)]


def test_synthetic_matches_moments_and_is_chunking_independent():
    rng = np.random.default_rng(0)
    real = np.abs(rng.normal(size=(500, 24)) @ rng.normal(size=(24, 24)) + 3).astype(np.float32)
    gen = LowRankGaussian(rank=6, seed=5).fit(real)
    big = gen.sample(0, 20000)
    assert big.dtype == np.float32 and big.min() >= 0  # real features are non-negative -> clipped
    assert np.allclose(big.mean(0), real.mean(0), atol=0.15 * real.std())
    assert big.var(0).sum() == pytest.approx(real.var(0).sum(), rel=0.1)
    db = Database([real[:200], real[200:]], gen, BLOCK + 10)
    a = np.concatenate([c for _, c in db.chunks(1000)])
    offsets = [o for o, _ in db.chunks(BLOCK)]
    b = np.concatenate([c for _, c in db.chunks(BLOCK)])
    assert len(a) == len(db) == 500 + BLOCK + 10 and np.array_equal(a, b)
    assert offsets == [0, BLOCK]
    # real vectors keep their order, scattered among the synthetic ones
    assert np.array_equal(a[db.real_positions], real) and db.real_positions[-1] > BLOCK // 2
    synth = np.delete(a, db.real_positions, axis=0)
    assert np.array_equal(synth[:100], gen.sample(0, BLOCK)[:100])
    assert np.array_equal(Database([real]).real_positions, np.arange(500))
    s = db.sample(300, seed=2)
    assert s.shape == (300, 24) and all((a == row).all(1).any() for row in s[:20])
    bits = fit_generator(np.packbits(rng.random((400, 64)) < 0.2, axis=1))
    assert np.unpackbits(bits.sample(0, 2000), axis=1).mean() == pytest.approx(0.2, abs=0.02)


def test_bench_binary_hashes():
    rng = np.random.default_rng(4)
    real = rng.integers(0, 256, size=(300, 8), dtype=np.uint8)
    gt = rng.choice(300, 40, replace=False)
    q = real[gt].copy()
    q[:, :2] ^= rng.integers(0, 256, size=(40, 2), dtype=np.uint8) & 0b00010001  # a few bits flipped
    db = Database([real], fit_generator(real), 2000)
    cfg = BenchConfig(specs=("BFlat", "BIVF{nlist}", "BHNSW"), nprobe=(2,), ef_search=(32,), latency_queries=5)
    res = run_bench(db, q, gt, cfg, default_metric="hamming", show_progress=False)
    assert [(r.factory, r.params) for r in res.records] == [("BFlat", {}), ("BIVF58", {"nprobe": 2}),
                                                            ("BHNSW32", {"efSearch": 32})]
    flat = res.records[0]
    assert flat.recall_at_1 == res.exact["hamming"]["recall_at_1"] > 0.9 and flat.ann_recall_1_at_1 == 1.0
    assert flat.bytes_per_vector == pytest.approx(8, rel=0.05) and flat.dim == 64
    assert BenchConfig().specs == ()
    default = run_bench(db, q[:3], gt[:3], BenchConfig(latency_queries=0), default_metric="hamming",
                        show_progress=False)
    assert default.records[0].factory == "BFlat"


def test_pca_larger_than_the_fit_sample_is_a_clear_error():
    import numpy as np

    from neardup.errors import UsageError
    from neardup.fastsearch.bench import reduce_dim

    parts = [np.random.default_rng(0).normal(size=(9, 32)).astype(np.float32)]
    with pytest.raises(UsageError, match="--pca 16 needs at least 16 real database vectors"):
        reduce_dim(parts, parts[0][:2], 16)
