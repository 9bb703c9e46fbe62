"""Benchmark: the per-component timings that docs/performance.md explains the totals with.

Each part is timed in this one process, fastest of several repeats, against
its own baseline measured alongside:

* ``eval_shards``: one loss-vector pass over N samples at w* for several shard
  sizes (on a CPU the shard size alone moves it, through the cache);
* ``vmap``: G chains' gradient and eval pass under ``vmap`` against G one-chain
  passes (the batched sampler against chain by chain);
* ``vmap_sweep``: that ratio (one-chain time / vmapped time) over chains,
  minibatch sizes and eval shard sizes;
* ``linear``: GFLOP/s of ``torch.bmm`` over stacked weights against one
  ``addmm`` per chain (the product vmap turns a Linear into);
* ``startup``: the import ``torch.func.grad`` makes on its first call (a fresh
  process), which the sampler now makes before the chains start;
* ``functional_call``: the model called through ``FunctionalLoss`` against the
  module called directly (the re-parametrisation's overhead per call);
* ``reduce_tile``: one off-diagonal B x B tile of the dense reduce in CPU time:
  the product, the scaling to covariance and correlation with their transposes
  (in strips, and as whole-tile passes), and writing one chunk as the reduce
  does (its own encoder) and through Zarr's pipeline.

Each part runs inside a ``LoadWatch`` (its rows carry the foreign CPU per second
and the ``loaded`` flag); the JSON record goes to bench/results/components-*.json.

    python bench/components.py [--threads 1 --n-eval 1000 --chains 4] [--only reduce_tile]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from threadpoolctl import threadpool_limits
from torch.func import functional_call, grad_and_value, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the package of this checkout, whose commit the record names (not whatever is installed)
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from _record import BenchRecord, LoadWatch  # noqa: E402
from _util import machine, run_measured, table  # noqa: E402

from losskernel_dist.reduction.tiles import (  # noqa: E402
    scaled_in_strips,
    transposed,
    write_chunk,
)
from losskernel_dist.rng import minibatch_indices  # noqa: E402
from losskernel_dist.sampler.batched import _stack, stack_batches  # noqa: E402
from losskernel_dist.sampler.data import EvalShards, fetch_batch  # noqa: E402
from losskernel_dist.sampler.functional import FunctionalLoss  # noqa: E402
from losskernel_dist.store import array_codecs  # noqa: E402
from losskernel_dist.task import load_task  # noqa: E402


def best_ms(fn, repeats: int = 5, clock=time.perf_counter) -> float:
    """Fastest of ``repeats`` calls after one warm-up, in milliseconds of ``clock``."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times) * 1e3


def eval_shards(task, fl: FunctionalLoss, sizes: list[int]) -> list[dict]:
    params = fl.initial_params()
    rows = []
    for size in sizes:
        shards = EvalShards(task.eval, size, torch.device("cpu"), cache=True)

        def one_pass(shards=shards):
            with torch.inference_mode():
                for batch in shards:
                    fl.eval_losses(params, batch)

        rows.append({"part": "eval_shards", "what": f"eval pass, shards of {size}",
                     "ms": best_ms(one_pass, 3)})
    return rows


def vmapped(task, fl: FunctionalLoss, chains: int, batch_size: int) -> list[dict]:
    p0 = fl.initial_params()
    stacked = _stack([p0] * chains)
    batches = [fetch_batch(task.train, minibatch_indices(0, c, 0, len(task.train), batch_size))
               for c in range(chains)]
    stacked_batches = stack_batches(batches)
    grad_fn = vmap(grad_and_value(fl.mean_loss))
    eval_fn = vmap(fl.eval_losses, in_dims=(0, None))
    evalset = fetch_batch(task.eval, np.arange(len(task.eval)))
    rows = [
        {"part": "vmap", "what": f"{chains} one-chain gradients", "ms":
         best_ms(lambda: [fl.grad_and_loss(p0, b) for b in batches])},
        {"part": "vmap", "what": f"{chains} chains' gradient under vmap", "ms":
         best_ms(lambda: grad_fn(stacked, stacked_batches))},
    ]
    with torch.inference_mode():
        rows += [
            {"part": "vmap", "what": f"{chains} one-chain eval passes", "ms":
             best_ms(lambda: [fl.eval_losses(p0, evalset) for _ in range(chains)], 3)},
            {"part": "vmap", "what": f"{chains} chains' eval pass under vmap", "ms":
             best_ms(lambda: eval_fn(stacked, evalset), 3)},
        ]
    return rows


