"""Thumbnails of an image task (paper Figure 3): random reference images with their most and
least correlated images, captioned with rho and the label."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ...config import AnalysisConfig
from ..registry import analysis
from ..section import Section
from ..thumbnails import IMAGE_ATTRIBUTE, choose_references, thumbnail_grid
from .hierarchy import HierarchySection
from .neighbours import NeighboursSection

SHOWN = 5  # most and least correlated images per reference, at most


@analysis(report="thumbnails", title="Thumbnails")
def thumbnails(settings: AnalysisConfig, attributes: Mapping[str, np.ndarray],
               labels: np.ndarray | None, n: int, draws: int, folder: Path,
               hierarchy: HierarchySection, neighbours: NeighboursSection) -> Section:
    """One figure; no numbers of its own (the neighbour lists hold them)."""
    images = attributes.get(IMAGE_ATTRIBUTE)
    if images is None or settings.thumbnails == 0:
        return Section(skipped={"thumbnails": "analysis.thumbnails is 0" if images is not None
                                else "not an image task"})
    lists = neighbours.lists
    if lists is None:
        return Section(skipped={"thumbnails": neighbours.unavailable})
    refs = choose_references(n, settings.thumbnails, settings.seed)
    path = thumbnail_grid(images, refs, lists.top_index, lists.top_corr, lists.bottom_index,
                          lists.bottom_corr, folder / "thumbnails.png", k=min(SHOWN, neighbours.k),
                          label_of=hierarchy.label_text(labels))
    section = Section()
    section.add_figure(path, "Most and least correlated images",
                       "Each row: a random reference image, its most correlated images and its "
                       f"least correlated images, captioned with rho (paper Figure 3); {draws} "
                       "draws.")
    return section
