"""Benchmark: draws per second of ``losskernel sample`` against a minimal plain-PyTorch loop.

The baseline does exactly the same work per chain: a keyed-size minibatch
forward/backward, Gaussian noise, the SGLD update in place, and at each kept
draw a forward pass over the N eval samples into a preallocated array. It has
no store, no checkpoints, no counter-based keys: the floor for our overheads.
Each variant runs in a fresh process; threads are pinned so the comparison is
like for like.

Variants: baseline (1 process, T threads); ours, one chain at a time (same);
ours with chains batched (same threads): the minibatch gradients under vmap and
the loss-vector pass as ``sampler.batched_eval: auto`` picks it (chain by chain
on the CPU), and once more with both under vmap; ours as R torchrun ranks with
T/R threads each, chain by chain and with each rank's chains batched. Every
variant runs ``--repeats`` times, the rounds interleaved (baseline, ours, ...
then again) so that a burst of other load hits all of them
alike; the table reports each variant's fastest round. Each round's load (foreign CPU
per second, ``bench/_record.py``'s LoadWatch) is recorded with it, and the JSON record
(bench/results/sampling-*.json) gives each variant's fastest round among the quiet ones too.

    python bench/sampling.py [--n-eval 1000 --chains 4 --draws 20 --threads 2 --repeats 3]
    python bench/sampling.py --chains 8 --batch-size 32 --steps-between 4   # gradient-bound
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import BenchRecord, LoadWatch  # noqa: E402
from _util import PLAIN_SGLD_LOOP, run_measured, run_torchrun, table  # noqa: E402

BASELINE = """
import json, math, sys, time, torch, numpy as np
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
from losskernel_dist.task import load_task
s, eval_batch, seed = cfg["sampler"], cfg["eval_batch"], 0
task = load_task(cfg["target"], cfg["args"])
""" + PLAIN_SGLD_LOOP + """
RESULT = {"seconds": seconds, "draws": int(out.shape[0] * out.shape[1])}
"""

OURS = """
import json, sys, time, torch
from losskernel_dist.config import load_config
from losskernel_dist.jobs.sample import sample
config = load_config(sys.argv[1], sys.argv[2:])
report = sample(config, progress=False)
RESULT = {"seconds": report.seconds, "draws": report.draws_written}
"""


def ours_ranks(config_path: Path, ranks: int, threads: int) -> dict:
    """Ours under torchrun with ``ranks`` processes; wall time of the sampling part."""
    rows = run_torchrun(OURS, config_path.parent, ranks, threads, str(config_path),
                        f"sampler.threads={threads}")
    return {"seconds": max(r["seconds"] for r in rows), "draws": sum(r["draws"] for r in rows),
            "peak_rss": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="losskernel_dist.tasks.modular:build")
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--burnin", type=int, default=10)
    ap.add_argument("--steps-between", type=int, default=1, help="SGLD steps between draws")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-chains", type=int, default=0, help="chains per vmap batch (0: all)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best is kept")
    args = ap.parse_args()
    record = BenchRecord("sampling", vars(args))
    sampler = {"chains": args.chains, "draws": args.draws, "burnin_steps": args.burnin,
               "steps_between_draws": args.steps_between, "batch_size": args.batch_size, "lr": 1e-6,
               "nbeta": 500.0, "localization": 30000.0, "checkpoint_every": 50, "seed": 0,
               "threads": args.threads, "device": "cpu"}
    task_args = {"n_eval": args.n_eval}
    root = Path(tempfile.mkdtemp(prefix="bench_sampling_"))
    batch = args.batch_chains or args.chains
    ranks = 2
    rank_threads = max(1, args.threads // ranks)

    def config(name: str, **extra) -> Path:
        data = {"task": {"target": args.target, "args": task_args},
                "sampler": {**sampler, **extra}, "eval": {"batch_size": args.n_eval},
                "analysis": {"enabled": False}, "output": str(root / name)}
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    def fresh(path: Path) -> str:
        shutil.rmtree(root / path.stem, ignore_errors=True)  # each round samples from scratch
        return str(path)

    baseline_cfg = json.dumps({"target": args.target, "args": task_args, "sampler": sampler,
                               "threads": args.threads, "eval_batch": args.n_eval})
    single, batched = config("single"), config("batched", chains_per_batch=batch)
    all_vmap = config("batched_vmap", chains_per_batch=batch, batched_eval="vmap")
    ranked = config(f"ranks{ranks}")
    per_rank = max(1, args.chains // ranks)
    ranked_batched = config(f"ranks{ranks}_batched", chains_per_batch=per_rank)
    variants = [
        (f"plain PyTorch loop ({args.threads} threads)",
         lambda: run_measured(BASELINE, baseline_cfg)),
        (f"losskernel sample, chain by chain ({args.threads} threads)",
         lambda: run_measured(OURS, fresh(single))),
        (f"losskernel sample, {batch} chains batched (vmap gradients, eval auto, "
         f"{args.threads} threads)",
         lambda: run_measured(OURS, fresh(batched))),
        (f"losskernel sample, {batch} chains batched (vmap gradients and eval, "
         f"{args.threads} threads)",
         lambda: run_measured(OURS, fresh(all_vmap))),
        (f"losskernel sample, torchrun {ranks} ranks x {rank_threads} thread",
         lambda: ours_ranks(Path(fresh(ranked)), ranks, rank_threads)),
        (f"losskernel sample, torchrun {ranks} ranks x {rank_threads} thread, "
         f"{per_rank} chains batched per rank",
         lambda: ours_ranks(Path(fresh(ranked_batched)), ranks, rank_threads)),
    ]
    rounds: dict[str, list[dict]] = {name: [] for name, _ in variants}
    try:
        for _ in range(args.repeats):
            for name, run in variants:
                watch = LoadWatch()
                result = run()
                rounds[name].append({**result, "load": watch.stop()})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = []
    for name, results in rounds.items():
        best = min(results, key=lambda r: r["seconds"])
        quiet = [r for r in results if not r["load"]["loaded"]]
        rows.append({"variant": name, "draws": best["draws"], "seconds": round(best["seconds"], 3),
                     "draws_per_s": round(best["draws"] / best["seconds"], 2),
                     "quiet_rounds": len(quiet),
                     "quiet_best_seconds": (round(min(r["seconds"] for r in quiet), 3)
                                            if quiet else None),
                     "rounds": [{"seconds": round(r["seconds"], 3), "peak_rss": r["peak_rss"],
                                 **r["load"]} for r in results]})
    for r in rows:
        r["vs_baseline"] = round(r["draws_per_s"] / rows[0]["draws_per_s"], 2)
    print(table(rows, ["variant", "draws", "seconds", "draws_per_s", "vs_baseline",
                       "quiet_rounds"]))
    print(record.write({"rows": rows}))

if __name__ == "__main__":
    main()
