"""The analysis registry: order by declared needs, refusals before any work, and an analysis
added in one place (here: registered by the test) reaching metrics.json and the report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from losskernel_dist.analysis import plots
from losskernel_dist.analysis.registry import (
    Analysis,
    analysis,
    ordered,
    parameter_names,
    registered,
    unregister,
)
from losskernel_dist.analysis.rundata import input_names
from losskernel_dist.analysis.section import Section
from losskernel_dist.analysis.sections.neighbours import NeighboursSection
from losskernel_dist.jobs.run import analyze_run_dir as analyze_run
from losskernel_dist.rundir import RunDir

from ..analysis_helpers import planted_run, two_task_draws

SHIPPED = {"guards", "hierarchy", "colour_groups", "neighbours", "groups", "picture", "maps",
           "convergence", "memorization", "taxonomic_lift", "attribute_lift", "thumbnails"}


def entry(function) -> Analysis:
    """An unregistered Analysis of ``function``, its needs read from its parameters."""
    return Analysis(name=function.__name__, compute=function, needs=parameter_names(function),
                    report=function.__name__, title=function.__name__)


def test_order_follows_needs_and_ties_go_by_name():
    def zeta(store):
        return Section()

    def alpha(zeta, labels):
        return Section()

    def middle(alpha, zeta):
        return Section()

    def beta(store):
        return Section()

    analyses = [entry(f) for f in (middle, alpha, beta, zeta)]
    names = [a.name for a in ordered(analyses, ["store", "labels"])]
    assert names == ["beta", "zeta", "alpha", "middle"]


def test_needs_that_cannot_be_met_are_refused():
    def lonely(nowhere):
        return Section()

    with pytest.raises(ValueError, match="'nowhere', which is neither a run input"):
        ordered([entry(lonely)], ["store"])

    def chicken(egg):
        return Section()

    def egg(chicken):
        return Section()

    with pytest.raises(ValueError, match="chicken, egg need each other in a cycle"):
        ordered([entry(chicken), entry(egg)], [])

    def store(labels):
        return Section()

    with pytest.raises(ValueError, match="has the name of a run input"):
        ordered([entry(store)], ["store", "labels"])

    def loose(*args):
        return Section()

    with pytest.raises(TypeError, match="named inputs"):
        parameter_names(loose)


def test_shipped_analyses_run_after_every_analysis_they_need():
    analyses = ordered(registered(), input_names())
    names = [a.name for a in analyses]
    assert SHIPPED <= set(names)
    position = {name: i for i, name in enumerate(names)}
    for a in analyses:
        for need in a.needs:
            if need in position:
                assert position[need] < position[a.name], (a.name, need)
    by_name = {a.name: a for a in analyses}
    assert {"neighbours", "hierarchy"} <= set(by_name["taxonomic_lift"].needs)
    assert {"neighbours", "colour_groups", "groups"} <= set(by_name["maps"].needs)


class NeighbourCount(Section):
    """The planted analysis' section: one number, also in the summary."""

    def summary(self) -> dict:
        return {"planted_pairs": self.numbers["pairs"]}


@pytest.fixture
def planted_extra() -> Iterator[None]:
    """An analysis the package does not ship, registered for one test; it needs the lists."""

    @analysis("planted_extra", title="Planted extra analysis")
    def planted_extra(neighbours: NeighboursSection, draws: int, folder: Path) -> NeighbourCount:
        lists = neighbours.lists
        pairs = int((lists.top_index[:, :neighbours.k] >= 0).sum())
        section = NeighbourCount(numbers={"pairs": pairs,
                                          "k": neighbours.k, "draws": draws})
        fig, ax = plots.plt.subplots(figsize=(2, 2))
        ax.plot(np.arange(5))
        path = plots.save_figure(fig, folder / "planted_extra.png")
        section.add_figure(path, "Planted figure", "A line drawn by the planted analysis.")
        section.skipped["planted_part"] = "a part the planted analysis left out"
        return section

    try:
        yield
    finally:
        unregister("planted_extra")


def test_a_registered_analysis_reaches_metrics_and_report(tmp_path, planted_extra):
    run = tmp_path / "run"
    planted_run(run, two_task_draws(10, 10, chains=2, draws=16),
                labels=np.r_[np.zeros(10, int), np.ones(10, int)],
                analysis={"umap": False, "cka_grid": 4, "neighbours": 3})
    metrics = analyze_run(run)
    assert metrics["planted_extra"] == {"pairs": 60, "k": 3, "draws": 32}
    assert metrics["summary"]["planted_pairs"] == 60
    assert metrics["skipped"]["planted_part"].startswith("a part")
    figure = next(f for f in metrics["figures"] if f["file"] == "planted_extra.png")
    assert figure["section"] == "planted_extra"
    steps = list(metrics["step_seconds"])
    assert steps.index("neighbours") < steps.index("planted_extra")
    assert json.loads(RunDir(run).metrics_file.read_text()) == metrics
    page = RunDir(run).report_file.read_text()
    assert '<section id="planted_extra"><h2>Planted extra analysis</h2>' in page
    assert "A line drawn by the planted analysis." in page
    assert page.index('id="neighbours"') < page.index('id="planted_extra"') < page.index(
        'id="skipped"')

