"""Benchmark: what bf16 autocast of the loss-vector pass does to the kernel, and its speed.

Two runs of the same config differ only in ``eval.autocast`` (none / bf16).
Autocast touches only the eval pass, so both runs take bitwise the same SGLD
steps (checked): the two kernels are those of the same weights, with losses
computed in float32 or bf16. Printed: the per-sample change of the loss vectors,
CKA of the two covariance and correlation kernels, and the time of one eval pass
over the N samples at w* in each mode (fastest of several rounds, the two modes
interleaved in the same process, each round's load recorded by LoadWatch). The
JSON record goes to bench/results/autocast-*.json.

bf16 is a GPU option (tensor cores); on a CPU without native bf16 it is usually
slower, and the speed column says so. The kernel columns hold on any device:
CPU autocast rounds matmul inputs to bf16 and accumulates in float32 as CUDA does.

    python bench/autocast.py [--n-eval 2000 --chains 4 --draws 50]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import BenchRecord, LoadWatch  # noqa: E402
from _util import table  # noqa: E402

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


def eval_pass_rounds(args: argparse.Namespace, repeats: int = 5) -> dict[str, list[dict]]:
    """``repeats`` loss-vector passes over the N samples at w* per mode, interleaved.

    Each round is one pass in float32 then one in bf16 (after one warm-up pass of
    each), with the machine's load over it, so other work hits both modes alike.
    """
    task = load_task(args.target, {"n_eval": args.n_eval})
    shards = EvalShards(task.eval, args.n_eval, torch.device("cpu"), cache=True)
    modes = {m: FunctionalLoss(task, torch.device("cpu"), eval_autocast=m)
             for m in ("none", "bf16")}
    params = {m: fl.initial_params() for m, fl in modes.items()}
    rounds: dict[str, list[dict]] = {m: [] for m in modes}
    with torch.inference_mode():
        for r in range(repeats + 1):  # round 0 is a warm-up, not kept
            for mode, fl in modes.items():
                watch = LoadWatch()
                t0 = time.perf_counter()
                for batch in shards:
                    fl.eval_losses(params[mode], batch)
                seconds = time.perf_counter() - t0
                load = watch.stop()
                if r:
                    rounds[mode].append({"seconds": seconds, **load})
    return rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="losskernel_dist.tasks.modular:build")
    ap.add_argument("--n-eval", type=int, default=2000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved eval-pass rounds")
    args = ap.parse_args()
    record = BenchRecord("autocast", vars(args))
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
    rounds = eval_pass_rounds(args, args.repeats)
    speed = {mode: min(r["seconds"] for r in rs) for mode, rs in rounds.items()}
    quiet = {mode: [r["seconds"] for r in rs if not r["loaded"]] for mode, rs in rounds.items()}
    rows = [{"quantity": k, "value": v} for k, v in result.items()]
    rows += [{"quantity": f"eval pass at w*, {mode} (s)", "value": s} for mode, s in speed.items()]
    rows.append({"quantity": "bf16 / float32 time of the eval pass",
                 "value": speed["bf16"] / speed["none"]})
    print(table(rows, ["quantity", "value"]))
    print(record.write({**result, "eval_seconds_best": speed,
                        "bf16_over_float32_time": speed["bf16"] / speed["none"],
                        "eval_seconds_best_quiet": {m: min(q) if q else None
                                                    for m, q in quiet.items()},
                        "eval_rounds": rounds}))

if __name__ == "__main__":
    main()
