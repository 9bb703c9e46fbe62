"""The reduce job: pick the engine the run's config asks for and reduce its store.

``auto`` uses the tiled torch product when a GPU is present (the product is then
seconds) and the dask path on CPU; both write the same arrays.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..config import ReduceConfig
from ..store import RunStore
from .kernel import ReduceReport, reduce_store


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def reduce_run(
    store_path: Path, config: ReduceConfig, *, allow_partial: bool = False, progress: bool = False
) -> ReduceReport:
    """Reduce the store at ``store_path`` with the engine and settings of ``config``."""
    store = RunStore.open(store_path, mode="r+")
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
            allow_partial=allow_partial, progress=progress,
        )
    return reduce_store(
        store, block_size=config.block_size, dtype=config.dtype, threads=config.threads,
        allow_partial=allow_partial, progress=progress,
    )
