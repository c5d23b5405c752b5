"""Kill -9 mid-run then resume, and two-process torchrun (gloo): both must equal one clean run."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from neardup.extract.store import FeatureStore
from tests.conftest import make_image

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # same float reduction order in every process
ARGS = ["--model", "efficientnet_lite0", "--engine", "torch", "--workers", "0", "--batch-size", "2",
        "--shard-size", "4"]


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    for i in range(30):
        make_image(100 + i, (80 + i, 60)).save(d / f"p{i:02d}.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8junk")
    return d


@pytest.fixture(scope="module")
def reference(many_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "f"
    subprocess.run([sys.executable, "-m", "neardup", "extract", str(many_images), "--out", str(out), *ARGS],
                   check=True, capture_output=True, env=ENV)
    return FeatureStore.open(out)


def _same(a: FeatureStore, b: FeatureStore) -> None:
    assert a.paths == b.paths
    assert len(set(a.paths)) == len(a.paths) == 30
    np.testing.assert_array_equal(np.asarray(a.features()), np.asarray(b.features()))
    assert a.meta["skipped"] == b.meta["skipped"]


def test_sigkill_mid_run_then_resume_equals_uninterrupted(many_images, reference, tmp_path):
    out = tmp_path / "f"
    cmd = [sys.executable, "-m", "neardup", "extract", str(many_images), "--out", str(out), *ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 120
    shards = out / "shards"
    while time.time() < deadline and proc.poll() is None:
        if shards.is_dir() and len(list(shards.glob("*.json"))) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "extraction finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = len(list(shards.glob("*.json")))
    assert 2 <= committed < 8 and not (out / "meta.json").exists()
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=ENV)
    assert f"resumed after {committed} shard(s)" in res.stdout
    assert not list(shards.glob(".*.tmp")), "a temp file survived"
    _same(FeatureStore.open(out), reference)


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="torchrun missing")
def test_two_process_torchrun_gloo_equals_one_process(many_images, reference, tmp_path):
    out = tmp_path / "f"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    res = subprocess.run([torchrun, "--standalone", "--nnodes", "1", "--nproc-per-node", "2", "-m", "neardup",
                          "extract", str(many_images), "--out", str(out), "--device", "cpu", *ARGS],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    store = FeatureStore.open(out)
    _same(store, reference)
    names = sorted(p.name for p in (out / "shards").glob("*.json"))
    assert names == [f"{i:05d}.json" for i in range(8)]
