import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from neardup.cli import main
from neardup.fastsearch.schema import validate
from tests.conftest import make_image

from .conftest import clustered, make_store


def test_search_bench_cli_writes_valid_json_and_plots(retrieval_folders, tmp_path):
    f = retrieval_folders
    out = tmp_path / "bench"
    args = ["search", "bench", "--database", str(f["database"]), "--queries", str(f["queries"]),
            "--distractors", str(f["distractors"]), "--index", "Flat", "--index", "IVF{nlist},Flat",
            "--index", "IVF{nlist},SQ8", "--nprobe", "1", "--nprobe", "4", "--synthetic", "600",
            "--synthetic-rank", "8", "--latency-queries", "10", "--out", str(out), "--quiet"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "results.json").read_text())
    validate(doc)
    assert doc["dataset"]["n_database"] == 1000 and doc["dataset"]["n_synthetic"] == 600
    assert doc["dataset"]["model"] == "toy" and len(doc["records"]) == 5
    assert [r["factory"] for r in doc["records"]][:2] == ["Flat", "IVF25,Flat"]
    assert yaml.safe_load((out / "config.yaml").read_text())["synthetic"] == 600

    res = CliRunner().invoke(main, ["plot", str(out / "results.json"), "--out", str(tmp_path / "fig")])
    assert res.exit_code == 0, res.output
    for name in ("frontier", "recall_time", "build_memory"):
        assert (tmp_path / "fig" / f"{name}.png").stat().st_size > 1000
        assert (tmp_path / "fig" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"


def test_search_bench_yaml_config_and_clear_errors(retrieval_folders, tmp_path):
    f = retrieval_folders
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"database": str(f["database"]), "queries": str(f["queries"]),
                                   "index": ["Flat", "HNSW16"], "metric": ["l1"], "ef_search": [8], "k": [5],
                                   "latency_queries": 5, "out": str(tmp_path / "b")}))
    res = CliRunner().invoke(main, ["search", "bench", "--config", str(cfg), "--quiet"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "b" / "results.json").read_text())
    assert {(r["factory"], r["metric"], r["k"]) for r in doc["records"]} == {("Flat", "l1", 5), ("HNSW16", "l1", 5)}
    assert doc["records"][0]["recall_at_10"] is None

    res = CliRunner().invoke(main, ["search", "bench", "--config", str(cfg), "--index", "IVF{nlist},PQ4",
                                    "--quiet"])
    assert res.exit_code != 0 and "Error: faiss supports metric l1 only for flat storage" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(main, ["search", "bench", "--config", str(cfg), "--index", "BFlat", "--metric",
                                    "cosine", "--quiet"])
    assert res.exit_code != 0 and "binary index" in res.output


@pytest.mark.parametrize("factory", ["BFlat", "BHNSW"])
def test_index_build_add_query_with_phash(image_dir, tmp_path, factory):
    from neardup.extract.config import ExtractConfig
    from neardup.extract.pipeline import extract_features

    extract_features(image_dir, tmp_path / "feats", ExtractConfig("phash", workers=0), show_progress=False)
    idx = tmp_path / "idx"
    r = CliRunner()
    res = r.invoke(main, ["index", "build", str(tmp_path / "feats"), "--factory", factory, "--out", str(idx)])
    assert res.exit_code == 0, res.output
    assert "6 vectors (phash, hamming)" in res.output
    assert {p.name for p in idx.iterdir()} >= {"CURRENT", "gen-000001", "config.yaml", ".neardup.json"}
    assert {p.name for p in (idx / "gen-000001").iterdir()} == {"index.faiss", "paths.json", "meta.json"}

    new = tmp_path / "new"
    new.mkdir()
    for i in (10, 11):
        make_image(i).save(new / f"n{i}.png")
    res = r.invoke(main, ["index", "add", str(idx), str(new), "--workers", "0"])
    assert res.exit_code == 0 and "added 2 vectors" in res.output, res.output
    res = r.invoke(main, ["index", "add", str(idx), str(new), "--workers", "0"])
    assert "added 0 vectors" in res.output  # already indexed paths are not added twice

    grid = tmp_path / "grid.png"
    res = r.invoke(main, ["query", str(idx), str(image_dir / "img3.png"), str(new / "n11.png"), "-k", "3",
                          "--grid", str(grid), "--workers", "0"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # the progress bar goes to stderr
    assert doc["schema"] == "neardup.query/1" and len(doc["results"]) == 2
    for q in doc["results"]:
        top = q["neighbours"][0]
        assert top["path"] == q["query"] and top["score"] == 0.0 and len(q["neighbours"]) == 3
        assert [n["rank"] for n in q["neighbours"]] == [1, 2, 3]
    assert grid.stat().st_size > 1000


def test_index_refuses_mismatched_features(tmp_path):
    db, _, _ = clustered(200, 16, 5)
    make_store(tmp_path / "a", db, [f"a{i}.jpg" for i in range(200)], model="toy")
    make_store(tmp_path / "other_model", db[:10], [f"b{i}.jpg" for i in range(10)], model="toy2")
    make_store(tmp_path / "other_dim", db[:10, :8], [f"c{i}.jpg" for i in range(10)], model="toy")
    make_store(tmp_path / "other_pre", db[:10], [f"d{i}.jpg" for i in range(10)], model="toy",
               preprocessing={"input_size": 9})
    make_store(tmp_path / "same", db[:10] + 1, [f"e{i}.jpg" for i in range(10)], model="toy")
    r = CliRunner()
    res = r.invoke(main, ["index", "build", str(tmp_path / "a"), "--factory", "IVF{nlist},Flat",
                          "--out", str(tmp_path / "idx")])
    assert res.exit_code == 0, res.output
    for bad, words in (("other_model", "toy2 (16-d) but the index holds toy (16-d)"),
                       ("other_dim", "toy (8-d) but the index holds toy (16-d)"),
                       ("other_pre", "preprocessing")):
        res = r.invoke(main, ["index", "add", str(tmp_path / "idx"), str(tmp_path / bad)])
        assert res.exit_code != 0 and words in res.output and "Traceback" not in res.output, res.output
    res = r.invoke(main, ["index", "add", str(tmp_path / "idx"), str(tmp_path / "same")])
    assert res.exit_code == 0 and "added 10 vectors" in res.output
    from neardup.fastsearch.persist import IndexDir

    back = IndexDir.open(tmp_path / "idx")
    assert back.index.ntotal == len(back.paths) == back.meta.ntotal == 210
    res = r.invoke(main, ["index", "build", str(tmp_path / "a"), "--out", str(tmp_path / "idx")])
    assert res.exit_code != 0 and "already holds an index" in res.output
    np.testing.assert_equal(back.meta.factory, "IVF5,Flat")
