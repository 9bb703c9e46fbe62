"""Benchmark: what bf16 autocast of the loss-vector pass does to the kernel, and its speed.

Two runs of the same config differ only in ``eval.autocast`` (none / bf16).
Autocast touches only the eval pass, so both runs take bitwise the same SGLD
steps (checked): the two kernels are those of the same weights, with losses
computed in float32 or bf16. Printed: the per-sample change of the loss vectors,
CKA of the two covariance and correlation kernels, and the time of one eval pass
over the N samples at w* in each mode (fastest of several, same process).

bf16 is a GPU option (tensor cores); on a CPU without native bf16 it is usually
slower, and the speed column says so. The kernel columns hold on any device:
CPU autocast rounds matmul inputs to bf16 and accumulates in float32 as CUDA does.

    python bench/autocast.py [--n-eval 2000 --chains 4 --draws 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import machine, table  # noqa: E402

from losskernel_dist.analysis.cka import cka  # noqa: E402
from losskernel_dist.config import config_from_dict  # noqa: E402
from losskernel_dist.jobs.sample import sample  # noqa: E402
from losskernel_dist.reduction.kernel import reduce_store  # noqa: E402
from losskernel_dist.sampler.data import EvalShards  # noqa: E402
from losskernel_dist.sampler.functional import FunctionalLoss  # noqa: E402
from losskernel_dist.store import RunStore  # noqa: E402
from losskernel_dist.task import load_task  # noqa: E402


def run(root: Path, args: argparse.Namespace, autocast: str) -> RunStore:
    data = {
        "task": {"target": args.target, "args": {"n_eval": args.n_eval}},
        "sampler": {"chains": args.chains, "draws": args.draws, "burnin_steps": 50,
                    "steps_between_draws": 2, "batch_size": 512, "lr": 2e-7, "nbeta": 500.0,
                    "localization": 3e6, "seed": 0, "threads": args.threads, "device": "cpu"},
        "eval": {"batch_size": args.n_eval, "autocast": autocast},
        "analysis": {"enabled": False},
        "output": str(root / autocast),
    }
    sample(config_from_dict(data), progress=False)
    store = RunStore.open(root / autocast / "store.zarr", mode="r+")
    reduce_store(store, block_size=1024, dtype="float64", threads=args.threads)
    return store


def eval_pass_seconds(args: argparse.Namespace, autocast: str, repeats: int = 5) -> float:
    """Fastest of ``repeats`` loss-vector passes over the N samples at w*."""
    task = load_task(args.target, {"n_eval": args.n_eval})
    fl = FunctionalLoss(task, torch.device("cpu"), eval_autocast=autocast)
    shards = EvalShards(task.eval, args.n_eval, torch.device("cpu"), cache=True)
    params = fl.initial_params()
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            for batch in shards:
                fl.eval_losses(params, batch)
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="losskernel_dist.tasks.modular:build")
    ap.add_argument("--n-eval", type=int, default=2000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench_autocast_"))
    try:
        full, half = run(root, args, "none"), run(root, args, "bf16")
        same_steps = bool(np.array_equal(full.train_loss(), half.train_loss()))
        a, b = full.losses_array()[...], half.losses_array()[...]
        rel = np.abs(b - a) / np.maximum(np.abs(a), 1e-30)
        result = {
            "same_sgld_steps": same_steps,
            "loss_rel_change_median": float(np.median(rel)),
            "loss_rel_change_p99": float(np.quantile(rel, 0.99)),
            "cka_cov": cka(full.kernel_array("cov"), half.kernel_array("cov")),
            "cka_corr": cka(full.kernel_array("corr"), half.kernel_array("corr")),
            "var_correlation": float(np.corrcoef(full.kernel_array("var")[...],
                                                 half.kernel_array("var")[...])[0, 1]),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    speed = {mode: eval_pass_seconds(args, mode) for mode in ("none", "bf16")}
    rows = [{"quantity": k, "value": v} for k, v in result.items()]
    rows += [{"quantity": f"eval pass at w*, {mode} (s)", "value": s} for mode, s in speed.items()]
    rows.append({"quantity": "bf16 speed-up of the eval pass", "value": speed["none"] / speed["bf16"]})
    print(table(rows, ["quantity", "value"]))
    print(json.dumps({"bench": "autocast", "target": args.target, "n_eval": args.n_eval,
                      "chains": args.chains, "draws": args.draws, **result,
                      "eval_seconds": speed, "machine": machine()}))


if __name__ == "__main__":
    main()
