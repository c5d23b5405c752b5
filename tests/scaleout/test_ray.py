"""--ray on a local Ray instance (2 CPUs, one per module): extraction, a killed encode actor, dedup and cluster.

Every run is compared with the in-process path on the same inputs: features bitwise (one torch thread on both
sides), groups and k-NN lists exactly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
#: Ray Data's own DataContext warns about its deprecated fields when it is copied to the workers
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

from neardup.dedup.find import DedupConfig  # noqa: E402
from neardup.dedup.scan import run_scan  # noqa: E402
from neardup.errors import UsageError  # noqa: E402
from neardup.extract.config import ExtractConfig  # noqa: E402
from neardup.extract.pipeline import extract_features  # noqa: E402
from neardup.extract.store import FeatureStore  # noqa: E402
from neardup.scaleout import knn  # noqa: E402
from neardup.scaleout.engine import KILL_ENV, RayConfig  # noqa: E402
from tests.conftest import make_image  # noqa: E402
from tests.helpers import assert_one_error, invoke  # noqa: E402

#: small and fast: the default model at a 96-pixel crop, PyTorch engine (no ONNX export), shards of 2 batches
OPTS = {"engine": "torch", "batch_size": 2, "shard_size": 4, "input_size": 96, "workers": 0}
CLI = ["--engine", "torch", "--batch-size", "2", "--shard-size", "4", "--input-size", "96", "--workers", "0"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module; the commands find it initialised and leave it running."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the in-process path at one thread, like the encode actors
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray_images")
    for i in range(11):
        make_image(300 + i, (72 + 3 * i, 60)).save(d / f"p{i:02d}.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return d


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray_ref") / "f"
    extract_features(images, out, ExtractConfig(**OPTS), show_progress=False)
    return FeatureStore.open(out)


def same(a: FeatureStore, b: FeatureStore) -> None:
    assert a.paths == b.paths and len(a.paths) == 11
    np.testing.assert_array_equal(np.asarray(a.features()), np.asarray(b.features()))  # bitwise
    assert a.meta["skipped"] == b.meta["skipped"] and len(a.meta["skipped"]) == 1
    differ = {k for k in a.meta if a.meta[k] != b.meta.get(k)}
    assert differ <= {"created"}, differ


def test_extract_ray_equals_the_single_process_path(images, reference, tmp_path):
    out = tmp_path / "f"
    res = invoke("extract", images, "--out", out, *CLI, "--ray", "--ray-actors", "2")
    assert "11 images" in res.output and "1 skipped" in res.output
    same(FeatureStore.open(out), reference)
    assert (out / "config.yaml").is_file() and json.loads((out / "job.json").read_text())["shard_size"] == 4


def test_a_killed_encode_actor_is_restarted_and_changes_nothing(images, reference, tmp_path, monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_ENV, f"2:{marker}")  # test-only hook: the actor exits before its third batch, once
    out = tmp_path / "f"
    report = extract_features(images, out, ExtractConfig(**OPTS), show_progress=False, ray=RayConfig())
    assert marker.is_file(), "the encode actor was never killed"
    assert report.count == 11
    same(FeatureStore.open(out), reference)


def test_a_job_whose_actor_keeps_dying_fails_in_one_line_and_a_rerun_resumes(images, reference, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv(KILL_ENV, "2")  # every incarnation dies before its third batch; one restart allowed
    out = tmp_path / "f"
    with pytest.raises(UsageError, match="re-run the same command to resume"):
        extract_features(images, out, ExtractConfig(**OPTS), show_progress=False, ray=RayConfig(retries=1))
    committed = len(list((out / "shards").glob("*.json")))
    assert committed < 3 and not (out / "meta.json").exists()
    monkeypatch.delenv(KILL_ENV)
    report = extract_features(images, out, ExtractConfig(**OPTS), show_progress=False, ray=RayConfig())
    assert report.resumed_shards == committed
    same(FeatureStore.open(out), reference)


def names(result) -> list[set[str]]:
    return sorted(({Path(p).name for p in g} for g in result.path_groups()), key=sorted)


def test_dedup_ray_gives_the_groups_of_a_run_without_it(collection, tmp_path, monkeypatch):
    folder, made = collection
    expected = sorted(({c, o} for c, o in made.items()), key=sorted)
    base = {"engine": "torch", "device": "cpu", "calibration_images": 8, "copies_per_image": 1}
    given = DedupConfig(threshold=0.8, **base)  # in memory: exact k-NN on the full features
    a = run_scan([str(folder)], tmp_path / "a", given, report=False)
    b = run_scan([str(folder)], tmp_path / "b", given, report=False, ray=RayConfig())
    assert names(a) == names(b) == expected
    assert a.pairs == b.pairs
    shard = tmp_path / "b" / "graph" / "edges-00000.npz"
    stamp = shard.stat().st_mtime_ns
    run_scan([str(folder)], tmp_path / "b", given, report=False, ray=RayConfig())  # the same search: resumed
    assert shard.stat().st_mtime_ns == stamp
    # calibrated, above --exact-limit: projected rows, IVF lists, rescoring on the full rows (features reused);
    # query blocks of 5 rows, so the edges of several blocks are merged
    monkeypatch.setattr(knn, "QUERY_BLOCK", 5)
    streamed = DedupConfig(exact_limit=5, **base)
    a2 = run_scan([str(folder)], tmp_path / "a", streamed, report=False)
    b2 = run_scan([str(folder)], tmp_path / "b", streamed, report=False, ray=RayConfig())
    assert a2.threshold == b2.threshold and names(a2) == names(b2) and a2.pairs == b2.pairs
    assert a2.to_dict()["groups"] == b2.to_dict()["groups"] >= 2
    job = json.loads((tmp_path / "b" / "graph" / "job.json").read_text())
    assert job["rescored"] and job["floor"] < b2.threshold


def test_cluster_graph_ray_finds_the_same_neighbours(tmp_path):
    from neardup.clustering.graph import GraphClustering

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, 48)).astype(np.float32)
    X = centres[rng.integers(0, 200, 3000)] + 0.3 * rng.standard_normal((3000, 48)).astype(np.float32)
    for index, pca in (("flat", None), ("IVF48,Flat", 16)):
        a = GraphClustering(0.1, 8, "cosine", index, pca).fit(X)
        b = GraphClustering(0.1, 8, "cosine", index, pca, ray={"actors": 3}).fit(X)
        np.testing.assert_array_equal(a.knn_indices_, b.knn_indices_)
        np.testing.assert_allclose(a.knn_distances_, b.knn_distances_, atol=1e-6)
        np.testing.assert_array_equal(a.labels_, b.labels_)
        assert len(np.unique(a.labels_)) < len(X)  # the threshold joins neighbours: not a trivial partition


def test_cluster_cli_ray(reference, tmp_path):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    invoke("cluster", reference.root, "--out", out_a, "--threshold", "0.05", "--no-plots")
    invoke("cluster", reference.root, "--out", out_b, "--threshold", "0.05", "--no-plots", "--ray")
    rows = [list(csv.reader((o / "assignments.csv").open())) for o in (out_a, out_b)]
    assert rows[0] == rows[1] and len(rows[0]) == 12
    assert json.loads((out_b / "metrics.json").read_text())["params"]["ray"]["address"] == "local"
    assert_one_error(invoke("cluster", reference.root, "--out", tmp_path / "c", "--method", "kmeans",
                            "--n-clusters", "2", "--ray", ok=False), "--method graph")
