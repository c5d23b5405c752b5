"""finetune never loses or mixes a run: folder rule, --resume keeps the run's options, damaged checkpoints, ranges."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import click
import pytest
import torch
import yaml

from neardup.cli.finetune import finetune_cmd
from neardup.errors import UsageError
from neardup.outdir import MARKER, folder_lock
from neardup.simclr.config import FinetuneConfig, field_types
from neardup.simclr.rundir import CHECKPOINT, resume_config
from tests.conftest import make_image
from tests.helpers import expect_error, invoke

ARGS = ["--epochs", "2", "--batch-size", "4", "--image-size", "48", "--workers", "0", "--freeze-stages", "0",
        "--lr", "0.001", "--seed", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-epoch run (4 steps) and its images; tests that change it work on a copy."""
    d = tmp_path_factory.mktemp("reliability")
    imgs = d / "imgs"
    imgs.mkdir()
    for i in range(8):
        make_image(500 + i, (72, 56)).save(imgs / f"t{i}.png")
    invoke("finetune", imgs, "--out", d / "run", *ARGS)
    return imgs, d / "run"


@pytest.fixture
def run_copy(trained, tmp_path):
    imgs, run = trained
    shutil.copytree(run, tmp_path / "run")
    return imgs, tmp_path / "run"


def _files(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".neardup.lock"}


def test_config_is_written_once_and_recorded_in_the_checkpoint(trained):
    _, run = trained
    assert not (run / "config.json").exists()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["command"] == "finetune" and saved["lr"] == 0.001 and saved["epochs"] == 2
    state = torch.load(run / CHECKPOINT, weights_only=True)
    recorded = json.loads(state["config"])
    assert recorded == {k: v for k, v in saved.items() if k not in ("command", "neardup_version")}
    assert state["step"] == 4 and state["epoch"] == 1
    assert json.loads((run / MARKER).read_text())["command"] == "finetune"


def test_a_new_run_never_replaces_a_run(run_copy):
    imgs, run = run_copy
    before = _files(run)
    expect_error("finetune", imgs, "--out", run, *ARGS, message="already holds a finetune run")
    assert _files(run) == before


@pytest.mark.parametrize("extra, changed", [
    (["--lr", "0.01"], "--lr 0.001 -> 0.01"),
    (["--batch-size", "2"], "--batch-size 4 -> 2"),
    (["--epochs", "3"], "--epochs 2 -> 3"),
    (["--epochs", "3", "--temperature", "0.2", "--proj-dim", "64"], "--temperature 0.1 -> 0.2, --proj-dim 128 -> 64"),
])
def test_resume_refuses_options_that_change_the_result(run_copy, extra, changed):
    imgs, run = run_copy
    before = _files(run)
    line = expect_error("finetune", imgs, "--out", run, "--resume", *extra, message=changed)
    assert "would change the result" in line
    assert _files(run) == before  # no extra epoch at lr 0, config.yaml still the run's


def test_resume_takes_the_runs_options(run_copy):
    imgs, run = run_copy
    # only --resume: lr, epochs, batch size... come from the checkpoint, so nothing changes and nothing is retrained
    res = invoke("finetune", imgs, "--out", run, "--resume")
    assert res.output.startswith("4 steps")
    # the run's own config.yaml fed back (it records no resume/overwrite, and its --out is overridden)
    assert "resume" not in yaml.safe_load((run / "config.yaml").read_text())
    invoke("finetune", imgs, "--out", run, "--resume", "--config", run / "config.yaml")
    # the same options again, and ones that may differ (they do not change the weights)
    invoke("finetune", imgs, "--out", run, "--resume", *ARGS, "--workers", "1", "--val-every", "3", "--max-steps", "9",
           "--no-channels-last", "--device", "cpu")
    state = torch.load(run / CHECKPOINT, weights_only=True)
    assert state["step"] == 4 and state["epoch"] == 1
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert max(r["epoch"] for r in log) == 1 and max(r["step"] for r in log) == 4
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 0


