"""The ``sample`` job: set up or resume a run, run this process's chains, commit their draws.

The job sets up (task, device, eval shards, fingerprints), refuses a run it
must not touch, takes the chains' locks, creates or opens the run, and then
runs each of its chains in turn (several at once with
``sampler.chains_per_batch``), from where each resumes. The pieces it
composes live beside it:

* ``commits.py``: what one commit writes and in which order (loss vectors,
  then checkpoint, then ``done`` flags), handed to the background writer of
  ``writer.py``;
* ``resume.py``: where a chain resumes from, lost-draw recovery, and the
  checkpoint key, fingerprints and numerics a resume must match;
* ``signals.py``: stop signals, which end sampling after a clean checkpoint
  with ``SamplingInterrupted``.

Everything handed to the writer is committed before ``sample`` returns or
raises, and before a diverged chain's partners are resumed from their
checkpoints.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..checkpoint import ChainState
from ..config import Config, ConfigError
from ..distributed import Placement, ProcessGroup, chains_for, placement_from_env, select_device
from ..errors import RunDirError
from ..guards.measure import measure_reference
from ..locks import ChainLocks
from ..rundir import RunDir, check_existing_run, prepare_run
from ..sampler.batched import batched_eval_mode, import_transform_machinery, run_chains_batched
from ..sampler.chain import ChainDiverged, ChainEvent, SGLDSettings, run_chain
from ..sampler.data import EvalShards
from ..sampler.functional import FunctionalLoss
from ..sampler.schedule import StepSchedule
from ..store import RunStore, StoreError
from ..task import Task, load_task
from .commits import ChainWriter
from .resume import (
    check_numerics,
    checkpoint_key,
    recover_lost_draws,
    resume_state,
    task_fingerprints,
)
from .signals import SamplingInterrupted, StopSignals
from .writer import CommitQueue


@dataclass
class SampleReport:
    """What one process's ``sample`` did: its chains, draws written, failures, time, stop."""

    chains: list[int]
    draws_written: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    stopped_by: int | None = None
    unfinished: list[int] = field(default_factory=list)


def settings_from(config: Config) -> SGLDSettings:
    """The chain settings of the config's sampler section."""
    s = config.sampler
    return SGLDSettings(
        lr=s.lr, nbeta=s.nbeta, localization=s.localization, seed=s.seed,
        batch_size=s.batch_size, schedule=StepSchedule.of(s), noise=s.noise,
        loader_workers=s.loader_workers,
    )


def _open_created_store(run_dir: Path, wait_s: float = 60.0) -> RunStore:
    """Open the store that rank 0 has just created (before the barrier).

    On a shared file system another node may not see a new directory at once
    (NFS caches lookups for up to a minute), so a missing store is retried.
    """
    end = time.monotonic() + wait_s
    while True:
        try:
            return RunDir(run_dir).open_store(mode="r+")
        except StoreError:
            if time.monotonic() > end:
                raise
            time.sleep(1.0)


