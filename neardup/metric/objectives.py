"""The losses and miners of ``neardup train``: one registry entry each (name -> factory with declared options).

Every loss and miner is pytorch-metric-learning's (Musgrave et al., A Metric Learning Reality Check, ECCV 2020):
a loss takes ``(embeddings, labels, indices_tuple)``, a miner only produces the indices. An entry declares its
options with their defaults and allowed values; ``--loss-options KEY=VALUE`` / ``--miner-options KEY=VALUE`` set
them and :func:`parse_options` checks them, so adding a loss is one :func:`register_loss` entry and the CLI,
the validation and the registry-driven tests follow. Free of torch at import (factories import pml lazily).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from neardup.errors import UsageError
from neardup.simclr.config import Range


@dataclass(frozen=True)
class Param:
    """One option of a loss or miner: its type (from the default), default and allowed range."""

    default: float | int
    range: Range = field(default_factory=Range)
    help: str = ""

    def parse(self, text: str, where: str) -> float | int:
        """The option's value from ``text``; refuses other types, nan/inf and values out of range."""
        kind = type(self.default)
        try:
            value = kind(text) if kind is float else int(text, 10)
        except ValueError:
            raise UsageError(f"{where} must be {'a number' if kind is float else 'an integer'}, got {text!r}") \
                from None
        if kind is float and not math.isfinite(value):
            raise UsageError(f"{where} must be a finite number, got {text}")
        if value not in self.range:
            raise UsageError(f"{where} must be in {self.range}, got {text}")
        return value


#: (options, number of classes, embedding dimension) -> a pytorch-metric-learning loss or miner
Factory = Callable[[dict[str, Any], int, int], Any]


@dataclass(frozen=True)
class Spec:
    """A registered loss or miner.

    Attributes:
        name: what ``--loss`` / ``--miner`` accept.
        build: the factory.
        params: the declared options.
        pairs: it needs two images of a class in a batch (tuple losses, every miner); proxy-based losses do not.
        paper: the method's reference.
    """

    name: str
    build: Factory
    params: dict[str, Param]
    pairs: bool
    paper: str

    def options(self, entries: list[str] | tuple[str, ...], flag: str) -> dict[str, Any]:
        """Every declared option's value: the defaults, with ``KEY=VALUE`` ``entries`` applied.

        Raises:
            UsageError: an entry without '=', an option the entry does not declare, one given twice, or a value
                out of range (one line naming the option).
        """
        values: dict[str, Any] = {k: p.default for k, p in self.params.items()}
        seen: set[str] = set()
        for entry in entries:
            key, eq, text = str(entry).partition("=")
            key = key.strip().replace("-", "_")
            if not eq or not key:
                raise UsageError(f"{flag} {entry!r}: write KEY=VALUE")
            if key not in self.params:
                known = ", ".join(sorted(self.params)) or "no options"
                raise UsageError(f"{flag} {entry!r}: {self.name} has no option {key!r} (it takes {known})")
            if key in seen:
                raise UsageError(f"{flag}: {key} given twice")
            seen.add(key)
            values[key] = self.params[key].parse(text.strip(), f"{flag} {key}")
        return values


LOSSES: dict[str, Spec] = {}
MINERS: dict[str, Spec] = {}
#: ``--miner none``: the loss sees every pair or triplet of the batch
NO_MINER = "none"


def _register(table: dict[str, Spec], name: str, pairs: bool, paper: str, params: dict[str, Param]
              ) -> Callable[[Factory], Factory]:
    def deco(build: Factory) -> Factory:
        if name in table or name == NO_MINER:
            raise ValueError(f"{name!r} registered twice")
        table[name] = Spec(name, build, params, pairs, paper)
        return build

    return deco


def register_loss(name: str, *, pairs: bool, paper: str, **params: Param) -> Callable[[Factory], Factory]:
    """Decorator: register a loss factory under ``name`` with its declared options."""
    return _register(LOSSES, name, pairs, paper, params)


def register_miner(name: str, *, paper: str, **params: Param) -> Callable[[Factory], Factory]:
    """Decorator: register a miner factory (a miner always needs pairs of a class in the batch)."""
    return _register(MINERS, name, True, paper, params)


def get_spec(table: dict[str, Spec], name: str, flag: str) -> Spec:
    if name not in table:
        raise UsageError(f"unknown {flag} {name!r}; choose from {', '.join(table)}")
    return table[name]


POSITIVE = Range(0, None, lo_open=True)
NON_NEGATIVE = Range(0, None)


# --------------------------------------------------------------------------- losses
@register_loss("triplet", pairs=True, paper="Schroff et al., FaceNet, CVPR 2015 (Weinberger & Saul, LMNN, 2009)",
               margin=Param(0.2, POSITIVE, "distance margin between the positive and the negative"))
def _triplet(o: dict[str, Any], classes: int, dim: int) -> Any:
    from pytorch_metric_learning.losses import TripletMarginLoss

    return TripletMarginLoss(margin=o["margin"])


@register_loss("contrastive", pairs=True, paper="Hadsell, Chopra & LeCun, Dimensionality Reduction by Learning "
               "an Invariant Mapping, CVPR 2006",
               pos_margin=Param(0.0, NON_NEGATIVE, "positive pairs closer than this cost nothing"),
               neg_margin=Param(1.0, POSITIVE, "negative pairs farther than this cost nothing"))
