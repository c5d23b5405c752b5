"""Score normalisation against a background set: the numbers against a numpy brute force, the pooled ranking it
changes (µAP), the feature-space check of the background, and the CLI round trips of `search exact` and `query`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neardup.errors import UsageError
from neardup.fastsearch.dataset import RetrievalSet
from neardup.fastsearch.exact import evaluate
from neardup.fastsearch.groundtruth import exact_knn
from neardup.fastsearch.metrics import micro_average_precision, recall_at_k
from neardup.fastsearch.normalize import (
    BackgroundNormalizer,
    ScoreNormalization,
    background_bias,
    normalize_edges,
    normalize_scores,
    rerank,
)
from neardup.fastsearch.vectors import l2_normalize
from tests.conftest import make_image
from tests.fastsearch.conftest import clustered, make_store
from tests.helpers import expect_error, invoke


def _unit(rng: np.random.Generator, n: int, d: int = 8) -> np.ndarray:
    return l2_normalize(rng.normal(size=(n, d)).astype(np.float32))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("reduction", ["mean", "kth"])
def test_bias_and_scores_match_a_brute_force(metric, reduction):
    rng = np.random.default_rng(0)
    q, db, bg = _unit(rng, 5), _unit(rng, 20), rng.normal(size=(12, 8)).astype(np.float32)
    k, beta = 3, 0.7

    def sims(a, b):  # neardup's scores: cosine, or the negated squared distance
        if metric == "cosine":
            return l2_normalize(a) @ l2_normalize(b).T
        return -((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    top = -np.sort(-sims(q, bg), axis=1)[:, :k]
    want_bias = top.mean(axis=1) if reduction == "mean" else top[:, k - 1]
    bias = background_bias(q, bg, k, metric, reduction, block=5)  # blocks of 5: 3 background blocks, 1 query batch
    np.testing.assert_allclose(bias, want_bias, rtol=1e-5, atol=1e-5)

    scores, ids = exact_knn([(0, db)], q if metric == "l2" else l2_normalize(q), 4, metric)
    got = normalize_scores(scores, bias, beta)
    want = np.take_along_axis(sims(q, db), ids, 1) - beta * want_bias[:, None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    norm = BackgroundNormalizer(ScoreNormalization("bg", k, beta, reduction), bg, metric, "features")
    s2, i2 = norm.apply(q, scores, ids)
    np.testing.assert_array_equal(i2, ids)  # one amount per query: its own ranking is unchanged
    np.testing.assert_allclose(s2, want, rtol=1e-5, atol=1e-5)


def test_l2_on_unit_vectors_ranks_pairs_as_cosine():
    rng = np.random.default_rng(1)
    q, bg = _unit(rng, 6), _unit(rng, 30)
    cos = background_bias(q, bg, 4, "cosine")
    l2 = background_bias(q, bg, 4, "l2")
    np.testing.assert_allclose(l2, 2 * cos - 2, atol=1e-5)  # -|q-b|^2 = 2 cos - 2


def test_normalisation_reorders_the_pooled_pairs():
    """Query 0 resembles everything (a texture): its false match outscores query 1's true copy until the
    background says so; µAP goes from 0.83 to 1, recall@1 stays 1."""
    scores = np.array([[0.95, 0.88], [0.80, 0.25]], np.float32)  # each query's true match first
    ids = np.array([[1, 5], [0, 2]])
    gt = np.array([1, 0])
    bias = np.array([0.85, 0.20], np.float32)  # query 0 is close to the background too
    after = normalize_scores(scores, bias, 1.0)
    np.testing.assert_allclose(after, [[0.10, 0.03], [0.60, 0.05]], atol=1e-6)
    # pooled by score: before 0.95(T) 0.88(F) 0.80(T) 0.25(F): AP = (1/1 + 2/3) / 2; after 0.60(T) 0.10(T) first
    assert micro_average_precision(ids, scores, gt) == pytest.approx((1 + 2 / 3) / 2)
    assert micro_average_precision(ids, after, gt) == pytest.approx(1.0)
    assert recall_at_k(ids, gt, (1,)) == {1: 1.0}


def test_per_entry_biases_rerank_rows_and_edges_are_symmetric():
    scores = np.array([[0.9, 0.8, -np.inf]], np.float32)
    ids = np.array([[3, 4, -1]])
    s, i = rerank(normalize_scores(scores, np.array([[0.5, 0.1, 0.0]]), 1.0), ids)
    np.testing.assert_array_equal(i, [[4, 3, -1]])
    np.testing.assert_allclose(s[0, :2], [0.7, 0.4]) and np.testing.assert_equal(s[0, 2], -np.inf)
    rows, cols, sims = np.array([0, 1, 2]), np.array([1, 0, 0]), np.array([0.9, 0.9, 0.7], np.float32)
    bias = np.array([0.4, 0.2, 0.0], np.float32)
    sym = normalize_edges(rows, cols, sims, bias, 1.0)
    np.testing.assert_allclose(sym, [0.6, 0.6, 0.5])  # (0,1) and (1,0) get one score
    np.testing.assert_allclose(normalize_edges(rows, cols, sims, bias, 1.0, symmetric=False), [0.5, 0.7, 0.7])


def test_config_is_validated():
    assert ScoreNormalization.from_options(None) is None
    with pytest.raises(UsageError, match="--norm-k, --norm-beta apply only with --normalize-scores"):
        ScoreNormalization.from_options(None, k=3, beta=1.0)
    cfg = ScoreNormalization.from_options("bg", beta=2.0)
    assert (cfg.k, cfg.beta, cfg.reduction) == (3, 2.0, "mean")
    for bad, words in ((dict(k=0), "--norm-k"), (dict(k=True), "--norm-k"), (dict(beta=float("nan")), "--norm-beta"),
                       (dict(beta=-1), "--norm-beta"), (dict(reduction="max"), "--norm-reduction")):
        with pytest.raises(UsageError, match=words):
            ScoreNormalization("bg", **bad).validate()
    with pytest.raises(UsageError, match="--norm-k 5 exceeds the 3 vectors"):
        background_bias(np.ones((2, 4), np.float32), np.ones((3, 4), np.float32), k=5)


def _evaluate(db, q, gt, norm=None):
    rs = RetrievalSet(db, [str(i) for i in range(len(db))], q, [str(i) for i in range(len(q))], gt,
                      np.array(["f"] * len(q)), np.array(["a"] * len(q)), "cosine")
    return evaluate(rs, k=5, normalizer=norm)


def test_evaluate_scores_the_normalised_lists():
    db, q, gt = clustered(300, 16, 60, seed=5, noise=0.3)
    bg = clustered(200, 16, 1, seed=6)[0]
    plain = _evaluate(db, q, gt)
    norm = BackgroundNormalizer(ScoreNormalization("bg", 3, 1.0), bg, "cosine", "features")
    normed = _evaluate(db, q, gt, norm)
    assert normed.overall.recall == plain.overall.recall and normed.overall.mAP == plain.overall.mAP
    scores, ids = exact_knn([(0, db)], l2_normalize(q), 5, "cosine")
    want = micro_average_precision(ids, scores - background_bias(q, bg, 3)[:, None], gt)
    assert normed.overall.muAP == pytest.approx(want) and normed.overall.muAP != pytest.approx(plain.overall.muAP)
    assert normed.config["score_normalization"] == {"background": "bg", "k": 3, "beta": 1.0, "reduction": "mean",
                                                    "metric": "cosine", "n_background": 200,
                                                    "background_kind": "features"}
    assert plain.config["score_normalization"] is None


def test_search_exact_cli_round_trip(retrieval_folders, tmp_path):
    f = retrieval_folders
    bg = make_store(tmp_path / "bg", clustered(150, 16, 1, seed=9)[0], [f"b{i}.jpg" for i in range(150)])
    base = ["search", "exact", "--database", f["database"], "--queries", f["queries"], "--quiet"]
    invoke(*base, "--out", tmp_path / "plain.json")
    invoke(*base, "--out", tmp_path / "norm.json", "--normalize-scores", bg, "--norm-k", 5, "--norm-beta", 0.5,
           "--norm-reduction", "kth")
    plain, norm = (json.loads((tmp_path / n).read_text()) for n in ("plain.json", "norm.json"))
    assert norm["config"]["score_normalization"] == {"background": str(bg), "k": 5, "beta": 0.5, "reduction": "kth",
                                                     "metric": "cosine", "n_background": 150,
                                                     "background_kind": "features"}
    assert norm["overall"]["recall"] == plain["overall"]["recall"]
    assert norm["overall"]["muAP"] != plain["overall"]["muAP"]
    invoke("report", tmp_path / "plain.json", tmp_path / "norm.json", "--metric", "muAP")  # still a valid result


def test_a_background_in_another_space_is_refused(retrieval_folders, tmp_path):
    f = retrieval_folders
    other = make_store(tmp_path / "other", clustered(50, 16, 1)[0], [f"o{i}.jpg" for i in range(50)], model="toy2")
    base = ["search", "exact", "--database", f["database"], "--queries", f["queries"], "--quiet"]
    expect_error(*base, "--normalize-scores", other, message="background")
    line = expect_error(*base, "--normalize-scores", other)
    assert "toy2 (16-d)" in line and "feature spaces disagree" in line
    expect_error(*base, "--norm-k", 3, message="--norm-k applies only with --normalize-scores")
    expect_error(*base, "--normalize-scores", tmp_path / "missing", message="not found")
    expect_error(*base, "--normalize-scores", f["distractors"], "--norm-k", 101, message="exceeds the 100 vectors")


def test_query_cli_with_an_image_background(image_dir, tmp_path):
    """phash index; the background is a folder of images, extracted like the index beside --out, then reused."""
    from neardup.extract.config import ExtractConfig
    from neardup.extract.pipeline import extract_features

    extract_features(image_dir, tmp_path / "feats", ExtractConfig("phash", workers=0), show_progress=False)
    invoke("index", "build", tmp_path / "feats", "--factory", "BFlat", "--out", tmp_path / "idx")
    bg = tmp_path / "bg"
    bg.mkdir()
    for i in range(20, 26):
        make_image(i).save(bg / f"b{i}.png")
    args = ["query", tmp_path / "idx", image_dir / "img3.png", "-k", 3, "--workers", 0, "--normalize-scores", bg,
            "--norm-k", 2, "--out", tmp_path / "q.json"]
    invoke(*args)
    doc = json.loads((tmp_path / "q.json").read_text())
    assert doc["score_normalization"]["background_kind"] == "images"
    assert doc["score_normalization"]["n_background"] == 6
    cache = list((tmp_path / "q.background").iterdir())
    assert len(cache) == 1 and (cache[0] / "meta.json").is_file()
    # by hand: hamming similarities are negated bit counts; the bias is the mean of the 2 nearest background hashes
    from neardup.extract.store import FeatureStore

    q = FeatureStore.open(tmp_path / "feats").features()[3:4]
    b = FeatureStore.open(cache[0]).features()
    bits = np.unpackbits(q[:, None, :] ^ b[None, :, :], axis=-1).sum(-1)
    bias = -np.sort(bits, axis=1)[:, :2].mean()
    top = doc["results"][0]["neighbours"][0]
    assert top["path"].endswith("img3.png") and top["score"] == pytest.approx(0.0 - bias)
    plain = json.loads(invoke("query", tmp_path / "idx", image_dir / "img3.png", "-k", 3, "--workers", 0).stdout)
    paths = [[n["path"] for n in d["results"][0]["neighbours"]] for d in (plain, doc)]
    assert paths[0] == paths[1]  # one amount per query: the ranking stays
    assert plain["score_normalization"] is None