def test_resume_config_in_the_library():
    recorded = dataclasses.asdict(FinetuneConfig(images="a", out="r", lr=0.001, epochs=5))
    same = resume_config(FinetuneConfig(images="a", out="r", lr=0.001, epochs=5, workers=3, resume=True), recorded)
    assert same.workers == 3 and same.lr == 0.001
    with pytest.raises(UsageError, match=r"--epochs 5 -> 30, --lr 0.001 -> 0.0001"):
        resume_config(FinetuneConfig(images="a", out="r", resume=True), recorded)  # all given (library default)
    filled = resume_config(FinetuneConfig(images="a", out="r", resume=True), recorded, given={"images"})
    assert filled.lr == 0.001 and filled.epochs == 5
    with pytest.raises(UsageError, match="IMAGES 'a' -> 'b'"):
        resume_config(FinetuneConfig(images="b", out="r", resume=True), recorded, given={"images"})


def test_resume_of_a_legacy_run_without_marker(run_copy):
    imgs, run = run_copy
    (run / MARKER).unlink()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").unlink()
    (run / "config.json").write_text(json.dumps(saved))
    assert invoke("finetune", imgs, "--out", run, "--resume").output.startswith("4 steps")


def _edit_checkpoint(run, edit):
    state = torch.load(run / CHECKPOINT, weights_only=True)
    edit(state)
    torch.save(state, run / CHECKPOINT)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update(head={k: v[:5] if v.ndim else v for k, v in s["head"].items()}),
     "do not fit SimCLRProjectionHead"),
    (lambda s: s.update(encoder={f"other.{k}": v for k, v in s["encoder"].items()}), "(encoder) do not fit"),
    (lambda s: s["optimizer"].update(param_groups=s["optimizer"]["param_groups"][:1]), "optimizer/scheduler/RNG"),
    (lambda s: s.update(rng={"torch": torch.zeros(3)}), "optimizer/scheduler/RNG"),
    (lambda s: s.update(config="{not json"), "damaged run record"),
    (lambda s: s.update(epoch="x"), "damaged run record"),
], ids=["other-head", "other-model", "optimizer", "rng", "config", "epoch"])
def test_resume_from_a_mismatched_checkpoint_is_one_line(run_copy, edit, message):
    imgs, run = run_copy
    _edit_checkpoint(run, edit)
    before = _files(run)
    line = expect_error("finetune", imgs, "--out", run, "--resume", message=message)
    assert str(run / CHECKPOINT) in line
    assert _files(run) == before


