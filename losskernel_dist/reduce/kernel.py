"""Draws -> mean, variance, covariance and correlation, blockwise with dask.array.

MATH.md's pooled estimators over the M = C*T kept draws (x_m, m = 1..M):

    mean_j = (1/M) sum_m x_mj
    K_ij   = (1/(M-1)) sum_m (x_mi - mean_i)(x_mj - mean_j)
    rho_ij = K_ij / sqrt(K_ii K_jj),  0 where K_ii = 0 or K_jj = 0

The (M, N) draw matrix is read in column blocks of width B straight from the
store, cast to float64 and centred with the pass-1 mean (the stable two-pass
form, not E[xy] - E[x]E[y]). Pass 2 walks the block rows i of the upper
triangle: the tiles (i, j >= i) come from one dask product of column block i
with the columns to its right, and are written with their transposes, so each
tile is computed once and N x N never exists in memory.

Each tile task multiplies the shared left block with one right block, scales
it in place to the covariance and correlation tiles, and writes both and their
transposes straight to the store; dask runs P such tasks at once, each with one
BLAS thread so the cores are not oversubscribed.

Peak memory, with P dask threads, M rows and block width B (bytes):

    about (P + 2) * 3 * M * B * 8  +  P * 4 * B**2 * 8

(a float32 read, its float64 centred copy and the two left blocks of a pair of
block rows; a tile, its correlation and their transposes in transit),
independent of N.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from ..store import STATUS_OK, RunStore, StoreError


class IncompleteRunError(StoreError):
    """The run has missing or failed draws and a partial reduce was not requested."""


@dataclass
class ReduceReport:
    draws_used: int
    chains_used: list[int]
    n: int
    block_size: int
    partial: bool
    seconds: float
    excluded: dict[str, list[int]] = field(default_factory=dict)

    def as_attrs(self) -> dict:
        return {
            "draws_used": self.draws_used,
            "chains_used": self.chains_used,
            "n": self.n,
            "block_size": self.block_size,
            "partial": self.partial,
            "seconds": round(self.seconds, 3),
            "excluded": self.excluded,
        }


def record_report(
    store: RunStore, engine: str, m: int, used_chains: list[int], n: int, block: int,
    excluded: dict, t0: float,
) -> ReduceReport:
    """What a reduce used, stored in the group attributes (``reduce``) and returned."""
    report = ReduceReport(
        draws_used=m,
        chains_used=used_chains,
        n=n,
        block_size=block,
        partial=bool(excluded["failed_chains"] or excluded["not_done"]),
        seconds=time.perf_counter() - t0,
        excluded=excluded,
    )
    store.set_attrs(reduce={**report.as_attrs(), "engine": engine})
    return report


def peak_memory_bytes(m: int, block: int, threads: int) -> int:
    """The docstring's bound on reduce's working memory (not counting the interpreter)."""
    return (threads + 2) * 3 * m * block * 8 + threads * 4 * block**2 * 8


def select_rows(store: RunStore, allow_partial: bool) -> tuple[np.ndarray, list[int], dict]:
    """Flat (chain*T + draw) indices of the draws to use, and which chains they come from."""
    chains, draws, _ = store.shape
    done = store.done()
    healthy = store.chain_status() == STATUS_OK
    failed = [int(c) for c in np.flatnonzero(~healthy)]
    missing = int((~done[healthy]).sum())
    if not allow_partial and (failed or missing):
        parts = []
        if failed:
            parts.append(f"failed chains {failed}")
        if missing:
            parts.append(f"{missing} of {chains * draws} draws not done")
        raise IncompleteRunError(
            f"run is incomplete ({'; '.join(parts)}): finish it with 'losskernel sample' "
            "or reduce the done draws with --allow-partial"
        )
    use = done & healthy[:, None]
    rows = np.flatnonzero(use.reshape(-1))
    if len(rows) < 2:
        raise IncompleteRunError(
            f"only {len(rows)} usable draws: at least 2 are needed for a covariance"
        )
    used_chains = [int(c) for c in np.flatnonzero(use.any(axis=1))]
    excluded = {
        "failed_chains": failed,
        "not_done": [int(i) for i in np.flatnonzero(~done.reshape(-1) & np.repeat(healthy, draws))],
    }
    return rows, used_chains, excluded


def draw_moments(x: da.Array) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1: the pooled mean and (ddof=1) variance of every column of the draw matrix.

    Every reduce centres and scales with these same values, so kernels and
    neighbour lists of one store agree to the last bit of the pass-1 statistics.
    """
    mean, var = da.compute(x.mean(axis=0), x.var(axis=0, ddof=1))
    return mean, var