def _device_for(config: Config, placement: Placement) -> torch.device:
    """This process's device (its local rank's GPU, or the configured one), made current."""
    device = select_device(config.sampler.device, placement.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def sample(
    config: Config,
    *,
    chains: list[int] | None = None,
    placement: Placement | None = None,
    progress: bool = True,
    task: Task | None = None,
) -> SampleReport:
    """Start or resume sampling; this process runs ``chains`` (default: its rank's share).

    ``task``: an already built Task (the Python API's in-memory tasks); by default
    it is built from ``config.task``. Raises SamplingInterrupted when a stop
    signal ended it early (after a clean checkpoint of the chain it was running),
    LockedError when another live process holds one of the chains, RunDirError
    for a run it must not touch.
    """
    placement = placement or placement_from_env()
    with StopSignals() as stop:
        if config.sampler.threads:
            torch.set_num_threads(config.sampler.threads)
        device = _device_for(config, placement)
        group = ProcessGroup(placement, device)
        try:
            report = _sample(config, chains, placement, device, group, progress, stop, task)
        finally:
            group.close()
    if report.stopped_by is not None:
        raise SamplingInterrupted(report.stopped_by, report.unfinished)
    return report


def _sample(
    config: Config,
    chains: list[int] | None,
    placement: Placement,
    device: torch.device,
    group: ProcessGroup,
    progress: bool,
    stop: StopSignals,
    task: Task | None,
) -> SampleReport:
    """Set up, check and lock the run, then run this process's chains (``_run_chains``)."""
    if task is None:
        task = load_task(config.task.target, config.task.args)
    fl = FunctionalLoss(task, device, eval_autocast=config.eval.autocast,
                        channels_last=config.eval.channels_last)
    shards = EvalShards(task.eval, config.eval.batch_size, device, cache=config.eval.cache,
                        channels_last=config.eval.channels_last)
    fingerprints = task_fingerprints(task, shards, config.run_dir)
    if config.sampler.chains_per_batch > 1:
        import_transform_machinery()
    mine = chains if chains is not None else chains_for(
        placement.rank, placement.world_size, config.sampler.chains
    )
    bad = [c for c in mine if not 0 <= c < config.sampler.chains]
    if bad:
        raise ConfigError(f"sampler.chains: chain ids {bad} outside 0..{config.sampler.chains - 1}")
    reference = None
    if placement.is_main:
        existing = check_existing_run(config, fingerprints)  # refuse before locks or writes
        if existing is None or not existing.has_reference():
            # the losses at w*, for the guard rails, measured before anything is written: a
            # task whose loss is of the wrong shape or not finite there leaves no run behind
            reference = measure_reference(fl, task.train, shards, seed=config.sampler.seed,
                                          batch_size=config.sampler.batch_size,
                                          eval_batch_size=config.eval.batch_size)
    with ChainLocks(RunDir(config.run_dir).locks, mine):
        if placement.is_main:
            prepare_run(config, task, fingerprints)
        group.barrier()
        store = _open_created_store(config.run_dir)
        check_numerics(store, device, config)
        if store.shape[2] != task.n_eval:
            raise RunDirError(
                f"store has N={store.shape[2]} samples but the task has {task.n_eval}"
            )
        if reference is not None:  # before any step (a no-op when another process was first)
            store.write_reference(*reference)
        report = _run_chains(config, store, mine, fl, task, shards, fingerprints, placement,
                             progress, stop)
    if report.stopped_by is None:
        group.barrier()
    return report


def _run_chains(
    config: Config,
    store: RunStore,
    mine: list[int],
    fl: FunctionalLoss,
    task: Task,
    shards: EvalShards,
    fingerprints: dict[str, str],
    placement: Placement,
    progress: bool,
    stop: StopSignals,
) -> SampleReport:
    """Run (or resume, or skip) each chain of ``mine`` in turn; see the module doc."""
    report = SampleReport(chains=mine)
    settings = settings_from(config)
    ckpt_key = checkpoint_key(config, store, fingerprints)
    anchor = fl.initial_params()
    done = recover_lost_draws(store, mine)
    status = store.chain_status()
    already = int(done[mine].sum()) if mine else 0
    bar = tqdm(
        total=len(mine) * settings.schedule.draws, initial=already,
        desc=f"sample[rank {placement.rank}]", unit="draw", disable=not progress,
        file=sys.stderr, dynamic_ncols=True,
    )
    start_time = time.perf_counter()
    finished: set[int] = set()
    pending: list[int] = []
    for chain in mine:
        if status[chain] != 0:
            report.failed[chain] = store.chain_errors().get(str(chain), "failed earlier")
            finished.add(chain)
        elif done[chain].all():  # its last commit wrote the final draw, state and flags
            finished.add(chain)
        else:
            pending.append(chain)
    states = {c: resume_state(config.run_dir, c, settings, done[c], ckpt_key) for c in pending}
    rows = {c: done[c].copy() for c in pending}
    writes = CommitQueue(config.sampler.write_queue)

    def commit(event: ChainEvent, writers: dict[int, ChainWriter]) -> None:
        writers[event.chain].add(event)
        if event.draw is not None:
            rows[event.chain][event.draw] = True
            report.draws_written += 1
            bar.update(1)
        if event.step >= settings.schedule.total_steps:
            finished.add(event.chain)

    def fail(exc: ChainDiverged) -> None:
        message = str(exc)
        writes.submit(lambda: store.mark_failed(exc.chain, message),
                      f"chain {exc.chain}'s failure")
        writes.drain()  # its partners resume from the checkpoints on disk
        report.failed[exc.chain] = message
        finished.add(exc.chain)
        print(f"losskernel: {exc}", file=sys.stderr)

    # Leaving this block (normally, by a stop signal or by an exception) commits
    # everything handed to the writer; a writer failure is raised here at the latest.
    with writes:
        for group in batch_groups(pending, states, config.sampler.chains_per_batch):
            if stop.requested:
                break
            writers = {c: ChainWriter(store, c, config.run_dir, ckpt_key, writes) for c in group}
            start = states[group[0]].step if states[group[0]] else 0
            try:
                if len(group) == 1:
                    chain = group[0]
                    events = run_chain(
                        fl, task.train, shards, settings, chain,
                        start_step=start,
                        start_params=states[chain].params if states[chain] else None,
                        anchor=anchor,
                        skip_draw=lambda t, row=rows[chain]: bool(row[t]),
                        should_stop=lambda: stop.requested,
                    )
                else:
                    events = run_chains_batched(
                        fl, task.train, shards, settings, group,
                        start_step=start,
                        start_params=[states[c].params if states[c] else anchor for c in group],
                        anchor=anchor,
                        skip_draw=lambda c, t: bool(rows[c][t]),
                        should_stop=lambda: stop.requested,
                        eval_mode=batched_eval_mode(config.sampler.batched_eval, fl.device),
                    )
                for event in events:
                    commit(event, writers)
                for writer in writers.values():
                    writer.commit()
            except ChainDiverged as exc:
                for writer in writers.values():
                    writer.commit()  # draws before the fault are sound: keep them
                fail(exc)
                # the group's other chains go on alone, from their own last commit
                for chain in group:
                    if chain in finished or stop.requested:
                        continue
                    state = resume_state(config.run_dir, chain, settings, rows[chain], ckpt_key)
                    writer = ChainWriter(store, chain, config.run_dir, ckpt_key, writes)
                    try:
                        for event in run_chain(
                            fl, task.train, shards, settings, chain,
                            start_step=state.step if state else 0,
                            start_params=state.params if state else None,
                            anchor=anchor,
                            skip_draw=lambda t, row=rows[chain]: bool(row[t]),
                            should_stop=lambda: stop.requested,
                        ):
                            commit(event, {chain: writer})
                        writer.commit()
                    except ChainDiverged as again:
                        writer.commit()
                        fail(again)
    bar.close()
    report.seconds = time.perf_counter() - start_time
    if stop.requested:
        report.unfinished = [c for c in mine if c not in finished]
        if report.unfinished:
            report.stopped_by = stop.signum
    return report


def batch_groups(
    chains: list[int], states: dict[int, ChainState | None], size: int
) -> list[list[int]]:
    """Chains that can advance together: same resume step, at most ``size`` per group.

    Groups keep the order of ``chains`` (by their first member), so chains finish
    in the same order whatever the batching.
    """
    by_step: dict[int, list[int]] = {}  # insertion order = first appearance
    for chain in chains:
        by_step.setdefault(states[chain].step if states[chain] else 0, []).append(chain)
    groups = [
        members[i : i + size]
        for members in by_step.values()
        for i in range(0, len(members), max(1, size))
    ]
    return sorted(groups, key=lambda g: chains.index(g[0]))
