"""One tile of the dense kernel, as a task that threads or a dask cluster's workers run.

A tile (i, j >= i) is the product of the centred column blocks i and j, scaled
to covariance and correlation and written with its transpose straight into the
store (``write_tile``), then flagged in ``kernel/done`` (``tile_task``). The
task's arguments are a ``TilePlan`` (one dask key shared by every tile: the store,
the selected draws, the column means and inverse standard deviations) and the
tile's block indices, so the same tasks run on a pool of threads, where the
plan holds the centred draws in memory, and as a dask graph on a cluster, where
each worker process unpickles the plan once and reads the draws from the shared
store itself: the whole centred matrix once per worker when it fits the cache
allowance, else two column blocks per tile. Both give the same bits: a centred
block is one elementwise float64 subtraction of the same stored values, whether
it is a view of the kept matrix or read again (kernel.py's module docstring).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ..store import RunStore

# float32 scaling of a correlation tile under/overflows when 1/(sd_i sd_j) exceeds this
FLOAT32_SCALE_LIMIT = 1e30
PROCESS = f"{socket.gethostname()}:{os.getpid()}"  # who computed a tile (the reduce record)
SCALE_STRIP = 64  # rows of a tile scaled and transposed at a time (in cache)
TRANSPOSE_STRIP = 8  # rows copied into a transpose at a time


def read_column_block(store: RunStore, rows: np.ndarray, j0: int, j1: int) -> np.ndarray:
    """Columns j0..j1 of the (M, N) float32 draw matrix (the selected rows only)."""
    chains, draws, _ = store.shape
    block = store.read_loss_columns(j0, j1).reshape(chains * draws, j1 - j0)
    return block[rows] if len(rows) != chains * draws else block


def transposed(a: np.ndarray, strip: int = TRANSPOSE_STRIP) -> np.ndarray:
    """A C-contiguous copy of ``a.T``, made in strips of rows that stay in cache.

    NumPy's plain copy of a transposed view walks the source a whole row apart
    and took about twice as long on B x B tiles (bench/components.py).
    """
    out = np.empty((a.shape[1], a.shape[0]), a.dtype)
    for r in range(0, a.shape[0], strip):
        out[:, r:r + strip] = a[r:r + strip].T
    return out


# The kernel arrays' codecs (store/layout.py array_codecs(compress=False)): raw little-endian
# values followed by their crc32c, the chunk format write_chunk encodes itself.
RAW_WITH_CHECKSUM = (BytesCodec(endian="little"), Crc32cCodec())


def write_chunk(arr: zarr.Array | np.ndarray, start: tuple[int, int], values: np.ndarray) -> None:
    """Write ``values`` at ``start``, the corner of one chunk of ``arr``, as that whole chunk
    (the top-left part of an edge chunk, whose rest holds the fill value, as Zarr stores it).

    For the kernel arrays (``RAW_WITH_CHECKSUM``: no compression) the chunk is
    encoded here, per the Zarr v3 spec (the values' little-endian bytes, then the
    crc32c of those bytes as 4 little-endian bytes), and handed to the array's store
    under the array's own chunk key: one copy of the values. Zarr's own write of a
    whole chunk copies it three times (into a chunk buffer, to bytes, and again to
    append the checksum), all on its one I/O thread, which took as much CPU time as
    scaling the tiles (bench/reduce.py). The bytes stored are the same (a test
    compares the chunk files); an array with other codecs is written by Zarr, and
    an in-memory NumPy array (bench/reduce_cluster.py times a tile into memory) by
    plain assignment.
    """
    if not isinstance(arr, zarr.Array):
        arr[start[0]:start[0] + values.shape[0], start[1]:start[1] + values.shape[1]] = values
        return
    chunk = arr.metadata.chunk_grid.chunk_shape
    (r0, c0), (rows, cols) = start, values.shape
    whole = (len(chunk) == 2 and r0 % chunk[0] == 0 and c0 % chunk[1] == 0
             and rows == min(chunk[0], arr.shape[0] - r0)
             and cols == min(chunk[1], arr.shape[1] - c0))
    if tuple(arr.metadata.codecs) != RAW_WITH_CHECKSUM or not whole:
        arr[r0:r0 + rows, c0:c0 + cols] = values
        return
    block = (r0 // chunk[0], c0 // chunk[1])
    dtype = np.dtype(arr.dtype).newbyteorder("<")
    raw = np.empty(chunk[0] * chunk[1] * dtype.itemsize + 4, np.uint8)
    body = raw[:-4].view(dtype).reshape(chunk)
    if values.shape != tuple(chunk):
        body[...] = arr.metadata.fill_value
    body[:rows, :cols] = values
    raw[-4:] = np.array([google_crc32c.value(raw[:-4])], "<u4").view(np.uint8)
    key = "/".join(part for part in (arr.store_path.path, arr.metadata.encode_chunk_key(block))
                   if part)
    sync(arr.store_path.store.set(key, default_buffer_prototype().buffer.from_array_like(raw)))


def scaled_in_strips(
    prod: np.ndarray, m: int, scale_i: np.ndarray, scale_j: np.ndarray, dtype: np.dtype,
    strip: int = SCALE_STRIP,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An off-diagonal tile's float32 covariance and correlation, and their transposes.

    The same elementwise operations as scaling whole tiles (cov = prod / (M - 1)
    rounded once, corr = cov * scale_i * scale_j clipped to [-1, 1]: the same
    bits), done ``strip`` rows at a time so that each strip is scaled and copied
    into the transposes while it is in cache, instead of four passes over
    B x B arrays in memory (bench/reduce.py).
    """
    rows, cols = prod.shape
    cov, corr = np.empty((rows, cols), dtype), np.empty((rows, cols), dtype)
    cov_t, corr_t = np.empty((cols, rows), dtype), np.empty((cols, rows), dtype)
    col_scale = scale_j[None, :]
    for r in range(0, rows, strip):
        e = min(r + strip, rows)
        c, k = cov[r:e], corr[r:e]
        np.divide(prod[r:e], m - 1, out=c, casting="same_kind")
        np.multiply(c, scale_i[r:e, None], out=k)
        k *= col_scale
        np.clip(k, -1.0, 1.0, out=k)
        for q in range(r, e, TRANSPOSE_STRIP):
            cov_t[:, q:q + TRANSPOSE_STRIP] = cov[q:min(q + TRANSPOSE_STRIP, e)].T
            corr_t[:, q:q + TRANSPOSE_STRIP] = corr[q:min(q + TRANSPOSE_STRIP, e)].T
    return cov, corr, cov_t, corr_t


