"""Every registered loss and miner trains: a few steps on a fixed batch lower the loss; options are checked;
under DDP (two gloo processes) the loss, the embeddings' and the proxies' gradients equal the single-process ones."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

from neardup.errors import UsageError
from neardup.extract.models.trained import EmbeddingHead
from neardup.metric.config import TrainConfig
from neardup.metric.objectives import LOSSES, MINERS, NO_MINER, Param
from neardup.metric.train import build_criterion
from neardup.simclr.config import Range
from neardup.simclr.optim import build_optimizer

#: the loss each miner is tested with (the pairing its paper uses)
MINER_LOSS = {"batch-hard": "triplet", "semi-hard": "triplet", "multi-similarity": "multi-similarity"}


def _batch(classes: int = 4, per_class: int = 4, dim: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch: noisy copies of one random centre per class (learnable, not yet separated)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return centres[labels] + 1.5 * torch.randn(len(labels), dim, generator=g), labels


def _cfg(**kw: object) -> TrainConfig:
    return TrainConfig(images="-", out="-", class_folders="-", **kw)  # type: ignore[arg-type]


def _train(loss: str, miner: str, steps: int = 8, measure: str | None = None) -> list[float]:
    """Train a small encoder + head on the fixed batch; the loss (or ``measure``, unmined) before each step."""
    torch.manual_seed(0)
    x, y = _batch()
    encoder = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 32), torch.nn.ReLU())
    head = EmbeddingHead(32, 16)
    criterion = build_criterion(_cfg(loss=loss, miner=miner, embed_dim=16), num_classes=4)
    judge = build_criterion(_cfg(loss=measure, miner=NO_MINER, embed_dim=16), 4) if measure else criterion
    opt = build_optimizer(encoder, head, "adam", 1e-2, 1e-2, 0.0, loss=criterion, lr_loss=5e-2)
    seen = []
    for _ in range(steps):
        z = head(encoder(x))
        loss, parts = criterion(z, y)
        with torch.no_grad():
            seen.append(float(judge(z, y)[0]) if measure else float(loss))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        seen.append(float(judge(head(encoder(x)), y)[0]))
    return seen


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_falls_on_a_fixed_batch(name):
    losses = _train(name, NO_MINER)
    assert np.isfinite(losses).all() and losses[-1] < losses[0] * 0.9, losses


@pytest.mark.parametrize("name", list(MINERS))
def test_every_miner_trains_its_loss_down(name):
    """Trained with the miner's tuples, the loss over every tuple of the batch (unmined) falls."""
    loss = MINER_LOSS[name]
    seen = _train(loss, name, measure=loss)
    assert seen[-1] < seen[0] * 0.9, seen


def test_every_miner_has_a_test_loss():
    assert set(MINER_LOSS) == set(MINERS)


def test_criterion_logs_the_loss_and_the_mined_tuples():
    x, y = _batch()
    loss, parts = build_criterion(_cfg(loss="triplet", miner="batch-hard"), 4)(torch.nn.functional.normalize(x), y)
    assert set(parts) == {"triplet", "mined"} and parts["mined"] == 16  # one hardest triplet per anchor
    assert parts["triplet"] == pytest.approx(float(loss))


def test_proxy_losses_hold_one_proxy_per_class_and_tuple_losses_none():
    for name, spec in LOSSES.items():
        params = list(build_criterion(_cfg(loss=name, miner=NO_MINER, embed_dim=8), 5).parameters())
        assert bool(params) == (not spec.pairs), name
        if params:
            assert params[0].shape[-1] == 8 or params[0].shape[0] == 8, name


