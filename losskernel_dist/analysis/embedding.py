"""UMAP maps of the kernel (umap-learn), fed a precomputed kNN graph.

UMAP only needs each sample's nearest neighbours. They come from the
blockwise neighbour lists (neighbours.py), so the dense N x N distance matrix
is never built, with the distance of MATH.md,

    d_ij = sqrt(2 * (1 - rho_ij))     (Euclidean distance of standardised loss vectors).

With same-label exclusion the lists hold no same-label sample, so UMAP's graph
has no edge between two samples of one label (paper Appendix B). UMAP's own
convention is kept: column 0 of the graph is the sample itself at distance 0.
The layout is seeded (``random_state``), which also makes umap-learn run its
optimisation single-threaded and reproducible. Spectral initialisation needs
a connected graph; a disconnected one is initialised at random and says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class KnnGraph:
    indices: np.ndarray  # (N, n_neighbors) int64, column 0 = self
    distances: np.ndarray  # (N, n_neighbors) float32, column 0 = 0
    n_neighbors: int
    note: str = ""


def correlation_distance(rho: np.ndarray) -> np.ndarray:
    """MATH.md's d = sqrt(2 (1 - rho)), clipped at 0 against rounding."""
    return np.sqrt(np.clip(2.0 * (1.0 - np.asarray(rho, dtype=np.float64)), 0.0, None))


def knn_graph(top_index: np.ndarray, top_corr: np.ndarray, n_neighbors: int) -> KnnGraph:
    """UMAP's kNN input from top neighbour lists: self first, then the n_neighbors - 1 best.

    If some sample has fewer valid neighbours than asked (index -1), n_neighbors
    shrinks to what every sample has, and ``note`` says so.
    """
    n = top_index.shape[0]
    valid = int((top_index >= 0).sum(axis=1).min()) if n else 0
    want = n_neighbors - 1
    note = ""
    if valid < want:
        note = f"n_neighbors reduced from {n_neighbors} to {valid + 1}: some samples have only " \
               f"{valid} candidate neighbours"
        want = valid
    if want < 1:
        raise ValueError("UMAP needs at least one neighbour per sample")
    if top_index.shape[1] < want:
        raise ValueError(f"neighbour lists hold {top_index.shape[1]} columns, UMAP needs {want}")
    indices = np.concatenate([np.arange(n)[:, None], top_index[:, :want]], axis=1)
    dists = np.concatenate([np.zeros((n, 1)), correlation_distance(top_corr[:, :want])], axis=1)
    return KnnGraph(indices.astype(np.int64), dists.astype(np.float32), want + 1, note)


def graph_components(graph: KnnGraph) -> int:
    """Number of connected components of the (symmetrised) kNN graph."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = graph.indices.shape[0]
    rows = np.repeat(np.arange(n), graph.indices.shape[1])
    adj = coo_matrix((np.ones(rows.size), (rows, graph.indices.reshape(-1))), shape=(n, n))
    return int(connected_components(adj, directed=True, connection="weak")[0])


def umap_embedding(
    graph: KnnGraph, n_components: int, min_dist: float, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Seeded UMAP layout of the graph; returns coordinates and the settings used."""
    import umap

    n = graph.indices.shape[0]
    components = graph_components(graph)
    init = "spectral" if components == 1 else "random"
    reducer = umap.UMAP(
        n_neighbors=graph.n_neighbors,
        n_components=n_components,
        min_dist=min_dist,
        random_state=seed,
        init=init,
        precomputed_knn=(graph.indices, graph.distances),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no search index (transform unused); n_jobs=1 by seed
        coords = reducer.fit_transform(np.zeros((n, 1), dtype=np.float32))
    settings = {
        "n_neighbors": graph.n_neighbors,
        "n_components": n_components,
        "min_dist": min_dist,
        "seed": seed,
        "init": init,
        "graph_components": components,
        "distance": "sqrt(2 * (1 - rho))",
    }
    if graph.note:
        settings["note"] = graph.note
    return np.asarray(coords, dtype=np.float32), settings
