"""Benchmark: the dense reduce against numpy.cov, and against numpy.cov plus the same writes.

Three methods on the same draws (default N = 6,000 samples, M = 800 float32 draws),
each in a fresh process, in ``--rounds`` interleaved rounds (the order rotates every
round), each run inside ``LoadWatch`` (bench/_record.py: the foreign CPU per second of
wall time; a round with any run above its threshold is flagged ``loaded``):

* ``ours``: ``reduce_store`` with its defaults (dask engine, B = reduce.block_size,
  float32 outputs): reads the draws from the Zarr store, writes kernel/mean, var and
  the N x N arrays tile by tile;
* ``numpy``: ``numpy.cov`` of the draws already in memory (one dense float64 matrix,
  nothing written);
* ``numpy_write``: ``numpy.cov`` and then the same N x N arrays our reduce writes
  (as many, of its dtype: read from the store after a warm-up reduce) written as plain
  files beside the store (its directory, same disk), the floor of the same work. Neither
  side fsyncs: the reduce writes through Zarr's local store (and reduction/tiles.py's
  write_chunk hands its chunks to that store), which does not (store/layout.py).

Before each run the page cache's dirty pages are flushed (``os.sync``, not timed) and
the previous run's outputs are removed (not timed), so no run pays for another's
writes. Reported per run: time of the work alone (not the interpreter's start), its
CPU time (all threads; less moved by other work than the wall time, though not immune),
G multiply-adds per second (N^2 M / t), peak RSS; per round the ratios numpy / ours
and numpy_write / ours (throughput of ours as a fraction of the baseline's); summary:
medians over the unloaded rounds, or over all rounds when every round was loaded (the
summary says which). The JSON record goes to bench/results/reduce-*.json.

With ``--before-commit REV`` a fourth method, ``ours_before``, runs the same call with
the package of commit REV (``git archive``), interleaved with the others: what a change
of the reduce did, under the same load.

Other cases (each optional): an out-of-core reduce whose dense kernel would not fit in
memory (``--big-n``); the neighbours-only reduce (``--topk-n``: reduce.kernel
neighbours, reduction/topk.py, its rate projected to N = 1,000,000); threads against a
local dask cluster (``--only-cluster``, bench/reduce_cluster.py).

    python bench/reduce.py [--n 6000 --m 800 --rounds 5] [--before-commit REV]
    python bench/reduce.py --rounds 1 --big-n 50000 --big-m 200 --dir /work/scratch
    python bench/reduce.py --only-topk --topk-n 100000 --topk-m 64 [--topk-k 15]
    python bench/reduce.py --only-cluster --cluster-n 50000 --cluster-m 200 --cluster-rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import QUIET_FOREIGN_CPU_PER_S, BenchRecord, LoadWatch  # noqa: E402
from _util import run_measured, table  # noqa: E402
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

# What the reduce writes: its N x N arrays (name, dtype) and their bytes on disk (chunks
# with their checksums), read after one untimed reduce.
WRITTEN = """
import json, os, sys
from pathlib import Path
from losskernel_dist.store import RunStore
from losskernel_dist.reduction.kernel import reduce_store
store = RunStore.open(sys.argv[1], mode="r+")
reduce_store(store)
n = store.shape[2]
kernel = store.group["kernel"]
arrays = [(name, str(kernel[name].dtype)) for name in sorted(kernel.array_keys())
          if kernel[name].shape == (n, n)]
on_disk = sum(f.stat().st_size for name, _ in arrays
              for f in (Path(sys.argv[1]) / "kernel" / name).rglob("*") if f.is_file())
RESULT = {"arrays": arrays, "bytes_on_disk": on_disk}
"""

OURS = """
import json, sys, time
import losskernel_dist
from losskernel_dist.store import RunStore
from losskernel_dist.reduction.kernel import reduce_store
store = RunStore.open(sys.argv[1], mode="r+")
if "kernel" in store.group:
    del store.group["kernel"]  # the previous run's kernel: removed before the clock starts
t0, c0 = time.perf_counter(), time.process_time()
report = reduce_store(store)
seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
RESULT = {"seconds": seconds, "cpu_seconds": cpu_seconds, "tile_seconds": report.tile_seconds,
          "block": report.block_size, "package": losskernel_dist.__file__,
          "check": float(store.kernel_array("cov")[0, 1])}
