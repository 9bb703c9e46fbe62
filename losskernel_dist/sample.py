"""The ``sample`` job: set up or resume a run, run this process's chains, commit their draws.

Commit order for each chain event: the draw's loss vector is written, then its
``done`` flag, then (at checkpoint points) the chain state. A kill at any
instant therefore leaves draws that are either done and complete, or not done
and rewritten on resume; since every draw is a function of (seed, chain, step),
the rewritten draw is bit-identical to the one that was lost.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from .checkpoint import ChainState, load_chain, save_chain
from .config import Config, ConfigError, differing_draw_keys, draw_keys, dump_config
from .distributed import Placement, ProcessGroup, chains_for, placement_from_env, select_device
from .fingerprint import batches_fingerprint, dict_fingerprint, model_fingerprint
from .locks import ChainLocks
from .sampler.chain import ChainDiverged, ChainEvent, SGLDSettings, run_chain
from .sampler.data import EvalShards
from .sampler.functional import FunctionalLoss
from .store import RunStore, StoreError
from .task import Task, load_task

STORE_NAME = "store.zarr"
CONFIG_NAME = "config.yaml"


class RunDirError(RuntimeError):
    """A run directory that cannot be used for the request; nothing was written."""


@dataclass
class SampleReport:
    chains: list[int]
    draws_written: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


class ChainWriter:
    """Buffers one chain's draws and training losses and commits them in a safe order.

    Commit: the buffered loss vectors are written, then (at a checkpoint event)
    the chain state is saved, then the draws' ``done`` flags are set. Buffering
    turns per-draw store writes into one write per chunk row.
    """

    MAX_BUFFER_BYTES = 64 * 1024 * 1024

    def __init__(self, store: RunStore, chain: int, run_dir: Path, ckpt_key: str) -> None:
        self.store, self.chain, self.run_dir, self.ckpt_key = store, chain, run_dir, ckpt_key
        self.draws: list[int] = []
        self.losses: list[np.ndarray] = []
        self.train_start: int | None = None
        self.train: list[np.ndarray] = []

    def add(self, event: ChainEvent) -> None:
        if self.train_start is None:
            self.train_start = event.train_start
        self.train.append(event.train_loss)
        if event.draw is not None and event.losses is not None:
            self.draws.append(event.draw)
            self.losses.append(event.losses)
        nbytes = sum(x.nbytes for x in self.losses)
        if event.params is not None or nbytes > self.MAX_BUFFER_BYTES:
            self.commit(event)

    def commit(self, event: ChainEvent | None = None) -> None:
        if self.train:
            self.store.write_train_loss(self.chain, self.train_start, np.concatenate(self.train))
        self.train, self.train_start = [], None
        for first, last in _runs(self.draws):
            rows = np.stack(self.losses[first : last + 1])
            self.store.write_draws(self.chain, self.draws[first], rows)
        if event is not None and event.params is not None:
            save_chain(
                checkpoint_dir(self.run_dir),
                ChainState(self.chain, event.step, event.params, self.ckpt_key),
            )
        if self.draws:
            self.store.mark_done(self.chain, self.draws)
        self.draws, self.losses = [], []


def _runs(draws: list[int]) -> list[tuple[int, int]]:
    """Index ranges [first, last] of consecutive draw numbers in ``draws``."""
    out, start = [], 0
    for i in range(1, len(draws) + 1):
        if i == len(draws) or draws[i] != draws[i - 1] + 1:
            out.append((start, i - 1))
            start = i
    return out if draws else []


def settings_from(config: Config) -> SGLDSettings:
    s = config.sampler
    return SGLDSettings(
        lr=s.lr, nbeta=s.nbeta, localization=s.localization, seed=s.seed,
        batch_size=s.batch_size, burnin_steps=s.burnin_steps,
        steps_between_draws=s.steps_between_draws, draws=s.draws, noise=s.noise,
        checkpoint_every=s.checkpoint_every,
    )


def store_path(run_dir: Path) -> Path:
    return Path(run_dir) / STORE_NAME


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def read_run_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise RunDirError(f"{str(run_dir)!r} is not a run directory (no {CONFIG_NAME})")
    return yaml.safe_load(path.read_text())


def check_existing_run(config: Config, fingerprints: dict[str, str]) -> RunStore | None:
    """Validate an existing run directory against this config; None when it is new.

    Refuses (RunDirError, nothing written) a directory that is not a run, a run
    whose draw-changing keys differ, or one made from a different model or eval set.
    """
    run_dir = config.run_dir
    if not run_dir.exists():
        return None
    spath = store_path(run_dir)
    if not spath.exists():
        if any(run_dir.iterdir()):
            raise RunDirError(
                f"output {str(run_dir)!r} exists, is not empty and holds no run ({STORE_NAME})"
            )
        return None
    try:
        store = RunStore.open(spath, mode="r+")
    except StoreError as exc:
        raise RunDirError(str(exc)) from exc
    changed = differing_draw_keys(store.config, config)
    if changed:
        old = draw_keys(store.config)
        new = draw_keys(config)
        detail = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise RunDirError(
            f"run {str(run_dir)!r} was sampled with a different config; "
            f"refusing to resume with changed {detail}"
        )
    stored = store.attrs.get("fingerprints", {})
    for key, value in fingerprints.items():
        if key in stored and stored[key] != value:
            raise RunDirError(
                f"run {str(run_dir)!r} was sampled from a different {key.replace('_', ' ')} "
                f"(stored {stored[key][:12]}, now {value[:12]}); refusing to mix kernels"
            )
    return store


def create_run(config: Config, task: Task, fingerprints: dict[str, str]) -> RunStore:
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_NAME).write_text(dump_config(config))
    return RunStore.create(
        store_path(run_dir),
        chains=config.sampler.chains,
        draws=config.sampler.draws,
        n=task.n_eval,
        total_steps=config.sampler.total_steps,
        config=config.to_dict(),
        labels=task.labels,
        label_names=list(task.label_names) if task.label_names is not None else None,
        attributes=task.attributes,
        extra_attrs={"fingerprints": fingerprints, "n_train": task.n_train},
    )


def _device_for(config: Config, placement: Placement) -> torch.device:
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
) -> SampleReport:
    """Start or resume sampling; this process runs ``chains`` (default: its rank's share)."""
    placement = placement or placement_from_env()
    if config.sampler.threads:
        torch.set_num_threads(config.sampler.threads)
    device = _device_for(config, placement)
    group = ProcessGroup(placement, device)
    try:
        return _sample(config, chains, placement, device, group, progress)
    finally:
        group.close()


def _sample(
    config: Config,
    chains: list[int] | None,
    placement: Placement,
    device: torch.device,
    group: ProcessGroup,
    progress: bool,
) -> SampleReport:
    task = load_task(config.task.target, config.task.args)
    fl = FunctionalLoss(task, device)
    shards = EvalShards(task.eval, config.eval.batch_size, device, cache=config.eval.cache)
    fingerprints = {
        "model": model_fingerprint(task.model),
        "eval_set": batches_fingerprint(shards),
    }
    if placement.is_main:
        store = check_existing_run(config, fingerprints)
        if store is None:
            create_run(config, task, fingerprints)
        else:
            (config.run_dir / CONFIG_NAME).write_text(dump_config(config))
    group.barrier()
    store = RunStore.open(store_path(config.run_dir), mode="r+")
    if store.shape[2] != task.n_eval:
        raise RunDirError(f"store has N={store.shape[2]} samples but the task has {task.n_eval}")

    mine = chains if chains is not None else chains_for(
        placement.rank, placement.world_size, config.sampler.chains
    )
    bad = [c for c in mine if not 0 <= c < config.sampler.chains]
    if bad:
        raise ConfigError(f"sampler.chains: chain ids {bad} outside 0..{config.sampler.chains - 1}")
    report = SampleReport(chains=mine)
    settings = settings_from(config)
    ckpt_key = dict_fingerprint({**draw_keys(config), **fingerprints})
    anchor = fl.initial_params()
    done = store.done()
    status = store.chain_status()
    total_draws = len(mine) * settings.draws
    already = int(done[mine].sum()) if mine else 0
    bar = tqdm(
        total=total_draws, initial=already, desc=f"sample[rank {placement.rank}]",
        unit="draw", disable=not progress, file=sys.stderr, dynamic_ncols=True,
    )
    start_time = time.perf_counter()
    with ChainLocks(config.run_dir / "locks", mine):
        for chain in mine:
            if status[chain] != 0:
                report.failed[chain] = store.chain_errors().get(str(chain), "failed earlier")
                continue
            state = load_chain(checkpoint_dir(config.run_dir), chain)
            if state is not None and state.fingerprint != ckpt_key:
                raise RunDirError(
                    f"checkpoint of chain {chain} was made with another config, model or eval "
                    "set; refusing to resume from it"
                )
            if state is not None and state.step >= settings.total_steps and done[chain].all():
                continue
            chain_done = done[chain].copy()
            writer = ChainWriter(store, chain, config.run_dir, ckpt_key)
            try:
                for event in run_chain(
                    fl, task.train, shards, settings, chain,
                    start_step=state.step if state else 0,
                    start_params=state.params if state else None,
                    anchor=anchor,
                    skip_draw=lambda t, row=chain_done: bool(row[t]),
                ):
                    writer.add(event)
                    if event.draw is not None:
                        chain_done[event.draw] = True
                        report.draws_written += 1
                        bar.update(1)
                writer.commit()
            except ChainDiverged as exc:
                writer.commit()  # draws before the fault are sound: keep them
                store.mark_failed(chain, str(exc))
                report.failed[chain] = str(exc)
                print(f"losskernel: {exc}", file=sys.stderr)
    bar.close()
    report.seconds = time.perf_counter() - start_time
    group.barrier()
    return report


def is_complete(store: RunStore) -> bool:
    return bool(store.done().all())