def test_options_are_declared_and_checked():
    triplet = LOSSES["triplet"]
    assert triplet.options([], "--loss-options") == {"margin": 0.2}
    assert triplet.options(["margin=0.5"], "--loss-options") == {"margin": 0.5}
    assert LOSSES["soft-triple"].options(["centers-per-class=3"], "x")["centers_per_class"] == 3
    for entries, message in [(["margin"], "KEY=VALUE"), (["gamma=1"], "has no option 'gamma' .*takes margin"),
                             (["margin=-1"], "must be in"), (["margin=nan"], "finite"), (["margin=x"], "a number"),
                             (["margin=0.1", "margin=0.2"], "given twice")]:
        with pytest.raises(UsageError, match=message):
            triplet.options(entries, "--loss-options")
    with pytest.raises(UsageError, match="an integer"):
        LOSSES["soft-triple"].options(["centers_per_class=2.5"], "x")
    with pytest.raises(UsageError, match="pos_margin must be below neg_margin"):
        build_criterion(_cfg(loss="contrastive", loss_options=["pos_margin=2"]), 4)
    assert Param(1.0, Range(0, 2)).parse("2", "x") == 2.0


@pytest.mark.parametrize("changes, message", [
    ({"batch_size": 30, "m_per_class": 4}, "must be a multiple of --m-per-class"),
    ({"m_per_class": 1, "batch_size": 8}, "--miner batch-hard needs"),
    ({"m_per_class": 1, "batch_size": 8, "miner": "none"}, "--loss triplet needs"),
    ({"miner": "none", "miner_options": ["epsilon=1"]}, "--miner-options needs a --miner"),
    ({"miner_options": ["epsilon=1"]}, "batch-hard has no option"),
    ({"loss_options": ["margin=0"]}, "--loss-options margin must be in"),
    ({"labels": "a.csv"}, "give exactly one of"),
    ({"val_queries": "q"}, "both --val-queries and --val-database"),
    ({"val_queries": "q", "val_database": "d", "val_labels": "v"}, "not both"),
    ({"loss": "nope"}, "--loss must be one of"),
    ({"embed_dim": 0}, "--embed-dim"),
])
def test_config_refuses_inconsistent_settings(changes, message):
    with pytest.raises(UsageError, match=message):
        _cfg(**changes).validate()


def test_a_proxy_loss_may_use_one_image_per_class_and_online_attacks_need_no_labels():
    _cfg(loss="proxy-anchor", miner="none", m_per_class=1, batch_size=8).validate()
    TrainConfig(images="-", out="-", online_attacks="default").validate()


# --------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, port: int, name: str, miner: str, z: torch.Tensor, y: torch.Tensor,
                result: dict) -> None:
    import torch.distributed as tdist

    from neardup import dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    crit = build_criterion(_cfg(loss=name, miner=miner, embed_dim=z.shape[1]), 4, world_size=world)
    b = len(z) // world
    local = z[rank * b:(rank + 1) * b].clone().requires_grad_(True)
    loss, parts = crit(local, y[rank * b:(rank + 1) * b])
    loss.backward()
    dist.average_gradients(crit.parameters())  # what the engine does before the optimizer step
    result[rank] = (parts[name.replace("-", "_")], local.grad.clone(), [p.grad.clone() for p in crit.parameters()])
    tdist.destroy_process_group()


@pytest.mark.parametrize("name, miner", [("proxy-anchor", "none"), ("triplet", "batch-hard")])
def test_two_processes_compute_the_full_batch_loss_and_gradients(name, miner):
    import torch.multiprocessing as mp

    x, y = _batch(per_class=4)
    z = torch.nn.functional.normalize(x[:, :8])
    order = torch.randperm(len(z), generator=torch.Generator().manual_seed(1))  # classes spread over both ranks
    z, y = z[order], y[order]
    torch.manual_seed(0)
    single = build_criterion(_cfg(loss=name, miner=miner, embed_dim=8), 4)
    zz = z.clone().requires_grad_(True)
    loss, _ = single(zz, y)
    loss.backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, name, miner, z, y, result), nprocs=2, join=True)
    for rank in (0, 1):
        logged, grad, pgrads = result[rank]
        assert logged == pytest.approx(float(loss.detach()), rel=1e-5)
        # DDP averages the model's gradients over the 2 ranks: each rank's share is 2x its rows' full-batch gradient
        assert torch.allclose(grad / 2, zz.grad[rank * 8:(rank + 1) * 8], atol=1e-6)
        for got, want in zip(pgrads, [p.grad for p in single.parameters()], strict=True):
            assert torch.allclose(got, want, atol=1e-6)  # proxies: the full batch's gradient, on both ranks
