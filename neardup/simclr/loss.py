"""Losses: lightly's NT-Xent (negatives gathered across GPUs) plus an optional KoLeo regulariser."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import neardup._compat  # noqa: F401


class KoLeoLoss(torch.nn.Module):
    """Kozachenko-Leonenko differential-entropy regulariser: -mean(log(nn distance)).

    It pushes each embedding away from its nearest neighbour in the batch, spreading
    the embedding space so near-duplicates stand out from merely similar images.

    Reference: Pizzi et al., A Self-Supervised Descriptor for Image Copy Detection (SSCD), CVPR 2022.
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        if eps <= 0:
            raise ValueError("eps must be positive")
        self.eps = eps

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D) embeddings (normalised here). Returns a scalar."""
        z = F.normalize(z.float(), dim=1)
        with torch.no_grad():
            sim = z @ z.T
            sim.fill_diagonal_(-2.0)
            nn_idx = sim.argmax(dim=1)
        dist = (z - z[nn_idx]).norm(dim=1)
        return -torch.log(dist + self.eps).mean()


class ContrastiveObjective(torch.nn.Module):
    """NT-Xent on the two views' projections (+ ``koleo`` x KoLeo on the backbone features)."""

    def __init__(self, temperature: float = 0.1, koleo: float = 0.0, gather_distributed: bool = True):
        super().__init__()
        from lightly.loss import NTXentLoss

        if koleo < 0:
            raise ValueError("koleo weight must be >= 0")
        self.ntxent = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)
        self.koleo_weight = koleo
        self.koleo = KoLeoLoss()

    def forward(self, z0: torch.Tensor, z1: torch.Tensor, h0: torch.Tensor | None = None,
                h1: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """z0, z1: (B, P) projections of view 0 / view 1; h0, h1: (B, D) backbone features."""
        loss = self.ntxent(z0.float(), z1.float())
        parts = {"ntxent": float(loss.detach())}
        if self.koleo_weight > 0 and h0 is not None and h1 is not None:
            reg = 0.5 * (self.koleo(h0) + self.koleo(h1))
            loss = loss + self.koleo_weight * reg
            parts["koleo"] = float(reg.detach())
        return loss, parts