def _contrastive(o: dict[str, Any], classes: int, dim: int) -> Any:
    from pytorch_metric_learning.losses import ContrastiveLoss

    if o["pos_margin"] >= o["neg_margin"]:
        raise UsageError("--loss-options pos_margin must be below neg_margin")
    return ContrastiveLoss(pos_margin=o["pos_margin"], neg_margin=o["neg_margin"])


@register_loss("multi-similarity", pairs=True, paper="Wang et al., Multi-Similarity Loss with General Pair "
               "Weighting, CVPR 2019",
               alpha=Param(2.0, POSITIVE), beta=Param(50.0, POSITIVE), base=Param(0.5, Range(-1, 1)))
def _multi_similarity(o: dict[str, Any], classes: int, dim: int) -> Any:
    from pytorch_metric_learning.losses import MultiSimilarityLoss

    return MultiSimilarityLoss(alpha=o["alpha"], beta=o["beta"], base=o["base"])


@register_loss("margin", pairs=True, paper="Wu et al., Sampling Matters in Deep Embedding Learning, ICCV 2017",
               margin=Param(0.2, POSITIVE), beta=Param(1.2, NON_NEGATIVE, "the boundary between the classes"))
def _margin(o: dict[str, Any], classes: int, dim: int) -> Any:
    from pytorch_metric_learning.losses import MarginLoss

    return MarginLoss(margin=o["margin"], beta=o["beta"])


@register_loss("proxy-nca", pairs=False, paper="Movshovitz-Attias et al., No Fuss Distance Metric Learning using "
               "Proxies, ICCV 2017; scale 9 is ProxyNCA++'s temperature 1/9 (Teh et al., ECCV 2020)",
               softmax_scale=Param(9.0, POSITIVE, "inverse temperature of the softmax over proxies"))
def _proxy_nca(o: dict[str, Any], classes: int, dim: int) -> Any:
    from pytorch_metric_learning.losses import ProxyNCALoss

    return ProxyNCALoss(classes, dim, softmax_scale=o["softmax_scale"])


@register_loss("proxy-anchor", pairs=False, paper="Kim et al., Proxy Anchor Loss for Deep Metric Learning, CVPR 2020",
               margin=Param(0.1, NON_NEGATIVE), alpha=Param(32.0, POSITIVE))
def _proxy_anchor(o: dict[str, Any], classes: int, dim: int) -> Any:
    from pytorch_metric_learning.losses import ProxyAnchorLoss

    return ProxyAnchorLoss(classes, dim, margin=o["margin"], alpha=o["alpha"])


@register_loss("soft-triple", pairs=False, paper="Qian et al., SoftTriple Loss: Deep Metric Learning Without "
               "Triplet Sampling, ICCV 2019",
               centers_per_class=Param(10, Range(1, 1000)), la=Param(20.0, POSITIVE), gamma=Param(0.1, POSITIVE),
               margin=Param(0.01, NON_NEGATIVE))
def _soft_triple(o: dict[str, Any], classes: int, dim: int) -> Any:
    from pytorch_metric_learning.losses import SoftTripleLoss

    return SoftTripleLoss(classes, dim, centers_per_class=o["centers_per_class"], la=o["la"], gamma=o["gamma"],
                          margin=o["margin"])


@register_loss("arcface", pairs=False, paper="Deng et al., ArcFace: Additive Angular Margin Loss, CVPR 2019",
               margin=Param(28.6, Range(0, 90, hi_open=True), "angular margin in degrees"),
               scale=Param(64.0, POSITIVE))
def _arcface(o: dict[str, Any], classes: int, dim: int) -> Any:
    from pytorch_metric_learning.losses import ArcFaceLoss

    return ArcFaceLoss(classes, dim, margin=o["margin"], scale=o["scale"])


@register_loss("supcon", pairs=True, paper="Khosla et al., Supervised Contrastive Learning, NeurIPS 2020 "
               "(supervised NT-Xent / InfoNCE)",
               temperature=Param(0.1, Range(0, 10, lo_open=True)))
def _supcon(o: dict[str, Any], classes: int, dim: int) -> Any:
    from pytorch_metric_learning.losses import SupConLoss

    return SupConLoss(temperature=o["temperature"])


# --------------------------------------------------------------------------- miners
@register_miner("batch-hard", paper="Hermans, Beyer & Leibe, In Defense of the Triplet Loss, 2017 (BINDER's "
                "'hardest': per anchor, the farthest positive and the nearest negative of the batch)")
def _batch_hard(o: dict[str, Any], classes: int, dim: int) -> Any:
    from pytorch_metric_learning.miners import BatchHardMiner

    return BatchHardMiner()


@register_miner("multi-similarity", paper="Wang et al., Multi-Similarity Loss with General Pair Weighting, CVPR 2019",
                epsilon=Param(0.1, NON_NEGATIVE, "similarity margin that makes a pair informative"))
def _ms_miner(o: dict[str, Any], classes: int, dim: int) -> Any:
    from pytorch_metric_learning.miners import MultiSimilarityMiner

    return MultiSimilarityMiner(epsilon=o["epsilon"])


@register_miner("semi-hard", paper="Schroff et al., FaceNet, CVPR 2015 (negatives farther than the positive, "
                "within the margin)",
                margin=Param(0.2, POSITIVE))
def _semi_hard(o: dict[str, Any], classes: int, dim: int) -> Any:
    from pytorch_metric_learning.miners import TripletMarginMiner

    return TripletMarginMiner(margin=o["margin"], type_of_triplets="semihard")


def loss_names() -> tuple[str, ...]:
    return tuple(LOSSES)


def miner_names() -> tuple[str, ...]:
    return (NO_MINER, *MINERS)
