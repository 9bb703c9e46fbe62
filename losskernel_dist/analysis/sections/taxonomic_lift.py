"""Taxonomic lift (paper Figure D.1): how often the nearest neighbours of another label share
the label's WordNet ancestor at each depth, against the base rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import plots
from ..kernelio import DenseRows
from ..neighbours import compute_neighbours
from ..registry import analysis
from ..section import Section
from ..wordnet import taxonomic_lift as lift_by_depth
from .hierarchy import HierarchySection
from .neighbours import NeighboursSection

NAME = "taxonomic_lift"


class TaxonomicLiftSection(Section):
    """Lift per query depth and ancestor depth; the summary carries its peak."""

    def summary(self) -> dict[str, Any]:
        numbers = self.numbers or {}
        if numbers.get("peak_lift") is None:
            return {}
        return {"taxonomic_lift_peak": numbers["peak_lift"],
                "taxonomic_lift_peak_depth": numbers["peak_depth"]}


@analysis(report="lift", title="Taxonomic lift")
def taxonomic_lift(corr: DenseRows | None, labels: np.ndarray | None, draws: int, folder: Path,
                   hierarchy: HierarchySection,
                   neighbours: NeighboursSection) -> TaxonomicLiftSection:
    """Needs each sample's neighbours of another label: the lists when they exclude the
    sample's own label, else recomputed from the dense kernel."""
    if hierarchy.tree is None or labels is None:
        return TaxonomicLiftSection(skipped={NAME: "no label hierarchy"})
    if neighbours.lists is None:
        return TaxonomicLiftSection(skipped={NAME: neighbours.unavailable})
    k = neighbours.k
    if neighbours.excluding:
        top = neighbours.lists.top_index[:, :k]
    elif corr is None:
        return TaxonomicLiftSection(skipped={NAME: (
            "needs each sample's neighbours of another label: the streamed lists were reduced "
            "without same-label exclusion and there is no dense kernel to recompute them")})
    else:
        top = compute_neighbours(corr, k, 0, labels, exclude_same_label=True).top_index
    lift = lift_by_depth(hierarchy.tree, labels, top)
    lift["draws"] = draws
    section = TaxonomicLiftSection(numbers=lift)
    path = plots.lift_curves(lift["curves"], k, folder / "taxonomic_lift.png")
    section.add_figure(
        path, "Taxonomic lift",
        f"For queries whose label is at WordNet depth D, the rate at which their {k} "
        "nearest neighbours of another label share the label's ancestor at depth d, "
        "divided by the base rate among all samples of another label (paper Figure D.1). "
        f"Lift 1 is chance; {draws} draws.")
    return section
