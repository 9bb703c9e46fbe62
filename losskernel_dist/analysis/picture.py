"""The kernel picture (paper Figure 1B): rho sorted by label or hierarchy, block-averaged for large N.

Samples are sorted by the hierarchy's depth-first rank of their label when
there is a hierarchy, else by label, else by their PC1 score; ties keep sample
order. Up to ``max_samples`` samples the picture is the sorted matrix itself;
above, the sorted samples are cut into ``max_samples`` consecutive bins of
near-equal size and each pixel is the mean of rho over one pair of bins. The
matrix is read in row blocks, so the picture costs O(block * N + P^2) memory.
The hierarchy distance picture is averaged over the same bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernelio import DenseRows


@dataclass
class KernelPicture:
    matrix: np.ndarray  # (P, P)
    order: np.ndarray  # sorted sample indices (N,)
    bins: np.ndarray  # bin of each sorted position (N,)
    sorted_by: str
    averaged: bool
    n: int

    @property
    def caption(self) -> str:
        size = self.matrix.shape[0]
        if self.averaged:
            return (f"{self.n} samples sorted by {self.sorted_by}, block-averaged into "
                    f"{size} x {size} bins of about {self.n / size:.1f} samples")
        return f"all {self.n} samples, sorted by {self.sorted_by}"


def sort_order(
    n: int,
    labels: np.ndarray | None = None,
    label_rank: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """Sample order for pictures: hierarchy rank of the label, else label, else score."""
    index = np.arange(n)
    if labels is not None and label_rank is not None:
        return np.lexsort((index, labels, label_rank[labels])), "label hierarchy (depth-first)"
    if labels is not None:
        return np.lexsort((index, labels)), "label"
    if scores is not None:
        return np.lexsort((index, scores)), "PC1 score"
    return index, "sample index"


def bins_for(n: int, max_samples: int) -> tuple[np.ndarray, int]:
    """Bin of each sorted position: identity up to max_samples, else near-equal bins."""
    size = min(n, max_samples)
    return (np.arange(n) * size // n).astype(np.int64), size


def kernel_picture(
    source: DenseRows, order: np.ndarray, sorted_by: str, max_samples: int
) -> KernelPicture:
    """The sorted (and, above ``max_samples``, block-averaged) correlation picture."""
    n = source.n
    bins, size = bins_for(n, max_samples)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    sample_bin = bins[position]  # bin of each sample
    starts = np.flatnonzero(np.r_[True, np.diff(bins) > 0])  # first sorted position of each bin
    total = np.zeros((size, size))
    block = source.block_size()
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        rows = source.rows(i0, i1)[:, order]  # columns in sorted order
        col_sums = np.add.reduceat(rows, starts, axis=1)  # (rows, size)
        np.add.at(total, sample_bin[i0:i1], col_sums)
    counts = np.bincount(bins, minlength=size).astype(np.float64)
    matrix = total / np.outer(counts, counts)
    return KernelPicture(matrix, order, bins, sorted_by, size < n, n)


def hierarchy_picture(picture: KernelPicture, labels: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Mean label tree distance over the picture's bins: C D C^T / (n_a n_b)."""
    size = picture.matrix.shape[0]
    sorted_labels = np.asarray(labels)[picture.order]
    counts = np.zeros((size, distance.shape[0]))
    np.add.at(counts, (picture.bins, sorted_labels), 1.0)
    per_bin = counts.sum(axis=1)
    return counts @ distance @ counts.T / np.outer(per_bin, per_bin)
