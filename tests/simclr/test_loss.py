"""The losses against naive references: lightly's KoLeo (which neardup uses) and its place in the objective."""

import math

import pytest
import torch

from neardup.simclr.loss import ContrastiveObjective, KoLeoLoss


def naive_koleo(x: torch.Tensor) -> float:
    """-mean over rows of log(Euclidean distance to the nearest other row), rows L2-normalised; plain loops."""
    rows = [[float(v) for v in r] for r in x]
    rows = [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in rows]
    total = 0.0
    for i, a in enumerate(rows):
        nearest = min(math.dist(a, b) for j, b in enumerate(rows) if j != i)
        total += math.log(nearest)
    return -total / len(rows)


@pytest.mark.parametrize("n, d", [(2, 3), (5, 8), (16, 32), (33, 7)])
def test_koleo_matches_a_naive_reference(n, d):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n * d), dtype=torch.float64) * 3
    assert float(KoLeoLoss()(x)) == pytest.approx(naive_koleo(x), rel=1e-6)


def test_koleo_on_a_fixed_batch():
    # nearest distances: rows 0 and 1 are 90° apart (sqrt 2), row 2 is 180° from row 1 and 90° from row 0
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, -5.0]], dtype=torch.float64)
    assert float(KoLeoLoss()(x)) == pytest.approx(-math.log(math.sqrt(2)), rel=1e-6)
    assert naive_koleo(x) == pytest.approx(-math.log(math.sqrt(2)), rel=1e-12)


def test_objective_adds_weighted_koleo_on_the_backbone_features():
    g = torch.Generator().manual_seed(0)
    z0, z1, h0, h1 = (torch.randn(6, 5, generator=g) for _ in range(4))
    plain, parts = ContrastiveObjective(0.2, koleo=0.0, gather_distributed=False)(z0, z1, h0, h1)
    assert set(parts) == {"ntxent"}
    both, parts = ContrastiveObjective(0.2, koleo=0.5, gather_distributed=False)(z0, z1, h0, h1)
    reg = 0.5 * (naive_koleo(h0) + naive_koleo(h1))
    assert parts["koleo"] == pytest.approx(reg, rel=1e-5)
    assert float(both) == pytest.approx(float(plain) + 0.5 * reg, rel=1e-5)
    with pytest.raises(ValueError, match="koleo"):
        ContrastiveObjective(koleo=-1.0)
