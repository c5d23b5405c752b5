"""The settings of a ``neardup train`` run: one dataclass whose field metadata holds every option's allowed values.

Built like :class:`~neardup.simclr.config.FinetuneConfig` (same field helper, same checks, the same ``--resume``
rules): the CLI makes its options from these fields, ``validate()`` checks them in one place, and the engine
reads the fields of its ``RunConfig``. Free of torch so that ``neardup --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from neardup.errors import UsageError
from neardup.metric.objectives import LOSSES, MINERS, NO_MINER, loss_names, miner_names
from neardup.simclr.config import _check_field, _opt, field_types

#: fields that name files or folders (recorded as text)
PATH_FIELDS = ("images", "out", "labels", "class_folders", "labels_from_manifest", "weights", "val_queries",
               "val_database", "val_labels")


@dataclass
class TrainConfig:
    """Every knob of a run (CLI flags / YAML keys map 1:1). Defaults: a small-batch CPU recipe, triplet loss with
    batch-hard mining on m=4 images per class (BINDER's)."""

    images: str
    out: str
    labels: str | None = None  # CSV with path,label columns
    class_folders: str | None = None  # ROOT/<class>/<image>
    labels_from_manifest: str | None = None  # a `neardup attack` folder: each source and its copies are a class
    model: str = "efficientnet_lite0"
    weights: str | None = None
    loss: str = _opt("triplet", choices=loss_names())
    loss_options: list[str] = _opt(default_factory=list)  # KEY=VALUE, declared by the loss's registry entry
    miner: str = _opt("batch-hard", choices=miner_names())
    miner_options: list[str] = _opt(default_factory=list)
    embed_dim: int = _opt(128, 1, 65536)
    head_layers: int = _opt(1, 1, 2)
    epochs: int = _opt(10, 1)
    batch_size: int = _opt(32, 2)  # per process
    m_per_class: int = _opt(4, 1)
    epoch_samples: int = _opt(0, 0)  # images drawn per epoch (0 = as many as the training set holds)
    image_size: int = _opt(160, 32, 2048)
    input_size: int | None = _opt(None, 16, 2048)  # crop of validation and of the exported model
    optimizer: str = _opt("adamw", choices=("adamw", "lars", "adam"))
    lr: float = _opt(1e-4, 0, lo_open=True)  # encoder
    head_lr: float = _opt(1e-3, 0, lo_open=True)  # embedding head
    loss_lr: float = _opt(1e-2, 0, lo_open=True)  # the loss's own parameters (proxies, centres)
    lr_scaling: str = _opt("none", choices=("none", "linear", "sqrt"))
    weight_decay: float = _opt(1e-4, 0)
    momentum: float = _opt(0.9, 0, 1, hi_open=True)
    warmup_epochs: float = _opt(1.0, 0)
    freeze_bn: bool = True
    freeze_stages: int = _opt(3, 0)
    sync_bn: bool = False
    online_attacks: str | None = None  # an attack set: each image becomes an attacked copy on the fly
    attack_prob: float = _opt(0.5, 0, 1)
    jitter: float = _opt(0.5, 0, 2.5)
    min_scale: float = _opt(0.5, 0, 1, lo_open=True)
    hflip_prob: float = _opt(0.5, 0, 1)
    seed: int = _opt(0, 0, 2**32 - 1)
    workers: int | None = _opt(None, 0, 256, resume_safe=True)
    device: str = _opt("auto", resume_safe=True)
    amp: str = _opt("auto", choices=("auto", "off", "bf16", "fp16"))
    channels_last: bool = _opt(True, resume_safe=True)
    accumulate: int = _opt(1, 1)
    val_labels: str | None = None  # labelled held-out set: precision@1 / MAP@R of leave-one-out class retrieval
    val_queries: str | None = None
    val_database: str | None = None
    val_distractors: list[str] = _opt(default_factory=list)
    val_every: int = _opt(1, 1, resume_safe=True)
    val_max_queries: int = _opt(0, 0)
    keep_encoders: bool = _opt(True, resume_safe=True)
    resume: bool = _opt(False, resume_safe=True)
    overwrite: bool = _opt(False, resume_safe=True)
    max_steps: int = _opt(0, 0, resume_safe=True)

    def __post_init__(self) -> None:
        for name in PATH_FIELDS:
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        for name in ("val_distractors", "loss_options", "miner_options"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                setattr(self, name, [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value])

    @property
    def label_sources(self) -> list[str]:
        """The label options given, as flags."""
        return [f for f, v in (("--labels", self.labels), ("--class-folders", self.class_folders),
                               ("--labels-from-manifest", self.labels_from_manifest)) if v]

    @property
    def needs_pairs(self) -> bool:
        """Whether a batch must hold two images of a class: a tuple loss or a miner (proxy losses need not)."""
        return LOSSES[self.loss].pairs or self.miner != NO_MINER

    def pair_reason(self) -> str:
        """Which option needs pairs, for messages: ``--miner batch-hard needs``."""
        if self.miner != NO_MINER:
            return f"--miner {self.miner} needs"
        return f"--loss {self.loss} needs"

    def validate(self) -> None:
        """Refuse any value out of range and any inconsistent combination, with one line."""
        types = field_types(type(self))
        for f in dataclasses.fields(self):
            _check_field(f, types[f.name], getattr(self, f.name))
        sources = self.label_sources
        if len(sources) > 1 or (not sources and not self.online_attacks and not self.resume):  # resume: the run's
            raise UsageError("give exactly one of --labels CSV, --class-folders DIR, --labels-from-manifest DIR "
                             f"(got {', '.join(sources) or 'none'}; without labels, --online-attacks makes each "
                             "image its own class)")
        LOSSES[self.loss].options(self.loss_options, "--loss-options")
        if self.miner == NO_MINER and self.miner_options:
            raise UsageError("--miner-options needs a --miner")
        if self.miner != NO_MINER:
            MINERS[self.miner].options(self.miner_options, "--miner-options")
        if self.batch_size % self.m_per_class:
            raise UsageError(f"--batch-size {self.batch_size} must be a multiple of --m-per-class "
                             f"{self.m_per_class} (each batch holds whole groups of m images of a class)")
        if self.m_per_class < 2 and self.needs_pairs:
            raise UsageError(f"--m-per-class 1 puts one image of each class in a batch, but {self.pair_reason()} "
                             f"two: use --m-per-class 2 or more, or a proxy loss with --miner none")
        if bool(self.val_queries) != bool(self.val_database):
            raise UsageError("validation needs both --val-queries and --val-database")
        if self.val_labels and self.val_queries:
            raise UsageError("give --val-labels (class retrieval) or --val-queries/--val-database (near-duplicate "
                             "retrieval), not both")
        if self.resume and self.overwrite:
            raise UsageError("--resume continues the run in --out and --overwrite replaces it: give one of them")
