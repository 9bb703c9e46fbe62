"""Top-k and bottom-k most correlated samples of every sample, one block of rows at a time.

For each query i the candidates are all j != i (self is always excluded) and,
with ``exclude_same_label``, only j whose label differs from i's: the paper's
Appendix B deconfounding, so that two samples are never neighbours merely
because they share a label. Rows of rho come from ``kernel/corr`` or from the
standardised loss vectors (rho is their inner product), ``block`` rows at a
time, so memory is O(block * N), never N x N.

The order is exactly that of a stable sort: by correlation (descending for
top, ascending for bottom), ties broken by the smaller sample index. Where a
query has fewer than k candidates the remaining slots hold index -1 and NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..reduction.select import select_top
from .kernelio import RowSource


@dataclass
class Neighbours:
    """Neighbour lists of every sample; row i lists sample i's neighbours, best first."""

    top_index: np.ndarray  # (N, k_top) int64
    top_corr: np.ndarray  # (N, k_top) float64
    bottom_index: np.ndarray  # (N, k_bottom) int64
    bottom_corr: np.ndarray  # (N, k_bottom) float64
    exclude_same_label: bool

    @property
    def n(self) -> int:
        return int(self.top_index.shape[0])

    def attrs(self) -> dict:
        return {
            "k_top": int(self.top_index.shape[1]),
            "k_bottom": int(self.bottom_index.shape[1]),
            "exclude_same_label": bool(self.exclude_same_label),
            "exclude_self": True,
            "order": "rho descending (top) / ascending (bottom); ties by smaller index",
        }


def exclusion_mask(
    i0: int, i1: int, n: int, labels: np.ndarray | None, exclude_same_label: bool
) -> np.ndarray:
    """(i1 - i0, n) bool: True where column j is not a candidate for query row i."""
    if exclude_same_label and labels is not None:
        mask = labels[i0:i1, None] == labels[None, :]
    else:
        mask = np.zeros((i1 - i0, n), dtype=bool)
    rows = np.arange(i1 - i0)
    mask[rows, i0 + rows] = True
    return mask


def compute_neighbours(
    source: RowSource,
    k_top: int,
    k_bottom: int,
    labels: np.ndarray | None = None,
    exclude_same_label: bool = False,
    block: int | None = None,
) -> Neighbours:
    """Top-``k_top`` and bottom-``k_bottom`` neighbours of every sample, blockwise.

    ``source`` gives rows of rho (``DenseRows`` over ``kernel/corr``, or
    ``StandardizedDrawRows``). ``labels`` are required for same-label exclusion.
    """
    if exclude_same_label and labels is None:
        raise ValueError("exclude_same_label needs labels")
    n = source.n
    block = block or source.block_size()
    labels = None if labels is None else np.asarray(labels)
    top_i = np.empty((n, k_top), dtype=np.int64)
    top_v = np.empty((n, k_top), dtype=np.float64)
    bot_i = np.empty((n, k_bottom), dtype=np.int64)
    bot_v = np.empty((n, k_bottom), dtype=np.float64)
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        rows = source.rows(i0, i1)
        excluded = exclusion_mask(i0, i1, n, labels, exclude_same_label)
        masked = np.where(excluded, -np.inf, rows)
        top_i[i0:i1], top_v[i0:i1] = select_top(masked, k_top)
        masked = np.where(excluded, -np.inf, -rows)
        idx, neg = select_top(masked, k_bottom)
        bot_i[i0:i1], bot_v[i0:i1] = idx, -neg
    return Neighbours(top_i, top_v, bot_i, bot_v, exclude_same_label)
