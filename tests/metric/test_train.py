"""`neardup train` end to end on a tiny registered network: labels from a CSV, class folders and a manifest; exact
resume; bad labels refused with one Error: line; the trained model used by extract as `--model trained`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neardup.extract.models.trained import EmbeddingHead, EmbeddingNet, export_trained
from neardup.extract.registry import create_extractor, get_model_cfg
from neardup.extract.space import FeatureSpace, require_same_space
from neardup.extract.store import FeatureStore
from neardup.extract.weights import file_sha256
from neardup.simclr.checkpoint import load_checkpoint
from tests.helpers import expect_error, invoke
from tests.metric.conftest import class_image, make_class_folders, tiny_arch, write_labels_csv

FAST = ("--model", "tiny_metric_net", "--image-size", 32, "--batch-size", 8, "--m-per-class", 2, "--workers", 0,
        "--freeze-stages", 0, "--embed-dim", 12, "--warmup-epochs", 0)


def _train(images, out, *args):
    return invoke("train", images, "--out", out, *FAST, *args)


def _log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_class_folders_train_validate_and_extract_as_trained(tiny_model, class_folders, tmp_path):
    run = tmp_path / "run"
    res = _train(class_folders, run, "--class-folders", class_folders, "--epochs", 2, "--val-labels", class_folders)
    assert "4 steps" in res.output and f"--model trained --weights {run}/best.pt" in res.output
    assert "validation (16 queries): precision@1" in res.output and "MAP@R" in res.output
    log = _log(run)
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and all(r["mined"] > 0 for r in steps)
    assert steps[-1]["lr"] > 0  # issue 14: the last step trains
    assert [r["epoch"] for r in log if "val_precision@1" in r] == [-1, 0, 1]
    for name in ("best.pt", "last.pt", "checkpoint.pt", "summary.json", "config.yaml", "encoders/epoch_002.pt"):
        assert (run / name).is_file(), name
    # every tool reads it as --model trained: L2-normalised embed_dim features, its weights recorded
    invoke("extract", class_folders, "--model", "trained", "--weights", run / "best.pt", "--out", tmp_path / "f",
           "--workers", 0, "--engine", "torch")
    store = FeatureStore.open(tmp_path / "f")
    feats = store.features()
    assert store.model == "trained:tiny_metric_net" and store.dim == 12 and len(feats) == 16
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert FeatureSpace.of_store(store).weights == file_sha256(run / "best.pt")


def test_two_trained_runs_are_different_feature_spaces(tiny_model, class_folders, tmp_path):
    for seed in (0, 1):
        _train(class_folders, tmp_path / f"run{seed}", "--class-folders", class_folders, "--epochs", 1, "--seed", seed)
        invoke("extract", class_folders, "--model", "trained", "--weights", tmp_path / f"run{seed}" / "best.pt",
               "--out", tmp_path / f"f{seed}", "--workers", 0, "--engine", "torch")
    spaces = [FeatureSpace.of_store(FeatureStore.open(tmp_path / f"f{s}")) for s in (0, 1)]
    with pytest.raises(Exception, match="other weights"):
        require_same_space(spaces, ["the database", "the queries"])
    expect_error("search", "exact", "--database", tmp_path / "f0", "--queries", tmp_path / "f1",
                 message="other weights")


def test_the_loader_reads_back_what_export_wrote(tiny_model, tmp_path):
    torch.manual_seed(3)
    cfg = get_model_cfg("tiny_metric_net")
    encoder, head = tiny_arch(cfg), EmbeddingHead(16, 5, layers=2)
    export_trained(tmp_path / "m.pt", encoder, head, cfg, {"epoch": 7})
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    assert blob["format"] == "neardup.trained/1" and blob["embed_dim"] == 5 and blob["epoch"] == 7
    ext = create_extractor("trained", weights=str(tmp_path / "m.pt"), device="cpu")
    assert (ext.name, ext.num_features, ext.cfg.input_size) == ("trained:tiny_metric_net", 5, cfg.input_size)
    x = torch.stack([ext.transform(class_image(0, i)) for i in range(3)])
    with torch.no_grad():
        want = EmbeddingNet(encoder, head).eval()(x).numpy()
    got = ext.encode(x)
    assert np.allclose(got, want, atol=1e-6) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    assert create_extractor("trained", weights=str(tmp_path / "m.pt"), input_size=24).cfg.input_size == 24
    # damaged or foreign files: one clear line
    torch.save({**blob, "head_state_dict": {}}, tmp_path / "nohead.pt")
    torch.save({**blob, "format": "neardup.finetuned/1"}, tmp_path / "ft.pt")
    torch.save({**blob, "encoder_features": 99}, tmp_path / "width.pt")
    (tmp_path / "imgs").mkdir()
    class_image(0, 0).save(tmp_path / "imgs" / "a.png")
    for name, message in [("nohead.pt", "do not fit EmbeddingHead"), ("ft.pt", "is not a neardup trained model"),
                          ("width.pt", "takes 99-d features but tiny_metric_net gives 16-d")]:
        expect_error("extract", tmp_path / "imgs", "--model", "trained", "--weights", tmp_path / name, "--out",
                     tmp_path / f"o_{name}", message=message)
    expect_error("extract", tmp_path / "imgs", "--model", "trained", "--out", tmp_path / "o", message="needs --weights")


def test_labels_from_a_csv_and_from_a_manifest(tiny_model, tmp_path):
    folders = make_class_folders(tmp_path / "cls", 4, 3)
    csv_path = write_labels_csv(folders, tmp_path / "labels.csv")
    _train(folders, tmp_path / "a", "--labels", csv_path, "--epochs", 1, "--loss", "multi-similarity", "--miner",
           "multi-similarity")
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["steps"] == 1  # 12 images: one batch of 8
    src = make_class_folders(tmp_path / "src", 4, 1)
    (tmp_path / "small.yaml").write_text("attacks:\n  - {attack: hflip}\n  - {attack: grayscale}\n")
    invoke("attack", src, tmp_path / "q", "--attacks", tmp_path / "small.yaml", "--format", "png", "--workers", 1)
    _train(src, tmp_path / "b", "--labels-from-manifest", tmp_path / "q", "--epochs", 2, "--loss", "proxy-anchor",
           "--miner", "none")
    state = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert state["step"] == 2 and state["criterion"]["loss.proxies"].shape == (4, 12)  # 4 sources = 4 classes


def test_online_attacks_without_labels_make_each_image_a_class(tiny_model, tmp_path):
    folders = make_class_folders(tmp_path / "cls", 4, 1)
    _train(folders, tmp_path / "run", "--online-attacks", "--attack-prob", 1, "--epochs", 1, "--epoch-samples", 16)
    blob = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert blob["classes"] == 4 and blob["loss"] == "triplet"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 2


@pytest.mark.parametrize("loss, miner", [("triplet", "batch-hard"), ("soft-triple", "none")])
def test_resume_continues_exactly(tiny_model, class_folders, tmp_path, loss, miner):
    """A run stopped after its first epoch and resumed (with other workers) ends where an uninterrupted run does."""
    args = ("--class-folders", class_folders, "--epochs", 3, "--loss", loss, "--miner", miner, "--online-attacks",
            "--jitter", 0.4)
    _train(class_folders, tmp_path / "full", *args)
    _train(class_folders, tmp_path / "part", *args, "--max-steps", 2)  # what a kill after epoch 1 leaves
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["epoch"] == 0
    invoke("train", class_folders, "--out", tmp_path / "part", "--resume", "--workers", 1, "--max-steps", 0)
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.pt") for r in ("full", "part"))
    assert a["step"] == b["step"] == 6
    for key in ("encoder", "head", "criterion") if loss == "soft-triple" else ("encoder", "head"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    losses = [[r["loss"] for r in _log(tmp_path / run) if "loss" in r] for run in ("full", "part")]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    expect_error("train", class_folders, "--out", tmp_path / "part", "--resume", "--loss", "contrastive",
                 message="--loss 'soft-triple' -> 'contrastive'" if loss == "soft-triple"
                 else "--loss 'triplet' -> 'contrastive'")


@pytest.mark.parametrize("setup, args, message", [
    ("single", ("--class-folders", "{d}"),
     "class 'c3' in {d} has 1 image(s); --miner batch-hard needs at least 2 per class"),
    ("single", ("--class-folders", "{d}", "--miner", "none", "--loss", "contrastive"), "--loss contrastive needs"),
    ("empty", ("--class-folders", "{d}"), "holds no images (an empty class)"),
    ("missing", ("--labels", "{d}/labels.csv"), "do not exist, e.g."),
    ("unlabelled", ("--labels", "{d}/labels.csv"), "have no label in"),
    ("ok", ("--class-folders", "{d}", "--labels", "{d}/labels.csv"), "give exactly one of"),
    ("ok", ("--class-folders", "{d}", "--batch-size", 6, "--m-per-class", 4), "must be a multiple of --m-per-class"),
    ("ok", ("--class-folders", "{d}", "--batch-size", 16, "--m-per-class", 2),
     "needs 8 classes, but the labels have 4"),
    ("ok", ("--class-folders", "{d}", "--loss-options", "margin=-1"), "--loss-options margin must be in"),
    ("ok", ("--class-folders", "{d}", "--val-labels", "{d}/c0"), "--val-labels"),
    ("ok", ("--labels", "{d}/c0"), "labels file not found"),
])
def test_bad_labels_are_refused_with_one_line_and_nothing_written(tiny_model, tmp_path, setup, args, message):
    d = make_class_folders(tmp_path / "cls", 4, 2)
    if setup == "single":
        for p in sorted((d / "c3").iterdir())[1:]:
            p.unlink()
    elif setup == "empty":
        for p in (d / "c3").iterdir():
            p.unlink()
    write_labels_csv(d, d / "labels.csv")
    if setup == "missing":
        (d / "c1" / "0.png").unlink()
    elif setup == "unlabelled":
        class_image(9, 9).save(d / "c1" / "new.png")
    fmt = [str(a).format(d=d) if isinstance(a, str) else a for a in args]
    expect_error("train", d, "--out", tmp_path / "run", *FAST, *fmt, message=message.format(d=d))
    assert not (tmp_path / "run").exists()


def _ddp_rank(rank: int, world: int, port: int, kw: dict, result: dict) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from neardup.metric.train import TrainConfig, train
    from tests.metric.conftest import register_tiny

    register_tiny()
    try:
        result[rank] = train(TrainConfig(**kw), show_progress=False).steps
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_train_like_one_with_the_global_batch(tiny_model, class_folders, tmp_path):
    """DDP (gloo, 2 ranks x 4 images) ends with the weights of one process on the same batches of 8."""
    import socket

    import torch.multiprocessing as mp

    kw = {"images": str(class_folders), "class_folders": str(class_folders), "model": "tiny_metric_net",
          "image_size": 32, "m_per_class": 2, "workers": 0, "freeze_stages": 0, "embed_dim": 12, "warmup_epochs": 0.0,
          "epochs": 2, "loss": "proxy-anchor", "miner": "batch-hard", "device": "cpu", "online_attacks": "default"}
    _train(class_folders, tmp_path / "one", "--class-folders", class_folders, "--epochs", 2, "--loss", "proxy-anchor",
           "--online-attacks", "--device", "cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = mp.Manager().dict()
    mp.spawn(_ddp_rank, args=(2, port, {**kw, "out": str(tmp_path / "two"), "batch_size": 4}, result), nprocs=2,
             join=True)
    assert result[0] == result[1] == 4
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.pt") for r in ("one", "two"))
    for key in ("encoder", "head", "criterion"):
        for k in a[key]:
            assert torch.allclose(a[key][k], b[key][k], atol=1e-5), (key, k)
