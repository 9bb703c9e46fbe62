"""Resume on a device: is a killed and resumed run bitwise equal to an uninterrupted one, and
what do deterministic algorithms cost?

    python3 bench/device/resume.py --device cuda --json resume.json
    python3 bench/device/resume.py --device cpu --dry-run           # the linear task, tiny

For each setting (``torch.use_deterministic_algorithms`` off, then on with
``CUBLAS_WORKSPACE_CONFIG=:4096:8``), three fresh processes on the same config:

1. the uninterrupted run (``sample``), timed: draws/s of the sampling loop;
2. the same run SIGKILLed just after its second set of done flags (tests/kill_at.py's
   ``done_marked``), then
3. resumed to the end by ``losskernel sample``;

and the resumed store's losses and train losses are compared with the uninterrupted
run's: bitwise equal or not, and the largest difference. The cost of determinism is
the ratio of the two uninterrupted runs' draws/s. The task is the paper's modular
transformer (its embedding's backward uses atomics on CUDA unless determinism is
on); ``--dry-run`` uses the linear task on the CPU with determinism on only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# argv: deterministic (0/1), kill point ("none" or a tests/kill_at.py point), count, CLI args...
CHILD = """
import json, sys, time
import torch
deterministic, point, count, *args = sys.argv[1:]
if deterministic == "1":
    torch.use_deterministic_algorithms(True)
sys.path.insert(0, REPO)
if point not in ("none", "timed"):
    from tests.kill_at import install
    install(point, int(count))
if point == "timed":
    import yaml
    from losskernel_dist.config import config_from_dict
    from losskernel_dist.jobs.sample import sample
    with open(args[0]) as f:
        report = sample(config_from_dict(yaml.safe_load(f)), progress=False)
    print(json.dumps({"draws": report.draws_written, "seconds": report.seconds}))
    sys.exit(0)
from losskernel_dist.cli import main
sys.exit(main(args))
"""


def config(out: Path, device: str, dry_run: bool) -> dict:
    """The run: modular transformer on the device (2 chains x 40 draws), or a tiny linear one."""
    if dry_run:
        task = {"target": "losskernel_dist.tasks.linear:build", "args": {"n": 64, "n_eval": 16}}
        sampler = {"chains": 1, "draws": 6, "burnin_steps": 2, "batch_size": 16, "lr": 1e-3,
                   "nbeta": 100.0, "localization": 10.0, "checkpoint_every": 2}
        batch = 16
    else:
        task = {"target": "losskernel_dist.tasks.modular:build", "args": {"n_eval": 2000}}
        sampler = {"chains": 2, "draws": 40, "burnin_steps": 20, "batch_size": 512,
                   "lr": 2e-7, "nbeta": 500.0, "localization": 3e6, "checkpoint_every": 10}
        batch = 2000
    return {"task": task, "sampler": {**sampler, "steps_between_draws": 1, "seed": 0,
                                      "device": device, "write_queue": 0},
            "eval": {"batch_size": batch}, "analysis": {"enabled": False}, "output": str(out)}


def child(deterministic: bool, point: str, count: int, *args: str,
          timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if deterministic:
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    code = f"REPO = {str(REPO)!r}\n" + CHILD
    return subprocess.run([sys.executable, "-c", code, "1" if deterministic else "0", point,
                           str(count), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def arrays(run: Path) -> dict[str, np.ndarray]:
    from losskernel_dist.rundir import RunDir

    group = RunDir(run).open_store().group
    return {name: np.asarray(group[name][...]) for name in ("losses", "train_loss", "done")}


def one_setting(root: Path, device: str, deterministic: bool, dry_run: bool,
                timeout: float) -> dict:
    """Uninterrupted (timed), killed, resumed; the comparison."""
    tag = "det" if deterministic else "nondet"
    cfgs = {}
    for name in ("ref", "resumed"):
        path = root / f"{tag}_{name}.yaml"
        path.write_text(yaml.safe_dump(config(root / f"{tag}_{name}", device, dry_run)))
        cfgs[name] = path
    ref = child(deterministic, "timed", 0, str(cfgs["ref"]), timeout=timeout)
    if ref.returncode:
        raise RuntimeError(f"uninterrupted run failed:\n{ref.stderr[-3000:]}")
    timing = json.loads(ref.stdout.strip().splitlines()[-1])
    killed = child(deterministic, "done_marked", 2, "sample", str(cfgs["resumed"]),
                   "--no-progress", timeout=timeout)
    if killed.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the kill did not happen ({killed.returncode}):\n"
                           f"{killed.stderr[-3000:]}")
    at_kill = int(arrays(root / f"{tag}_resumed")["done"].sum())
    resumed = child(deterministic, "none", 0, "sample", str(cfgs["resumed"]), "--no-progress",
                    timeout=timeout)
    if resumed.returncode:
        raise RuntimeError(f"resume failed:\n{resumed.stderr[-3000:]}")
    want, got = arrays(root / f"{tag}_ref"), arrays(root / f"{tag}_resumed")
    assert got["done"].all() and want["done"].all(), "a run did not finish"
    return {
        "deterministic": deterministic,
        "draws_per_s": timing["draws"] / timing["seconds"],
        "draws": timing["draws"], "seconds": timing["seconds"],
        "draws_done_at_kill": at_kill,
        "bitwise_equal": all(got[k].tobytes() == want[k].tobytes()
                             for k in ("losses", "train_loss")),
        "max_abs_loss_difference": float(np.abs(got["losses"] - want["losses"]).max()),
        "max_abs_train_loss_difference": float(
            np.abs(got["train_loss"] - want["train_loss"]).max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dry-run", action="store_true", help="the tiny linear task, determinism on")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per child process")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    settings = [True] if args.dry_run else [False, True]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_resume_") as tmp:
        for deterministic in settings:
            rows.append(one_setting(Path(tmp), args.device, deterministic, args.dry_run,
                                    args.timeout))
            print(json.dumps(rows[-1]), flush=True)
    result = {"bench": "resume", "device": args.device, "rows": rows,
              "seconds": time.perf_counter() - t0}
    if len(rows) == 2:
        result["determinism_cost"] = rows[0]["draws_per_s"] / rows[1]["draws_per_s"]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
