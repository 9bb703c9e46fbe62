"""Benchmark: reduce (blockwise, from the store, written to the store) against numpy.cov.

Both run in fresh subprocesses on the same draws. numpy.cov gets the draws already
in memory and returns one dense matrix; ours reads them from the Zarr store and
writes covariance and correlation tile by tile. Reported: time, throughput
(N^2 * M multiply-adds per second), the ratio ours/numpy, and peak RSS. Then an
out-of-core case whose dense kernel would not fit in this machine's memory.

With ``--topk-n N`` also the neighbours-only reduce (reduce.kernel: neighbours,
reduction/topk.py) at that N: every row against every column, M N^2 multiply-adds
plus the running top-k selection, writing only N x k lists; its time, rate, peak
RSS and the projection of its time to N = 1,000,000 at the measured rate
(``--only-topk`` skips the dense cases).

With ``--cluster-n N`` the dense reduce at that N on dask's threads and on a
``distributed.LocalCluster`` of ``--cluster-workers`` single-thread worker processes
(reduce.scheduler threads / local), interleaved for ``--cluster-rounds`` rounds: time,
tile-phase time, peak RSS of the driver and of each worker, and the kernel's write
bandwidth (2 N^2 4 bytes over the tile phase); then one tile's compute and write
times at B = --block for M = --cluster-m and M = --project-m, on one core, and the
projection of a reduce over k nodes from them (docs/performance.md). Its JSON
record (command, commit, machine and load average, versions, config, result) goes
to bench/results/ (``--only-cluster`` skips the other cases).

    python bench/reduce.py [--n 8000 --m 800] [--big-n 50000 --big-m 200] [--skip-big]
    python bench/reduce.py --only-topk --topk-n 100000 --topk-m 64 [--topk-k 15]
    python bench/reduce.py --only-cluster --cluster-n 50000 --cluster-m 200 --cluster-rounds 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import BenchRecord  # noqa: E402
from _util import machine, run_measured, table  # noqa: E402
from reduce_cluster import cluster_case, project, tile_rates  # noqa: E402

MAKE = """
import json, sys, numpy as np
from losskernel_dist.store import RunStore
path, n, m, chains = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
draws = m // chains
rng = np.random.default_rng(0)
store = RunStore.create(path, chains=chains, draws=draws, n=n, total_steps=draws, config={})
scale = rng.uniform(0.1, 2.0, size=n).astype(np.float32)
for c in range(chains):
    store.write_draws(c, 0, rng.standard_normal((draws, n), dtype=np.float32) * scale + 1)
    store.mark_done(c, list(range(draws)))
RESULT = {}
"""

NUMPY = """
import json, sys, time, numpy as np
from losskernel_dist.store import RunStore
store = RunStore.open(sys.argv[1])
x = np.asarray(store.losses_array()[...]).reshape(-1, store.shape[2])
t0 = time.perf_counter()
k = np.cov(x, rowvar=False)
seconds = time.perf_counter() - t0
RESULT = {"seconds": seconds, "check": float(k[0, 1])}
"""

OURS = """
import json, sys, time
from losskernel_dist.store import RunStore
from losskernel_dist.reduction.kernel import reduce_store
store = RunStore.open(sys.argv[1], mode="r+")
t0 = time.perf_counter()
reduce_store(store, block_size=int(sys.argv[2]), dtype=sys.argv[3])
seconds = time.perf_counter() - t0
RESULT = {"seconds": seconds, "check": float(store.kernel_array("cov")[0, 1])}
"""


TOPK = """
import json, sys, time
from losskernel_dist.store import RunStore
from losskernel_dist.reduction.topk import reduce_neighbours
store = RunStore.open(sys.argv[1], mode="r+")
t0 = time.perf_counter()
report = reduce_neighbours(store, k=int(sys.argv[3]), k_bottom=int(sys.argv[4]),
                           block_size=int(sys.argv[2]))
seconds = time.perf_counter() - t0
RESULT = {"seconds": seconds, "cached": report.cached,
          "check": int(store.read_stream_neighbours()["top_index"][0, 0])}
