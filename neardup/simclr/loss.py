"""Losses: lightly's NT-Xent (negatives gathered across GPUs) plus an optional KoLeo regulariser (lightly's).

KoLeo (Sablayrolles et al., Spreading vectors for similarity search, ICLR 2019; used by SSCD, Pizzi et al.,
CVPR 2022) is -mean(log(distance to the nearest neighbour in the batch)) on L2-normalised embeddings. lightly's
``KoLeoLoss`` computes exactly that (its eps, 1e-8, is added inside the distance instead of after it: a
difference of at most 1e-8 x sqrt(D) in a distance), so neardup uses it rather than a copy;
``tests/simclr/test_loss.py`` checks it against a naive reference.
"""

from __future__ import annotations

import torch

import neardup._compat  # noqa: F401  (before lightly)

# isort: split
from lightly.loss import KoLeoLoss, NTXentLoss


class ContrastiveObjective(torch.nn.Module):
    """NT-Xent on the two views' projections (+ ``koleo`` x KoLeo on the backbone features).

    Reference: Chen et al., A Simple Framework for Contrastive Learning of Visual Representations (SimCLR),
    ICML 2020.
    """

    def __init__(self, temperature: float = 0.1, koleo: float = 0.0, gather_distributed: bool = True):
        super().__init__()
        if koleo < 0:
            raise ValueError("koleo weight must be >= 0")
        self.ntxent = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)
        self.koleo_weight = koleo
        self.koleo = KoLeoLoss()

    def forward(self, z0: torch.Tensor, z1: torch.Tensor, h0: torch.Tensor | None = None,
                h1: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """z0, z1: (B, P) projections of view 0 / view 1; h0, h1: (B, D) backbone features.

        Returns:
            The loss (a scalar) and its parts as floats for the log (``ntxent``, ``koleo`` when on).
        """
        loss = self.ntxent(z0.float(), z1.float())
        parts = {"ntxent": float(loss.detach())}
        if self.koleo_weight > 0 and h0 is not None and h1 is not None:
            reg = 0.5 * (self.koleo(h0.float()) + self.koleo(h1.float()))
            loss = loss + self.koleo_weight * reg
            parts["koleo"] = float(reg.detach())
        return loss, parts
