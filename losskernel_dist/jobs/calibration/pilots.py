"""Running the pilots: create every pilot run, then sample this process's pilot chains.

Rank 0 (or each SLURM array task, one at a time under a file lock) creates the
pilot runs and stores the losses at w* in each before any chain runs; every
process then samples its share of the pilot chains with the ordinary
``sample`` job, one setting after another.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ...config import Config
from ...distributed import Placement, placement_from_env, select_device
from ...guards.measure import measure_reference
from ...rundir import RunDir
from .grid import Setting, calibration_dir, pilot_config


@contextmanager
def _prepare_lock(directory: Path) -> Iterator[None]:
    """Serialises pilot preparation between array tasks that start together."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".prepare.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def prepare_pilots(config: Config, settings: Sequence[Setting]) -> None:
    """Create every pilot run (or check the existing ones) and store the reference in each.

    The task is loaded once; a pilot made from another model, eval set or pilot
    budget is refused here (RunDirError naming what differs), before any chain
    runs. The losses at w* do not depend on the setting, so they are measured
    once and written into every new pilot.
    """
    from ...rundir import prepare_run
    from ...sampler.data import EvalShards
    from ...sampler.functional import FunctionalLoss
    from ...task import load_task
    from ..resume import task_fingerprints

    if config.sampler.threads:
        import torch

        torch.set_num_threads(config.sampler.threads)
    task = load_task(config.task.target, config.task.args)
    device = select_device(config.sampler.device, placement_from_env().local_rank)
    fl = FunctionalLoss(task, device)
    shards = EvalShards(task.eval, config.eval.batch_size, device, cache=config.eval.cache)
    fingerprints = task_fingerprints(task, shards)
    directory = calibration_dir(config)
    reference: tuple[np.ndarray, dict[str, Any]] | None = None
    with _prepare_lock(directory):
        for setting in settings:
            pilot = pilot_config(config, setting)
            prepare_run(pilot, task, fingerprints)
            store = RunDir(pilot.run_dir).open_store(mode="r+")
            if store.has_reference():
                continue
            if reference is None:
                reference = measure_reference(
                    fl, task.train, shards, seed=config.sampler.seed,
                    batch_size=config.sampler.batch_size,
                    eval_batch_size=config.eval.batch_size,
                )
            store.write_reference(*reference)


def run_pilots(
    config: Config,
    settings: Sequence[Setting],
    mine: dict[int, list[int]],
    local_rank: int,
    progress: bool,
    log: Any = print,
) -> dict[int, dict[int, str]]:
    """Sample this process's pilot chains, setting by setting; returns failures by setting.

    Each call to ``sample`` runs as a one-process job on its chains (the pilots
    exist already), on this process's device.
    """
    from ..sample import sample

    failed: dict[int, dict[int, str]] = {}
    for index, chains in sorted(mine.items()):
        pilot = pilot_config(config, settings[index])
        report = sample(pilot, chains=chains, placement=Placement(0, 1, local_rank),
                        progress=progress)
        if log:
            log(f"pilot {settings[index].name}: sampled chains {chains}: "
                f"{report.draws_written} draws in {report.seconds:.1f} s"
                + (f", chains {sorted(report.failed)} diverged" if report.failed else ""))
        if report.failed:
            failed[index] = dict(report.failed)
    return failed