"""

NUMPY = """
import json, sys, time, numpy as np
from pathlib import Path
from losskernel_dist.store import RunStore
store = RunStore.open(sys.argv[1])
arrays = json.loads(sys.argv[2])  # [[name, dtype], ...] to write after numpy.cov; [] for none
x = np.asarray(store.losses_array()[...]).reshape(-1, store.shape[2])
out = Path(sys.argv[1]).parent
t0, c0 = time.perf_counter(), time.process_time()
k = np.cov(x, rowvar=False)
cov_seconds = time.perf_counter() - t0
for name, dtype in arrays:
    with open(out / f"baseline_{name}.bin", "wb") as f:
        f.write(k.astype(dtype))
seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
for name, _ in arrays:
    (out / f"baseline_{name}.bin").unlink()
RESULT = {"seconds": seconds, "cpu_seconds": cpu_seconds, "cov_seconds": cov_seconds,
          "check": float(k[0, 1])}
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
REPO = Path(__file__).resolve().parent.parent


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


# issue 15's targets on a quiet machine: ours' throughput as a fraction of each baseline's
TARGETS = {"numpy": 0.7, "numpy_write": 0.9}
METHODS = {
    "ours": "losskernel reduce_store (defaults: threads, float32 out), store -> store",
    "numpy": "numpy.cov, draws in memory, nothing written",
    "numpy_write": "numpy.cov, then the same N x N arrays written as plain files",
    "ours_before": "the same reduce_store call, package of --before-commit",
}


def timed_run(code: str, *argv: str, env: dict | None = None) -> dict:
    """One fresh-process run after a flush of dirty pages, inside a LoadWatch."""
    os.sync()  # no run pays for the writeback of an earlier run's files
    watch = LoadWatch()
    res = run_measured(code, *argv, env=env)
    return {**res, **watch.stop()}


def dense_case(root: Path, n: int, m: int, chains: int, rounds: int,
               methods: tuple[str, ...] = ("ours", "numpy", "numpy_write"),
               before: Path | None = None) -> dict:
    """``rounds`` interleaved rounds of ``methods`` on one store of N x M draws; ``before``
    holds the package that ``ours_before`` imports."""
    path = root / f"n{n}.zarr"
    run_measured(MAKE, str(path), str(n), str(m), str(chains))
    written = None
    if "numpy_write" in methods:  # one untimed reduce; also warms the page cache and imports
        written = run_measured(WRITTEN, str(path))
    argv = {"ours": (OURS, str(path)), "numpy": (NUMPY, str(path), "[]"),
            "numpy_write": (NUMPY, str(path), json.dumps((written or {}).get("arrays"))),
            "ours_before": (OURS, str(path))}
    # PYTHONSAFEPATH: python -c would put the working directory (this checkout) first
    env = {"ours_before": {"PYTHONPATH": str(before), "PYTHONSAFEPATH": "1"}} if before else {}
    runs = []
    for r in range(rounds):
        order = methods[r % len(methods):] + methods[:r % len(methods)]
        for method in order:
            res = timed_run(*argv[method], env=env.get(method))
            runs.append({"round": r, "method": method, "n": n, "m": m, **res,
                         "gmacs": n * n * m / res["seconds"] / 1e9,
                         "peak_rss_mib": res["peak_rss"] / 2**20})
            print(f"round {r} {method}: {res['seconds']:.3f} s, foreign CPU "
                  f"{res['foreign_cpu_per_s']}/s{' (loaded)' if res['loaded'] else ''}",
                  flush=True)
    shutil.rmtree(path)
    return {"n": n, "m": m, "written": written, "runs": runs,
            "summary": summary(runs, methods)}


