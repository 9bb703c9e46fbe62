"""The one way to reduce a run: engine, dtype, cache and kernel kind from its config.

``auto`` uses the tiled torch product when a GPU is present (the product is then
seconds) and the dask path on CPU; both write the same arrays. ``reduce.kernel``
says what is written: the dense N x N kernel, the streamed top-k neighbour lists
(``topk.py`` on the dask engine, ``topk_torch.py`` on the torch engine), or both,
dense first; one engine does both. Every caller
(``losskernel reduce``, ``run``, the SLURM reduce job, development, calibrate,
the Python API) comes through ``reduce_with_config``, so a setting in the
config is never silently replaced by a library default. ``reduce.scheduler``
says where the dask engine's tasks run (``cluster.py``): one cluster is opened
for the whole reduce, dense and neighbours, and closed after it; a cluster always
runs the dask engine (``auto`` then means dask).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..config import Config, ReduceConfig, ReduceScheduler
from ..store import RunStore
from .cluster import ReduceCluster, open_cluster
from .kernel import ReduceReport, reduce_store
from .topk import NeighboursReport, reduce_neighbours


def _gpu_visible() -> bool:
    """Whether this process may see a GPU, judged without torch: CUDA_VISIBLE_DEVICES
    does not hide them all, and an NVIDIA (or ROCm) driver has a device. A cheap
    pre-check, so that a CPU machine reduces without importing torch (seconds)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    nvidia = Path("/proc/driver/nvidia/gpus")
    return (nvidia.is_dir() and any(nvidia.iterdir())) or Path("/dev/nvidia0").exists() \
        or Path("/dev/kfd").exists()


def _cuda_available() -> bool:
    """Whether torch can use a GPU; torch is imported only where one may be visible."""
    if not _gpu_visible() or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _engine(settings: ReduceConfig) -> str:
    """'torch' or 'dask': ``reduce.engine``, where 'auto' is torch when this process reduces
    (threads scheduler) on a device other than the CPU and a GPU is there."""
    if settings.engine != "auto":
        return "torch" if settings.engine == "torch" else "dask"
    return ("torch" if settings.scheduler == ReduceScheduler.THREADS
            and settings.device != "cpu" and _cuda_available() else "dask")


def reduce_with_config(
    store: RunStore,
    config: Config,
    *,
    allow_partial: bool = False,
    progress: bool = False,
) -> ReduceReport | NeighboursReport:
    """Reduce ``store`` (opened 'r+') as ``config.reduce`` says.

    ``config.analysis.exclude_same_label`` applies to the streamed neighbour
    lists, which the analysis then uses as they are. Returns the dense reduce's
    report, or the neighbours report when only those were computed.
    """
    settings = config.reduce
    log_dir = (Path(config.slurm.folder) if config.slurm.folder
               else store.path.parent / "slurm") / "dask-workers"
    with open_cluster(settings, config.slurm, log_dir) as cluster:
        dense = None
        if settings.kernel in ("dense", "both"):
            dense = _reduce_dense(store, settings, allow_partial, progress, cluster)
        if settings.kernel == "dense":
            return dense
        if _engine(settings) == "torch":
            from .topk_torch import reduce_neighbours_torch

            report = reduce_neighbours_torch(
                store, k=settings.neighbours_k, k_bottom=settings.neighbours_bottom_k,
                metric=settings.neighbours_metric,
                exclude_same_label=config.analysis.exclude_same_label,
                block_size=settings.block_size, device=settings.device,
                allow_partial=allow_partial, write_moments=dense is None,
                cache_bytes=int(settings.cache_gb * 2**30), progress=progress,
            )
            return dense if dense is not None else report
        report = reduce_neighbours(
            store, k=settings.neighbours_k, k_bottom=settings.neighbours_bottom_k,
            metric=settings.neighbours_metric,
            exclude_same_label=config.analysis.exclude_same_label,
            block_size=settings.block_size, threads=settings.threads,
            allow_partial=allow_partial, write_moments=dense is None,
            cache_bytes=int(settings.cache_gb * 2**30), progress=progress, cluster=cluster,
        )
    return dense if dense is not None else report


def _reduce_dense(
    store: RunStore, settings: ReduceConfig, allow_partial: bool, progress: bool,
    cluster: ReduceCluster | None,
) -> ReduceReport:
    """The dense kernel with the configured engine (dask on a cluster)."""
    if _engine(settings) == "torch":
        from .tiled import reduce_store_torch

        return reduce_store_torch(  # its device 'auto': cuda when available
            store, block_size=settings.block_size, dtype=settings.dtype, device=settings.device,
            allow_partial=allow_partial, progress=progress,  # its own device-memory cache
        )
    return reduce_store(
        store, block_size=settings.block_size, dtype=settings.dtype, threads=settings.threads,
        allow_partial=allow_partial, cache_bytes=int(settings.cache_gb * 2**30),
        progress=progress, cluster=cluster,
    )