"""

PROJECT_N = 1_000_000


def topk_case(root: Path, n: int, m: int, chains: int, block: int, k: int, k_bottom: int):
    """The neighbours-only reduce at N; its rate projected to N = 1,000,000 (same M, k)."""
    path = root / f"topk_n{n}.zarr"
    run_measured(MAKE, str(path), str(n), str(m), str(chains))
    res = run_measured(TOPK, str(path), str(block), str(k), str(k_bottom))
    shutil.rmtree(path)
    macs = m * n * n
    rate = macs / res["seconds"]
    return {
        "method": f"losskernel reduce, neighbours only (B={block}, k={k}+{k_bottom})",
        **res, "n": n, "m": m, "gmacs": rate / 1e9, "peak_rss_mib": res["peak_rss"] / 2**20,
        "dense_f64_mib": n * n * 8 / 2**20,
        "projected_seconds_1e6": m * PROJECT_N**2 / rate,
        "dense_f64_gib_1e6": PROJECT_N**2 * 8 / 2**30,
    }


def case(root: Path, n: int, m: int, chains: int, block: int, dtypes: list[str],
         with_numpy: bool, repeats: int = 1):
    """numpy.cov (optional) and our reduce per output dtype; each the fastest of ``repeats``."""
    path = root / f"n{n}.zarr"
    run_measured(MAKE, str(path), str(n), str(m), str(chains))
    runs = ([("numpy.cov (in memory)", NUMPY, [str(path)])] if with_numpy else []) + [
        (f"losskernel reduce (B={block}, {dtype} out)", OURS, [str(path), str(block), dtype])
        for dtype in dtypes
    ]
    best: dict[str, dict] = {}
    for _ in range(repeats):  # rounds interleaved, so load bursts hit every method alike
        for method, code, argv in runs:
            res = run_measured(code, *argv)
            if method not in best or res["seconds"] < best[method]["seconds"]:
                best[method] = res
    shutil.rmtree(path)
    rows = [{"method": method, **res} for method, res in best.items()]
    for r in rows:
        r.update(n=n, m=m, gmacs=n * n * m / r["seconds"] / 1e9,
                 peak_rss_mib=r["peak_rss"] / 2**20, dense_f64_mib=n * n * 8 / 2**20)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--m", type=int, default=800)
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--big-n", type=int, default=50_000)
    ap.add_argument("--big-m", type=int, default=200)
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--repeats", type=int, default=2,
                    help="interleaved rounds of the in-memory case; the fastest is kept")
    ap.add_argument("--dir", default=None, help="scratch directory (needs ~2*big_n^2*4 bytes)")
    ap.add_argument("--topk-n", type=int, default=0,
                    help="also run the neighbours-only reduce at this N (0: not run)")
    ap.add_argument("--topk-m", type=int, default=64, help="draws M of the neighbours case")
    ap.add_argument("--topk-k", type=int, default=15, help="top-k of the neighbours case")
    ap.add_argument("--topk-bottom-k", type=int, default=10,
                    help="bottom-k of the neighbours case")
    ap.add_argument("--only-topk", action="store_true", help="skip the dense cases")
    ap.add_argument("--cluster-n", type=int, default=0,
                    help="also compare threads and a local dask cluster at this N (0: not run)")
    ap.add_argument("--cluster-m", type=int, default=200, help="draws M of the cluster case")
    ap.add_argument("--cluster-workers", type=int, default=2, help="local worker processes")
    ap.add_argument("--cluster-rounds", type=int, default=2,
                    help="interleaved rounds of threads and local cluster")
    ap.add_argument("--project-m", type=int, default=7500, help="M of the k-node projection")
    ap.add_argument("--project-n", type=int, default=200_000, help="N of the projection")
    ap.add_argument("--project-cores", type=int, default=32, help="cores per projected node")
    ap.add_argument("--only-cluster", action="store_true", help="only the cluster case")
    args = ap.parse_args()
    if args.only_cluster:
        return cluster_main(args)
    root = Path(tempfile.mkdtemp(prefix="bench_reduce_", dir=args.dir))
    rows, ratio = [], None
    try:
        if not args.only_topk:
            rows = case(root, args.n, args.m, 8, args.block, ["float32", "float64"],
                        with_numpy=True, repeats=args.repeats)
            ratio = {r["method"]: rows[0]["seconds"] / r["seconds"] for r in rows[1:]}
            if not args.skip_big:
                rows += case(root, args.big_n, args.big_m, 8, args.block, ["float32"],
                             with_numpy=False)
        if args.topk_n:
            rows.append(topk_case(root, args.topk_n, args.topk_m, 8, args.block, args.topk_k,
                                  args.topk_bottom_k))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cols = ["method", "n", "m", "seconds", "gmacs", "peak_rss_mib", "dense_f64_mib"]
    print(table(rows, cols))
    for method, value in (ratio or {}).items():
        print(f"\nthroughput ratio {method} / numpy.cov: {value:.2f} (target >= 0.7)")
    for r in rows:
        if "projected_seconds_1e6" in r:
            print(f"\nneighbours only, N = {r['n']:,}, M = {r['m']}: {r['seconds']:.1f} s, "
                  f"{r['gmacs']:.2f} G multiply-adds/s, peak RSS {r['peak_rss_mib']:.0f} MiB "
                  f"(dense float64 kernel {r['dense_f64_mib'] / 1024:.1f} GiB); projected to "
                  f"N = {PROJECT_N:,} at this rate: {r['projected_seconds_1e6'] / 3600:.1f} h "
                  f"(dense float64 kernel {r['dense_f64_gib_1e6']:,.0f} GiB)")
    print(json.dumps({"bench": "reduce", "ratio_vs_numpy": ratio, "rows": rows,
                      "machine": machine()}))


def cluster_main(args: argparse.Namespace) -> None:
    """Threads against a local dask cluster, one tile's rates, the k-node projection, and
    the JSON record in bench/results/."""
    record = BenchRecord("reduce_cluster", vars(args))
    root = Path(tempfile.mkdtemp(prefix="bench_reduce_cluster_", dir=args.dir))
    try:
        rows = cluster_case(root, MAKE, args.cluster_n, args.cluster_m, 8, args.block,
                            args.cluster_workers, args.cluster_rounds)
        rates = [tile_rates(root, m, args.block) for m in (args.cluster_m, args.project_m)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    projection = project(rates[-1], args.project_n, args.project_m, args.block,
                         args.project_cores)
    print(table(rows, ["method", "round", "n", "m", "seconds", "tile_seconds", "write_mb_s",
                       "peak_rss_mib", "worker_peak_rss_mib"]))
    print(table(rates, ["m", "block", "compute_ms", "write_ms", "tile_mb"]))
    print(table(projection, ["nodes", "cores", "tiles", "hours", "write_gb_s_needed"]))
    path = record.write({"rows": rows, "tile_rates": rates, "projection": projection})
    print(f"record: {path.relative_to(Path(__file__).resolve().parent.parent)}")


if __name__ == "__main__":
    main()
