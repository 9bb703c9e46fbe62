"""Draws -> mean, variance, covariance and correlation, blockwise with dask.

MATH.md's pooled estimators over the M = C*T kept draws (x_m, m = 1..M):

    mean_j = (1/M) sum_m x_mj
    K_ij   = (1/(M-1)) sum_m (x_mi - mean_i)(x_mj - mean_j)
    rho_ij = K_ij / sqrt(K_ii K_jj),  0 where K_ii = 0 or K_jj = 0

Pass 1 reads the (M, N) draw matrix in column blocks straight from the store
(whole stored chunks of W columns, then slices of S = 512 columns converted to
float64) and gives each column's float64 mean and variance (the stable two-pass
form, not E[xy] - E[x]E[y]). The slicing depends only on the store's chunking,
so every reduce of a store (dense or neighbours, any block width, draws cached
or not, dask or torch engine) computes the same statistics from the same
column blocks and gets the same bits. Pass 2 is one task per tile
(i, j >= i) of the upper triangle: each task multiplies centred column blocks
i and j, scales the product to the covariance and correlation tiles, and
writes both and their transposes straight to the store, so each tile is
computed once and N x N never exists in memory. The centred draws (M x N
float64) are kept in memory when they fit in ``cache_bytes`` (the common case:
M is hundreds to thousands of draws); otherwise each task re-reads its two
column blocks (K^2 block reads for K = N / B blocks).

The tile tasks (``tiles.py``) run on a pool of threads here, largest tiles
first (``tiles_on_threads``), or as one dask graph on the workers of a dask
cluster (``reduce.scheduler``: ``cluster.py``), which read the draws from the
store and write their tiles into it themselves; the tasks and the bits are the
same. Each finished tile is flagged in ``kernel/done``, so a
reduce that was killed, preempted or lost its workers resumes with the tiles
not yet done (same draws and settings), and a rerun of a finished one recomputes.

Peak memory, with P threads, M rows, block width B (bytes):

    cached draws  M * N * 8                 when <= cache_bytes (else 0)
    per thread    max(pass 1: M * W * 4 + 2 * M * S * 8,
                      pass 2: 4 * B**2 * 8 (+ 2 * M * B * 12 when not cached))

(pass 1: a float32 chunk read and a float64 slice with its centred copy; pass 2:
the float64 product, the tile's covariance and correlation with their transposes
and the chunk being encoded, at most 4 B**2 doubles, and the two blocks read),
independent of N**2.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask
import dask.threaded
import numpy as np
from dask.callbacks import Callback
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ..config import KernelDtype, config_default
from ..errors import IncompleteRunError
from ..store import SAMPLE_CHUNK, RunStore
from .tiles import (  # noqa: F401 (transposed and FLOAT32_SCALE_LIMIT: imported from here)
    FLOAT32_SCALE_LIMIT,
    CentredColumns,
    TilePlan,
    missing_tiles,
    read_column_block,
    tile_task,
    transposed,
)
from .usable import UsableDraws, usable_draws

if TYPE_CHECKING:
    from .cluster import ReduceCluster

TILE_KEY = "kernel-tile-"  # dask key prefix of the tile tasks
DEFAULT_CACHE_BYTES = int(config_default("reduce.cache_gb") * 2**30)  # 4 GiB
STATS_SLICE = 512  # columns converted to float64 at a time in pass 1



@dataclass
class ReduceReport:
    draws_used: int
    chains_used: list[int]
    n: int
    block_size: int
    partial: bool
    seconds: float
    excluded: dict[str, list[int]] = field(default_factory=dict)
    tiles: int = 0  # upper-triangle tiles of the kernel (dask engine)
    tiles_resumed: int = 0  # of them, done by an earlier, interrupted reduce
    tile_seconds: float = 0.0  # time of the tile phase (pass 2)
    scheduler: dict[str, Any] = field(default_factory=dict)  # where the tasks ran

    def as_attrs(self) -> dict:
        return {
            "draws_used": self.draws_used,
            "chains_used": self.chains_used,
            "n": self.n,
            "block_size": self.block_size,
            "partial": self.partial,
            "seconds": round(self.seconds, 3),
            "excluded": self.excluded,
            "tiles": self.tiles,
            "tiles_resumed": self.tiles_resumed,
            "tile_seconds": round(self.tile_seconds, 3),
            **self.scheduler,
        }


def record_report(
    store: RunStore, engine: str, m: int, used_chains: list[int], n: int, block: int,
    excluded: dict, t0: float, usable_digest: str = "", **done: Any,
) -> ReduceReport:
    """What a reduce used, stored in the group attributes (``reduce``) and returned;
    ``done`` adds what the dask engine did (tiles, tiles_resumed, tile_seconds, scheduler)."""
    report = ReduceReport(
        draws_used=m,
        chains_used=used_chains,
        n=n,
        block_size=block,
        partial=bool(excluded["failed_chains"] or excluded["not_done"]),
        seconds=time.perf_counter() - t0,
        excluded=excluded,
        **done,
    )
    store.set_reduce_record({**report.as_attrs(), "engine": engine,
                             "usable_digest": usable_digest})
    return report


def peak_memory_bytes(
    m: int, block: int, threads: int, n: int = 0, cached: bool = False,
    chunk_width: int = SAMPLE_CHUNK,
) -> int:
    """The docstring's bound on reduce's working memory (not counting the interpreter)."""
    pass1 = m * chunk_width * 4 + 2 * m * STATS_SLICE * 8
    pass2 = 4 * block**2 * 8 + (0 if cached else 2 * m * block * 12)
    return (m * n * 8 if cached else 0) + threads * max(pass1, pass2)


def _what_is_missing(usable: UsableDraws, total: int) -> str:
    parts = []
    if usable.failed_chains:
        parts.append(f"failed chains {usable.failed_chains}")
    if usable.missing:
        parts.append(f"{usable.missing} of {total} draws not done")
    return "; ".join(parts) or "every draw done"


def _how_to_finish(usable: UsableDraws) -> str:
    """What completes a run. 'losskernel sample' only finishes healthy chains: a failed
    (diverged) chain is skipped on every resume, and a resume with another sampler.lr is
    refused (it would change the draws), so a failed chain is never re-run in its run."""
    if not usable.failed_chains:
        return "finish it with 'losskernel sample' or reduce the done draws with --allow-partial"
    if not usable.healthy.any():
        return ("every chain failed, and failed chains are never re-run: sample into a new "
                "output with a smaller sampler.lr")
    first = ("finish the healthy chains with 'losskernel sample', then reduce"
             if usable.missing else "reduce the healthy chains")
    return (f"failed chains are never re-run, so {first} with --allow-partial, or sample into "
            "a new output with a smaller sampler.lr")


def select_rows(store: RunStore, allow_partial: bool
                ) -> tuple[np.ndarray, list[int], dict, str]:
    """Flat (chain*T + draw) indices of the draws to use, which chains they come from, what
    was left out, and the digest of the selection (recorded: a later change makes the
    kernel stale)."""
    chains, draws, _ = store.shape
    usable = usable_draws(store)
    failed, missing = usable.failed_chains, usable.missing
    if not allow_partial and not usable.complete:
        raise IncompleteRunError(f"run is incomplete ({_what_is_missing(usable, chains * draws)})"
                                 f": {_how_to_finish(usable)}")
    rows = usable.flat_rows()
    if len(rows) < 2:
        raise IncompleteRunError(
            f"only {len(rows)} usable draws ({_what_is_missing(usable, chains * draws)}): at "
            "least 2 are needed for a covariance; "
            + ("finish the healthy chains with 'losskernel sample'" if missing else
               "sample into a new output (with a smaller sampler.lr if chains failed)")
        )
    used_chains = usable.chains_used
    excluded = {"failed_chains": failed, "not_done": usable.not_done_rows()}
    return rows, used_chains, excluded, usable.digest()


def _load_columns(
    store: RunStore, rows: np.ndarray, j0: int, j1: int, into: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of columns j0..j1; their centred values into ``into`` if given.

    Converted to float64 STATS_SLICE columns at a time, which bounds the memory
    and fixes the blocks the statistics come from (see the module docstring).
    """
    raw = read_column_block(store, rows, j0, j1)
    mean, var = np.empty(j1 - j0), np.empty(j1 - j0)
    for a in range(0, j1 - j0, STATS_SLICE):
        b = min(a + STATS_SLICE, j1 - j0)
        x = raw[:, a:b].astype(np.float64)
        mean[a:b], var[a:b] = x.mean(axis=0), x.var(axis=0, ddof=1)
        if into is not None:
            np.subtract(x, mean[a:b], out=into[:, j0 + a:j0 + b])
    return mean, var


