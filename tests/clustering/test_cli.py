import csv
import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from neardup.cli import main
from neardup.clustering.data import load_features, truth_from_labels, truth_from_manifests
from neardup.clustering.run import SCHEMA, run_clustering
from neardup.errors import UsageError

from .conftest import make_store


def read_assignments(path):
    with open(path, newline="") as f:
        return {r["path"]: int(r["cluster"]) for r in csv.DictReader(f)}


def test_ground_truth_from_manifest(attacked_folders):
    folders, truth = attacked_folders
    inp = load_features(folders)
    gt = truth_from_manifests(inp.ids, [folders[1].parent / "queries" / "manifest.csv"])
    expected = np.array([truth[p] for p in inp.paths])
    assert score(gt.groups, expected) == 1.0
    assert gt.mask_excluding(["distractor"]).sum() == 12
    assert gt.mask_excluding(["blur"]).sum() == 11  # 3 blurred queries
    assert gt.mask_excluding(["a"]).sum() == 10  # group a: original + 3 queries


def score(a, b):
    from neardup.clustering.metrics import score_partition
    return score_partition(a, b).ari


def test_ground_truth_from_labels_csv(attacked_folders, tmp_path):
    folders, truth = attacked_folders
    inp = load_features(folders)
    f = tmp_path / "labels.csv"
    f.write_text("path,label\n" + "".join(f"{p},g{g}\n" for p, g in list(truth.items())[:-2]))
    gt = truth_from_labels(inp.ids, inp.paths, f)
    assert score(gt.groups, np.array([truth[p] for p in inp.paths])) == 1.0
    assert gt.mask_excluding(["unlabelled"]).sum() == 12
    (tmp_path / "bad.csv").write_text("file,group\nx,1\n")
    with pytest.raises(UsageError, match="label"):
        truth_from_labels(inp.ids, inp.paths, tmp_path / "bad.csv")


def test_cli_sweep_writes_everything(attacked_folders, tmp_path):
    folders, truth = attacked_folders
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["cluster", *map(str, folders), "--method", "hierarchical", "--linkage", "average",
                                  "--sweep", "1e-7,0.05,1.5", "--out", str(out), "--exclude", "distractor",
                                  "--per-setting", "--mosaics", "2"])
    assert r.exit_code == 0, r.output
    assigned = read_assignments(out / "assignments.csv")
    assert score(np.array([truth[p] for p in assigned]), np.array(list(assigned.values()))) == 1.0
    m = json.loads((out / "metrics.json").read_text())
    assert m["schema"] == SCHEMA and m["best"] == 1 and m["best_by"] == "ari"
    assert [s["value"] for s in m["settings"]] == [1e-7, 0.05, 1.5]
    assert m["settings"][1]["full"]["ari"] == pytest.approx(1) and m["n_clean"] == 12
    assert m["settings"][1]["clean"]["n_items"] == 12
    assert m["clusters"][0]["size"] == 4 and len(m["clusters"][0]["closest"]) == 4
    assert yaml.safe_load((out / "config.yaml").read_text())["command"] == "cluster"
    for name in ("sizes", "sweep", "dendrogram", "diameters"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    assert len(list((out / "sweep").glob("*.csv"))) == 3
    assert "best by ari" in r.output


@pytest.mark.parametrize("method,extra", [("graph", ["--threshold", "0.05"]), ("dbscan", ["--eps", "0.05"]),
                                          ("hdbscan", ["--min-cluster-size", "2"])])
def test_cli_methods_and_config(attacked_folders, tmp_path, method, extra):
    folders, truth = attacked_folders
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"method": method}))
    out = tmp_path / method
    r = CliRunner().invoke(main, ["cluster", *map(str, folders), "--config", str(cfg), "--out", str(out),
                                  "--no-plots", "--quiet", *extra])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    # hdbscan may leave a member of these 4-image groups as noise
    assert m["method"] == method and m["settings"][0]["full"]["pairwise_f1"] >= (0.85 if method == "hdbscan" else 1)


def test_run_clustering_checks_paths(attacked_folders):
    folders, _ = attacked_folders
    inp = load_features(folders)
    with pytest.raises(ValueError, match="must match"):
        run_clustering(inp.features, "graph", {}, "cosine", paths=inp.paths[:-1])
    with pytest.raises(ValueError, match="no features"):
        run_clustering(inp.features[:0], "graph", {}, "cosine")


@pytest.mark.parametrize("args,message", [
    (["--method", "hierarchical", "--eps", "0.1"], "--eps do(es) not apply"),
    (["--method", "hierarchical", "--linkage", "ward", "--n-clusters", "3"], "only defined for the euclidean"),
    (["--method", "hierarchical", "--threshold", "0.1", "--max-memory", "1KB"], "use --method graph"),
    (["--method", "graph", "--metric", "euclidean"], "needs --threshold"),
    (["--sweep", "a:b"], "--sweep"),
    (["--best-by", "accuracy", "--threshold", "0.1"], "unknown score"),
    (["--index", "IVF4096,Flat"], "only 14 are available"),
    (["--index", "NOT_AN_INDEX"], "unsupported index spec"),
])
def test_cli_errors_are_one_line(attacked_folders, tmp_path, args, message):
    folders, _ = attacked_folders
    r = CliRunner().invoke(main, ["cluster", *map(str, folders), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code != 0
    assert message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_cli_bad_folders(attacked_folders, tmp_path):
    folders, _ = attacked_folders
    other = make_store(tmp_path / "f_other", np.ones((2, 8), np.float32), ["p.jpg", "q.jpg"], tmp_path, model="toy")
    r = CliRunner().invoke(main, ["cluster", str(folders[0]), str(other), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "disagree" in r.output
    nan = make_store(tmp_path / "f_nan", np.array([[1, np.nan], [1, 2]], np.float32), ["p.jpg", "q.jpg"], tmp_path)
    r = CliRunner().invoke(main, ["cluster", str(nan), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "NaN" in r.output
    r = CliRunner().invoke(main, ["cluster", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "not a neardup feature folder" in r.output
