"""Malformed invocations of search, index, query, report and plot: one ``Error:`` line each, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from neardup.data.manifest import ManifestRow, write_manifest
from tests.fastsearch.conftest import clustered, make_store
from tests.helpers import expect_error, invoke


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Feature folders (300 + 5 vectors), a query set with its manifest, an index, and valid result files."""
    root = tmp_path_factory.mktemp("search_inputs")
    db, q, gt = clustered(400, 16, 40, seed=3)
    make_store(root / "db", db[:300], [f"img{i:04d}.jpg" for i in range(300)])
    make_store(root / "five", db[:5], [f"f{i}.jpg" for i in range(5)])
    keep = gt < 300
    names = [f"img{g:04d}_blur.jpg" for g in gt[keep]]
    qdir = make_store(root / "q", q[keep], names)
    rows = [ManifestRow(n, f"img{g:04d}", "", "blur", "blur", "{}") for n, g in zip(names, gt[keep], strict=True)]
    write_manifest(rows, qdir / "manifest.csv")
    invoke("index", "build", root / "db", "--out", root / "idx")
    invoke("search", "exact", "--database", root / "db", "--queries", qdir, "--out", root / "exact.json", "--quiet")
    invoke("search", "bench", "--database", root / "db", "--queries", qdir, "--index", "Flat", "--latency-queries", "2",
           "--out", root / "bench", "--quiet")
    return {"root": root, "db": root / "db", "five": root / "five", "q": qdir, "idx": root / "idx",
            "exact": root / "exact.json", "bench": root / "bench" / "results.json"}


def _write(tmp_path: Path, name: str, content: Any) -> Path:
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


# --------------------------------------------------------------------------- index build
@pytest.mark.parametrize("factory, message", [
    ("IVF1000,Flat", "IVF1000,Flat needs at least 1000 training vectors (for 1000 inverted lists) but only 5"),
    ("PQ4", "needs at least 256 training vectors (for a product quantiser of 256 centroids)"),
    ("IVF{nlist},PQ4", "needs at least 256 training vectors"),
    ("OPQ4,IVF{nlist},Flat", "needs at least 256 training vectors"),
    ("PCA32,Flat", "PCA cannot output 32 dimensions from 16"),
    ("NoSuchIndex", "unsupported index spec"),
])
def test_index_build_bad_factory(data, tmp_path, factory, message):
    expect_error("index", "build", data["five"], "--factory", factory, "--out", tmp_path / "idx", message=message)
    assert not (tmp_path / "idx").exists()


