"""Attribute lift (paper Appendix D.2 D, D.4): how much more often a sample's nearest
neighbours share its value of each discrete attribute (and colour group) than chance."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...config import AnalysisConfig
from .. import plots
from ..attributes import attribute_lift as lift_among
from ..attributes import discrete_attributes
from ..registry import analysis
from ..section import Section
from ..thumbnails import IMAGE_ATTRIBUTE, TEXT_ATTRIBUTE
from .colour_groups import ColourGroupsSection
from .neighbours import NeighboursSection

NAME = "attribute_lift"


class AttributeLiftSection(Section):
    """Lift per attribute; the summary carries ``lift_<attribute>`` for each one measured."""

    def summary(self) -> dict[str, Any]:
        attrs = (self.numbers or {}).get("attributes", {})
        return {f"lift_{name}": value["lift"] for name, value in attrs.items()
                if value.get("lift") is not None}


@analysis(report="lift", title="Attribute lift")
def attribute_lift(settings: AnalysisConfig, attributes: Mapping[str, np.ndarray],
                   labels: np.ndarray | None, draws: int, folder: Path,
                   colour_groups: ColourGroupsSection,
                   neighbours: NeighboursSection) -> AttributeLiftSection:
    """Lift among the k neighbours in the lists (of another label when they exclude it)."""
    candidates = {k: v for k, v in colour_groups.attributes_with(attributes).items()
                  if k not in (IMAGE_ATTRIBUTE, TEXT_ATTRIBUTE)}
    usable, not_used = discrete_attributes(candidates, labels, settings.attribute_max_levels)
    if not usable:
        return AttributeLiftSection(skipped={NAME: "no discrete attribute (" + (
            "; ".join(f"{k}: {v}" for k, v in not_used.items()) or "the task has none") + ")"})
    if neighbours.lists is None:
        return AttributeLiftSection(skipped={NAME: neighbours.unavailable})
    k = neighbours.k
    top = neighbours.lists.top_index[:, :k]
    lifts = {name: lift_among(values, top, labels, neighbours.excluding)
             for name, values in usable.items()}
    section = AttributeLiftSection(numbers={
        "k": k, "exclude_same_label": neighbours.excluding, "draws": draws,
        "attributes": lifts, "not_used": not_used})
    if any(v.get("lift") is not None for v in lifts.values()):
        path = plots.attribute_lifts(lifts, folder / "attribute_lift.png")
        section.add_figure(
            path, "Attribute lift",
            f"How much more often a sample's {k} nearest neighbours share its attribute "
            "value than the candidates do on average (paper Appendix D.2 D, D.4); "
            "1 is chance.")
    return section
