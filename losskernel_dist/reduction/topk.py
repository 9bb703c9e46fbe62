"""Streaming top-k neighbours of every sample, straight from the draws: never the N x N kernel.

For N = 1,000,000 the dense kernel is 8 TB of float64 per matrix, but UMAP, the
neighbour table, attribute lift and thumbnails need only each sample's k most
(and least) similar samples. This reduce computes them blockwise from the
draws with the estimators of MATH.md, exactly as the dense reduce would rank
its ``kernel/corr`` (or ``kernel/cov``):

    a_j = (x_j - mean_j) * s_j / sqrt(M - 1),   s_j = 1/sd_j (corr; 0 where sd_j = 0) or 1 (cov)
    score_ij = a_i . a_j                        (= rho_ij, clipped to [-1, 1], or K_ij)

with the pass-1 mean and variance of ``kernel.centred_draws`` (float64, two-pass).
For each row block i (B rows) the products with all N columns are formed one
B x B tile at a time and folded into a running top-k per row; only the tile
and the running lists exist, never a row of N values.

Selection. Self is always excluded; with ``exclude_same_label`` so is every
sample of the row's label (paper Appendix B), as ``analysis/neighbours.py``
does. The order is that of a stable sort: by score (descending for top,
ascending for bottom), ties broken by the smaller sample index, so the lists
equal ``analysis.neighbours.compute_neighbours`` over the dense kernel (up to
the order of values that tie within float rounding). A tile
only matters for rows whose extreme value beats their current k-th best; for
those rows the few entries that do become candidates (sparse path), or, when
many do (the first tiles), the tile's own top-k per row is taken with
``select_top`` (dense path); either way the candidates and the current list
are merged by one lexicographic sort. Columns arrive in increasing index
order, so a later column tying the current k-th best correctly loses.

Parallelism and output. Row blocks are independent dask tasks (``neighbour_block``
over one shared ``NeighbourPlan``) on P threads (one BLAS thread each) or on the
workers of a dask cluster (``reduce.scheduler``, ``cluster.py``), which read the
draws from the store themselves. Each task writes its rows of ``neighbours/*``
(one chunk per array) and then flags its block in ``neighbours/done``; a rerun of
an unfinished reduce with the same settings and draws skips done blocks, so an
interrupted reduce resumes and a killed task or worker costs only its own block.

Memory (bytes), P threads, M draws, block B, k = k_top + k_bottom:

    cached draws   M * N * 8          when <= cache_bytes (else 0, and each tile's
                                      column block is re-read from the store)
    per thread     about 2.2 * B**2 * 8 + 2 * M * B * 8 + 40 * B * k + 6 * 256 * B * 8

(the tile, a copy of its hit rows, the row and column blocks, the running lists
and merge arrays, one 256-row slice of the dense path), independent of N**2,
plus the interpreter and a few tens of MiB of buffers zarr and dask allocate.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ..config import ConfigError, NeighboursMetric, config_default
from ..store import RunStore
from .kernel import (
    DEFAULT_CACHE_BYTES,
    TaskProgress,
    centred_draws,
    compute_on_threads,
    inverse_sd,
    record_report,
    select_rows,
)
from .running import DENSE_ROWS, RunningTopK
from .tiles import PROCESS, CentredColumns

if TYPE_CHECKING:
    from .cluster import ReduceCluster

BLOCK_KEY = "neighbours-block-"  # dask key prefix of the row-block tasks


@dataclass
class NeighboursReport:
    """What a neighbours reduce used and did."""

    n: int
    k: int
    k_bottom: int
    metric: str
    exclude_same_label: bool
    block_size: int
    draws_used: int
    blocks: int
    blocks_resumed: int
    cached: bool
    seconds: float
    partial: bool = False
    chains_used: list[int] = field(default_factory=list)
    scheduler: dict[str, Any] = field(default_factory=dict)  # where the row blocks ran

    def as_attrs(self) -> dict:
        return {
            "n": self.n, "k": self.k, "k_bottom": self.k_bottom, "metric": self.metric,
            "exclude_same_label": self.exclude_same_label, "block_size": self.block_size,
            "draws_used": self.draws_used, "blocks": self.blocks,
            "blocks_resumed": self.blocks_resumed, "draws_cached": self.cached,
            "seconds": round(self.seconds, 3),
        }


def peak_memory_bytes(m: int, n: int, block: int, k: int, threads: int, cached: bool) -> int:
    """The module docstring's bound on the neighbours reduce's working memory."""
    per_thread = (2.2 * block**2 * 8 + 2 * m * block * 8 + 40 * block * k
                  + 6 * DENSE_ROWS * block * 8)
    return int((m * n * 8 if cached else 0) + threads * per_thread)


def check_k(k: int, n: int, key: str, allow_zero: bool = False) -> None:
    """``k`` neighbours must exist among the N - 1 other samples; a ConfigError naming ``key``."""
    low = 0 if allow_zero else 1
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < low:
        raise ConfigError(f"{key}: must be an integer >= {low}, got {k!r}")
    if k >= n:
        raise ConfigError(
            f"{key}: must be < N = {n} (a sample has N - 1 = {n - 1} others; self is "
            f"excluded), got {k}"
        )


class NeighbourPlan:
    """What every row-block task shares: the scaled draws a_j (by column block, kept in
    memory when ``cached``, per process), the selection settings and the output arrays.

    Pickled to each worker once (without the kept draws, which a worker builds
    itself from the store); on dask's threaded scheduler, one object for all threads.
    """

    def __init__(self, columns: CentredColumns, scale: np.ndarray, labels: np.ndarray | None,
                 k: int, k_bottom: int, clip: bool, block: int, cached: bool,
                 arrays: dict[str, Any], after_block: Callable[[int], None] | None) -> None:
        self.columns, self.scale, self.labels = columns, scale, labels
        self.k, self.k_bottom, self.clip, self.block = k, k_bottom, clip, block
        self.n = len(scale)
        self.cached, self.arrays, self.after_block = cached, arrays, after_block
        self.a: np.ndarray | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "a": None}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def read(self, j0: int, j1: int) -> np.ndarray:
        """(j1 - j0, M) contiguous a_j of samples j0..j1, read from the store."""
        return np.ascontiguousarray((self.columns.read(j0, j1) * self.scale[j0:j1]).T)

    def block_of(self, j0: int, j1: int) -> np.ndarray:
        """a_j of samples j0..j1: from the kept (N, M) matrix when ``cached``, else read."""
        if self.cached and self.a is None:
            with self._lock:  # the threads of one process build it once
                if self.a is None:
                    a = np.empty((self.n, len(self.columns.rows)))
                    for j0_ in range(0, self.n, self.block):
                        a[j0_:j0_ + self.block] = self.read(j0_, min(j0_ + self.block, self.n))
                    self.a = a
        return self.a[j0:j1] if self.a is not None else self.read(j0, j1)


def neighbour_block(plan: NeighbourPlan, b: int) -> str:
    """Row block ``b``: its rows against every column block, folded into running top-k
    lists, written, then flagged done; returns the process that did it."""
    block, n, labels, clip = plan.block, plan.n, plan.labels, plan.clip
    i0, i1 = b * block, min((b + 1) * block, n)
    left = plan.block_of(i0, i1)
    top = RunningTopK(i1 - i0, plan.k)
    bottom = RunningTopK(i1 - i0, plan.k_bottom) if plan.k_bottom else None
    buf = np.empty((i1 - i0, block))
    for j0 in range(0, n, block):
        j1 = min(j0 + block, n)
        tile = buf[:, : j1 - j0]
        # the diagonal tile multiplies ``left`` by itself whether or not the draws are
        # kept (NumPy then uses a symmetric product, whose rounding differs from gemm's)
        right = left if j0 == i0 else plan.block_of(j0, j1)
        np.matmul(left, right.T, out=tile)
        top.offer(tile, 1.0, i0, j0, labels, clip)
        if bottom is not None:
            bottom.offer(tile, -1.0, i0, j0, labels, clip)
    arrays = plan.arrays
    arrays["top_index"][i0:i1], arrays["top_value"][i0:i1] = top.result(1.0)
    if bottom is not None:
        arrays["bottom_index"][i0:i1], arrays["bottom_value"][i0:i1] = bottom.result(-1.0)
    if plan.after_block is not None:
        plan.after_block(b)
    arrays["done"][b] = True
    return PROCESS


def _settings_key(settings: dict, rows: np.ndarray) -> str:
    """Digest of the settings and the draws used: equal keys mean resumable output."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return digest.hexdigest()


