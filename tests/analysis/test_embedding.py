"""UMAP gets its kNN graph from the neighbour lists, without same-label edges when asked."""

from __future__ import annotations

import numpy as np
import pytest

from losskernel_dist.analysis import embedding
from losskernel_dist.analysis.kernelio import DenseRows
from losskernel_dist.analysis.neighbours import compute_neighbours


def label_dominated_corr(n: int = 90, classes: int = 6, seed: int = 0):
    """Correlations where same-label samples are each other's nearest neighbours."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    x = 2.0 * rng.normal(size=(200, classes))[:, labels] + rng.normal(size=(200, n))
    return np.corrcoef(x, rowvar=False), labels


def test_knn_graph_puts_self_first_and_uses_the_correlation_distance():
    corr, labels = label_dominated_corr()
    nb = compute_neighbours(DenseRows(corr), 9, 1, labels, exclude_same_label=True)
    graph = embedding.knn_graph(nb.top_index, nb.top_corr, 6)
    assert graph.indices.shape == (90, 6) and graph.n_neighbors == 6
    np.testing.assert_array_equal(graph.indices[:, 0], np.arange(90))
    assert (graph.distances[:, 0] == 0).all()
    rows = np.arange(90)[:, None]
    expected = np.sqrt(2 * (1 - corr[rows, graph.indices[:, 1:]]))
    np.testing.assert_allclose(graph.distances[:, 1:], expected, rtol=1e-6)
    assert (np.diff(graph.distances[:, 1:], axis=1) >= 0).all()


@pytest.mark.parametrize("exclude", [True, False])
def test_umap_receives_no_same_label_edges_when_excluding(monkeypatch, exclude):
    import umap

    given = {}
    real = umap.UMAP

    class Spy(real):
        def __init__(self, **kwargs):
            given.update(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(umap, "UMAP", Spy)
    corr, labels = label_dominated_corr()
    nb = compute_neighbours(DenseRows(corr), 10, 1, labels, exclude_same_label=exclude)
    graph = embedding.knn_graph(nb.top_index, nb.top_corr, 8)
    coords, settings = embedding.umap_embedding(graph, 2, 0.1, seed=0)
    indices, dists = given["precomputed_knn"]
    assert given["n_neighbors"] == indices.shape[1] == 8
    same = labels[indices[:, 1:]] == labels[:, None]
    if exclude:
        assert not same.any()  # the graph UMAP was given has no same-label edge
    else:
        assert same.mean() > 0.9  # without exclusion the label dominates: the check can fail
    assert coords.shape == (90, 2) and np.isfinite(coords).all()
    # the map follows the graph: the 5 samples nearest each point on the map share its
    # label (chance: 1 in 6) when same-label edges are kept (1.0 measured), far less often
    # when none are (0.38 measured: two cross-label hops still lead back to the label)
    on_map = np.linalg.norm(coords[:, None] - coords[None, :], axis=-1)
    nearest = np.argsort(on_map, axis=1)[:, 1:6]
    same_on_map = (labels[nearest] == labels[:, None]).mean()
    assert same_on_map < 0.6 if exclude else same_on_map > 0.9
    assert settings["distance"] == "sqrt(2 * (1 - rho))" and settings["graph_components"] >= 1


def test_umap_is_seeded_and_three_dimensional():
    corr, labels = label_dominated_corr(n=60, seed=1)
    nb = compute_neighbours(DenseRows(corr), 7, 1, labels, exclude_same_label=True)
    graph = embedding.knn_graph(nb.top_index, nb.top_corr, 8)
    a, _ = embedding.umap_embedding(graph, 3, 0.1, seed=3)
    b, _ = embedding.umap_embedding(graph, 3, 0.1, seed=3)
    assert a.shape == (60, 3)
    np.testing.assert_array_equal(a, b)


def test_short_neighbour_lists_shrink_the_graph_with_a_note():
    corr, _ = label_dominated_corr(n=12, classes=2)
    labels = np.array([0] * 9 + [1] * 3)  # label-0 samples have 3 candidates
    nb = compute_neighbours(DenseRows(corr), 6, 1, labels, exclude_same_label=True)
    graph = embedding.knn_graph(nb.top_index, nb.top_corr, 6)
    assert graph.n_neighbors == 4 and "reduced from 6 to 4" in graph.note