def write_tile(
    column: Callable[[int, int], np.ndarray],
    i0: int,
    i1: int,
    j0: int,
    j1: int,
    m: int,
    inv_sd: dict[str, np.ndarray],
    out: dict,
) -> int:
    """Covariance and correlation of column blocks i, j (j >= i); writes them and transposes.

    ``inv_sd`` holds 1/sd as float64 and float32. The product is float64; with
    float32 outputs it is rounded once and the correlation is scaled from that in
    float32 (half the memory traffic), unless 1/(sd_i sd_j) is so large that
    float32 would under- or overflow: then it is scaled in float64 first.
    """
    left = column(i0, i1)
    diagonal = i0 == j0
    prod = left.T @ (left if diagonal else column(j0, j1))
    dtype = out["cov"].dtype
    inv_i, inv_j = inv_sd["float64"][i0:i1], inv_sd["float64"][j0:j1]
    if dtype == np.float64 or inv_i.max() * inv_j.max() > FLOAT32_SCALE_LIMIT:
        prod /= m - 1
        if diagonal:
            prod = symmetrized(prod)  # exact symmetry on the diagonal tile
        corr = prod * inv_i[:, None]
        corr *= inv_j[None, :]
        cov, corr = prod.astype(dtype, copy=False), corr.astype(dtype, copy=False)
        np.clip(corr, -1.0, 1.0, out=corr)
    elif not diagonal:
        scale = inv_sd["float32"]
        cov, corr, cov_t, corr_t = scaled_in_strips(prod, m, scale[i0:i1], scale[j0:j1], dtype)
        for name, tile, tile_t in (("cov", cov, cov_t), ("corr", corr, corr_t)):
            write_chunk(out[name], (i0, j0), tile)
            write_chunk(out[name], (j0, i0), tile_t)
        return cov.size
    else:
        cov = np.empty(prod.shape, dtype)
        np.divide(prod, m - 1, out=cov, casting="same_kind")
        del prod
        cov = symmetrized(cov)
        scale = inv_sd["float32"]
        corr = np.multiply(cov, scale[i0:i1, None])
        corr *= scale[None, j0:j1]
        np.clip(corr, -1.0, 1.0, out=corr)
    if diagonal:
        corr = symmetrized(corr)
    for name, tile in (("cov", cov), ("corr", corr)):
        write_chunk(out[name], (i0, j0), tile)
        if not diagonal:
            write_chunk(out[name], (j0, i0), transposed(tile))
    return cov.size


