"""Streamed top-k neighbours with torch: every tile a matrix product on a device, the lists kept there.

The reduce of ``topk.py`` (the dask engine) with its work moved to a torch device,
a GPU: the same estimators, the same scaled draws a_j (built on the host from
pass 1's statistics, to the same bits), the same selection rules and the same
store layout (``neighbours/*``, one chunk per row block, ``neighbours/done``):

    for each row block not done (B rows):         left = a[i0:i1]             (B, M)
        for each column tile (W columns):         s = left @ a[j0:j1].T       (B, W) float64
            excluded entries -> -inf              (self, same label, non-finite scores)
            candidates = the tile's best k per row          (top_k_stable)
            lists = the best k of (lists, candidates)        (B, 2k) -> (B, k)
        write the block's rows, then flag it in neighbours/done

The bottom lists are the same code on -s. Only the draws, one tile and the lists
live on the device; a row block's lists go to the host once, when it is written.

Tie rule, the dask engine's and ``select_top``'s: per row, the order of a stable
sort by score (descending for top, ascending for bottom), so an exact tie goes to
the smaller sample index. ``torch.topk`` returns the right values but any of the
entries tied at the k-th value, in any order; rows where more entries tie there
than were taken get the first ones along the row instead (a cumulative count),
and the k kept are ordered by comparing (score, position) pairwise. Columns come
in increasing order and the running list goes first in each merge, so a tie
across tiles also goes to the smaller index. The scores come from the device's
BLAS, not NumPy's: values agree with the dask engine to float64 rounding, exact
ties (zero variance gives 0, a duplicated sample's clipped correlation 1) are
broken identically, and two samples whose scores differ only by rounding may come
out in either order, as between the dask engine and the dense kernel's lists.

Resume: the dask engine's per-row-block done mask. The settings key adds the
engine (``torch:cuda`` or ``torch:cpu``) and the tile width W, which move the last
bits: a rerun with the same settings resumes an interrupted torch reduce, and its
lists equal an uninterrupted run's bit for bit on the same device; a run with the
other engine, device or W starts the group again.

Memory. Device: the scaled draws (N M 8 bytes) when they fit ``device_cache_bytes``
(default half a CUDA device's free memory; on the CPU ``cache_bytes``), else one
column tile of them read from the store per tile; plus about 4 B W 8 bytes for a
tile, its negation and the masks. Host: pass 1 (``kernel.centred_draws``, its
centred draws kept within ``cache_bytes``) and one block in transit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import NeighboursMetric, config_default
from ..distributed import select_device
from ..store import RunStore
from .kernel import DEFAULT_CACHE_BYTES, centred_draws, inverse_sd, record_report, select_rows
from .topk import NeighboursReport, check_k

TILE_BYTES = 256 << 20  # a (B, W) float64 score tile on a CUDA device: W = TILE_BYTES / (8 B)
NEG_INF = -math.inf


def _order(value: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's entries sorted by value descending, ties by the smaller position.

    Positions must be distinct within a row. Every pair is compared (rows are k
    wide, k ~ 10-50), so no reliance on a sort's stability on the device.
    """
    v_a, v_b = value[:, :, None], value[:, None, :]
    ahead = (v_b > v_a) | ((v_b == v_a) & (pos[:, None, :] < pos[:, :, None]))
    rank = ahead.sum(dim=2)
    return (torch.empty_like(value).scatter_(1, rank, value),
            torch.empty_like(pos).scatter_(1, rank, pos))