def summary(runs: list[dict], methods: tuple[str, ...]) -> dict:
    """Medians of each method's seconds and of the per-round ratios baseline / ours, over
    the rounds none of whose runs was loaded (all rounds when every one was)."""
    rounds = sorted({r["round"] for r in runs})
    loaded = sorted({r["round"] for r in runs if r["loaded"]})
    quiet = [r for r in rounds if r not in loaded]
    used = quiet or rounds
    by = {(r["round"], r["method"]): r for r in runs}
    out: dict = {
        "rounds": len(rounds), "loaded_rounds": loaded, "rounds_used": used,
        "from": ("unloaded rounds only" if quiet else
                 "all rounds: every round was loaded, the ratios are not a quiet-machine result"),
        "loaded_threshold_foreign_cpu_per_s": QUIET_FOREIGN_CPU_PER_S,
        "median_seconds": {m: statistics.median(by[r, m]["seconds"] for r in used)
                           for m in methods},
        "median_cpu_seconds": {m: statistics.median(by[r, m]["cpu_seconds"] for r in used)
                               for m in methods},
        "foreign_cpu_per_s_max": max(r["foreign_cpu_per_s"] or 0.0 for r in runs
                                     if r["round"] in used),
    }
    if "ours" in methods:
        out["ratio_of_ours_to"] = {
            m: {"target": TARGETS.get(m),
                "median": statistics.median(by[r, m]["seconds"] / by[r, "ours"]["seconds"]
                                            for r in used),
                "per_round": [by[r, m]["seconds"] / by[r, "ours"]["seconds"] for r in used]}
            for m in methods if m != "ours"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6000, help="samples N of the dense case")
    ap.add_argument("--m", type=int, default=800, help="draws M of the dense case (8 chains)")
    ap.add_argument("--rounds", "--repeats", type=int, default=5,
                    help="interleaved rounds of the dense case")
    ap.add_argument("--before-commit", default="",
                    help="also time the reduce of this commit's package (ours_before)")
    ap.add_argument("--block", type=int, default=2048, help="B of the neighbours and cluster cases")
    ap.add_argument("--big-n", type=int, default=0,
                    help="also reduce (ours only) at this N, out of core (0: not run)")
    ap.add_argument("--big-m", type=int, default=200, help="draws M of the out-of-core case")
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
    # the children import the package of this checkout, whose commit the record names
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if args.only_cluster:
        return cluster_main(args)
    record = BenchRecord("reduce", vars(args))
    # the record's git_dirty covers the whole tree (other work's files too): which files
    result: dict = {"tracked_changes": subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
        cwd=REPO).stdout.splitlines()}
    root = Path(tempfile.mkdtemp(prefix="bench_reduce_", dir=args.dir))
    try:
        if not args.only_topk:
            before = None
            if args.before_commit:  # that commit's package, beside this one's
                before = root / "before"
                before.mkdir()
                result["before_commit"] = subprocess.run(
                    ["git", "rev-parse", args.before_commit], capture_output=True, text=True,
                    check=True, cwd=REPO).stdout.strip()
                archive = subprocess.run(["git", "archive", args.before_commit, "losskernel_dist"],
                                         capture_output=True, check=True, cwd=REPO).stdout
                subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
            result["dense"] = dense_case(
                root, args.n, args.m, 8, args.rounds,
                ("ours", "numpy", "numpy_write") + (("ours_before",) if before else ()), before)
            if args.big_n:
                result["big"] = dense_case(root, args.big_n, args.big_m, 8, 1, ("ours",))
        if args.topk_n:
            result["topk"] = topk_case(root, args.topk_n, args.topk_m, 8, args.block,
                                       args.topk_k, args.topk_bottom_k)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(result)
    path = record.write(result)
    print(f"record: {path.relative_to(Path(__file__).resolve().parent.parent)}")


def report(result: dict) -> None:
    """The runs as tables and the summary lines."""
    for name in ("dense", "big"):
        if name in result:
            print(table(result[name]["runs"], ["round", "method", "n", "m", "seconds",
                                               "cpu_seconds", "gmacs",
                                               "peak_rss_mib", "foreign_cpu_per_s", "loaded"]))
    if "dense" in result:
        s = result["dense"]["summary"]
        print(f"\nwritten by ours: {result['dense']['written']}")
        print(f"summary from {s['from']} ({len(s['rounds_used'])} of {s['rounds']}):")
        for m, sec in s["median_seconds"].items():
            print(f"  {METHODS[m]}: median {sec:.3f} s, CPU {s['median_cpu_seconds'][m]:.3f} s")
        for m, ratio in s.get("ratio_of_ours_to", {}).items():
            print(f"  throughput of ours / {m}: median {ratio['median']:.2f}"
                  + (f" (target >= {ratio['target']})" if ratio["target"] else ""))
    if "topk" in result:
        r = result["topk"]
        print(f"\nneighbours only, N = {r['n']:,}, M = {r['m']}: {r['seconds']:.1f} s, "
              f"{r['gmacs']:.2f} G multiply-adds/s, peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"(dense float64 kernel {r['dense_f64_mib'] / 1024:.1f} GiB); projected to "
              f"N = {PROJECT_N:,} at this rate: {r['projected_seconds_1e6'] / 3600:.1f} h "
              f"(dense float64 kernel {r['dense_f64_gib_1e6']:,.0f} GiB)")


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