@dataclass
class CentredDraws:
    """Pass 1's column statistics, and the centred float64 draws by column block.

    ``column(j0, j1)`` is the (M, j1 - j0) block of x - mean: a view of the
    kept matrix when ``cached``, else read from the store again (the same bits:
    one elementwise float64 subtraction).
    """

    mean: np.ndarray
    var: np.ndarray
    column: Callable[[int, int], np.ndarray]
    cached: bool
    matrix: np.ndarray | None = None  # the kept (M, N) centred draws when ``cached``


def centred_draws(
    store: RunStore, rows: np.ndarray, threads: int, cache_bytes: int = 0,
    cluster: ReduceCluster | None = None,
) -> CentredDraws:
    """Pass 1: the pooled mean and (ddof=1) variance of every column of the draw matrix.

    The draws are read in blocks of whole stored chunks (each chunk decoded
    once), ``threads`` blocks at a time; when the centred draws (M x N float64)
    fit in ``cache_bytes`` they are kept from this same read. The column blocks
    the statistics come from depend only on the store's chunking (a one-column
    block, say, is summed pairwise by NumPy and a wider one row by row), so
    every reduce of a store centres and scales with the same bits: kernels and
    neighbour lists agree to the last bit of these statistics. On a ``cluster``
    the blocks are read by its workers and nothing is kept here.
    """
    _, _, n = store.shape
    m = len(rows)
    width = store.losses_array().chunks[2]
    xc = np.empty((m, n)) if m * n * 8 <= cache_bytes and cluster is None else None
    tasks = [dask.delayed(_load_columns, pure=False)(store, rows, j0, min(j0 + width, n), xc)
             for j0 in range(0, n, width)]
    if cluster is not None:
        parts = cluster.compute(tasks)
    else:
        parts = compute_on_threads(tasks, threads)
    mean = np.concatenate([p[0] for p in parts])
    var = np.concatenate([p[1] for p in parts])
    if xc is not None:
        return CentredDraws(mean, var, lambda j0, j1: xc[:, j0:j1], cached=True, matrix=xc)
    return CentredDraws(
        mean, var, lambda j0, j1: read_column_block(store, rows, j0, j1) - mean[j0:j1],
        cached=False,
    )