def top_k_stable(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the k largest scores and their positions, as a stable sort orders them.

    ``scores`` (b, w) float64 marks excluded entries with -inf. Returns (b, k)
    values and positions equal to ``argsort(-row, stable)[:k]`` over the row's
    finite entries; slots past them hold -inf (their positions are arbitrary).
    One ``torch.topk`` of k + 1: only a row whose (k + 1)-th value equals its k-th
    can have a tie across the cut, and only such rows are looked at again.
    """
    b, w = scores.shape
    kk = min(k, w)
    value, pos = torch.topk(scores, min(kk + 1, w), dim=1, sorted=True)
    if kk < w:
        cut = value[:, kk - 1]
        crowded = (value[:, kk] == cut) & (cut > NEG_INF)  # topk took any of the tied
        value, pos = value[:, :kk].contiguous(), pos[:, :kk].contiguous()
        rows = crowded.nonzero().squeeze(1)
        if rows.numel():
            sub, at = scores[rows], cut[rows, None]
            above, tied = sub > at, sub == at
            need = kk - above.sum(dim=1, keepdim=True)
            take = above | (tied & (tied.cumsum(dim=1) <= need))  # the first tied ones
            p = take.nonzero()[:, 1].view(-1, kk)  # row-major: exactly kk per row
            pos[rows] = p
            value[rows] = sub.gather(1, p)
    value, pos = _order(value, pos)
    if kk < k:
        value = torch.cat([value, value.new_full((b, k - kk), NEG_INF)], dim=1)
        pos = torch.cat([pos, pos.new_full((b, k - kk), -1)], dim=1)
    return value, pos


class DeviceTopK:
    """The running best-k of a block of rows on the device, as scores (higher is better).

    ``value`` (b, k) is sorted per row by (score descending, index ascending);
    empty slots hold -inf and index -1.
    """

    def __init__(self, rows: int, k: int, device: torch.device) -> None:
        self.k = k
        self.value = torch.full((rows, k), NEG_INF, dtype=torch.float64, device=device)
        self.index = torch.full((rows, k), -1, dtype=torch.int64, device=device)

    def offer(self, scores: torch.Tensor, j0: int) -> None:
        """Fold the tile of columns j0.. (excluded entries already -inf) into the lists."""
        value, pos = top_k_stable(scores, self.k)
        both_v = torch.cat([self.value, value], dim=1)
        both_i = torch.cat([self.index, pos + j0], dim=1)
        # among equal finite values, positions in (lists, candidates) follow the index
        value, pos = top_k_stable(both_v, self.k)
        self.value = value
        self.index = both_i.gather(1, pos.clamp(min=0)).masked_fill_(value == NEG_INF, -1)

    def result(self, sign: float) -> tuple[np.ndarray, np.ndarray]:
        """(index, value) on the host, value = sign * score; -1 and NaN in empty slots."""
        empty = self.index < 0
        value = torch.where(empty, torch.full_like(self.value, math.nan), self.value * sign)
        return self.index.cpu().numpy(), value.cpu().numpy()


def _key(settings: dict, rows: np.ndarray) -> str:
    """Digest of the settings (engine and W included) and of the draws used, as the dask
    engine's key: equal keys mean resumable output."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _tile_columns(device: torch.device, block: int, n: int, tile_columns: int) -> int:
    """W: as asked, else B on the CPU (the dask engine's tiles) and TILE_BYTES / (8 B) on a GPU."""
    if tile_columns <= 0:
        tile_columns = block if device.type == "cpu" else max(block, TILE_BYTES // (8 * block))
    return min(tile_columns, n)


def _resolve_device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str):  # a CUDA device this machine lacks: one line naming the key
        return select_device(device, 0, key="reduce.device")
    return torch.device(device)


def reduce_neighbours_torch(
    store: RunStore,
    *,
    k: int = config_default("reduce.neighbours_k"),
    k_bottom: int = config_default("reduce.neighbours_bottom_k"),
    metric: NeighboursMetric | str = config_default("reduce.neighbours_metric"),
    exclude_same_label: bool = config_default("analysis.exclude_same_label"),
    block_size: int = config_default("reduce.block_size"),
    device: str | torch.device = config_default("reduce.device"),
    allow_partial: bool = False,
    write_moments: bool = True,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device_cache_bytes: int | None = None,
    tile_columns: int = 0,
    progress: bool = False,
    _after_block: Callable[[int], None] | None = None,
) -> NeighboursReport:
    """Compute and write ``neighbours/*`` on ``device`` (and, with ``write_moments``, the
    kernel's mean and var), as ``topk.reduce_neighbours`` does on the CPU.

    ``cache_bytes`` bounds the centred draws kept in host memory by pass 1
    (``reduce.cache_gb``); ``device_cache_bytes`` the scaled draws kept on the
    device (None: half a CUDA device's free memory, ``cache_bytes`` on the CPU).
    ``tile_columns`` is W (0: automatic). ``_after_block`` is the dask engine's test
    hook: called with each block's index after its rows are written, before it is
    marked done.
    """
    t0 = time.perf_counter()
    metric = NeighboursMetric.parse(metric, "reduce.neighbours_metric")
    _, _, n = store.shape
    check_k(k, n, "reduce.neighbours_k")
    check_k(k_bottom, n, "reduce.neighbours_bottom_k", allow_zero=True)
    dev = _resolve_device(device)
    rows, used_chains, excluded, digest = select_rows(store, allow_partial)
    m = len(rows)
    block = min(block_size, n)
    width = _tile_columns(dev, block, n, tile_columns)
    labels = store.labels()
    excluding = bool(exclude_same_label and labels is not None and np.unique(labels).size >= 2)
    engine = f"torch:{dev.type}"
    settings = {"metric": metric.value, "k": k, "k_bottom": k_bottom,
                "exclude_same_label": excluding, "block_size": block, "n": n, "draws_used": m,
                "chains_used": used_chains, "engine": engine, "tile_columns": width}
    attrs = {**settings, "key": _key(settings, rows),
             "order": "score descending (top) / ascending (bottom); ties by smaller index",
             "exclude_self": True}

    draws = centred_draws(store, rows, os.cpu_count() or 1, cache_bytes)
    if write_moments:
        out = store.create_kernel(n, block, "float64", dense=False)
        out["mean"][:] = draws.mean
        out["var"][:] = draws.var
    scale = (inverse_sd(draws.var) if metric is NeighboursMetric.CORR
             else np.ones(n)) / np.sqrt(m - 1)
    arrays, done = store.open_stream_neighbours(n, k, k_bottom, block, attrs)

    def host_block(j0: int, j1: int) -> torch.Tensor:
        """(j1 - j0, M) a_j, as the dask engine scales them (same bits)."""
        return torch.from_numpy(np.ascontiguousarray((draws.column(j0, j1) * scale[j0:j1]).T))

    if device_cache_bytes is None:
        device_cache_bytes = (torch.cuda.mem_get_info(dev)[0] // 2 if dev.type == "cuda"
                              else cache_bytes)
    todo = [int(b) for b in np.flatnonzero(~done)]
    cached = m * n * 8 <= device_cache_bytes
    a = None
    if cached and todo:
        a = torch.empty((n, m), dtype=torch.float64, device=dev)
        for j0 in range(0, n, block):
            a[j0:j0 + block].copy_(host_block(j0, min(j0 + block, n)))

    def columns(j0: int, j1: int) -> torch.Tensor:
        """a_j of samples j0..j1 on the device, in a fresh allocation: the BLAS's rounding
        can depend on an operand's alignment, which a view at row j0 of ``a`` would vary."""
        return a[j0:j1].clone() if a is not None else host_block(j0, j1).to(dev)

    lab = torch.from_numpy(np.asarray(labels)).to(dev) if excluding else None
    finite = bool(np.isfinite(scale).all() and np.isfinite(draws.mean).all()
                  and np.isfinite(draws.var).all())
    per_block = RowBlockLists(columns, n, k, k_bottom, width, metric is NeighboursMetric.CORR,
                              lab, finite, block, dev)
    bar = tqdm(total=len(todo), desc="neighbours", unit="row block", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    with torch.no_grad():
        for b in todo:
            i0, i1 = b * block, min((b + 1) * block, n)
            top, bottom = per_block.lists(i0, i1)
            arrays["top_index"][i0:i1], arrays["top_value"][i0:i1] = top.result(1.0)
            if bottom is not None:
                arrays["bottom_index"][i0:i1], arrays["bottom_value"][i0:i1] = bottom.result(-1.0)
            if _after_block is not None:
                _after_block(b)
            arrays["done"][b] = True
            bar.update(1)
    bar.close()

    report = NeighboursReport(
        n=n, k=k, k_bottom=k_bottom, metric=metric.value, exclude_same_label=excluding,
        block_size=block, draws_used=m, blocks=len(done), blocks_resumed=int(done.sum()),
        cached=cached, seconds=time.perf_counter() - t0, chains_used=used_chains,
        partial=bool(excluded["failed_chains"] or excluded["not_done"]),
    )
    store.finish_stream_neighbours({"seconds": round(report.seconds, 3)})
    name = f"torch:{dev}"
    if write_moments:  # no dense reduce recorded this one: record it here
        record_report(store, name, m, used_chains, n, block, excluded, t0, digest)
    info = store.reduce_record
    info["kernel"] = "neighbours" if write_moments else "both"
    info["neighbours"] = {**report.as_attrs(), "engine": name, "tile_columns": width}
    store.set_reduce_record(info)
    return report


class RowBlockLists:
    """One row block's top and bottom lists, tile by tile on the device.

    The tile and its negation live in two buffers allocated once (B W float64 each):
    a fresh multi-MiB allocation per tile cost the CPU page faults, longer than the
    negation itself.
    """

    def __init__(self, columns: Callable[[int, int], torch.Tensor], n: int, k: int,
                 k_bottom: int, width: int, clip: bool, lab: torch.Tensor | None, finite: bool,
                 block: int, dev: torch.device) -> None:
        self.columns, self.n, self.k, self.k_bottom, self.width = columns, n, k, k_bottom, width
        self.clip, self.lab, self.finite, self.dev = clip, lab, finite, dev
        self.buf = torch.empty(block * width, dtype=torch.float64, device=dev)
        self.neg = torch.empty_like(self.buf) if k_bottom else None

    def lists(self, i0: int, i1: int) -> tuple[DeviceTopK, DeviceTopK | None]:
        """Rows i0..i1 against every column: their running top and bottom lists."""
        left = self.columns(i0, i1)
        b = i1 - i0
        top = DeviceTopK(b, self.k, self.dev)
        bottom = DeviceTopK(b, self.k_bottom, self.dev) if self.k_bottom else None
        for j0 in range(0, self.n, self.width):
            j1 = min(j0 + self.width, self.n)
            tile = self.buf[: b * (j1 - j0)].view(b, j1 - j0)
            torch.mm(left, self.columns(j0, j1).T, out=tile)
            if self.clip:
                tile.clamp_(-1.0, 1.0)
            exclude = _excluded(tile, self.lab, i0, j0, j1, self.finite)
            self_r, self_c = _self_entries(i0, i1, j0, j1, self.dev)
            if bottom is not None:
                neg = torch.neg(tile, out=self.neg[: tile.numel()].view_as(tile))
                _mask(neg, exclude, self_r, self_c)
                bottom.offer(neg, j0)
            _mask(tile, exclude, self_r, self_c)
            top.offer(tile, j0)
        return top, bottom


def _excluded(tile: torch.Tensor, lab: torch.Tensor | None, i0: int, j0: int, j1: int,
              finite: bool) -> torch.Tensor | None:
    """Entries no list may take besides self: same label, and non-finite scores (which
    only non-finite draws make; ``select_top`` keeps finite values only)."""
    out = None
    if lab is not None:
        out = lab[i0:i0 + tile.shape[0], None] == lab[None, j0:j1]
    if not finite:
        bad = ~torch.isfinite(tile)
        out = bad if out is None else out | bad
    return out


def _self_entries(i0: int, i1: int, j0: int, j1: int, dev: torch.device
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(row, column) in the tile of each row's own sample, when the tile holds it."""
    lo, hi = max(i0, j0), min(i1, j1)
    if lo >= hi:
        return None, None
    r = torch.arange(lo - i0, hi - i0, device=dev)
    return r, r + (i0 - j0)


def _mask(scores: torch.Tensor, exclude: torch.Tensor | None, self_r: torch.Tensor | None,
          self_c: torch.Tensor | None) -> None:
    if exclude is not None:
        scores.masked_fill_(exclude, NEG_INF)
    if self_r is not None:
        scores[self_r, self_c] = NEG_INF
