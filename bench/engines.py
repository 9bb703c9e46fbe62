"""The reduce engines side by side on one planted store: torch (a device) against dask (the CPU cores).

    python bench/engines.py --kind neighbours --n 20000 --m 64 --device cpu   # this CPU
    python bench/engines.py --kind neighbours --n 200000 --device cuda        # a GPU
    python bench/engines.py --kind dense --n 50000 --m 200 --device cuda

``--kind neighbours``: the streamed top-k lists (reduce.kernel: neighbours; k = 15 top
and 10 bottom by default) with ``reduction/topk_torch.py`` on ``--device`` and
``reduction/topk.py`` on dask's threads. Every row meets every column, so the work is
M N^2 multiply-adds plus the top-k selection, both O(N^2) at fixed M and k: each
engine's time is projected to N = 1,000,000 as t (10^6 / N)^2 (conservative: the
store's pass 1 and the upload are only O(M N)), and its rate is given as pairs/s
(N^2 / t) and G multiply-adds/s (M N^2 / t). A GPU's projection is then
10^12 / (its pairs/s) seconds at the same M and k.

``--kind dense``: the N x N kernel (``reduction/tiled.py`` against ``reduction/kernel.py``),
float32 outputs, 2 N^2 values written; rate N^2 M / t as in bench/reduce.py.

Each engine runs in a fresh process (bench/_util.run_measured: its time, and its
peak RSS); the engines' outputs are compared (neighbour lists: indices equal, value
difference; dense: rows of the correlation). ``--rounds`` interleaves the engines
(each engine's fastest round is kept) and each run's load is recorded (LoadWatch:
foreign CPU per second, ``loaded`` flag). The record (command, commit, machine, load,
versions, config, rows) goes to bench/results/engines-*.json (``bench/_record.py``), or,
with ``--json`` (the device run, bench/device/steps.py, which records it itself), to
that file only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import BenchRecord, LoadWatch  # noqa: E402
from _util import machine, run_measured, table  # noqa: E402

PROJECT_N = 1_000_000

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

# argv: store, out.npz, engine, device, block, k, k_bottom, tile_columns, threads
NEIGHBOURS = """
import json, sys, time
import numpy as np
from losskernel_dist.store import RunStore
path, out, engine, device = sys.argv[1:5]
block, k, kb, width, threads = map(int, sys.argv[5:10])
store = RunStore.open(path, mode="r+")
if engine == "torch":
    import torch
    from losskernel_dist.reduction.topk_torch import reduce_neighbours_torch
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.zeros(1, device=device)  # the CUDA context, outside the timing
    t0 = time.perf_counter()
    report = reduce_neighbours_torch(store, k=k, k_bottom=kb, block_size=block, device=device,
                                     tile_columns=width)
else:
    from losskernel_dist.reduction.topk import reduce_neighbours
    t0 = time.perf_counter()
    report = reduce_neighbours(store, k=k, k_bottom=kb, block_size=block, threads=threads)
seconds = time.perf_counter() - t0
got = store.read_stream_neighbours()
np.savez(out, **{name: got[name] for name in ("top_index", "top_value", "bottom_index",
                                             "bottom_value")})
RESULT = {"seconds": seconds, "cached": report.cached,
          "tile_columns": got["attrs"].get("tile_columns", block)}
"""

# argv: store, out.npz, engine, device, block, threads
DENSE = """
import json, sys, time
import numpy as np
from losskernel_dist.store import RunStore
path, out, engine, device = sys.argv[1:5]
block, threads = int(sys.argv[5]), int(sys.argv[6])
store = RunStore.open(path, mode="r+")
if engine == "torch":
    import torch
    from losskernel_dist.reduction.tiled import reduce_store_torch
    if device.startswith("cuda"):
        torch.zeros(1, device=device)
    t0 = time.perf_counter()
    reduce_store_torch(store, block_size=block, dtype="float32", device=device)
else:
    from losskernel_dist.reduction.kernel import reduce_store
    t0 = time.perf_counter()
    reduce_store(store, block_size=block, dtype="float32", threads=threads)
