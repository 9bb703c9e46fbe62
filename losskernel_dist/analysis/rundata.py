"""The run inputs every analysis may ask for by name, read once from a reduced run.

An analysis declares what it needs by its parameter names (registry.py); each
field of ``RunData`` is one such name (``store``, ``settings``, ``corr``,
``labels``, ``draws``...). Nothing here holds the N x N kernel: ``corr`` gives
row blocks of the store's ``kernel/corr`` on demand, and is None for a run
reduced with ``reduce.kernel: neighbours``, which has only the streamed top-k
lists and kernel/mean, var.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ..config import AnalysisConfig, Config
from ..errors import StoreError
from ..reduction.usable import kernel_state
from ..rundir import RunDir
from ..store import RunStore
from .kernelio import DenseRows

NO_DENSE_KERNEL = ("needs the dense N x N kernel, which this run does not have "
                   "(reduce.kernel: neighbours)")


@dataclass(frozen=True)
class RunData:
    """What the analyses read from the run; shared by all of them, changed by none."""

    run_dir: Path
    folder: Path  # the analysis folder: metrics.json, figures, the report
    store: RunStore  # opened for writing: analyses store neighbour lists and embeddings
    config: Config  # the run's typed config
    config_dict: dict[str, Any]  # the same as plain data (config.yaml), for the report and guards
    settings: AnalysisConfig  # config.analysis
    n: int  # samples in the kernel
    draws: int  # pooled draws the kernel rests on
    labels: np.ndarray | None
    label_names: list[str] | None  # as the task gave them (the hierarchy may replace them)
    attributes: Mapping[str, np.ndarray]  # per-sample attributes, read-only
    corr: DenseRows | None  # rows of the dense correlation kernel; None without one

    def inputs(self) -> dict[str, Any]:
        """Input name -> value, as analyses name them in their parameters."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def input_names() -> tuple[str, ...]:
    """The names of the run inputs, for checking analyses' needs before any work."""
    return tuple(f.name for f in fields(RunData))


def load_run(run_dir: Path, allow_stale: bool = False) -> RunData:
    """Open a reduced run for analysis; refuse one that has no kernel of either kind, and
    one whose kernel is stale (the usable draws changed since the reduce) unless told."""
    run = RunDir(run_dir)
    config_dict = run.read_config_dict()
    config = run.read_config()
    store = run.open_store(mode="r+")
    dense = store.has_kernel()
    if not dense and not store.has_stream_neighbours():
        raise StoreError(f"run {str(run.path)!r} has no kernel yet: run 'losskernel reduce' first")
    state = kernel_state(store)
    if state.stale and not allow_stale:
        raise StoreError(
            f"the kernel of run {str(run.path)!r} is stale: reduced from {state.draws_used} "
            f"draws, {state.draws_usable} are usable now: run 'losskernel reduce' again (or "
            "analyze the old kernel with --allow-stale)")
    return RunData(
        run_dir=run.path, folder=run.analysis, store=store, config=config,
        config_dict=config_dict, settings=config.analysis, n=store.shape[2],
        draws=store.draws_used, labels=store.labels(), label_names=store.label_names(),
        attributes=MappingProxyType(dict(store.attributes())),
        corr=DenseRows(store.kernel_array("corr")) if dense else None,
    )


def run_numbers(run: RunData) -> dict[str, Any]:
    """metrics["run"]: what the kernel rests on and the analysis settings used."""
    chains, draws_per_chain, n = run.store.shape
    names = run.label_names
    return {
        "run_dir": str(run.run_dir),
        "n": n,
        "chains": chains,
        "draws_per_chain": draws_per_chain,
        "draws": run.draws,
        "reduce": run.store.reduce_record,
        "kernel_state": kernel_state(run.store).as_dict(),
        "n_train": run.store.n_train,
        "fingerprints": run.store.fingerprints,
        "labels": None if run.labels is None else int(np.unique(run.labels).size),
        "label_names": names if names and len(names) <= 50 else None,
        "attributes": {k: list(np.shape(v)) for k, v in run.attributes.items()},
        "analysis_config": {f.name: getattr(run.settings, f.name) for f in fields(run.settings)},
    }
