"""The warm-up + cosine schedule: every optimizer step of a run trains (issue 14), and loss parameters get their own
learning rate."""

import pytest
import torch

from neardup.simclr.optim import build_optimizer, build_scheduler


def _lrs(warmup: int, total: int) -> list[float]:
    """The learning rate each of the run's ``total`` optimizer steps runs at (as the engine steps them)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, warmup, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("warmup, total", [(0, 1), (0, 2), (0, 10), (2, 10), (3, 4), (5, 5), (7, 3)])
def test_every_step_of_the_run_has_a_positive_learning_rate(warmup, total):
    lrs = _lrs(warmup, total)
    assert all(lr > 0 for lr in lrs), lrs  # the old schedule ran the last step at lr 0
    assert max(lrs) == pytest.approx(1.0) or warmup >= total


def test_the_schedule_warms_up_then_decays_to_its_floor_after_the_last_step():
    lrs = _lrs(2, 10)
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])  # linear warm-up, then the cosine starts at the peak
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:], strict=False))  # cosine decay
    assert 0 < lrs[-1] < 0.05  # close to the floor, which the step after the run would reach


def test_loss_parameters_train_at_their_own_rate():
    enc, head, loss = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2), torch.nn.Linear(2, 3)
    opt = build_optimizer(enc, head, "adamw", 1e-4, 1e-3, 0.0, loss=loss, lr_loss=1e-1)
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert rate[id(enc.weight)] == 1e-4 and rate[id(head.weight)] == 1e-3 and rate[id(loss.weight)] == 1e-1
    default = build_optimizer(enc, head, "adam", 1e-4, 1e-3, 0.0, loss=loss)
    assert {g["lr"] for g in default.param_groups if any(p is loss.weight for p in g["params"])} == {1e-3}
