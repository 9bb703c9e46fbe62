"""GPU benchmark: draws per second per GPU for an Inception-v1-sized job, and the paper's job.

Runs ``losskernel sample`` on the synthetic Inception-v1 task (N eval images of
256 x 256, paper batch 256) twice on one GPU: with the plain settings (float32
loss pass, eval shards collated per draw on the host, default memory format)
and with the optimizations (eval set kept on the device, bf16 autocast of the
loss pass, channels-last). Each draw is one SGLD step plus one pass over N.
From the measured rate it projects the paper's ImageNet job (15 chains x 500
draws, burn-in 100) on four such GPUs, against the paper's ~3 hours on four A100s.
The CKA between the bf16 and float32 kernels of the same draws states what the
bf16 pass costs in accuracy.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

PAPER = {"chains": 15, "draws": 500, "burnin": 100, "gpus": 4, "hours": 3.0}


def run(root: Path, name: str, args: argparse.Namespace, **eval_opts) -> dict:
    from losskernel_dist.config import config_from_dict
    from losskernel_dist.jobs.sample import sample
    from losskernel_dist.store import RunStore

    data = {
        "task": {"target": "synthetic_vision:build",
                 "args": {"n_eval": args.n_eval, "n_train": args.n_train,
                          "image_size": args.image_size}},
        "sampler": {"chains": args.chains, "draws": args.draws, "burnin_steps": 1,
                    "steps_between_draws": 1, "batch_size": args.batch_size, "lr": 1e-6,
                    "nbeta": 20.0, "localization": 4000.0, "checkpoint_every": 0,
                    "device": args.device},
        "eval": {"batch_size": args.eval_batch, **eval_opts},
        "analysis": {"enabled": False},
        "output": str(root / name),
    }
    t0 = time.perf_counter()
    report = sample(config_from_dict(data), progress=False)
    wall = time.perf_counter() - t0
    losses = RunStore.open(root / name / "store.zarr").losses_array()[...]
    return {"variant": name, "draws": report.draws_written, "seconds": report.seconds,
            "wall_with_setup": wall, "draws_per_s": report.draws_written / report.seconds,
            "losses": losses}


def cka_of_draws(a: np.ndarray, b: np.ndarray) -> float:
    def gram(x: np.ndarray) -> np.ndarray:
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)
        x = x - x.mean(0)
        k = x.T @ x
        h = np.eye(len(k)) - 1.0 / len(k)
        return h @ k @ h

    ka, kb = gram(a), gram(b)
    return float((ka * kb).sum() / np.sqrt((ka * ka).sum() * (kb * kb).sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-eval", type=int, default=10_000)
    ap.add_argument("--draws", type=int, default=6)
    ap.add_argument("--chains", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256, help="SGLD minibatch (the paper's)")
    ap.add_argument("--eval-batch", type=int, default=1000, help="eval shard size")
    ap.add_argument("--n-train", type=int, default=4096, help="synthetic training images")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--device", default="cuda",
                    help="'cuda' (the benchmark); 'cpu' only checks that the script runs")
    args = ap.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU (or --device cpu for a smoke run)")
    root = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    try:
        plain = run(root, "plain", args, cache=False, autocast="none", channels_last=False)
        fast = run(root, "optimized", args, cache=True, autocast="bf16", channels_last=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cka = cka_of_draws(plain.pop("losses")[:, :, :2000], fast.pop("losses")[:, :, :2000])
    rows = [plain, fast]
    draws_total = PAPER["chains"] * PAPER["draws"]
    for r in rows:
        per_gpu = r["draws_per_s"]
        r["projected_hours_4gpu"] = draws_total / (per_gpu * PAPER["gpus"]) / 3600
    print(f"{'variant':<10} {'draws/s/GPU':>12} {'paper job on 4 GPUs (h)':>24}")
    for r in rows:
        print(f"{r['variant']:<10} {r['draws_per_s']:>12.3f} {r['projected_hours_4gpu']:>24.2f}")
    print(f"paper: {PAPER['hours']} h on 4 A100s; CKA(bf16 kernel, fp32 kernel) on 2000 samples "
          f"of these draws: {cka:.4f} (different chains' noise is identical, only the loss "
          "pass differs)")
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(json.dumps({"bench": "gpu", "gpu": device, "rows": rows,
                      "cka_bf16_vs_fp32": cka, "paper": PAPER}))


if __name__ == "__main__":
    main()
