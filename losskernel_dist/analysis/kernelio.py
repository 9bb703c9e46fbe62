"""Reading a reduced run in bounded memory: row blocks of an N x N kernel, column blocks of draws.

Every analysis that touches an N x N quantity reads it through ``DenseRows`` (a
block of whole rows at a time, sized to a byte budget by ``rows_per_block``), so
that nothing ever holds the dense kernel. Analyses of the draws themselves
(convergence, R-hat) read the store's ``losses`` in column blocks of samples
through ``DrawReader``, which also fixes which draws count: the done draws of
healthy chains, as the reduction uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..reduction.usable import usable_draws
from ..store import RunStore

BLOCK_BYTES = 32 * 1024 * 1024  # float64 working block of kernel rows


def rows_per_block(n: int, array: Any = None, block_bytes: int = BLOCK_BYTES) -> int:
    """Rows of an (n, n) float64 matrix that fit ``block_bytes``, rounded to the array's chunks."""
    rows = max(1, block_bytes // (8 * max(n, 1)))
    chunks = getattr(array, "chunks", None)
    if chunks and isinstance(chunks[0], int) and chunks[0] <= rows:
        rows = (rows // chunks[0]) * chunks[0]
    return int(min(rows, max(n, 1)))


class DenseRows:
    """Row access to an in-memory or Zarr (N, N) matrix: ``rows(i0, i1)``."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.n = int(array.shape[0])

    def rows(self, i0: int, i1: int) -> np.ndarray:
        return np.asarray(self.array[i0:i1, :], dtype=np.float64)

    def block_size(self) -> int:
        return rows_per_block(self.n, self.array)


class StandardizedDrawRows:
    """Correlation rows computed from standardised loss vectors, never the whole rho.

    ``z`` is (M, N) with column j = (x_j - mean_j) / (sd_j * sqrt(M - 1)), so that
    rho = z^T z exactly as the reduction defines it (0 for a zero-variance sample).
    """

    def __init__(self, z: np.ndarray) -> None:
        self.z = np.asarray(z, dtype=np.float64)
        self.n = int(self.z.shape[1])

    def rows(self, i0: int, i1: int) -> np.ndarray:
        return np.clip(self.z[:, i0:i1].T @ self.z, -1.0, 1.0)

    def block_size(self) -> int:
        return rows_per_block(self.n)


def standardize(x: np.ndarray) -> np.ndarray:
    """(M, N) draws -> z with z^T z = rho (pooled mean and ddof=1 variance, as in reduce)."""
    x = np.asarray(x, dtype=np.float64)
    m = x.shape[0]
    xc = x - x.mean(axis=0)
    sd = np.sqrt((xc**2).sum(axis=0) / (m - 1))
    scale = np.divide(1.0, sd * np.sqrt(m - 1), out=np.zeros_like(sd), where=sd > 0)
    return xc * scale


RowSource = DenseRows | StandardizedDrawRows


@dataclass
class DrawReader:
    """The draws a run's kernel rests on, read in column blocks of samples.

    ``mask`` (chains, draws) marks the done draws of healthy chains. ``order``
    lists their flat indices (chain * T + draw) draw-major: all chains' draw 0,
    then all chains' draw 1, ... so that its first s entries are "the first s
    draws pooled across chains" of the convergence curve.
    """

    store: RunStore
    mask: np.ndarray

    @classmethod
    def for_store(cls, store: RunStore) -> DrawReader:
        return cls(store, usable_draws(store).mask)

    @property
    def chains(self) -> int:
        return int(self.mask.shape[0])

    @property
    def draws_per_chain(self) -> int:
        return int(self.mask.shape[1])

    @property
    def n(self) -> int:
        return int(self.store.shape[2])

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    def order(self) -> np.ndarray:
        """Flat indices of the usable draws in draw-major (t, chain) order."""
        t_idx, c_idx = np.nonzero(self.mask.T)
        return c_idx * self.draws_per_chain + t_idx

    def complete_chains(self) -> list[int]:
        """Chains with every draw usable (R-hat and ESS need equal-length chains)."""
        return [int(c) for c in np.flatnonzero(self.mask.all(axis=1))]

    def columns(self, j0: int, j1: int) -> np.ndarray:
        """float64 (chains, draws, j1 - j0) of samples j0..j1 (NaN where not done)."""
        return np.asarray(self.store.read_loss_columns(j0, j1), dtype=np.float64)

    def column_block(self, n_rows: int, block_bytes: int = BLOCK_BYTES) -> int:
        """Samples per column block so that (n_rows, block) float64 fits ``block_bytes``."""
        return int(max(1, min(self.n, block_bytes // (8 * max(n_rows, 1)))))

    def flat_columns(self, rows: np.ndarray, j0: int, j1: int) -> np.ndarray:
        """float64 (len(rows), j1 - j0): the draws ``rows`` (flat indices) of samples j0..j1."""
        block = self.columns(j0, j1)
        return block.reshape(-1, j1 - j0)[rows]

