"""Fine-tuning on CPU with small images: the loss, LARS groups, DDP negatives, resume, NaN."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from neardup.errors import UsageError
from neardup.simclr.loss import ContrastiveObjective, KoLeoLoss
from neardup.simclr.model import SimCLRModel, freeze_batchnorm, freeze_stages, load_encoder
from neardup.simclr.optim import build_optimizer, split_decay
from neardup.simclr.train import FinetuneConfig, NonFiniteLoss, finetune
from tests.conftest import make_image

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    for i in range(8):
        make_image(200 + i, (72, 56)).save(d / f"t{i}.png")
    return d


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    encoder, cfg = load_encoder("efficientnet_lite0", None)
    model = SimCLRModel(encoder, cfg.num_features)
    imgs = torch.stack([torch.from_numpy(np.asarray(make_image(i, (64, 64)), dtype=np.float32).transpose(2, 0, 1)
                                         / 127.5 - 1) for i in range(8)])
    x0, x1 = imgs, imgs.flip(-1) * 0.9
    obj = ContrastiveObjective(temperature=0.1, gather_distributed=False)
    opt = build_optimizer(model.encoder, model.head, "adamw", 1e-4, 1e-3, 0.0)
    losses = []
    for _ in range(6):
        model.train()
        freeze_batchnorm(model.encoder)
        h, z = model(torch.cat([x0, x1]))
        loss, _ = obj(z[:8], z[8:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] * 0.8, losses


def test_lars_skips_weight_decay_and_adaptation_for_bn_and_bias():
    from lightly.utils.lars import LARS

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 4 * 4, 2))
    head = torch.nn.Linear(2, 2)
    decay, no_decay = split_decay(net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert sorted(names[id(p)] for p in no_decay) == ["0.bias", "1.bias", "1.weight", "3.bias"]
    assert sorted(names[id(p)] for p in decay) == ["0.weight", "3.weight"]
    opt = build_optimizer(net, head, "lars", 0.1, 0.1, weight_decay=1e-2)
    assert isinstance(opt, LARS)
    groups = {tuple(sorted(names.get(id(p), "head") for p in g["params"])): g["weight_decay"] for g in opt.param_groups}
    assert groups[("0.bias", "1.bias", "1.weight", "3.bias")] == 0.0
    assert groups[("0.weight", "3.weight")] == 1e-2
    # an excluded parameter gets the plain SGD step: no decay, no trust-ratio scaling
    bn_w, w = net[1].weight, net[0].weight
    bn_before, w_before = bn_w.detach().clone(), w.detach().clone()
    for p in list(net.parameters()) + list(head.parameters()):
        p.grad = torch.full_like(p, 0.5)
    opt.step()
    assert torch.allclose(bn_w.detach(), bn_before - 0.1 * 0.5)
    # a decayed weight's step is rescaled by the layer-wise trust ratio, so it is not the plain one
    plain = w_before - 0.1 * (0.5 + 1e-2 * w_before)
    assert not torch.allclose(w.detach(), plain, atol=1e-6)


def test_koleo_rewards_spread():
    k = KoLeoLoss()
    tight = torch.tensor([[1.0, 0.0], [0.99, 0.01], [0.98, 0.02]])
    spread = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert float(k(spread)) < float(k(tight))


def _ddp_worker(rank, world, port, z0, z1, result):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    b = z0.shape[0] // world
    obj = ContrastiveObjective(temperature=0.2, gather_distributed=True)
    loss, _ = obj(z0[rank * b:(rank + 1) * b], z1[rank * b:(rank + 1) * b])
    result[rank] = float(loss)
    dist.destroy_process_group()


def test_two_process_gloo_gathers_negatives_across_ranks():
    import socket

    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    single, _ = ContrastiveObjective(temperature=0.2, gather_distributed=False)(z0, z1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    result = manager.dict()
    mp.spawn(_ddp_worker, args=(2, port, z0, z1, result), nprocs=2, join=True)
    # each rank's loss uses all 2B-1 negatives; their mean is the full-batch loss
    assert np.mean([result[0], result[1]]) == pytest.approx(float(single), rel=1e-5)
    local, _ = ContrastiveObjective(temperature=0.2, gather_distributed=False)(z0[:4], z1[:4])
    assert result[0] != pytest.approx(float(local), rel=1e-3)  # not merely the local batch


def _cmd(train_dir, out, epochs=3):
    return [sys.executable, "-m", "neardup", "finetune", str(train_dir), "--out", str(out), "--epochs", str(epochs),
            "--batch-size", "4", "--image-size", "48", "--workers", "0", "--freeze-stages", "0", "--seed", "1"]


def test_kill_and_resume_gives_identical_weights(train_dir, tmp_path):
    full = tmp_path / "full"
    subprocess.run(_cmd(train_dir, full), check=True, capture_output=True, env=ENV)
    part = tmp_path / "part"
    proc = subprocess.Popen(_cmd(train_dir, part), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not (part / "checkpoint.pt").exists():
        time.sleep(0.01)
    assert proc.poll() is None, "run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(part / "checkpoint.pt", weights_only=True)
    assert state["epoch"] < 2
    res = subprocess.run(_cmd(train_dir, part) + ["--resume"], capture_output=True, text=True, env=ENV)
    assert res.returncode == 0, res.stderr[-1500:]
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(part / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for key in ("encoder", "head"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    # the epoch the kill cut short is logged once, by the resumed run
    import json

    steps = [json.loads(x)["step"] for x in (part / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == list(range(1, 7)), steps


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(train_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ContrastiveObjective.forward

    def poisoned(self, *a, **k):
        loss, parts = real(self, *a, **k)
        calls["n"] += 1
        return (loss * float("nan"), parts) if calls["n"] > 2 else (loss, parts)

    monkeypatch.setattr(ContrastiveObjective, "forward", poisoned)
    cfg = FinetuneConfig(images=str(train_dir), out=str(tmp_path / "run"), epochs=3, batch_size=4, image_size=48,
                         workers=0, freeze_stages=0)
    with pytest.raises(NonFiniteLoss, match="loss became nan at epoch 2"):
        finetune(cfg, show_progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 0 and state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["encoder"].values() if v.is_floating_point())


def test_finetuned_encoder_loads_for_extraction(train_dir, tmp_path):
    from neardup.extract.config import ExtractConfig
    from neardup.extract.pipeline import extract_features
    from neardup.extract.store import FeatureStore

    cfg = FinetuneConfig(images=str(train_dir), out=str(tmp_path / "run"), epochs=1, batch_size=4, image_size=48,
                         workers=0)
    finetune(cfg, show_progress=False)
    rep = extract_features(train_dir, tmp_path / "f", ExtractConfig("finetuned",
                           weights=str(tmp_path / "run" / "best.pt"), workers=0, engine="torch"), show_progress=False)
    store = FeatureStore.open(tmp_path / "f")
    assert rep.count == 8 and store.model == "finetuned:efficientnet_lite0" and store.dim == 1280
    encoder, _ = load_encoder("efficientnet_lite0", None)
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(v, encoder.state_dict()[k]) for k, v in state.items() if v.is_floating_point())


def test_freeze_stages_and_bad_settings(train_dir, tmp_path):
    encoder, _ = load_encoder("efficientnet_lite0", None)
    n = freeze_stages(encoder, 3)
    assert 0 < n < sum(p.numel() for p in encoder.parameters())
    assert not encoder.net.blocks[2][0].conv_dw.weight.requires_grad
    assert encoder.net.blocks[3][0].conv_dw.weight.requires_grad
    with pytest.raises(UsageError, match="--batch-size"):
        FinetuneConfig(images=str(train_dir), out=str(tmp_path / "x"), batch_size=1).validate()
    with pytest.raises(UsageError, match="lower --batch-size"):
        finetune(FinetuneConfig(images=str(train_dir), out=str(tmp_path / "y"), batch_size=16, workers=0),
                 show_progress=False)