@pytest.mark.parametrize("prepare, flags, message", [
    (lambda o: (o.mkdir(), (o / "notes.txt").write_text("mine")), [], "is not empty and was not written by"),
    (lambda o: (o.mkdir(), (o / "paths.json").write_text("mine")), ["--overwrite"],
     "paths.json exists and was not written by neardup"),
    (lambda o: (o.mkdir(), (o / "CURRENT").write_text("mine")), ["--overwrite"], "CURRENT exists and was not written"),
    (lambda o: o.write_text("a file"), [], "is a file"),
    (lambda o: (o.mkdir(), (o / "x").write_text(""), (o / ".neardup.json").write_text('{"command": "cluster"}')),
     ["--overwrite"], "holds the output of `neardup cluster`"),
], ids=["foreign", "foreign-clash", "foreign-pointer", "file", "other-command"])
def test_index_build_never_replaces_what_it_did_not_write(data, tmp_path, prepare, flags, message):
    out = tmp_path / "out"
    prepare(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.is_dir() else out.read_bytes()
    expect_error("index", "build", data["db"], "--out", out, *flags, message=message)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.is_dir() else out.read_bytes()
    assert after == before


def test_index_build_twice_needs_overwrite(data):
    expect_error("index", "build", data["db"], "--out", data["idx"], message="already holds an index")


# --------------------------------------------------------------------------- damaged index folders
def _damaged_index(data: dict[str, Path], tmp_path: Path, damage: Callable[[Path], Any]) -> Path:
    out = tmp_path / "idx"
    invoke("index", "build", data["db"], "--out", out)
    damage(out / "gen-000001")
    return out


DAMAGE = {
    "truncated-index": lambda g: (g / "index.faiss").write_bytes((g / "index.faiss").read_bytes()[:64]),
    "random-index": lambda g: (g / "index.faiss").write_bytes(bytes(range(256)) * 8),
    "paths-not-json": lambda g: (g / "paths.json").write_text("[\"a"),
    "paths-wrong-length": lambda g: (g / "paths.json").write_text("[]"),
    "meta-not-json": lambda g: (g / "meta.json").write_text("{"),
    "meta-list": lambda g: (g / "meta.json").write_text("[]"),
    "meta-missing-keys": lambda g: (g / "meta.json").write_text('{"schema": "neardup.index/1"}'),
    "pointer-dangling": lambda g: (g.parent / "CURRENT").write_text("gen-000009"),
    "pointer-garbage": lambda g: (g.parent / "CURRENT").write_text("\x00\x01"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
@pytest.mark.parametrize("command", ["add", "query"])
def test_damaged_index_is_one_error(data, tmp_path, damage, command):
    idx = _damaged_index(data, tmp_path, DAMAGE[damage])
    if command == "add":
        expect_error("index", "add", idx, data["five"], message=str(idx))
    else:
        expect_error("query", idx, data["root"] / "x.png", message=str(idx))


@pytest.mark.parametrize("make, message", [
    (lambda t: t / "missing", "index folder not found"),
    (lambda t: (t / "empty").mkdir() or t / "empty", "no committed index"),
])
def test_index_add_needs_an_index(data, tmp_path, make, message):
    expect_error("index", "add", make(tmp_path), data["five"], message=message)
    assert not (tmp_path / "missing").exists()


# --------------------------------------------------------------------------- query
def test_query_refuses_an_unknown_grid_format_before_extracting(data, tmp_path):
    # the index's model ("toy") cannot be built: reaching extraction would give another error
    expect_error("query", data["idx"], tmp_path / "a.png", "--grid", tmp_path / "out.xyz",
                 message="--grid " + str(tmp_path / "out.xyz") + ": unknown image format .xyz")
    assert not (tmp_path / "out.xyz").exists()


def test_query_search_parameter_the_index_lacks(data, tmp_path):
    expect_error("query", data["idx"], tmp_path / "a.png", "--nprobe", "4", message="no search parameter nprobe")


# --------------------------------------------------------------------------- report
def _exact_doc(data: dict[str, Path]) -> dict[str, Any]:
    return json.loads(data["exact"].read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda d: "not json", "not valid JSON"),
    (lambda d: [d], "not a neardup.search.exact/1 result (a JSON list"),
    (lambda d: {**d, "schema": "neardup.search.bench/1"}, "expected schema neardup.search.exact/1"),
    (lambda d: {k: v for k, v in d.items() if k != "overall"}, "missing 'overall'"),
    (lambda d: {**d, "overall": 3}, "$.overall: expected object, got int"),
    (lambda d: {**d, "per_family": {"blur": {"recall": []}}}, "$.per_family.blur"),
    (lambda d: {**d, "overall": {**d["overall"], "recall": {"1": "high"}}}, "$.overall.recall.1: expected number"),
    (lambda d: {**d, "surprise": 1}, "unexpected key 'surprise'"),
], ids=["not-json", "list", "other-schema", "missing-key", "wrong-type", "nested", "string-number", "extra-key"])
def test_report_validates_its_input(data, tmp_path, edit, message):
    expect_error("report", _write(tmp_path, "r.json", edit(_exact_doc(data))), message=message)


@pytest.mark.parametrize("metric", ["recall@7", "recall@", "precision", "map"])
def test_report_refuses_metrics_not_in_the_results(data, metric):
    line = expect_error("report", data["exact"], "--metric", metric, message=f"metric {metric!r} is not in")
    assert "available: recall@1, recall@5, recall@10, mAP, muAP" in line


def test_report_metric_missing_from_one_result(data, tmp_path):
    doc = _exact_doc(data)
    for s in [doc["overall"], *doc["per_family"].values(), *doc["per_attack"].values()]:
        s["recall"] = {"1": s["recall"]["1"]}  # as written by `search exact -k 3`
    small = _write(tmp_path, "k3.json", {**doc, "k": 3})
    expect_error("report", data["exact"], small, "--metric", "recall@10", message=f"is not in {small} (k=3)")
    assert "recall@1" in invoke("report", data["exact"], small).output


# --------------------------------------------------------------------------- plot
@pytest.mark.parametrize("edit, message", [
    (lambda d: "{", "not valid JSON"),
    (lambda d: 7, "not a neardup.search.bench/1 result (a JSON int"),
    (lambda d: {**d, "records": [1]}, "$.records[0]: expected object"),
    (lambda d: {**d, "records": [{**d["records"][0], "qps": "fast"}]}, "$.records[0].qps: expected number"),
    (lambda d: {k: v for k, v in d.items() if k != "dataset"}, "missing 'dataset'"),
    (lambda d: {**d, "records": []}, "no records to plot"),
], ids=["not-json", "int", "record-int", "record-field", "missing-key", "no-records"])
def test_plot_validates_its_input(data, tmp_path, edit, message):
    doc = json.loads(data["bench"].read_text())
    expect_error("plot", _write(tmp_path, "b.json", edit(doc)), "--out", tmp_path / "figs", message=message)
    assert not (tmp_path / "figs").exists()


def test_plot_refuses_another_commands_folder(data):
    expect_error("plot", data["bench"], "--out", data["bench"].parent,
                 message="holds the output of `neardup search bench`")


# --------------------------------------------------------------------------- search bench
@pytest.mark.parametrize("args, message", [
    (["--index", "IVF1000,Flat"], "IVF1000,Flat needs at least 1000 training vectors"),
    (["--index", "IVF{nlist},Flat", "--train-size", "2"], "only 2 are available (--train-size 2)"),
    (["--index", "PQ4", "--train-size", "100"], "PQ4 needs at least 256 training vectors (for a product quantiser of "
                                                 "256 centroids) but only 100 are available (--train-size 100)"),
    (["--index", "PCA32,Flat"], "PCA cannot output 32 dimensions from 16"),
], ids=["ivf-too-many-lists", "train-size", "pq", "pca"])
def test_search_bench_refuses_untrainable_indexes_up_front(data, tmp_path, args, message):
    expect_error("search", "bench", "--database", data["db"], "--queries", data["q"], *args, "--out", tmp_path / "b",
                 "--quiet", message=message)
    assert not (tmp_path / "b").exists()


def test_search_bench_out_is_claimed(data, tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text("theirs")
    expect_error("search", "bench", "--database", data["db"], "--queries", data["q"], "--index", "Flat",
                 "--out", tmp_path / "b", "--quiet",
                 message="is not empty and was not written by `neardup search bench`")
    assert (tmp_path / "b" / "results.json").read_text() == "theirs"


def test_search_bench_without_latency_queries_prints_dashes(data, tmp_path):
    res = invoke("search", "bench", "--database", data["db"], "--queries", data["q"], "--index", "Flat",
                 "--latency-queries", "0", "--out", tmp_path / "b")
    row = next(ln for ln in res.output.splitlines() if ln.startswith("Flat"))
    assert row.split()[10:12] == ["-", "-"]  # p50 and p99: none timed
    rec = json.loads((tmp_path / "b" / "results.json").read_text())["records"][0]
    assert rec["latency_ms_p50"] is None and rec["latency_queries"] == 0
