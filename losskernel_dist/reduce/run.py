"""The reduce job: pick the engine the run's config asks for and reduce its store.

``auto`` uses the tiled torch product when a GPU is present (the product is then
seconds) and the dask path on CPU; both write the same arrays. ``reduce.kernel``
says what is written: the dense N x N kernel, the streamed top-k neighbour lists
(``topk.py``, always the CPU dask engine), or both, dense first.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..config import ReduceConfig
from ..store import RunStore
from .kernel import ReduceReport, reduce_store
from .topk import NeighboursReport, reduce_neighbours


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def reduce_run(
    store_path: Path,
    config: ReduceConfig,
    *,
    allow_partial: bool = False,
    progress: bool = False,
    exclude_same_label: bool = False,
) -> ReduceReport | NeighboursReport:
    """Reduce the store at ``store_path`` with the engine and settings of ``config``.

    ``exclude_same_label`` (the run's ``analysis.exclude_same_label``) applies to the
    streamed neighbour lists, which the analysis then uses as they are. Returns the
    dense reduce's report, or the neighbours report when only those were computed.
    """
    store = RunStore.open(store_path, mode="r+")
    dense = None
    if config.kernel in ("dense", "both"):
        dense = _reduce_dense(store, config, allow_partial, progress)
    if config.kernel == "dense":
        return dense
    report = reduce_neighbours(
        store, k=config.neighbours_k, k_bottom=config.neighbours_bottom_k,
        metric=config.neighbours_metric, exclude_same_label=exclude_same_label,
        block_size=config.block_size, threads=config.threads, allow_partial=allow_partial,
        write_moments=dense is None, cache_bytes=int(config.cache_gb * 2**30),
        progress=progress,
    )
    return dense if dense is not None else report


def _reduce_dense(
    store: RunStore, config: ReduceConfig, allow_partial: bool, progress: bool
) -> ReduceReport:
    """The dense kernel with the configured engine."""
    engine = config.engine
    if engine == "auto":
        engine = "torch" if config.device != "cpu" and _cuda_available() else "dask"
    if engine == "torch":
        from .tiled import reduce_store_torch

        device = config.device
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        return reduce_store_torch(
            store, block_size=config.block_size, dtype=config.dtype, device=device,
            allow_partial=allow_partial, progress=progress,  # its own device-memory cache
        )
    return reduce_store(
        store, block_size=config.block_size, dtype=config.dtype, threads=config.threads,
        allow_partial=allow_partial, cache_bytes=int(config.cache_gb * 2**30), progress=progress,
    )
