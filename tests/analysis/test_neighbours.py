"""Blockwise neighbour lists equal a brute-force stable argsort of the dense correlation matrix."""

from __future__ import annotations

import numpy as np
import pytest

from losskernel_dist.analysis.kernelio import DenseRows, StandardizedDrawRows, standardize
from losskernel_dist.analysis.neighbours import compute_neighbours
from losskernel_dist.reduction.kernel import reduce_store
from losskernel_dist.reduction.select import select_top
from losskernel_dist.store import RunStore


def brute_force(corr: np.ndarray, k: int, labels=None, exclude=False, top=True):
    """Reference: per row, a stable argsort over the allowed columns, padded with -1/NaN."""
    n = len(corr)
    idx = np.full((n, k), -1)
    val = np.full((n, k), np.nan)
    for i in range(n):
        allowed = np.array([j != i and not (exclude and labels[j] == labels[i]) for j in range(n)])
        cols = np.flatnonzero(allowed)
        key = -corr[i, cols] if top else corr[i, cols]
        chosen = cols[np.argsort(key, kind="stable")[:k]]
        idx[i, : len(chosen)] = chosen
        val[i, : len(chosen)] = corr[i, chosen]
    return idx, val


def random_corr(n: int, m: int, seed: int, decimals: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, n)) + rng.normal(size=(m, 1)) * rng.uniform(0, 2, size=n)
    corr = np.corrcoef(x, rowvar=False)
    if decimals is not None:  # plant many exact ties
        corr = np.round(corr, decimals)
        corr = (corr + corr.T) / 2
    return corr


@pytest.mark.parametrize("block", [1, 7, 16, 50, 64])
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("decimals", [None, 1])
def test_blockwise_equals_brute_force(block, exclude, decimals):
    n = 50  # block 7 and 16 leave ragged last blocks
    corr = random_corr(n, 40, seed=block, decimals=decimals)
    labels = np.random.default_rng(1).integers(0, 4, size=n)
    got = compute_neighbours(DenseRows(corr), k_top=6, k_bottom=4, labels=labels,
                             exclude_same_label=exclude, block=block)
    ti, tv = brute_force(corr, 6, labels, exclude, top=True)
    bi, bv = brute_force(corr, 4, labels, exclude, top=False)
    np.testing.assert_array_equal(got.top_index, ti)
    np.testing.assert_array_equal(got.bottom_index, bi)
    np.testing.assert_allclose(got.top_corr, tv)
    np.testing.assert_allclose(got.bottom_corr, bv)
    assert not (got.top_index == np.arange(n)[:, None]).any()
    if exclude:
        assert (labels[got.top_index] != labels[:, None]).all()
        assert (labels[got.bottom_index] != labels[:, None]).all()


def test_fewer_candidates_than_k_are_padded():
    corr = random_corr(9, 30, seed=3)
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1])  # label-0 queries have 2 candidates
    got = compute_neighbours(DenseRows(corr), k_top=4, k_bottom=4, labels=labels,
                             exclude_same_label=True, block=4)
    ti, tv = brute_force(corr, 4, labels, True)
    np.testing.assert_array_equal(got.top_index, ti)
    assert (got.top_index[:7, 2:] == -1).all() and np.isnan(got.top_corr[:7, 2:]).all()


def test_select_top_matches_stable_sort_with_ties_across_the_cut():
    values = np.array([[0.5, 0.9, 0.5, 0.5, -np.inf, 0.1]])
    idx, val = select_top(values, 3)
    np.testing.assert_array_equal(idx, [[1, 0, 2]])
    np.testing.assert_array_equal(val, [[0.9, 0.5, 0.5]])


def test_standardized_draw_rows_match_the_store_kernel(tmp_path):
    rng = np.random.default_rng(0)
    chains, draws, n = 2, 15, 31
    x = (rng.normal(size=(chains, draws, n)) + rng.normal(size=(chains, draws, 1))).astype(
        np.float32
    )
    x[:, :, 5] = 2.0  # zero variance: rho row is 0
    store = RunStore.create(tmp_path / "s.zarr", chains=chains, draws=draws, n=n,
                            total_steps=draws, config={})
    for c in range(chains):
        store.write_draws(c, 0, x[c])
        store.mark_done(c, range(draws))
    reduce_store(store, block_size=8, dtype="float64")  # compared to 1e-12
    flat = x.reshape(-1, n).astype(np.float64)
    from_draws = compute_neighbours(StandardizedDrawRows(standardize(flat)), 5, 5, block=6)
    from_kernel = compute_neighbours(DenseRows(store.kernel_array("corr")), 5, 5)
    np.testing.assert_array_equal(from_draws.top_index, from_kernel.top_index)
    np.testing.assert_array_equal(from_draws.bottom_index, from_kernel.bottom_index)
    np.testing.assert_allclose(from_draws.top_corr, from_kernel.top_corr, atol=1e-12)
