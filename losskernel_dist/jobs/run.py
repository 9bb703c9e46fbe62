"""The job sequence sample -> guard rails -> reduce -> analyze: its only copy.

``losskernel run``, development over checkpoints, the SLURM reduce job,
calibrate's pilot reduces and the Python API all come through here, so the
steps happen in one order, the reduce always takes its engine, dtype, cache
and kernel kind from the run's config, and the guard rails are always
applied between sampling and reducing.

Under ``torchrun`` every rank samples its share; only the main rank goes on
to the guard rails, the reduce and the analysis (the others return after
sampling).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..rundir import RunDir
from ..store import RunStore

# The interactive explorer's data (written by the analysis) and page (by the report).
EXPLORER_FILES = ("explorer.json", "explorer.html")


@dataclass
class RunOutcome:
    """What one pass of the sequence did; ``None`` for a step it did not run."""

    run_dir: Path
    sample: Any = None  # jobs.sample.SampleReport
    reduce: Any = None  # reduce.kernel.ReduceReport or reduce.topk.NeighboursReport
    metrics: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    is_main: bool = True


def guard_rails(config: Config, store: RunStore, prefix: str = "") -> list[str]:
    """Apply the guard rails to a sampled store: the warnings (printed on stderr);
    GuardError when ``guards.action`` makes a flag an error."""
    from ..guards.judge import check_run, enforce

    lines = list(enforce(check_run(store, config.guards), config.guards))
    for line in lines:
        print(f"losskernel: warning: {prefix}{line}", file=sys.stderr)
    return lines


def reduce_config(run: RunDir, reduce_overrides: dict[str, Any] | None = None) -> Config:
    """The run's own config, with ``reduce_overrides`` (e.g. a SLURM job's cache cap) applied."""
    config = run.read_config()
    if reduce_overrides:
        config = dataclasses.replace(
            config, reduce=dataclasses.replace(config.reduce, **reduce_overrides))
    return config


def reduce_run_dir(
    run_dir: str | Path,
    *,
    allow_partial: bool = False,
    progress: bool = False,
    reduce_overrides: dict[str, Any] | None = None,
):
    """Reduce a sampled run with the settings of its own config (``losskernel reduce``)."""
    from ..reduction.dispatch import reduce_with_config

    run = RunDir(Path(run_dir))
    config = reduce_config(run, reduce_overrides)
    report = reduce_with_config(run.open_store(mode="r+"), config,
                                allow_partial=allow_partial, progress=progress)
    drop_stale_analysis(run)
    return report


def drop_stale_analysis(run: RunDir) -> None:
    """Remove the metrics and report of an earlier kernel after a new reduce, so that
    nothing (``info``, ``Run.metrics``, a browser) shows numbers of another kernel."""
    run.metrics_file.unlink(missing_ok=True)
    run.report_file.unlink(missing_ok=True)
    for name in EXPLORER_FILES:
        (run.analysis / name).unlink(missing_ok=True)


def analyze_run_dir(run_dir: str | Path, allow_stale: bool = False) -> dict[str, Any]:
    """Analyse a reduced run (``losskernel analyze``): metrics, figures and the explorer's
    data (the analysis layer), then the HTML report and the explorer page of them (the
    report layer, above it)."""
    from ..analysis.pipeline import analyze_run
    from ..report.explorer import write_explorer
    from ..report.html import write_report

    run = RunDir(Path(run_dir))
    metrics = analyze_run(run.path, allow_stale=allow_stale)
    write_report(run.report_file, metrics, run.read_config_dict(), run.analysis,
                 parts=[tuple(part) for part in metrics.get("report_sections", [])])
    if write_explorer(metrics, run.analysis) is None:  # none now: drop an earlier one
        for name in EXPLORER_FILES:
            (run.analysis / name).unlink(missing_ok=True)
    return metrics


def is_reduced(run: RunDir) -> bool:
    """True when the run's store holds a kernel (dense or streamed neighbours)."""
    if not run.has_store():
        return False
    store = run.open_store()
    return store.has_kernel() or store.has_stream_neighbours()


def run_sequence(
    config: Config,
    *,
    progress: bool = True,
    keep_finished: bool = False,
    warning_prefix: str = "",
    task: Any = None,
) -> RunOutcome:
    """Sample (or resume), check, reduce and analyse the run of ``config``.

    ``keep_finished`` (development sub-runs): a run that is already reduced is
    not sampled or reduced again, and an analysis already written is read
    back instead of being redone; a new reduce always invalidates the old
    analysis. Without it every step runs (resuming sampling is a no-op for
    chains that are done). ``task``: an already built Task (in-memory runs).
    """
    from ..distributed import placement_from_env
    from .sample import sample

    run = RunDir(config.run_dir)
    outcome = RunOutcome(run_dir=run.path)
    reduced = keep_finished and is_reduced(run)
    if not reduced:
        outcome.sample = sample(config, progress=progress, task=task)
    if not placement_from_env().is_main:
        outcome.is_main = False
        return outcome
    outcome.warnings = guard_rails(config, run.open_store(), prefix=warning_prefix)
    if not reduced:
        from ..reduction.dispatch import reduce_with_config

        outcome.reduce = reduce_with_config(run.open_store(mode="r+"), config,
                                            progress=progress)
        drop_stale_analysis(run)
    if not config.analysis.enabled:
        return outcome
    if keep_finished and run.metrics_file.exists():
        outcome.metrics = json.loads(run.metrics_file.read_text())
    else:
        outcome.metrics = analyze_run_dir(run.path)
    return outcome