def vmap_sweep(task, fl: FunctionalLoss, chains_list: list[int], sizes: list[int],
               shards: list[int]) -> list[dict]:
    """Batched against one-chain time, as a ratio (> 1: vmap wins), over chains and sizes.

    Gradients over minibatch sizes b; eval passes over the N eval samples in shards of
    each size. Each timing is the fastest of 5 calls (3 for eval passes) after a warm-up.
    """
    p0 = fl.initial_params()
    n = len(task.eval)
    rows = []
    for chains in chains_list:
        stacked = _stack([p0] * chains)
        grad_fn = vmap(grad_and_value(fl.mean_loss))
        eval_fn = vmap(fl.eval_losses, in_dims=(0, None))
        for b in sizes:
            batches = [fetch_batch(task.train,
                                   minibatch_indices(0, c, 0, len(task.train), b))
                       for c in range(chains)]
            sb = stack_batches(batches)
            one = best_ms(lambda bs=batches: [fl.grad_and_loss(p0, x) for x in bs])
            batched = best_ms(lambda x=sb, f=grad_fn, st=stacked: f(st, x))
            rows.append({"part": "vmap_sweep", "what": f"gradient, {chains} chains, b = {b}: "
                         "one-chain ms / vmap ms", "ms": one / batched})
        for size in shards:
            parts = [fetch_batch(task.eval, np.arange(i, min(i + size, n)))
                     for i in range(0, n, size)]
            with torch.inference_mode():
                one = best_ms(lambda ps=parts, c=chains: [fl.eval_losses(p0, x)
                                                          for _ in range(c) for x in ps], 3)
                batched = best_ms(lambda ps=parts, f=eval_fn, st=stacked: [f(st, x) for x in ps],
                                  3)
            rows.append({"part": "vmap_sweep", "what": f"eval pass, {chains} chains, shards of "
                         f"{size}: one-chain ms / vmap ms", "ms": one / batched})
    return rows


def linear_rates(chains: int, rows_n: int, width: int) -> list[dict]:
    """GFLOP/s of one batched product against the same products one chain at a time."""
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(chains, rows_n, width, generator=rng)
    w = torch.randn(chains, width, width, generator=rng)
    bias = torch.randn(width, generator=rng)
    flops = 2 * chains * rows_n * width * width
    bmm = best_ms(lambda: torch.bmm(x, w), 10)
    addmm = best_ms(lambda: [torch.addmm(bias, x[c], w[c]) for c in range(chains)], 10)
    return [
        {"part": "linear", "what": f"torch.bmm [{chains}, {rows_n}, {width}] x [{chains}, "
         f"{width}, {width}], GFLOP/s", "ms": flops / bmm / 1e6},
        {"part": "linear", "what": f"{chains} x torch.addmm [{rows_n}, {width}] x [{width}, "
         f"{width}], GFLOP/s", "ms": flops / addmm / 1e6},
    ]


STARTUP = """
import json, time, torch
t0 = time.perf_counter()
import torch._dynamo
RESULT = {"seconds": time.perf_counter() - t0}
"""


def startup() -> list[dict]:
    """The import ``torch.func.grad`` makes on its first call, in a fresh process."""
    return [{"part": "startup", "what": "import torch._dynamo after torch (first torch.func "
             "grad call)", "ms": run_measured(STARTUP)["seconds"] * 1e3}]


def reparametrisation(task, fl: FunctionalLoss) -> list[dict]:
    """Per-call cost on a tiny batch, where the overhead is not hidden by the compute."""
    params = fl.initial_params()
    batch = fetch_batch(task.train, np.arange(8))
    swapped = {"model." + k: v for k, v in params.items()}
    with torch.no_grad():
        return [
            {"part": "functional_call", "what": "module called directly (8 samples)",
             "ms": best_ms(lambda: fl.module(batch), 200)},
            {"part": "functional_call", "what": "FunctionalLoss.losses (8 samples)",
             "ms": best_ms(lambda: fl.losses(params, batch), 200)},
            {"part": "functional_call", "what": "functional_call with tie_weights (old)",
             "ms": best_ms(lambda: functional_call(fl.module, swapped, (batch,), strict=False),
                           200)},
        ]