def symmetrized(a: np.ndarray) -> np.ndarray:
    """(a + a.T) / 2 of a square tile, with a.T copied in cache-friendly strips first: the
    same elementwise sums (the same bits) without adding across a strided view."""
    return (a + transposed(a)) / 2


class CentredColumns:
    """The centred draws x - mean by column block: kept in memory, or read from the store.

    ``cache`` is the (M, N) float64 matrix when the caller already holds it (the
    threaded reduce's pass 1 keeps it). It is never pickled: a worker process that
    receives this object builds its own copy on first use when ``cache_allowed``
    (M N 8 bytes within its allowance), else re-reads the blocks each tile needs.
    """

    def __init__(self, store: RunStore, rows: np.ndarray, mean: np.ndarray,
                 cache: np.ndarray | None = None, cache_allowed: bool = False) -> None:
        self.store = store
        self.rows = rows
        self.mean = mean
        self.cache = cache
        self.cache_allowed = cache_allowed
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["cache"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def read(self, j0: int, j1: int) -> np.ndarray:
        """Centred columns j0..j1, read from the store."""
        return read_column_block(self.store, self.rows, j0, j1) - self.mean[j0:j1]

    def column(self, j0: int, j1: int) -> np.ndarray:
        """The (M, j1 - j0) centred block: a view of the kept matrix, or read."""
        if self.cache is None and self.cache_allowed:
            with self._lock:  # the threads of one worker build it once
                if self.cache is None:
                    self.cache = self._build()
        return self.cache[:, j0:j1] if self.cache is not None else self.read(j0, j1)

    def _build(self) -> np.ndarray:
        n = self.store.shape[2]
        width = self.store.losses_array().chunks[2]
        out = np.empty((len(self.rows), n))
        for j0 in range(0, n, width):
            j1 = min(j0 + width, n)
            out[:, j0:j1] = self.read(j0, j1)
        return out


class TilePlan:
    """What every tile task shares: the centred columns, 1/sd, M, N, B and the store."""

    def __init__(self, columns: CentredColumns, inv_sd: dict[str, np.ndarray], m: int,
                 n: int, block: int) -> None:
        self.columns = columns
        self.inv_sd = inv_sd
        self.m, self.n, self.block = m, n, block
        self._arrays: dict[str, zarr.Array] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def arrays(self) -> dict[str, zarr.Array]:
        """kernel/cov, kernel/corr and kernel/done, opened once per process."""
        if self._arrays is None:
            store = self.columns.store
            self._arrays = {name: store.kernel_array(name) for name in ("cov", "corr", "done")}
        return self._arrays

    def bounds(self, b: int) -> tuple[int, int]:
        return b * self.block, min((b + 1) * self.block, self.n)


def tile_task(plan: TilePlan, bi: int, bj: int) -> str:
    """Compute and write tile (bi, bj) and flag it done; the process that did it."""
    out = plan.arrays()
    (i0, i1), (j0, j1) = plan.bounds(bi), plan.bounds(bj)
    write_tile(plan.columns.column, i0, i1, j0, j1, plan.m, plan.inv_sd, out)
    out["done"][bi, bj] = True
    return PROCESS


def missing_tiles(done: np.ndarray) -> list[tuple[int, int]]:
    """The upper-triangle tiles (i, j >= i) not flagged in ``done``, row by row."""
    blocks = done.shape[0]
    return [(i, j) for i in range(blocks) for j in range(i, blocks) if not done[i, j]]