def test_overwrite_replaces_only_the_runs_files(run_copy):
    imgs, run = run_copy
    (run / "notes.txt").write_text("mine")
    invoke("finetune", imgs, "--out", run, *ARGS, "--epochs", "1", "--overwrite")
    assert (run / "notes.txt").read_text() == "mine"
    state = torch.load(run / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 0 and state["step"] == 2
    assert all(json.loads(x)["epoch"] <= 0 for x in (run / "log.jsonl").read_text().splitlines())


def test_a_second_process_is_refused(run_copy):
    imgs, run = run_copy
    before = _files(run)
    with folder_lock(run):
        expect_error("finetune", imgs, "--out", run, "--resume", message="another neardup process")
    assert _files(run) == before


@pytest.mark.parametrize("field, value, message", [
    ("max_steps", -1, r"--max-steps must be in \[0, inf\)"),
    ("batch_size", 1, "NT-Xent needs negatives"),
    ("image_size", 0, "--image-size"),
    ("lr", -1.0, "--lr"),
    ("lr", math.nan, "finite"),
    ("temperature", math.inf, "finite"),
    ("warmup_epochs", -3.0, "--warmup-epochs"),
    ("proj_dim", 0, "--proj-dim"),
    ("min_scale", 2.0, "--min-scale"),
    ("val_every", 0, "--val-every"),
    ("workers", -1, "--workers"),
    ("epochs", 0, "--epochs"),
    ("attack_prob", 1.5, "--attack-prob"),
    ("epochs", 2.5, "must be a int"),
    ("lr", "0.1", "must be a float"),
    ("freeze_bn", 1, "must be a bool"),
    ("optimizer", "sgd", "--optimizer must be one of"),
    ("val_distractors", "dir", "list of paths"),
])
def test_validate_refuses_every_out_of_range_value(field, value, message):
    with pytest.raises(UsageError, match=message):
        FinetuneConfig(images="a", out="b", **{field: value}).validate()


def test_cli_option_types_come_from_the_field_metadata():
    params = {p.name: p for p in finetune_cmd.params}
    types = field_types()
    checked = 0
    for f in dataclasses.fields(FinetuneConfig):
        r = f.metadata.get("range")
        if r is None:
            continue
        t = params[f.name].type
        if types[f.name] is int:
            assert isinstance(t, click.IntRange) and (t.min, t.max) == (r.lo, r.hi), f.name
        else:
            assert (t.lo, t.hi, t.lo_open, t.hi_open) == (r.lo, r.hi, r.lo_open, r.hi_open), f.name
        checked += 1
    assert checked >= 20
    assert "May differ on --resume" in params["workers"].help and "May differ" not in params["lr"].help


def _rank(rank, world, port, cfg_kw, result):
    """One rank of a 2-process run: a new run, a resume while another process holds the lock, a new run again."""
    import os
    from contextlib import nullcontext

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from neardup import dist
    from neardup.simclr.train import finetune

    def attempt(kw):
        try:
            return f"ok {finetune(FinetuneConfig(**kw), show_progress=False).steps}"
        except UsageError as exc:
            return f"error {exc}"

    try:
        first = attempt(cfg_kw)
        dist.barrier()
        # rank 1 plays "another process" holding the folder: rank 0 is refused, and rank 1 hears of it
        with folder_lock(cfg_kw["out"]) if rank == 1 else nullcontext():
            dist.barrier()
            locked = attempt({**cfg_kw, "resume": True})
            dist.barrier()
        dist.barrier()  # rank 1 has released the lock
        again = attempt(cfg_kw)
        result[rank] = (first, locked, again)
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_only_rank0_claims_and_a_refusal_stops_both(trained, tmp_path):
    import socket

    import torch.multiprocessing as mp

    imgs, _ = trained
    kw = {"images": str(imgs), "out": str(tmp_path / "ddp"), "epochs": 1, "batch_size": 2, "image_size": 32,
          "workers": 0, "freeze_stages": 0, "device": "cpu", "max_steps": 1}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = mp.Manager().dict()
    mp.spawn(_rank, args=(2, port, kw, result), nprocs=2, join=True)
    for rank in (0, 1):
        first, locked, again = result[rank]
        assert first == "ok 1", result[rank]
        # every rank stops with the main process' message instead of waiting at a barrier
        assert locked.startswith("error another neardup process"), result[rank]
        assert "already holds a finetune run" in again, result[rank]
    assert json.loads((tmp_path / "ddp" / MARKER).read_text())["command"] == "finetune"


def test_a_run_that_failed_before_its_first_checkpoint_can_be_started_again(trained, tmp_path):
    imgs, _ = trained
    run = tmp_path / "run"
    expect_error("finetune", imgs, "--out", run, *ARGS, "--batch-size", "16", message="lower --batch-size")
    assert (run / "config.yaml").is_file() and not (run / CHECKPOINT).exists()
    (run / "log.jsonl").write_text('{"epoch": 0, "step": 1, "loss": 9.0}\n')  # as if killed mid-epoch
    (run / "notes.txt").write_text("mine")
    expect_error("finetune", imgs, "--out", run, "--resume", message="start it again without --resume")
    invoke("finetune", imgs, "--out", run, *ARGS, "--epochs", "1", "--max-steps", "1")
    assert yaml.safe_load((run / "config.yaml").read_text())["batch_size"] == 4
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 1]  # step + epoch
    assert json.loads((run / "log.jsonl").read_text().splitlines()[0])["loss"] != 9.0
    assert (run / "notes.txt").read_text() == "mine"


def test_paths_may_be_path_objects(tmp_path):
    cfg = FinetuneConfig(images=tmp_path, out=tmp_path / "r", val_distractors=[tmp_path])
    cfg.validate()
    assert cfg.images == str(tmp_path) and cfg.val_distractors == [str(tmp_path)]
