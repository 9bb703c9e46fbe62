"""The ``sample`` job: set up or resume a run, run this process's chains, commit their draws.

Commit order for each chain, at every checkpoint point: the buffered loss
vectors are written, then the chain state is checkpointed (atomically), then
the draws' ``done`` flags are set. A kill at any instant leaves a consistent
run, because resuming starts from the newest checkpoint that every draw kept
at or before its step is ``done`` for (``covered``); a checkpoint saved just
before a kill that beat the ``done`` flags is passed over for the previous one
(or for the chain's start), and the draws after it are rewritten. Every draw
is a function of (seed, chain, step) alone, so a rewritten draw is
bit-identical to the one that was lost.

The commits are made by one background writer thread (``writer.py``), in
the order they are handed over, so the sequence of states on disk is the one
above; the chain only waits when the writer is ``sampler.write_queue``
commits behind (0: every commit is made inline). What is handed over is
copied first (``sampler/host.py``), and everything handed over is committed
before ``sample`` returns or raises, and before a diverged chain's partners
are resumed from their checkpoints.

Stop signals (SIGTERM, SIGUSR2, SIGINT) do not kill the process: they set a
flag that the chain reads after every SGLD step; the chain then yields a
checkpoint, the writer commits it after everything queued before it, and
``sample`` raises ``SamplingInterrupted`` once every handler it replaced is
back in place (so that a caller such as a submitit task can hand the signal
on). A second SIGINT aborts at once (commits still queued are dropped; the
run stays consistent and a resume recomputes them).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checkpoint import ChainState, restore, save_chain
from ..config import Config, ConfigError, draw_keys
from ..distributed import Placement, ProcessGroup, chains_for, placement_from_env, select_device
from ..errors import RunDirError
from ..fingerprint import (
    batches_fingerprint,
    dataset_fingerprint,
    dict_fingerprint,
    model_fingerprint,
    numerics_description,
    samples_fingerprint,
)
from ..guards.measure import ensure_reference
from ..locks import ChainLocks
from ..rundir import RunDir, check_existing_run, prepare_run
from ..sampler.batched import batched_eval_mode, import_transform_machinery, run_chains_batched
from ..sampler.chain import ChainDiverged, ChainEvent, SGLDSettings, run_chain
from ..sampler.data import EvalShards
from ..sampler.functional import FunctionalLoss
from ..sampler.host import host_tensors
from ..sampler.schedule import StepSchedule
from ..store import RunStore, StoreError
from ..task import Task, load_task
from .writer import CommitQueue

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)



class SamplingInterrupted(RuntimeError):
    """A stop signal ended sampling early; every chain it stopped was checkpointed first."""

    def __init__(self, signum: int, unfinished: list[int]) -> None:
        self.signum = signum
        self.unfinished = unfinished
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} after checkpointing; chains {unfinished} are unfinished: "
            "run 'losskernel sample' again to resume"
        )


@dataclass
class SampleReport:
    chains: list[int]
    draws_written: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    stopped_by: int | None = None
    unfinished: list[int] = field(default_factory=list)


class StopSignals:
    """While active, SIGTERM / SIGUSR2 / SIGINT set a flag instead of ending the process.

    The previous handlers are saved on entry and restored on exit. Handlers can
    only be installed from the main thread; elsewhere the object is inert.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        if self.signum is None:
            self.signum = signum
            print(f"losskernel: {signal.Signals(signum).name} received: checkpointing and "
                  "stopping after the current SGLD step", file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous = {}


class ChainWriter:
    """Buffers one chain's draws and training losses and hands them to the writer in commits.

    Commit: the buffered training losses and loss vectors are written, then (at
    a checkpoint event) the chain state is saved, then the draws' ``done``
    flags are set. Buffering turns per-draw store writes into one write per
    chunk row. Everything buffered is a copy, so a commit still queued is not
    changed by the chain going on.
    """

    MAX_BUFFER_BYTES = 64 * 1024 * 1024

    def __init__(self, store: RunStore, chain: int, run_dir: Path, ckpt_key: str,
                 writes: CommitQueue | None = None) -> None:
        self.store, self.chain, self.run_dir, self.ckpt_key = store, chain, run_dir, ckpt_key
        self.writes = writes if writes is not None else CommitQueue(0)
        self.draws: list[int] = []
        self.losses: list[np.ndarray] = []
        self.distances: list[float] = []
        self.nbytes = 0
        self.train_start: int | None = None
        self.train: list[np.ndarray] = []

    def add(self, event: ChainEvent) -> None:
        if self.train_start is None:
            self.train_start = event.train_start
        self.train.append(np.array(event.train_loss, copy=True))
        if event.draw is not None and event.losses is not None:
            self.draws.append(event.draw)
            self.losses.append(np.array(event.losses, copy=True))
            self.distances.append(np.nan if event.distance is None else event.distance)
            self.nbytes += self.losses[-1].nbytes
        if event.params is not None or self.nbytes > self.MAX_BUFFER_BYTES:
            self.commit(event)

    def commit(self, event: ChainEvent | None = None) -> None:
        """Hand what is buffered (and ``event``'s checkpoint, if it has one) to the writer."""
        train = np.concatenate(self.train) if self.train else None
        state = None
        if event is not None and event.params is not None:
            state = ChainState(self.chain, event.step, host_tensors(event.params), self.ckpt_key)
        draws, losses, distances = self.draws, self.losses, self.distances
        train_start = self.train_start
        self.train, self.train_start = [], None
        self.draws, self.losses, self.distances, self.nbytes = [], [], [], 0
        if train is None and not draws and state is None:
            return
        parts = [f"draws {draws[0]}-{draws[-1]}"] if draws else ["training losses"]
        if state is not None:
            parts.append(f"checkpoint at step {state.step}")
        what = f"chain {self.chain}'s " + " and ".join(parts)
        self.writes.submit(
            lambda: self._write(train_start, train, draws, losses, distances, state), what
        )

    def _write(
        self,
        train_start: int | None,
        train: np.ndarray | None,
        draws: list[int],
        losses: list[np.ndarray],
        distances: list[float],
        state: ChainState | None,
    ) -> None:
        """One commit, in the order resume relies on (module doc); runs on the writer thread."""
        if train is not None:
            self.store.write_train_loss(self.chain, train_start, train)
        for first, last in _runs(draws):
            rows = np.stack(losses[first : last + 1])
            self.store.write_draws(self.chain, draws[first], rows)
            self.store.write_draw_summaries(
                self.chain, draws[first], np.asarray(distances[first : last + 1]),
                rows.mean(axis=1, dtype=np.float64),
            )
        if state is not None:
            save_chain(RunDir(self.run_dir).checkpoints, state)
        if draws:
            self.store.mark_done(self.chain, draws)


def _runs(draws: list[int]) -> list[tuple[int, int]]:
    """Index ranges [first, last] of consecutive draw numbers in ``draws``."""
    out, start = [], 0
    for i in range(1, len(draws) + 1):
        if i == len(draws) or draws[i] != draws[i - 1] + 1:
            out.append((start, i - 1))
            start = i
    return out if draws else []


def settings_from(config: Config) -> SGLDSettings:
    """The chain settings of the config's sampler section."""
    s = config.sampler
    return SGLDSettings(
        lr=s.lr, nbeta=s.nbeta, localization=s.localization, seed=s.seed,
        batch_size=s.batch_size, schedule=StepSchedule.of(s), noise=s.noise,
        loader_workers=s.loader_workers,
    )


def task_fingerprints(task: Task, shards: EvalShards, run_dir: Path | None = None
                      ) -> dict[str, str]:
    """What a run is tied to besides its config: the trained weights, the eval samples
    (by content, whatever eval.batch_size) and the training set.

    Runs made before the content fingerprints recorded ``eval_set`` (a hash of the
    shards, so tied to eval.batch_size): for such a run in ``run_dir`` it is computed
    too, so that the run is still checked and resumes with its old checkpoints.
    """
    prints = {"model": model_fingerprint(task.model), "eval_samples": samples_fingerprint(shards),
              "train_set": dataset_fingerprint(task.train)}
    run = RunDir(run_dir) if run_dir is not None else None
    if run is not None and run.has_store() and "eval_set" in run.open_store().fingerprints:
        prints["eval_set"] = batches_fingerprint(shards)
    return prints


def checkpoint_key(config: Config, store: RunStore, fingerprints: dict[str, str]) -> str:
    """The key a chain checkpoint must carry to be resumed from: the draw-changing config
    and the fingerprints the run was created with (so older runs keep their checkpoints)."""
    kept = {k: fingerprints[k] for k in sorted(store.fingerprints) if k in fingerprints}
    return dict_fingerprint({**draw_keys(config), **kept})


def check_numerics(store: RunStore, device: torch.device, config: Config) -> None:
    """Refuse to add draws computed with other numerics (threads, device, torch) than the
    run's: the last bits of every draw would differ from an uninterrupted run's."""
    threads = torch.get_num_threads()
    mode = batched_eval_mode(config.sampler.batched_eval, device)
    mine = numerics_description(device, threads, config.sampler.chains_per_batch, mode,
                                config.eval.batch_size)
    stored = store.record_numerics(mine)
    if stored == mine:
        return
    old = dict(p.split("=", 1) for p in stored.split())
    new = dict(p.split("=", 1) for p in mine.split())
    diff = ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new))
                     if old.get(k) != new.get(k))
    settable = {"threads": "sampler.threads", "eval_batch_size": "eval.batch_size",
                "chains_per_batch": "sampler.chains_per_batch",
                "batched_eval": "sampler.batched_eval"}
    fixes = [f"{settable[k]}={old[k]}" for k in settable
             if k in old and old.get(k) != new.get(k)]
    same_machine = all(old.get(k) == new.get(k) for k in ("device", "torch"))
    hint = (f"set {' '.join(fixes)} to resume it bitwise" if fixes and same_machine else
            "resume it where it was sampled (same device and torch), or sample into a new "
            "output")
    raise RunDirError(
        f"run {str(config.run_dir)!r} was sampled with other numerics ({diff}); its draws "
        f"would not be bitwise those of one run: {hint}"
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
    device = select_device(config.sampler.device, placement.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def covered(schedule: StepSchedule, done_row: np.ndarray, step: int) -> bool:
    """True when every draw kept at or before ``step`` is done: a state to resume from."""
    return bool(done_row[: schedule.draws_kept_by(step)].all())


def resume_state(
    run_dir: Path, chain: int, settings: SGLDSettings, done_row: np.ndarray, ckpt_key: str
) -> ChainState | None:
    """The checkpoint to continue ``chain`` from (None: from its start), per the module doc."""

    def accept(state: ChainState) -> bool:
        if state.fingerprint != ckpt_key:
            raise RunDirError(
                f"checkpoint of chain {chain} was made with another config, model or eval "
                "set; refusing to resume from it"
            )
        return covered(settings.schedule, done_row, state.step)

    return restore(RunDir(run_dir).checkpoints, chain, accept)


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
    it is built from ``config.task``. Raises SamplingInterrupted when a stop signal ended it early (after a clean
    checkpoint of the chain it was running), LockedError when another live
    process holds one of the chains, RunDirError for a run it must not touch.
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
    if placement.is_main:
        check_existing_run(config, fingerprints)  # refuse before taking locks or writing
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
        if placement.is_main:  # the losses at w*, for the guard rails, before any step
            ensure_reference(store, fl, task.train, shards, seed=config.sampler.seed,
                             batch_size=config.sampler.batch_size,
                             eval_batch_size=config.eval.batch_size)
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


def recover_lost_draws(store: RunStore, chains: list[int]) -> np.ndarray:
    """Mark not done the done draws of ``chains`` whose ``losses`` chunk is gone; the new
    ``done`` array. Their chains then resume from the newest checkpoint before them (or
    from w*) and rewrite them bitwise, since every draw is a function of (seed, chain,
    step): a lost chunk costs compute, never correctness."""
    done = store.done()
    mask = np.zeros_like(done)
    mask[chains] = done[chains]
    lost = store.missing_loss_chunks(mask)
    if not lost:
        return done
    by_chain: dict[int, list[int]] = {}
    for item in lost:
        by_chain.setdefault(item.chain, []).append(item.draw)
    for chain, draws in sorted(by_chain.items()):
        store.unmark_done(chain, sorted(set(draws)))
        print(f"losskernel: chain {chain}: {len(set(draws))} done draws lost their losses chunk "
              f"(first {lost[0].file}); recomputing them", file=sys.stderr)
    return store.done()


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
