"""Malformed invocations of finetune, evaluate-finetuning and cluster: one Error: line, nothing written or lost.

These need no training: the heavier cases (resume of a real run, damaged checkpoints of a real run) are in
tests/simclr/test_reliability.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neardup.outdir import MARKER, folder_lock
from tests.clustering.conftest import make_store
from tests.helpers import expect_error, invoke


@pytest.mark.parametrize("option, value, message", [
    ("--image-size", "0", "'--image-size'"),
    ("--lr", "-1", "'--lr'"),
    ("--lr", "0", "'--lr'"),
    ("--head-lr", "nan", "not a finite number"),
    ("--warmup-epochs", "-3", "'--warmup-epochs'"),
    ("--proj-dim", "0", "'--proj-dim'"),
    ("--min-scale", "2", "'--min-scale'"),
    ("--min-scale", "0", "'--min-scale'"),
    ("--val-every", "0", "'--val-every'"),
    ("--workers", "-1", "'--workers'"),
    ("--temperature", "0", "'--temperature'"),
    ("--temperature", "inf", "not a finite number"),
    ("--epochs", "0", "'--epochs'"),
    ("--batch-size", "1", "'--batch-size'"),
    ("--attack-prob", "1.5", "'--attack-prob'"),
    ("--jitter", "-0.1", "'--jitter'"),
    ("--momentum", "1", "'--momentum'"),
    ("--weight-decay", "-1e-4", "'--weight-decay'"),
    ("--koleo", "-1", "'--koleo'"),
    ("--head-layers", "4", "'--head-layers'"),
    ("--accumulate", "0", "'--accumulate'"),
    ("--seed", "-1", "'--seed'"),
    ("--max-steps", "-1", "'--max-steps'"),
    ("--val-max-queries", "-5", "'--val-max-queries'"),
    ("--freeze-stages", "-1", "'--freeze-stages'"),
    ("--optimizer", "sgd", "'--optimizer'"),
    ("--lr-scaling", "cubic", "'--lr-scaling'"),
    ("--amp", "fp8", "'--amp'"),
])
def test_finetune_option_out_of_range(image_dir, tmp_path, option, value, message):
    expect_error("finetune", image_dir, "--out", tmp_path / "run", option, value, message=message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("yaml_text, message", [
    ("lr: -1\n", "'--lr'"),
    ("batch_size: 1\n", "'--batch-size'"),
    ("max_steps: -1\n", "'--max-steps'"),
    ("temperature: .nan\n", "not a finite number"),
])
def test_finetune_config_file_values_are_checked_too(image_dir, tmp_path, yaml_text, message):
    (tmp_path / "c.yaml").write_text(yaml_text)
    expect_error("finetune", image_dir, "--out", tmp_path / "run", "--config", tmp_path / "c.yaml", message=message)
    assert not (tmp_path / "run").exists()


def _fake_run(folder, checkpoint: bytes | None = None):
    """A folder marked as a finetune run, with the given checkpoint bytes."""
    folder.mkdir()
    (folder / MARKER).write_text(json.dumps({"command": "finetune"}))
    (folder / "config.yaml").write_text("command: finetune\nmodel: efficientnet_lite0\n")
    if checkpoint is not None:
        (folder / "checkpoint.pt").write_bytes(checkpoint)
    return folder


class _Poison:
    def __reduce__(self):
        import os

        return (os.system, ("echo poisoned",))


def _saved(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("content, message", [
    (b"", "cannot read the checkpoint"),
    (b"\x00garbage" * 100, "cannot read the checkpoint"),
    (_saved({"encoder": {}, "head": {}})[:40], "cannot read the checkpoint"),
    (_saved({"encoder": _Poison()}), "weights_only=True refuses"),
    (_saved([1, 2, 3]), "holds a list"),
    (_saved({"encoder": {}, "head": {}}), "lacks optimizer"),
    (None, "no checkpoint.pt"),
], ids=["empty", "garbage", "truncated", "poisoned", "list", "missing-keys", "absent"])
def test_finetune_resume_bad_checkpoint(image_dir, tmp_path, content, message):
    run = _fake_run(tmp_path / "run", content)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    line = expect_error("finetune", image_dir, "--out", run, "--resume", message=message)
    assert "checkpoint" in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".neardup.lock"} == before


def test_finetune_out_folder_rule(image_dir, tmp_path):
    expect_error("finetune", image_dir, "--out", tmp_path / "nope", "--resume", message="does not exist")
    assert not (tmp_path / "nope").exists()
    expect_error("finetune", image_dir, "--out", image_dir, "--resume", message="not a neardup finetune run folder")
    # a fresh run into a folder of the user's files is refused; the photos are untouched
    expect_error("finetune", image_dir, "--out", image_dir, message="not empty")
    assert sorted(p.name for p in image_dir.iterdir()) == [f"img{i}.png" for i in range(6)]
    # another command's output
    feats = make_store(tmp_path / "feats", np.ones((2, 4), np.float32), ["a.jpg", "b.jpg"], tmp_path)
    (feats / MARKER).write_text(json.dumps({"command": "extract"}))
    expect_error("finetune", image_dir, "--out", feats, "--overwrite", message="holds the output of `neardup extract`")
    # a run folder: a fresh run is refused; --resume and --overwrite together too
    run = _fake_run(tmp_path / "run", b"x")
    expect_error("finetune", image_dir, "--out", run, message="already holds a finetune run")
    expect_error("finetune", image_dir, "--out", run, "--resume", "--overwrite", message="give one of them")
    assert (run / "checkpoint.pt").read_bytes() == b"x"


def test_finetune_second_writer_is_refused(image_dir, tmp_path):
    run = _fake_run(tmp_path / "run", b"x")
    with folder_lock(run):
        expect_error("finetune", image_dir, "--out", run, "--resume", message="another neardup process")


def test_evaluate_finetuning_bad_inputs(tmp_path):
    expect_error("evaluate-finetuning", tmp_path / "missing", message="not found")
    (tmp_path / "empty").mkdir()
    expect_error("evaluate-finetuning", tmp_path / "empty", message="not a neardup finetune run")
    other = tmp_path / "other"
    other.mkdir()
    (other / MARKER).write_text(json.dumps({"command": "cluster"}))
    (other / "config.yaml").write_text("command: cluster\n")
    expect_error("evaluate-finetuning", other, message="holds the output of `neardup cluster`")
    bad_yaml = _fake_run(tmp_path / "bad_yaml")
    (bad_yaml / "config.yaml").write_bytes(b"model: [\xff")
    expect_error("evaluate-finetuning", bad_yaml, message="not UTF-8")
    run = _fake_run(tmp_path / "run")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    expect_error("evaluate-finetuning", run, "--checkpoint", garbage, message="--checkpoint")
    state = tmp_path / "checkpoint.pt"
    state.write_bytes(_saved({"encoder": {}, "optimizer": {}, "epoch": 0}))
    expect_error("evaluate-finetuning", run, "--checkpoint", state, message="use best.pt")
    expect_error("evaluate-finetuning", run, "--checkpoint", tmp_path / "none.pt", message="not found")
    expect_error("evaluate-finetuning", run, message="no validation set")
    assert not (run / "evaluation").exists()


@pytest.fixture
def feats(tmp_path):
    rng = np.random.default_rng(0)
    return make_store(tmp_path / "f5", rng.standard_normal((5, 16)).astype(np.float32),
                      [str(tmp_path / f"i{i}.jpg") for i in range(5)], tmp_path)


@pytest.mark.parametrize("args, message", [
    (["--threshold", "nan"], "'--threshold'"),
    (["--threshold", "inf"], "'--threshold'"),
    (["--threshold", "-0.1"], "'--threshold'"),
    (["--method", "dbscan", "--eps", "0"], "'--eps'"),
    (["--method", "dbscan", "--eps", "nan"], "'--eps'"),
    (["--method", "hdbscan", "--selection-epsilon", "-1"], "'--selection-epsilon'"),
    (["--method", "hdbscan", "--selection-epsilon", "inf"], "'--selection-epsilon'"),
    (["--seed", "-1"], "'--seed'"),
    (["--sweep", "0:1:0.0000001"], "at most 1000"),
    (["--sweep", ",".join(["0.1"] * 1001)], "at most 1000"),
    (["--sweep", "0.1,nan"], "finite numbers"),
    (["--sweep", "0:inf:1"], "finite numbers"),
    (["--sweep", "1e400"], "finite numbers"),
    (["--sweep", "0.1,-0.2"], "must be >= 0"),
    (["--sweep", "1:0:0.1"], "no setting"),
    (["--method", "dbscan", "--sweep", "0,0.1"], "must be > 0"),
    (["--method", "hierarchical", "--sweep-param", "n-clusters", "--sweep", "1,2.5"], "whole number"),
    (["--pca", "8", "--threshold", "0.1"], "needs at least 8 vectors"),
    (["--max-memory", "...", "--method", "hierarchical"], "--max-memory"),
    (["--max-memory", "1.2.3GB", "--method", "hierarchical"], "--max-memory"),
])
def test_cluster_bad_options(feats, tmp_path, args, message):
    expect_error("cluster", feats, "--out", tmp_path / "o", "--no-plots", *args, message=message)
    assert not (tmp_path / "o").exists()


def test_cluster_same_folder_twice(feats, tmp_path):
    expect_error("cluster", feats, feats, "--out", tmp_path / "o", message="given twice")


def test_cluster_pca_on_hashes_and_untrainable_index(tmp_path):
    rng = np.random.default_rng(0)
    bits = make_store(tmp_path / "bits", rng.integers(0, 256, (6, 8), dtype=np.uint8),
                      [str(tmp_path / f"h{i}.jpg") for i in range(6)], tmp_path, metric="hamming")
    expect_error("cluster", bits, "--out", tmp_path / "o", "--pca", "4", message="does not apply to the hamming")
    many = make_store(tmp_path / "f300", rng.standard_normal((300, 16)).astype(np.float32),
                      [str(tmp_path / f"j{i}.jpg") for i in range(300)], tmp_path)
    line = expect_error("cluster", many, "--out", tmp_path / "o", "--index", "IVF2,PQ4x12",
                        message="IVF2,PQ4x12 needs at least 4096 training vectors")
    assert "300" in line and len(line) < 400
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content, message", [
    (b"path,label\n\xff\xfe,1\n", "not UTF-8"),
    (b"file,group\nx,1\n", "needs a 'label' column"),
    (b"", "needs a 'label' column"),
    (b'path,label\n"' + b"x" * 200_000 + b'",1\n', "not a readable CSV"),
], ids=["not-utf8", "columns", "empty", "field-too-large"])
def test_cluster_bad_labels_csv(feats, tmp_path, content, message):
    (tmp_path / "labels.csv").write_bytes(content)
    expect_error("cluster", feats, "--out", tmp_path / "o", "--labels", tmp_path / "labels.csv", message=message)
    expect_error("cluster", feats, "--out", tmp_path / "o", "--labels", tmp_path / "none.csv", message="not found")
    expect_error("cluster", feats, "--out", tmp_path / "o", "--labels", tmp_path, message="directory")
    assert not (tmp_path / "o").exists()


def test_cluster_never_replaces_files_it_did_not_write(feats, tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "metrics.json").write_text("mine")
    expect_error("cluster", feats, "--out", user, "--quiet", message="not empty")
    expect_error("cluster", feats, "--out", user, "--quiet", "--overwrite", message="metrics.json exists")
    assert (user / "metrics.json").read_text() == "mine"
    (user / "metrics.json").rename(user / "notes.json")
    invoke("cluster", feats, "--out", user, "--quiet", "--overwrite", "--no-plots")
    assert (user / "notes.json").read_text() == "mine" and (user / "assignments.csv").is_file()
    # a feature folder is never an output folder
    (feats / MARKER).write_text(json.dumps({"command": "extract"}))
    expect_error("cluster", feats, "--out", feats, "--overwrite", message="holds the output of `neardup extract`")


def test_cluster_second_writer_is_refused(feats, tmp_path):
    with folder_lock(tmp_path / "o"):
        expect_error("cluster", feats, "--out", tmp_path / "o", "--no-plots", message="another neardup process")
    assert not (tmp_path / "o" / "metrics.json").exists()