def reduce_tile(block: int, m: int, root: Path) -> list[dict]:
    """One off-diagonal B x B tile of the dense reduce, part by part, as reduction/tiles.py
    does it for float32 outputs, with one BLAS thread (the reduce's tile threads have one
    each). Times are CPU seconds of this thread, less moved than wall time by other work on
    the machine; the chunk writes' are of the whole process (Zarr writes on its own threads).
    """
    rng = np.random.default_rng(0)
    left, right = rng.standard_normal((m, block)), rng.standard_normal((m, block))
    scale = rng.random(2 * block).astype(np.float32)
    prod = left.T @ right
    cov, corr, _, _ = scaled_in_strips(prod, m, scale[:block], scale[block:], np.float32)
    arr = zarr.create_array(root / "tile.zarr", shape=(2 * block, 2 * block),
                            chunks=(block, block), dtype="float32",
                            config={"write_empty_chunks": True}, **array_codecs(compress=False))

    def zarr_write():
        arr[:block, block:] = cov

    def whole_tile_scaling():  # the pre-strip code: four passes over B x B arrays
        c = np.empty(prod.shape, np.float32)
        np.divide(prod, m - 1, out=c, casting="same_kind")
        k = np.multiply(c, scale[:block, None])
        k *= scale[None, block:]
        np.clip(k, -1.0, 1.0, out=k)
        return transposed(c), transposed(k)

    with threadpool_limits(limits=1, user_api="blas"):
        parts = [
            (f"product of a {block} x {block} tile (M = {m}), float64", lambda: left.T @ right,
             time.thread_time),
            ("covariance, correlation and their transposes, float32, in strips of 64 rows "
             "(reduction/tiles.py scaled_in_strips)",
             lambda: scaled_in_strips(prod, m, scale[:block], scale[block:], np.float32),
             time.thread_time),
            ("the same as four whole-tile passes and two strip transposes (before)",
             whole_tile_scaling, time.thread_time),
            ("write one float32 chunk, encoded by the reduce (write_chunk)",
             lambda: write_chunk(arr, (0, block), cov), time.process_time),
            ("write one float32 chunk through zarr's own pipeline", zarr_write,
             time.process_time),
        ]
        return [{"part": "reduce_tile", "what": what, "ms": best_ms(fn, 5, clock)}
                for what, fn, clock in parts]


PARTS = ("eval_shards", "vmap", "vmap_sweep", "linear", "startup", "functional_call",
         "reduce_tile")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="losskernel_dist.tasks.modular:build")
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--m", type=int, default=800)
    ap.add_argument("--shards", default="32,128,256,1000")
    ap.add_argument("--sweep-chains", default="4,8", help="chains of the vmap sweep ('' skips it)")
    ap.add_argument("--sweep-b", default="16,32,64,256", help="minibatch sizes of the vmap sweep")
    ap.add_argument("--sweep-shards", default="125,250,500,1000",
                    help="eval shard sizes of the vmap sweep")
    ap.add_argument("--only", default="", help="comma-separated parts to run (default all): "
                    + ",".join(PARTS))
    args = ap.parse_args()
    only = set(args.only.split(",")) - {""}
    if only - set(PARTS):
        ap.error(f"--only: unknown parts {sorted(only - set(PARTS))}; parts: {','.join(PARTS)}")
    record = BenchRecord("components", vars(args))
    torch.set_num_threads(args.threads)
    task = load_task(args.target, {"n_eval": args.n_eval})
    fl = FunctionalLoss(task, torch.device("cpu"))
    root = Path(tempfile.mkdtemp(prefix="bench_components_"))
    run = {
        "eval_shards": lambda: eval_shards(task, fl, [int(s) for s in args.shards.split(",")]),
        "vmap": lambda: vmapped(task, fl, args.chains, args.batch_size),
        "vmap_sweep": lambda: vmap_sweep(
            task, fl, [int(c) for c in args.sweep_chains.split(",")],
            [int(b) for b in args.sweep_b.split(",")],
            [int(x) for x in args.sweep_shards.split(",")]) if args.sweep_chains else [],
        "linear": lambda: linear_rates(args.chains, 3 * args.n_eval, 128),
        "startup": startup,
        "functional_call": lambda: reparametrisation(task, fl),
        "reduce_tile": lambda: reduce_tile(args.block, args.m, root),
    }
    rows = []
    try:
        for part in PARTS:
            if not only or part in only:
                watch = LoadWatch()
                rows += [{**row, **watch.stop()} for row in run[part]()]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(table(rows, ["part", "what", "ms", "foreign_cpu_per_s", "loaded"]))
    path = record.write({"rows": rows, "machine": machine()})
    print(f"record: {path.relative_to(Path(__file__).resolve().parent.parent)}")


if __name__ == "__main__":
    main()