def compute_on_threads(tasks: list, threads: int) -> tuple:
    """``dask.compute(*tasks)`` on dask's threaded scheduler with ``threads`` threads.

    The scheduler is passed as a function, not by name: a name makes dask look for a
    ``distributed`` client first, and its import cost a fresh process about 0.2 s,
    more than pass 1 itself at N = 6,000, M = 800 (bench/reduce.py). Same tasks, same
    threads, same bits.
    """
    return dask.compute(*tasks, scheduler=dask.threaded.get, num_workers=threads)


def tiles_on_threads(plan: TilePlan, todo: list[tuple[int, int]], threads: int,
                     bar: tqdm) -> None:
    """Run ``tile_task`` for the tiles ``todo`` on ``threads`` threads, largest first.

    A thread pool, not dask's threaded scheduler: dask picks among independent
    tasks in an order of its own (it varied from run to run), and when the last
    tile to start is a large one the other threads idle until it ends; at
    N = 6,000, B = 2,048 (6 tiles on 2 threads) that was a tenth of the tile
    phase. Largest first (an off-diagonal tile computes a full product and
    writes its transpose too; a diagonal one half of both) keeps the end short.
    A failed tile cancels the tiles not started and raises; the tiles done stay
    flagged, so a rerun resumes.
    """
    def cost(tile: tuple[int, int]) -> int:
        (i0, i1), (j0, j1) = plan.bounds(tile[0]), plan.bounds(tile[1])
        return (i1 - i0) * (j1 - j0) * (1 if tile[0] == tile[1] else 2)

    order = sorted(todo, key=lambda tile: (-cost(tile), tile))
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="reduce-tile")
    try:
        futures = [pool.submit(tile_task, plan, i, j) for i, j in order]
        for future in as_completed(futures):
            future.result()
            bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def inverse_sd(var: np.ndarray) -> np.ndarray:
    """1 / sqrt(var), and 0 where the variance is 0 (MATH.md: rho = 0 for such a sample)."""
    sd = np.sqrt(var)
    return np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 0)


