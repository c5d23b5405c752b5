"""The k-NN graph as the later stages of a scan read it: edges above a floor, and the neighbour lists of a few rows.

Why an interface: calibration, grouping and the pairs file only ever ask for the edges at or above a similarity
and for the lists of the rows they sample. In one process the graph is the (n, k) arrays of :func:`knn`
(:class:`KnnLists`); on Ray it is edge shards written by the workers
(:class:`neardup.scaleout.knn.RayKnnGraph`), whose full (n, k) arrays never exist anywhere. Both give the same
edges, so the stages after the search are one code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Edges = tuple[np.ndarray, np.ndarray, np.ndarray]


class KnnGraph(Protocol):
    """What the stages after the k-NN search read."""

    @property
    def n(self) -> int:
        """The number of rows (graph nodes)."""

    def edges(self, floor: float) -> Edges:
        """(rows, cols, k-NN similarities) of the edges at or above ``floor``, self loops dropped, ordered by row
        then rank (the order of :func:`neardup.dedup.grouping.edges`)."""

    def scored_edges(self, X: Any, floor: float) -> Edges:
        """The edges at or above ``floor``, with their similarity on the full rows of ``X`` (the k-NN's own when
        it searched the full rows)."""

    def lists(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, neighbours) of ``rows``, nearest first (itself included; -1 where none was found)."""


@dataclass
class KnnLists:
    """The graph held as the (n, k) arrays :func:`neardup.dedup.find.knn` returns."""

    sims: np.ndarray
    nbrs: np.ndarray

    @property
    def n(self) -> int:
        return len(self.sims)

    def edges(self, floor: float) -> Edges:
        from neardup.dedup.grouping import edges

        return edges(self.sims, self.nbrs, floor)

    def scored_edges(self, X: Any, floor: float) -> Edges:
        from neardup.dedup.large import StoredRows, edge_similarities

        r, c, s = self.edges(floor)
        return (r, c, edge_similarities(X, r, c)) if isinstance(X, StoredRows) else (r, c, s)

    def lists(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.sims[rows], self.nbrs[rows]
