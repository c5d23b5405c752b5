"""The Ray options, plans and merge without a Ray instance: these run whether or not Ray is installed."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from neardup.errors import UsageError
from neardup.scaleout.engine import INSTALL_HINT, Cluster, RayConfig
from neardup.scaleout.knn import grouping_bytes, merge_lists
from tests.helpers import assert_one_error, expect_error, invoke


@pytest.mark.parametrize(("cfg", "message"), [
    (RayConfig(address="photos"), "put --ray after the paths"),
    (RayConfig(address="ray://head"), "HOST:PORT"),
    (RayConfig(address="auto", cpus=4), "--ray-cpus sets the CPUs of a local Ray instance"),
    (RayConfig(cpus=0), "--ray-cpus must be an integer >= 1"),
    (RayConfig(actors=True), "--ray-actors must be an integer >= 1"),
    (RayConfig(retries=-1), "retries must be an integer >= 0"),
])
def test_bad_ray_options_are_refused_by_flag(cfg, message):
    with pytest.raises(UsageError, match=message):
        cfg.validate()


@pytest.mark.parametrize("address", ["local", "auto", "10.0.0.5:6379", "ray://head-svc:10001"])
def test_addresses_accepted(address):
    assert RayConfig(address=address).validate().address == address


@pytest.mark.parametrize("command", [["extract", "IMAGES", "--out", "OUT"], ["dedup", "IMAGES", "--out", "OUT"],
                                     ["cluster", "IMAGES", "--out", "OUT"]])
def test_ray_missing_is_one_error_line_with_the_install_command(command, image_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    args = [str(image_dir) if a == "IMAGES" else str(tmp_path / "o") if a == "OUT" else a for a in command]
    line = expect_error(*args, "--ray", message="pip install 'neardup[ray]'")
    assert INSTALL_HINT in line
    assert not (tmp_path / "o").exists()  # refused before any work


def test_ray_knobs_without_ray_are_refused(image_dir, tmp_path):
    expect_error("extract", image_dir, "--out", tmp_path / "o", "--ray-actors", "2", message="applies with --ray")
    assert_one_error(invoke("dedup", image_dir, "--out", tmp_path / "d", "--ray-cpus", "2", "--ray-actors", "2",
                            ok=False), "apply with --ray")


def test_help_does_not_import_ray():
    code = "import sys, neardup.cli; from click.testing import CliRunner; " \
           "CliRunner().invoke(neardup.cli.main, ['extract', '--help']); print('ray' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


@pytest.mark.parametrize(("cpus", "gpus", "device", "actors", "want"), [
    (2, 0, "auto", None, ("cpu", 1, 1.0, 1, 1.0)),  # this machine: one actor, decoding on the other core
    (1, 0, "auto", None, ("cpu", 1, 0.5, 1, 0.5)),  # one core: shared, never starved
    (16, 0, "cpu", None, ("cpu", 11, 1.0, 1, 1.0)),
    (16, 0, "auto", 2, ("cpu", 2, 5.0, 5, 1.0)),  # fewer actors: more threads each
    (32, 4, "auto", None, ("cuda", 4, 1.0, 1, 1.0)),  # one GPU per actor
    (32, 4, "cpu", 3, ("cpu", 3, 7.0, 7, 1.0)),
])
def test_encode_plan(cpus, gpus, device, actors, want):
    p = Cluster(cpus, gpus, 1, "local").encode_plan(device, actors)
    assert (p.device, p.actors, p.cpus, p.threads, p.decode_cpus) == want
    assert p.actors * p.cpus + p.decode_cpus <= cpus  # every actor and one decode task fit at once


@pytest.mark.parametrize(("gpus", "device", "actors", "message"), [
    (0, "cuda", None, "has no GPU"), (2, "auto", 3, "2 GPU(s), one per encode actor"),
    (2, "cuda:1", None, "Ray gives each encode actor its own GPU"),
])
def test_encode_plan_refuses(gpus, device, actors, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Cluster(8, gpus, 1, "auto").encode_plan(device, actors)


def test_merge_lists_is_the_top_k_of_all_shards():
    rng = np.random.default_rng(1)
    parts, k = [], 5
    for _ in range(3):
        D = np.sort(rng.random((40, k)).astype(np.float32), axis=1)
        ids = rng.permutation(10_000)[:40 * k].reshape(40, k).astype(np.int64)
        ids[rng.random((40, k)) < 0.1] = -1  # a shard with fewer rows than k
        parts.append((D, ids))
    D, ids = merge_lists(parts, k)
    allD = np.concatenate([np.where(i >= 0, d, np.inf) for d, i in parts], axis=1)
    allI = np.concatenate([i for _, i in parts], axis=1)
    for q in range(40):
        order = sorted(range(allD.shape[1]), key=lambda j: (allD[q, j], allI[q, j]))[:k]
        assert ids[q].tolist() == allI[q, order].tolist()
        np.testing.assert_array_equal(D[q], allD[q, order])


def test_grouping_estimate_grows_with_edges_and_rows():
    assert grouping_bytes(10, 0) < grouping_bytes(10, 1) < grouping_bytes(11, 1)
    assert grouping_bytes(1_000_000, 10_000_000) / 1e9 == pytest.approx(0.768)


def test_the_vector_layer_pca_pickles_for_ray_workers():
    """Ray ships the fitted projection to its workers: a pickled PCA must transform bit for bit."""
    from neardup.fastsearch.vectors import PCA

    x = np.random.default_rng(0).standard_normal((300, 24)).astype(np.float32)
    pca = PCA(6, normalize=True).fit(x)
    twice = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(pca))))
    np.testing.assert_array_equal(pca.transform(x), twice.transform(x))
    assert "matrix_" not in pickle.loads(pickle.dumps(PCA(3))).__dict__  # an unfitted one stays unfitted


def test_block_edges_use_global_rows():
    """A block's edges are those grouping.edges gives on the whole lists: global rows, self loops dropped."""
    from neardup.dedup.grouping import edges
    from neardup.scaleout.knn import _block_edges

    rng = np.random.default_rng(2)
    n, k = 12, 4
    ids = np.stack([rng.permutation(n)[:k] for _ in range(n)])
    ids[:, 0] = np.arange(n)  # each row finds itself first, as an index search does
    D = np.sort(rng.uniform(0.0, 0.6, (n, k)).astype(np.float32), axis=1)
    D[:, 0] = 0.0
    want = edges(1.0 - D / 2.0, ids, 0.8)
    got = [_block_edges(np.arange(s, s + 5)[:n - s], k, 0.8, None, False, (D[s:s + 5], ids[s:s + 5]))
           for s in range(0, n, 5)]
    for j in range(3):
        np.testing.assert_array_equal(np.concatenate([g[j] for g in got]), want[j])
    assert len(want[0]) and not np.any(want[0] == want[1])