def reduce_neighbours(
    store: RunStore,
    *,
    k: int = config_default("reduce.neighbours_k"),
    k_bottom: int = config_default("reduce.neighbours_bottom_k"),
    metric: NeighboursMetric | str = config_default("reduce.neighbours_metric"),
    exclude_same_label: bool = config_default("analysis.exclude_same_label"),
    block_size: int = config_default("reduce.block_size"),
    threads: int = config_default("reduce.threads"),
    allow_partial: bool = False,
    write_moments: bool = True,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    progress: bool = False,
    cluster: ReduceCluster | None = None,
    _after_block: Callable[[int], None] | None = None,
) -> NeighboursReport:
    """Compute and write ``neighbours/*`` (and, with ``write_moments``, kernel/mean and var).

    ``exclude_same_label`` takes effect only when the store has labels with at
    least two values (as in the analysis). ``write_moments`` is False when a
    dense reduce of the same draws has just written the kernel group.
    The row blocks run on dask's threaded scheduler with ``threads`` threads, or
    on ``cluster``'s workers (``reduction/cluster.py``; ``cache_bytes`` is then its
    per-worker allowance). ``_after_block`` is a test hook called with each
    block's index after its rows are written and before it is marked done.
    """
    t0 = time.perf_counter()
    metric = NeighboursMetric.parse(metric, "reduce.neighbours_metric")
    _, _, n = store.shape
    check_k(k, n, "reduce.neighbours_k")
    check_k(k_bottom, n, "reduce.neighbours_bottom_k", allow_zero=True)
    rows, used_chains, excluded, digest = select_rows(store, allow_partial)
    m = len(rows)
    block = min(block_size, n)
    labels = store.labels()
    excluding = bool(exclude_same_label and labels is not None and np.unique(labels).size >= 2)
    labels = labels if excluding else None
    workers = threads or os.cpu_count() or 1
    settings = {"metric": metric.value, "k": k, "k_bottom": k_bottom,
                "exclude_same_label": excluding, "block_size": block, "n": n, "draws_used": m,
                "chains_used": used_chains}
    attrs = {**settings, "key": _settings_key(settings, rows),
             "order": "score descending (top) / ascending (bottom); ties by smaller index",
             "exclude_self": True}

    draws = centred_draws(store, rows, workers, cluster=cluster)  # statistics only
    mean, var = draws.mean, draws.var
    if write_moments:
        out = store.create_kernel(n, block, "float64", dense=False)
        out["mean"][:] = mean
        out["var"][:] = var
    scale = (inverse_sd(var) if metric is NeighboursMetric.CORR else np.ones(n)) / np.sqrt(m - 1)
    arrays, done = store.open_stream_neighbours(n, k, k_bottom, block, attrs)
    cached = m * n * 8 <= (cluster.cache_bytes if cluster is not None else cache_bytes)
    plan = NeighbourPlan(CentredColumns(store, rows, mean), scale, labels, k, k_bottom,
                         metric is NeighboursMetric.CORR, block, cached, arrays, _after_block)
    shared = dask.delayed(plan, name=f"neighbours-plan-{attrs['key']}")

    todo = [int(b) for b in np.flatnonzero(~done)]
    bar = tqdm(total=len(todo), desc="neighbours", unit="row block", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    tasks = [dask.delayed(neighbour_block, pure=False)(shared, b, dask_key_name=f"{BLOCK_KEY}{b}")
             for b in todo]
    if cluster is not None:
        cluster.run(tasks, bar)
        where = cluster.describe()
    else:
        with threadpool_limits(limits=1 if workers > 1 else None, user_api="blas"), \
                TaskProgress(bar, BLOCK_KEY):
            compute_on_threads(tasks, workers)
        where = {"scheduler": "threads", "workers": 1, "threads": workers}
    bar.close()

    report = NeighboursReport(
        n=n, k=k, k_bottom=k_bottom, metric=metric.value, exclude_same_label=excluding,
        block_size=block, draws_used=m, blocks=len(done), blocks_resumed=int(done.sum()),
        cached=cached, seconds=time.perf_counter() - t0, chains_used=used_chains,
        partial=bool(excluded["failed_chains"] or excluded["not_done"]), scheduler=where,
    )
    store.finish_stream_neighbours({"seconds": round(report.seconds, 3)})
    if write_moments:  # no dense reduce recorded this one: record it here
        record_report(store, "dask", m, used_chains, n, block, excluded, t0, digest,
                      scheduler=where)
    info = store.reduce_record
    info["kernel"] = "neighbours" if write_moments else "both"
    info["neighbours"] = {**report.as_attrs(), **where}
    store.set_reduce_record(info)
    return report