seconds = time.perf_counter() - t0
n = store.shape[2]
rows = sorted({0, n // 2, n - 1})
np.savez(out, rows=np.asarray(store.kernel_array("corr")[rows]))
RESULT = {"seconds": seconds}
"""


def compare(kind: str, a: Path, b: Path) -> dict:
    """How far two engines' outputs are apart."""
    x, y = np.load(a), np.load(b)
    if kind == "dense":
        return {"max_abs_corr_difference": float(np.abs(x["rows"] - y["rows"]).max())}
    out = {}
    for side in ("top", "bottom"):
        same = x[f"{side}_index"] == y[f"{side}_index"]
        out[f"{side}_index_equal"] = float(same.mean())
        diff = np.abs(x[f"{side}_value"] - y[f"{side}_value"])
        out[f"{side}_max_value_difference"] = float(np.nanmax(diff)) if diff.size else 0.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=["neighbours", "dense"], default="neighbours")
    ap.add_argument("--engines", default="torch,dask", help="comma-separated: torch, dask")
    ap.add_argument("--device", default="cpu", help="the torch engine's device (cpu, cuda)")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--m", type=int, default=64, help="draws M (chains x draws per chain)")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--k-bottom", type=int, default=10)
    ap.add_argument("--tile-columns", type=int, default=0, help="W of the torch engine (0: auto)")
    ap.add_argument("--threads", type=int, default=0, help="dask threads / CPU torch threads")
    ap.add_argument("--dir", default=None, help="scratch directory (dense: 2 N^2 4 bytes)")
    ap.add_argument("--json", default=None,
                    help="write the record to this file instead of bench/results/")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of the engines")
    args = ap.parse_args()
    bench_record = None if args.json else BenchRecord("engines", vars(args))
    engines = [e for e in args.engines.split(",") if e]
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="bench_engines_", dir=args.dir))
    rows = []
    try:
        store = root / "store.zarr"
        run_measured(MAKE, str(store), str(args.n), str(args.m), str(args.chains))
        runs: dict[str, list[dict]] = {e: [] for e in engines}
        for _ in range(args.rounds):
            for engine in engines:  # interleaved: a burst of other load hits both
                out = root / f"{engine}.npz"
                watch = LoadWatch()
                if args.kind == "neighbours":
                    res = run_measured(NEIGHBOURS, str(store), str(out), engine, args.device,
                                       str(args.block), str(args.k), str(args.k_bottom),
                                       str(args.tile_columns), str(args.threads))
                else:
                    res = run_measured(DENSE, str(store), str(out), engine, args.device,
                                       str(args.block), str(args.threads))
                runs[engine].append({**res, **watch.stop()})
        for engine in engines:
            res = min(runs[engine], key=lambda r: r["seconds"])
            seconds = res["seconds"]
            row = {"engine": f"torch:{args.device}" if engine == "torch" else "dask",
                   **res, "n": args.n, "m": args.m, "peak_rss_mib": res["peak_rss"] / 2**20,
                   "gmacs": args.m * args.n**2 / seconds / 1e9,
                   "rounds": runs[engine], "loaded_rounds": sum(r["loaded"] for r in runs[engine])}
            if args.kind == "neighbours":
                row["pairs_per_s"] = args.n**2 / seconds
                row["projected_seconds_1e6"] = seconds * (PROJECT_N / args.n) ** 2
                row["projected_hours_1e6"] = row["projected_seconds_1e6"] / 3600
            rows.append(row)
        agreement = (compare(args.kind, root / f"{engines[0]}.npz", root / f"{engines[1]}.npz")
                     if len(engines) == 2 else {})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    columns = ["engine", "n", "m", "seconds", "gmacs", "peak_rss_mib"]
    if args.kind == "neighbours":
        columns += ["pairs_per_s", "projected_seconds_1e6"]
    print(table(rows, columns))
    if agreement:
        print("agreement:", agreement)
    record = {"bench": "engines", "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": {**machine(), "load_average_before": load_before,
                          "load_average_after": os.getloadavg()},
              "config": vars(args), "rows": rows, "agreement": agreement}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(record))
    else:
        print(bench_record.write({"rows": rows, "agreement": agreement}))


if __name__ == "__main__":
    main()
