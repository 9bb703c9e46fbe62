"""``losskernel analyze RUN_DIR``: a reduced run -> metrics.json, PNG figures, index.html.

The analyses themselves live one per module in ``analysis/sections/``; each
declares what it needs (run inputs and other analyses, by name) and returns a
``Section`` with its numbers, figures, skipped parts and summary keys
(section.py). This module only runs them: it reads the run (rundata.py), checks
every analysis' settings before any work, runs them in the order their needs
impose (registry.py), and writes what they found. An analysis that does not
apply to the run (no labels, one chain, no images, no WordNet labels...) is
skipped with its reason under ``skipped``, which the report shows. Nothing
holds the N x N kernel: every pass over it streams row blocks.

A run reduced with ``reduce.kernel: neighbours`` has no dense kernel, only the
streamed top-k lists and kernel/mean, var. The analyses that need rho or K
itself (PC1 and the task AUC, covariance by pair type, the kernel picture, and
taxonomic lift without same-label exclusion) are then skipped, each with why.

metrics.json layout: ``summary`` (short name -> number, printed by the CLI),
``run`` (what the kernel rests on), one entry per analysis that applied,
``figures`` (file, title, caption, report section), ``skipped``, and the
seconds taken in all and per analysis. metrics.json, the figures and the report
are each replaced atomically (rundir.atomic_write): a reader never sees half of
one, and an analysis that fails leaves the previous metrics.json intact.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..rundir import RunDir, atomic_write
from .registry import Analysis, ordered, registered
from .rundata import RunData, input_names, load_run, run_numbers
from .section import Section, jsonable


def analyze_run(run_dir: Path, allow_stale: bool = False) -> dict:
    """Run every applicable analysis on a reduced run; returns the metrics written.
    A stale kernel (reduced before the usable draws changed) is refused unless
    ``allow_stale``; a partial or stale kernel is labelled in metrics["run"]."""
    t0 = time.perf_counter()
    run = load_run(Path(run_dir), allow_stale=allow_stale)
    analyses = ordered(registered(), input_names())
    inputs = run.inputs()
    for entry in analyses:
        entry.run_check(inputs)
    run.folder.mkdir(parents=True, exist_ok=True)
    for old in run.folder.glob("*.png"):
        old.unlink()  # figures of an earlier analysis that may no longer apply
    found: dict[str, Section] = {}
    seconds: dict[str, float] = {}
    for entry in analyses:
        t_entry = time.perf_counter()
        found[entry.name] = entry.run({**inputs, **found})
        seconds[entry.name] = round(time.perf_counter() - t_entry, 3)
    metrics = collect(run, analyses, found)
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    metrics["step_seconds"] = seconds
    metrics["report_sections"] = [[entry.report, entry.title] for entry in analyses]
    metrics = jsonable(metrics)
    write_metrics(RunDir(run.run_dir).metrics_file, metrics)
    return metrics


def collect(run: RunData, analyses: list[Analysis], found: dict[str, Section]) -> dict[str, Any]:
    """metrics.json's content (summary first) from the sections, in the order they ran."""
    summary: dict[str, Any] = {"n": run.n, "draws": run.draws}
    metrics: dict[str, Any] = {"summary": summary, "run": run_numbers(run)}
    figures: list[dict[str, str]] = []
    skipped: dict[str, str] = {}
    for entry in analyses:
        section = found[entry.name]
        if section.numbers is not None:
            metrics[entry.name] = section.numbers
        figures += [{"file": f.file, "title": f.title, "caption": f.caption,
                     "section": entry.report} for f in section.figures]
        skipped.update(section.skipped)
        summary.update(section.summary())
    metrics["summary"] = {k: v for k, v in summary.items() if v is not None}
    metrics["figures"] = figures
    metrics["skipped"] = skipped
    return metrics


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Replace metrics.json atomically: the old one stays whole until the new one is."""
    atomic_write(path, json.dumps(metrics, indent=2) + "\n")
