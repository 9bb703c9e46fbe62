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

Parallelism and output. Row blocks are independent dask tasks on P threads
(one BLAS thread each). Each task writes its rows of ``neighbours/*`` (one
chunk per array) and then flags its block in ``neighbours/done``; a rerun with
the same settings and draws skips done blocks, so an interrupted reduce
resumes and a killed task costs only its own block.

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
    inverse_sd,
    record_report,
    select_rows,
)
from .select import select_top

DENSE_ROWS = 256  # rows of a tile handled at once by the dense selection path
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


class _Running:
    """Running best-k of a block of rows, as scores where higher is better.

    ``score`` (b, k) is sorted per row by (score descending, index ascending);
    empty slots hold -inf and index -1.
    """

    def __init__(self, rows: int, k: int) -> None:
        self.k = k
        self.score = np.full((rows, k), -np.inf)
        self.index = np.full((rows, k), -1, dtype=np.int64)

    def threshold(self) -> np.ndarray:
        return self.score[:, -1]

    def merge(self, rows: np.ndarray, cols: np.ndarray, scores: np.ndarray) -> None:
        """Fold candidates (row, column, score) into the lists.

        The candidates' columns are all larger than any already listed (columns
        arrive in increasing order) and come per row in increasing column order, or
        already ranked; so after the current entries of each row they are in
        index order among equal scores, and a stable sort by (row, -score) gives
        the (score descending, index ascending) order.
        """
        if rows.size == 0:
            return
        k = self.k
        touched = np.unique(rows)
        cur_i = self.index[touched].reshape(-1)
        valid = cur_i >= 0
        all_r = np.concatenate([np.repeat(touched, k)[valid], rows])
        all_i = np.concatenate([cur_i[valid], cols])
        all_s = np.concatenate([self.score[touched].reshape(-1)[valid], scores])
        order = np.lexsort((-all_s, all_r))
        all_r, all_i, all_s = all_r[order], all_i[order], all_s[order]
        first = np.searchsorted(all_r, touched)
        counts = np.diff(np.append(first, all_r.size))
        rank = np.arange(all_r.size) - np.repeat(first, counts)
        keep = rank < k
        self.score[touched] = -np.inf
        self.index[touched] = -1
        self.score[all_r[keep], rank[keep]] = all_s[keep]
        self.index[all_r[keep], rank[keep]] = all_i[keep]

    def offer(
        self,
        tile: np.ndarray,
        sign: float,
        i0: int,
        j0: int,
        labels: np.ndarray | None,
        clip: bool,
    ) -> None:
        """Offer the tile's columns j0.. to every row; ``sign`` -1 ranks by -value (bottom).

        Only rows whose extreme value beats their current k-th best are looked at
        (a max or min per row, no copy); of those, only the entries that beat it.
        """
        thr = self.threshold()
        extreme = tile.max(axis=1) if sign > 0 else -tile.min(axis=1)
        hit = np.flatnonzero(extreme > thr)
        if hit.size == 0:
            return
        if 2 * hit.size > tile.shape[0]:  # most rows: compare in place, misses give False
            hit = np.arange(tile.shape[0])
            sub = tile
        else:
            sub = tile[hit]
        cut = thr[hit, None]
        above = np.greater(sub, cut) if sign > 0 else np.less(sub, -cut)
        count = int(np.count_nonzero(above))
        if count > 4 * hit.size * self.k:  # many candidates: the tile's own top-k per row first
            del above
            rows, cols, scores = self._dense_candidates(sub, hit, sign, i0, j0, labels, clip)
        else:
            r_loc, c = np.divmod(np.flatnonzero(above), sub.shape[1])
            rows, cols = hit[r_loc], c + j0
            scores = sub[r_loc, c] * sign
            keep = cols != rows + i0
            if labels is not None:
                keep &= labels[rows + i0] != labels[cols]
            rows, cols, scores = rows[keep], cols[keep], scores[keep]
            if clip:
                np.clip(scores, -1.0, 1.0, out=scores)
        self.merge(rows, cols, scores)

    def _dense_candidates(
        self, sub: np.ndarray, hit: np.ndarray, sign: float, i0: int, j0: int,
        labels: np.ndarray | None, clip: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per hit row, the tile's best k (excluded columns masked), via ``select_top``."""
        w = sub.shape[1]
        out_r, out_c, out_s = [], [], []
        for a in range(0, hit.size, DENSE_ROWS):
            rows = hit[a:a + DENSE_ROWS]
            part = sub[a:a + DENSE_ROWS] * sign
            if clip:
                np.clip(part, -1.0, 1.0, out=part)
            local = rows + i0 - j0  # self's column in this tile, if it is here
            inside = (local >= 0) & (local < w)
            part[np.flatnonzero(inside), local[inside]] = -np.inf
            if labels is not None:
                part[labels[rows + i0, None] == labels[None, j0:j0 + w]] = -np.inf
            idx, val = select_top(part, self.k)
            ok = idx >= 0
            out_r.append(np.broadcast_to(rows[:, None], idx.shape)[ok])
            out_c.append(idx[ok] + j0)
            out_s.append(val[ok])
        return np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_s)

    def result(self, sign: float) -> tuple[np.ndarray, np.ndarray]:
        """(index, value) with value = sign * score; -1 and NaN in empty slots."""
        empty = self.index < 0
        value = np.where(empty, np.nan, self.score * sign)
        return self.index.copy(), value


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
    _after_block: Callable[[int], None] | None = None,
) -> NeighboursReport:
    """Compute and write ``neighbours/*`` (and, with ``write_moments``, kernel/mean and var).

    ``exclude_same_label`` takes effect only when the store has labels with at
    least two values (as in the analysis). ``write_moments`` is False when a
    dense reduce of the same draws has just written the kernel group.
    ``_after_block`` is a test hook called with each block's index after its
    rows are written and before it is marked done.
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

    draws = centred_draws(store, rows, workers)  # statistics only: the cache is built below
    mean, var = draws.mean, draws.var
    if write_moments:
        out = store.create_kernel(n, block, "float64", dense=False)
        out["mean"][:] = mean
        out["var"][:] = var
    scale = (inverse_sd(var) if metric is NeighboursMetric.CORR else np.ones(n)) / np.sqrt(m - 1)
    arrays, done = store.open_stream_neighbours(n, k, k_bottom, block, attrs)
    cached = m * n * 8 <= cache_bytes

    def columns(j0: int, j1: int) -> np.ndarray:
        """(j1 - j0, M) contiguous a_j of samples j0..j1, read from the store."""
        return np.ascontiguousarray((draws.column(j0, j1) * scale[j0:j1]).T)

    if cached:
        a = np.empty((n, m))
        for j0 in range(0, n, block):
            a[j0:j0 + block] = columns(j0, min(j0 + block, n))

        def block_of(j0: int, j1: int) -> np.ndarray:
            return a[j0:j1]
    else:
        block_of = columns

    clip = metric is NeighboursMetric.CORR

    def run_block(b: int) -> int:
        i0, i1 = b * block, min((b + 1) * block, n)
        left = block_of(i0, i1)
        top = _Running(i1 - i0, k)
        bottom = _Running(i1 - i0, k_bottom) if k_bottom else None
        buf = np.empty((i1 - i0, block))
        for j0 in range(0, n, block):
            j1 = min(j0 + block, n)
            tile = buf[:, : j1 - j0]
            np.matmul(left, block_of(j0, j1).T, out=tile)
            top.offer(tile, 1.0, i0, j0, labels, clip)
            if bottom is not None:
                bottom.offer(tile, -1.0, i0, j0, labels, clip)
        arrays["top_index"][i0:i1], arrays["top_value"][i0:i1] = top.result(1.0)
        if bottom is not None:
            arrays["bottom_index"][i0:i1], arrays["bottom_value"][i0:i1] = bottom.result(-1.0)
        if _after_block is not None:
            _after_block(b)
        arrays["done"][b] = True
        return b

    todo = [int(b) for b in np.flatnonzero(~done)]
    bar = tqdm(total=len(todo), desc="neighbours", unit="row block", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    tasks = [dask.delayed(run_block, pure=False)(b, dask_key_name=f"{BLOCK_KEY}{b}")
             for b in todo]
    with threadpool_limits(limits=1 if workers > 1 else None, user_api="blas"), \
            TaskProgress(bar, BLOCK_KEY), dask.config.set(scheduler="threads", num_workers=workers):
        dask.compute(*tasks)
    bar.close()

    report = NeighboursReport(
        n=n, k=k, k_bottom=k_bottom, metric=metric.value, exclude_same_label=excluding,
        block_size=block, draws_used=m, blocks=len(done), blocks_resumed=int(done.sum()),
        cached=cached, seconds=time.perf_counter() - t0, chains_used=used_chains,
        partial=bool(excluded["failed_chains"] or excluded["not_done"]),
    )
    store.finish_stream_neighbours({"seconds": round(report.seconds, 3)})
    if write_moments:  # no dense reduce recorded this one: record it here
        record_report(store, "dask", m, used_chains, n, block, excluded, t0, digest)
    info = store.reduce_record
    info["kernel"] = "neighbours" if write_moments else "both"
    info["neighbours"] = report.as_attrs()
    store.set_reduce_record(info)
    return report
