"""Centred kernel alignment between two symmetric N x N kernels, one block of rows at a time.

    CKA(K, L) = <HKH, HLH>_F / (||HKH||_F ||HLH||_F),   H = I - 11^T / N

(MATH.md, paper Appendix D.2). With row sums a = K1, b = L1 and totals
A = 1^T K 1, B = 1^T L 1, and K, L symmetric,

    <HKH, HLH>_F = <K, L>_F - (2/N) a.b + A B / N^2

so one pass over row blocks of both kernels, accumulating <K, L>, <K, K>,
<L, L> and the row sums, gives CKA with O(block * N) memory. CKA is 1 for
K = L, invariant to scaling either kernel, and lies in [0, 1] for PSD kernels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .kernelio import rows_per_block


class CkaParts:
    """Running sums for CKA over row blocks: feed ``add(k_rows, l_rows)`` in order."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.kl = 0.0
        self.kk = 0.0
        self.ll = 0.0
        self.a = np.zeros(n)
        self.b = np.zeros(n)
        self.rows_seen = 0

    def add(self, k_rows: np.ndarray, l_rows: np.ndarray) -> None:
        k_rows = np.asarray(k_rows, dtype=np.float64)
        l_rows = np.asarray(l_rows, dtype=np.float64)
        i0, i1 = self.rows_seen, self.rows_seen + k_rows.shape[0]
        self.kl += float(np.einsum("ij,ij->", k_rows, l_rows))
        self.kk += float(np.einsum("ij,ij->", k_rows, k_rows))
        self.ll += float(np.einsum("ij,ij->", l_rows, l_rows))
        self.a[i0:i1] = k_rows.sum(axis=1)
        self.b[i0:i1] = l_rows.sum(axis=1)
        self.rows_seen = i1

    def value(self) -> float:
        if self.rows_seen != self.n:
            raise ValueError(f"CKA saw {self.rows_seen} of {self.n} rows")
        n = self.n
        sa, sb = self.a.sum(), self.b.sum()
        num = self.kl - 2.0 / n * float(self.a @ self.b) + sa * sb / n**2
        den_k = self.kk - 2.0 / n * float(self.a @ self.a) + sa**2 / n**2
        den_l = self.ll - 2.0 / n * float(self.b @ self.b) + sb**2 / n**2
        if den_k <= 0 or den_l <= 0:
            return float("nan")
        return float(num / np.sqrt(den_k * den_l))


def cka(k: Any, other: Any, block: int | None = None) -> float:
    """CKA of two symmetric (N, N) kernels given as numpy or Zarr arrays, read in row blocks."""
    if tuple(k.shape) != tuple(other.shape) or len(k.shape) != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"CKA needs two square kernels of one shape, got {k.shape} and {other.shape}")
    n = int(k.shape[0])
    block = block or rows_per_block(n, k, block_bytes=16 * 1024 * 1024)
    parts = CkaParts(n)
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        parts.add(k[i0:i1, :], other[i0:i1, :])
    return parts.value()


def double_centred_sq_norm(b: np.ndarray) -> float:
    """||P_a B P_b||_F^2 for an (a, b) matrix B, P the centring matrices, without copying B."""
    rows, cols = b.shape
    total = float(b.sum())
    r = b.sum(axis=1)
    c = b.sum(axis=0)
    return float(
        np.einsum("ij,ij->", b, b) - (r @ r) / cols - (c @ c) / rows + total**2 / (rows * cols)
    )
