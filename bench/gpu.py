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

The floor, measured in the same run: a plain forward loop over the same eval
images already on the device, in float32 and in bf16 autocast with channels-last
(images/s, the best the eval pass could do). Each variant's eval-pass share is its
draws/s times N over the floor of its own precision (the SGLD step's minibatch,
3 b image-forwards a draw, is left out: an upper bound under 8% at b = 256).
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


def _forward(model, shards: list, device, dtype) -> None:
    """One plain forward pass over the shards, under autocast to ``dtype`` when given."""
    import torch

    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype,
                                                enabled=dtype is not None):
        for x in shards:
            model(x)


def floor(args: argparse.Namespace, passes: int) -> dict:
    """images/s of a plain forward loop over the eval images on the device: float32, and bf16
    autocast with channels-last (the optimised variant's settings); one warm-up pass each."""
    import torch
    from synthetic_vision import build

    task = build(n_eval=args.n_eval, n_train=8, image_size=args.image_size)
    device = torch.device(args.device)
    images = task.eval.tensors[0].to(device)
    model = task.model.to(device).eval()
    out = {}
    for name, dtype, layout in (("float32", None, torch.contiguous_format),
                                ("bf16", torch.bfloat16, torch.channels_last)):
        model = model.to(memory_format=layout)
        shards = [images[i:i + args.eval_batch].contiguous(memory_format=layout)
                  for i in range(0, len(images), args.eval_batch)]
        _forward(model, shards, device, dtype)  # warm-up (cuDNN's algorithm choice)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(passes):
            _forward(model, shards, device, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[f"{name}_images_per_s"] = passes * len(images) / (time.perf_counter() - t0)
    return out


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
    ap.add_argument("--floor-passes", type=int, default=3,
                    help="timed passes of the plain forward loop (0: no floor)")
    ap.add_argument("--json", default=None, help="also write the result to this file")
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
    base = floor(args, args.floor_passes) if args.floor_passes > 0 else {}
    draws_total = PAPER["chains"] * PAPER["draws"]
    for r, precision in ((plain, "float32"), (fast, "bf16")):
        per_gpu = r["draws_per_s"]
        r["projected_hours_4gpu"] = draws_total / (per_gpu * PAPER["gpus"]) / 3600
        if base:
            r["eval_share_of_floor"] = (per_gpu * args.n_eval
                                        / base[f"{precision}_images_per_s"])
    print(f"{'variant':<10} {'draws/s/GPU':>12} {'paper job on 4 GPUs (h)':>24}")
    for r in rows:
        print(f"{r['variant']:<10} {r['draws_per_s']:>12.3f} {r['projected_hours_4gpu']:>24.2f}")
    print(f"paper: {PAPER['hours']} h on 4 A100s; CKA(bf16 kernel, fp32 kernel) on 2000 samples "
          f"of these draws: {cka:.4f} (different chains' noise is identical, only the loss "
          "pass differs)")
    if base:
        print(f"floor (plain forward loop, images/s): float32 {base['float32_images_per_s']:.0f}"
              f", bf16 channels-last {base['bf16_images_per_s']:.0f}; eval-pass share: plain "
              f"{plain['eval_share_of_floor']:.2f}, optimized {fast['eval_share_of_floor']:.2f}")
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    result = {"bench": "gpu", "gpu": device, "rows": rows, "floor": base,
              "cka_bf16_vs_fp32": cka, "paper": PAPER,
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
