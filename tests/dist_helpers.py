"""Helpers for the distributed, resume, failure and SLURM tests.

Small linear-task configs, ``losskernel`` in subprocesses (with the repository
on PYTHONPATH so that jobs can import the tasks below), and bitwise store
comparison. Two test tasks live here because subprocesses and SLURM jobs must
import them by name:

- ``slow_linear``: the linear task whose loss sleeps ``LK_TEST_SLEEP_S``
  seconds per call, so that a run lasts long enough to be signalled mid-way
  without burning CPU (the sleep does not change any number);
- ``poisoned_linear``: the linear task with one training target set to NaN,
  so the chains whose minibatches draw that sample diverge.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from losskernel_dist.task import Task
from losskernel_dist.tasks import linear

REPO = Path(__file__).resolve().parents[1]
SLOW_TARGET = "tests.dist_helpers:slow_linear"
POISON_TARGET = "tests.dist_helpers:poisoned_linear"


def slow_linear(**args: Any) -> Task:
    """The linear task, with ``LK_TEST_SLEEP_S`` seconds of sleep in every loss call."""
    task = linear.build(**args)
    delay = float(os.environ.get("LK_TEST_SLEEP_S", "0") or 0)
    inner = task.loss

    def loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
        if delay:
            time.sleep(delay)
        return inner(model, batch)

    return dataclasses.replace(task, loss=loss)


def poisoned_linear(poison: int, **args: Any) -> Task:
    """The linear task with training target ``poison`` set to NaN."""
    task = linear.build(**args)
    x, y = task.train.tensors
    y = y.clone()
    y[poison] = float("nan")
    return dataclasses.replace(task, train=torch.utils.data.TensorDataset(x, y))


def run_config(output: Path, *, target: str = "losskernel_dist.tasks.linear:build",
               args: dict | None = None, slurm: dict | None = None, **sampler: Any) -> dict:
    """Raw config data of a small CPU run; ``sampler`` overrides sampler keys."""
    base = {
        "chains": 4, "draws": 12, "burnin_steps": 6, "steps_between_draws": 2,
        "batch_size": 32, "lr": 1.0e-3, "nbeta": 50.0, "localization": 10.0, "seed": 3,
        "checkpoint_every": 4, "device": "cpu", "threads": 1,
    }
    base.update(sampler)
    return {
        "task": {"target": target, "args": args or {"n": 128, "n_eval": 20, "dim": 6}},
        "sampler": base,
        "eval": {"batch_size": 8},
        "reduce": {"block_size": 8, "threads": 1},
        "analysis": {"enabled": False},
        "slurm": {"cluster": "local", "time_min": 10, "signal_delay_s": 30,
                  "cpus_per_task": 1, "chains_per_task": 2, **(slurm or {})},
        "output": str(output),
    }


def poisoned_config(run: Path, chains: int = 3, victim: int = 1, **slurm: Any) -> tuple[dict, int]:
    """A run of ``poisoned_linear`` in which only chain ``victim`` draws the NaN training sample,
    first at SGLD step s (12 <= s <= 22, after some draws); returns (config data, s)."""
    from losskernel_dist.config import config_from_dict
    from losskernel_dist.jobs.sample import settings_from
    from losskernel_dist.rng import minibatch_indices

    n, b = 512, 4
    data = run_config(run, target=POISON_TARGET, chains=chains, batch_size=b,
                      slurm=slurm or None)
    settings = settings_from(config_from_dict(data))
    first: list[dict[int, int]] = []
    for chain in range(chains):
        seen: dict[int, int] = {}
        for step in range(settings.schedule.total_steps):
            for i in minibatch_indices(settings.seed, chain, step, n, b):
                seen.setdefault(int(i), step)
        first.append(seen)
    hits = sorted((s, i) for i, s in first[victim].items() if 12 <= s <= 22 and
                  not any(i in first[c] for c in range(chains) if c != victim))
    step, poison = hits[0]
    data["task"]["args"] = {"n": n, "n_eval": 20, "dim": 6, "poison": poison}
    return data, step


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for ``losskernel`` subprocesses and jobs: one thread, repo importable."""
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra)
    return env


def losskernel_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "losskernel_dist.cli", *args]


def run_losskernel(*args: str, env: dict[str, str] | None = None,
                   timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``losskernel ARGS`` to completion in a subprocess."""
    return subprocess.run(losskernel_cmd(*args), env=env or subprocess_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def store_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    """The sampling arrays of a run's store, read in full."""
    from losskernel_dist.rundir import RunDir

    store = RunDir(run_dir).open_store()
    g = store.group
    return {name: np.asarray(g[name][...]) for name in
            ("losses", "done", "train_loss", "chain_status")}


def reduce_as_configured(run_dir: Path) -> None:
    """Reduce a run the way 'losskernel reduce' and the submitted reduce job do (its config)."""
    from losskernel_dist.config import config_from_dict
    from losskernel_dist.reduction.dispatch import reduce_with_config
    from losskernel_dist.rundir import RunDir

    config = config_from_dict(RunDir(run_dir).read_config_dict())
    reduce_with_config(RunDir(run_dir).open_store(mode="r+"), config)


def kernel_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    from losskernel_dist.rundir import RunDir

    store = RunDir(run_dir).open_store()
    return {name: np.asarray(store.kernel_array(name)[...]) for name in
            ("mean", "var", "cov", "corr")}


def bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, dtype and bytes (NaN == NaN, -0.0 != 0.0)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name, ref in want.items():
        assert name in got, name
        if not bitwise_equal(got[name], ref):
            diff = np.argwhere(~((got[name] == ref) | (np.isnan(got[name]) & np.isnan(ref)))
                               if ref.dtype.kind == "f" else got[name] != ref)
            raise AssertionError(f"{name} differs bitwise at {diff[:5].tolist()} "
                                 f"({len(diff)} elements)")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               proc: subprocess.Popen | None = None, poll: float = 0.05) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` s or when ``proc`` exits first."""
    end = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{out}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def done_count(run_dir: Path, chains: list[int] | None = None) -> int:
    """Draws marked done so far (0 while the store does not exist yet)."""
    from losskernel_dist.rundir import RunDir

    if not (RunDir(run_dir).store / "zarr.json").is_file():
        return 0
    done = store_arrays(run_dir)["done"]
    return int(done[chains].sum() if chains is not None else done.sum())
