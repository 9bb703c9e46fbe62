"""The kernel as a tiled float64 product with torch, for a GPU (or any torch device).

Same estimators, row selection and output arrays as the dask path
(``reduction/kernel.py``), and the same pass 1 (mean and variance, on the host, to
the same bits); the difference is where the product runs. Column blocks
of the centred draw matrix are moved to the device once when they fit in
``cache_bytes`` (otherwise re-read per tile), each upper-triangle tile is one
float64 matmul, and tiles go to the store one by one with their transposes, so
neither host nor device ever holds N x N.

Device memory: the cached centred draws (M x N x 8 bytes, or two blocks when not
cached) plus two B x B float64 tiles. Host memory: pass 1's per-thread blocks
(reduction/kernel.py), one column block and two B x B tiles in transit.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import KernelDtype, config_default
from ..distributed import select_device
from ..store import RunStore
from .kernel import (
    ReduceReport,
    centred_draws,
    inverse_sd,
    record_report,
    select_rows,
    transposed,
)


def reduce_store_torch(
    store: RunStore,
    *,
    block_size: int = config_default("reduce.block_size"),
    dtype: KernelDtype | str = config_default("reduce.dtype"),
    device: str | torch.device = config_default("reduce.device"),
    allow_partial: bool = False,
    cache_bytes: int = 8 << 30,
    progress: bool = False,
) -> ReduceReport:
    """Compute and write kernel/{mean,var,cov,corr} with torch on ``device``.

    ``device`` 'auto' is cuda when available, else the CPU. ``cache_bytes`` bounds
    the centred draws kept in device memory (not ``reduce.cache_gb``, which is
    host memory). The other defaults are the config's (``reduce.*``).
    """
    t0 = time.perf_counter()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif isinstance(device, str):  # a CUDA device this machine lacks: one line naming the key
        device = select_device(device, 0, key="reduce.device")
    device = torch.device(device)
    rows, used_chains, excluded, digest = select_rows(store, allow_partial)
    m = len(rows)
    _, _, n = store.shape
    block = min(block_size, n)
    starts = list(range(0, n, block))
    out = store.create_kernel(n, block, KernelDtype.parse(dtype, "reduce.dtype").value)

    # pass 1 on the host, as the dask engine does it (same bits: reduction/kernel.py)
    draws = centred_draws(store, rows, os.cpu_count() or 1)
    out["mean"][:] = draws.mean
    out["var"][:] = draws.var
    inv_sd = torch.from_numpy(inverse_sd(draws.var)).to(device)
    cache: dict[int, torch.Tensor] = {}
    use_cache = m * n * 8 <= cache_bytes

    def centred(i0: int) -> torch.Tensor:
        """Centred column block i on the device: kept there when the draws fit."""
        if i0 in cache:
            return cache[i0]
        block_dev = torch.from_numpy(draws.column(i0, min(i0 + block, n))).to(device)
        if use_cache:
            cache[i0] = block_dev
        return block_dev

    out_dtype = np.dtype(dtype)
    bar = tqdm(starts, desc="reduce", unit="block row", disable=not progress, file=sys.stderr)
    for i0 in bar:
        i1 = min(i0 + block, n)
        left = centred(i0)
        for j0 in range(i0, n, block):
            j1 = min(j0 + block, n)
            tile = (left.T @ centred(j0)) / (m - 1)
            if j0 == i0:
                tile = (tile + tile.T) / 2
            corr = (tile * inv_sd[i0:i1, None] * inv_sd[None, j0:j1]).clamp_(-1.0, 1.0)
            tile_np = tile.cpu().numpy().astype(out_dtype)
            corr_np = corr.cpu().numpy().astype(out_dtype)
            out["cov"][i0:i1, j0:j1] = tile_np
            out["corr"][i0:i1, j0:j1] = corr_np
            if j0 != i0:
                out["cov"][j0:j1, i0:i1] = transposed(tile_np)
                out["corr"][j0:j1, i0:i1] = transposed(corr_np)

    return record_report(store, f"torch:{device}", m, used_chains, n, block, excluded, t0, digest)
