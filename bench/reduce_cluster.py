"""The reduce on dask's threads against a local dask cluster, one tile's rates, and the
projection to k nodes: the parts of ``bench/reduce.py --cluster-n`` (docs/performance.md).

Every measurement runs in a fresh process (``_util.run_measured``): the reduce of a
planted store at N through ``reduction.cluster.open_cluster`` and ``reduce_store``
with reduce.scheduler threads or local, rounds interleaved so that load bursts of a
shared machine hit both alike; and one off-diagonal tile of width B at M draws, its
compute (product, scaling, clipping, transposes: ``tiles.write_tile`` into memory,
one BLAS thread) and its write (the four float32 B x B chunks of cov, corr and
their transposes, through Zarr into a store on this disk) timed apart.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from _util import run_measured

REDUCE = """
import json, sys, time
from pathlib import Path
from losskernel_dist.config import ReduceConfig, SlurmConfig
from losskernel_dist.reduction.cluster import open_cluster
from losskernel_dist.reduction.kernel import reduce_store
from losskernel_dist.store import RunStore
path, scheduler, workers, block = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = RunStore.open(path, mode="r+")
settings = ReduceConfig(scheduler=scheduler, workers=workers, worker_cores=1, worker_mem_gb=4.0)
settings.validate()
t0 = time.perf_counter()
with open_cluster(settings, SlurmConfig(), Path(path).parent / "logs", announce=False) as c:
    startup = time.perf_counter() - t0
    report = reduce_store(store, block_size=block, cluster=c)
seconds = time.perf_counter() - t0
RESULT = {"seconds": seconds, "startup_seconds": startup, "tile_seconds": report.tile_seconds,
          "record": store.reduce_record}
"""

TILE = """
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
from losskernel_dist.reduction.tiles import write_tile
from losskernel_dist.store import RunStore
path, m, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
x = np.random.default_rng(0).standard_normal((m, 2 * b))
inv = 1 / np.sqrt(x.var(axis=0, ddof=1))
inv_sd = {"float64": inv, "float32": inv.astype(np.float32)}
memory = {name: np.empty((2 * b, 2 * b), np.float32) for name in ("cov", "corr")}
store = RunStore.create(path, chains=1, draws=2, n=2 * b, total_steps=2, config={})
out = store.create_kernel(2 * b, b, "float32")
tile = np.random.default_rng(1).standard_normal((b, b)).astype(np.float32)

def best(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)

def write():
    for name in ("cov", "corr"):
        out[name][0:b, b:2 * b] = tile
        out[name][b:2 * b, 0:b] = tile

with threadpool_limits(limits=1, user_api="blas"):
    compute = best(lambda: write_tile(lambda j0, j1: x[:, j0:j1], 0, b, b, 2 * b, m, inv_sd,
                                      memory))
RESULT = {"m": m, "block": b, "compute_ms": compute * 1e3, "write_ms": best(write) * 1e3,
          "tile_mb": 4 * b * b * 4 / 1e6}
"""


def cluster_case(root: Path, make: str, n: int, m: int, chains: int, block: int,
                 workers: int, rounds: int) -> list[dict]:
    """The dense float32 reduce at N on threads and on a local cluster, ``rounds`` interleaved
    rounds (each run in a fresh process, the load average read before it)."""
    path = root / f"cluster_n{n}.zarr"
    run_measured(make, str(path), str(n), str(m), str(chains))
    kernel_bytes = 2 * n * n * 4
    rows = []
    for r in range(rounds):
        for scheduler in ("threads", "local"):
            load = os.getloadavg()[0]
            res = run_measured(REDUCE, str(path), scheduler, str(workers), str(block))
            record = res.pop("record")
            peaks = record.get("worker_peak_rss_mib") or [round(res["peak_rss"] / 2**20, 1)]
            rows.append({
                "method": (f"threads ({record['threads']})" if scheduler == "threads" else
                           f"LocalCluster ({workers} processes x 1 thread)"),
                "round": r + 1, "n": n, "m": m, "block": block, **res,
                "write_mb_s": kernel_bytes / res["tile_seconds"] / 1e6,
                "peak_rss_mib": res["peak_rss"] / 2**20, "worker_peak_rss_mib": peaks,
                "load_1min_before": load, "tiles": record["tiles"],
            })
    return rows


def tile_rates(root: Path, m: int, block: int) -> dict:
    """One tile's compute and write times (ms, fastest of 3) at M draws and width B."""
    return run_measured(TILE, str(root / f"tile_m{m}.zarr"), str(m), str(block))


def project(rate: dict, n: int, m: int, block: int, cores: int) -> list[dict]:
    """A dense reduce of N samples and M draws on k nodes of ``cores`` cores, from one tile's
    measured compute and write times (each core computes and writes its own tiles), with
    the aggregate write bandwidth the shared file system must then sustain."""
    assert rate["m"] == m and rate["block"] == block
    blocks = math.ceil(n / block)
    tiles = blocks * (blocks + 1) // 2
    per_tile_s = (rate["compute_ms"] + rate["write_ms"]) / 1e3
    kernel_bytes = 2 * n * n * 4
    rows = []
    for nodes in (1, 2, 4, 8, 16, 32):
        seconds = tiles * per_tile_s / (nodes * cores)
        rows.append({"nodes": nodes, "cores": nodes * cores, "n": n, "m": m, "tiles": tiles,
                     "write_gb_s_needed": kernel_bytes / seconds / 1e9, "hours": seconds / 3600})
    return rows
