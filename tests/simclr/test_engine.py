"""The engine runs any Task: a labelled stand-in for `neardup train` (a loss with its own parameters) trains,
checkpoints and resumes exactly through the same loop as finetune."""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neardup.dist import DistInfo
from neardup.simclr.checkpoint import load_checkpoint
from neardup.simclr.config import FinetuneConfig
from neardup.simclr.engine import build, fit
from neardup.simclr.task import EncoderOnly, LoaderSpec, ModelOutput, distributed_loader


class Labelled(Dataset):
    """8 fixed random images, 4 classes."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(8, 3, 32, 32, generator=g)
        self.y = torch.arange(8) % 4

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class ProxyLoss(torch.nn.Module):
    """Normalised softmax over learnable class proxies (a loss with parameters, as ProxyAnchor or ArcFace)."""

    def __init__(self, classes: int, dim: int):
        super().__init__()
        self.proxies = torch.nn.Parameter(torch.randn(classes, dim))

    def forward(self, z, labels):
        logits = F.normalize(z.float(), dim=1) @ F.normalize(self.proxies, dim=1).T / 0.1
        loss = F.cross_entropy(logits, labels)
        return loss, {"proxy": float(loss.detach())}


class LabelledTask(EncoderOnly):
    def build_head(self, num_features: int) -> torch.nn.Module:
        return torch.nn.Linear(num_features, 16)

    def build_loss(self, distributed: bool) -> torch.nn.Module:
        return ProxyLoss(4, 16)

    def make_loader(self, spec: LoaderSpec):
        self.loader = distributed_loader(Labelled(), spec)
        return self.loader

    def set_epoch(self, epoch: int) -> None:
        self.loader.sampler.set_epoch(epoch)

    def inputs(self, batch):
        return batch[0]

    def loss(self, criterion, out: ModelOutput, batch):
        return criterion(out[1], batch[1])


def _cfg(out, **kw):
    return FinetuneConfig(images="-", out=str(out), epochs=2, batch_size=4, workers=0, lr=1e-3, head_lr=1e-2,
                          warmup_epochs=0.0, **kw)


def _fit(cfg, state=None):
    Path(cfg.out).mkdir(exist_ok=True)  # fit's caller claims the folder
    return fit(cfg, LabelledTask(), DistInfo(), state, {"note": "test"}, show_progress=False)


def test_a_labelled_task_trains_its_loss_parameters_and_checkpoints_them(tmp_path):
    initial = build(_cfg(tmp_path), LabelledTask(), DistInfo()).criterion.proxies.detach().clone()
    report = _fit(_cfg(tmp_path / "run"))
    assert report.steps == 4 and report.epochs_run == 2 and report.best is None
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert set(state["criterion"]) == {"proxies"} and state["config"] == {"note": "test"}
    assert not torch.equal(state["criterion"]["proxies"], initial)  # trained with the head
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "proxy" in r] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 4
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "last.pt").is_file()


def test_a_labelled_task_resumes_exactly(tmp_path):
    full = _fit(_cfg(tmp_path / "full"))
    _fit(_cfg(tmp_path / "part", max_steps=2))  # stops after epoch 1 of 2
    part = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert part["epoch"] == 0 and part["step"] == 2
    resumed = _fit(_cfg(tmp_path / "part"), part)
    assert resumed.epochs_run == 1 and resumed.steps == full.steps == 4
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    for key in ("encoder", "head", "criterion"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