class TaskProgress(Callback):
    """A tqdm bar advanced as dask finishes the tasks whose keys start with ``prefix``."""

    def __init__(self, bar: tqdm, prefix: str) -> None:
        super().__init__()
        self.bar = bar
        self.prefix = prefix

    def _posttask(self, key, result, dsk, state, id) -> None:  # dask's signature
        if str(key).startswith(self.prefix):
            self.bar.update(1)


def reduce_store(
    store: RunStore,
    *,
    block_size: int = config_default("reduce.block_size"),
    dtype: KernelDtype | str = config_default("reduce.dtype"),
    threads: int = config_default("reduce.threads"),
    allow_partial: bool = False,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    progress: bool = False,
    cluster: ReduceCluster | None = None,
) -> ReduceReport:
    """Compute and write kernel/{mean,var,cov,corr}; returns what was used.

    The defaults are the config's (``reduce.*``): ``reduce_with_config`` passes
    a run's own settings, and a direct call without them reduces alike. The tile
    tasks run on ``threads`` threads of this process, or as a dask graph on
    ``cluster``'s workers (``reduction/cluster.py``; ``cache_bytes`` is then its
    per-worker allowance). An unfinished kernel of the same draws and settings is
    resumed: only the tiles its ``kernel/done`` mask lacks are computed.
    """
    t0 = time.perf_counter()
    rows, used_chains, excluded, digest = select_rows(store, allow_partial)
    m = len(rows)
    _, _, n = store.shape
    block = min(block_size, n)
    workers = threads or os.cpu_count() or 1
    out_dtype = KernelDtype.parse(dtype, "reduce.dtype").value
    key = hashlib.sha256(json.dumps([digest, n, block, out_dtype]).encode()).hexdigest()

    out, done = store.open_kernel(n, block, out_dtype, key)
    draws = centred_draws(store, rows, workers, 0 if cluster else cache_bytes, cluster)
    out["mean"][:] = draws.mean
    out["var"][:] = draws.var
    inv64 = inverse_sd(draws.var)
    inv_sd = {"float64": inv64, "float32": inv64.astype(np.float32)}
    columns = CentredColumns(store, rows, draws.mean, cache=draws.matrix,
                             cache_allowed=cluster is not None
                             and m * n * 8 <= cluster.cache_bytes)
    tile_plan = TilePlan(columns, inv_sd, m, n, block)
    todo = missing_tiles(done)
    bar = tqdm(total=len(todo), desc="reduce", unit="tile", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    t1 = time.perf_counter()
    if cluster is not None:
        plan = dask.delayed(tile_plan, name=f"kernel-plan-{key}")
        cluster.run([dask.delayed(tile_task, pure=False)(plan, i, j,
                                                         dask_key_name=f"{TILE_KEY}{i}-{j}")
                     for i, j in todo], bar)
        where = cluster.describe()
    else:
        # the threads already fill the cores: one BLAS thread each avoids oversubscription
        with threadpool_limits(limits=1 if workers > 1 else None, user_api="blas"):
            tiles_on_threads(tile_plan, todo, workers, bar)
        where = {"scheduler": "threads", "workers": 1, "threads": workers}
    bar.close()
    tile_seconds = time.perf_counter() - t1
    store.finish_kernel()
    blocks = done.shape[0]
    return record_report(store, "dask", m, used_chains, n, block, excluded, t0, digest,
                         tiles=blocks * (blocks + 1) // 2,
                         tiles_resumed=blocks * (blocks + 1) // 2 - len(todo),
                         tile_seconds=tile_seconds, scheduler=where)