def inverse_sd(var: np.ndarray) -> np.ndarray:
    """1 / sqrt(var), and 0 where the variance is 0 (MATH.md: rho = 0 for such a sample)."""
    sd = np.sqrt(var)
    return np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 0)


def draw_matrix(store: RunStore, rows: np.ndarray, block: int) -> da.Array:
    """The (M, N) float64 matrix of the selected draws, chunked (M, block)."""
    chains, draws, n = store.shape
    arr = da.from_zarr(store.losses_array(), chunks=(chains, draws, block))
    x = arr.reshape(chains * draws, n)
    if len(rows) != chains * draws:
        x = x[rows]
    return x.astype(np.float64)


def _write_tile(
    left: np.ndarray,
    right: np.ndarray,
    i0: int,
    j0: int,
    m: int,
    inv_sd: np.ndarray,
    out: dict,
) -> int:
    """Covariance and correlation of column blocks i, j (j >= i); writes them and transposes."""
    i1, j1 = i0 + left.shape[1], j0 + right.shape[1]
    cov = left.T @ right
    cov /= m - 1
    if i0 == j0:
        cov = (cov + cov.T) / 2  # exact symmetry on the diagonal tile
    dtype = out["cov"].dtype
    corr = np.empty(cov.shape, dtype)  # computed straight into the output dtype: one pass less
    np.multiply(cov, inv_sd[i0:i1, None], out=corr, casting="same_kind")
    corr *= inv_sd[None, j0:j1].astype(dtype)
    np.clip(corr, -1.0, 1.0, out=corr)
    if i0 == j0:
        corr = (corr + corr.T) / 2
    cov = cov.astype(dtype, copy=False)
    out["cov"][i0:i1, j0:j1] = cov
    out["corr"][i0:i1, j0:j1] = corr
    if i0 != j0:
        out["cov"][j0:j1, i0:i1] = cov.T
        out["corr"][j0:j1, i0:i1] = corr.T
    return cov.size


def paired_block_rows(n: int, block: int) -> list[list[int]]:
    """Start columns of the block rows, paired first with last, second with second-to-last...

    Block row i of the upper triangle has one tile fewer than row i - 1, so one
    row at a time leaves the threads idle as the rows shorten; each pair has the
    same number of tiles (rows + 1), which keeps every thread busy while only two
    left blocks are held at once.
    """
    starts = list(range(0, n, block))
    pairs = []
    while starts:
        pairs.append([starts.pop(0)] + ([starts.pop()] if starts else []))
    return pairs


def reduce_store(
    store: RunStore,
    *,
    block_size: int = 2048,
    dtype: str = "float64",
    threads: int = 0,
    allow_partial: bool = False,
    progress: bool = False,
) -> ReduceReport:
    """Compute and write kernel/{mean,var,cov,corr}; returns what was used."""
    t0 = time.perf_counter()
    rows, used_chains, excluded = select_rows(store, allow_partial)
    m = len(rows)
    _, _, n = store.shape
    block = min(block_size, n)
    workers = threads or os.cpu_count() or 1
    scheduler = {"scheduler": "threads", "num_workers": workers}

    with dask.config.set(**scheduler):
        x = draw_matrix(store, rows, block)
        mean, var = draw_moments(x)
        out = store.create_kernel(n, block, dtype)
        out["mean"][:] = mean
        out["var"][:] = var
        inv_sd = inverse_sd(var)
        xc = x - mean
        bar = tqdm(total=len(range(0, n, block)), desc="reduce", unit="block row",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        # dask's threads already fill the cores: one BLAS thread each avoids oversubscription
        with threadpool_limits(limits=1 if workers > 1 else None, user_api="blas"):
            for rows_together in paired_block_rows(n, block):
                tiles = []
                for i0 in rows_together:
                    left = xc[:, i0:min(i0 + block, n)].to_delayed()[0, 0]
                    tiles += [
                        dask.delayed(_write_tile)(left, right, i0, i0 + j * block, m, inv_sd, out)
                        for j, right in enumerate(xc[:, i0:].to_delayed()[0])
                    ]
                dask.compute(*tiles)
                bar.update(len(rows_together))
        bar.close()

    return record_report(store, "dask", m, used_chains, n, block, excluded, t0)
