"""The kernel picture: rho with samples sorted by label hierarchy, label or PC1, block-averaged
above ``analysis.max_plot_samples``; beside it the WordNet tree distance of the labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config import AnalysisConfig
from .. import plots
from ..kernelio import DenseRows
from ..picture import KernelPicture, hierarchy_picture, kernel_picture, sort_order
from ..registry import analysis
from ..rundata import NO_DENSE_KERNEL
from ..section import Section
from .groups import GroupsSection
from .hierarchy import HierarchySection

MAX_LABEL_BOUNDARIES = 50  # more label blocks than this are not marked on the picture


@analysis(report="picture", title="The kernel matrix")
def picture(settings: AnalysisConfig, corr: DenseRows | None, labels: np.ndarray | None,
            n: int, draws: int, folder: Path, hierarchy: HierarchySection,
            groups: GroupsSection) -> Section:
    """Draw the sorted correlation matrix; skipped without the dense kernel."""
    if corr is None:
        return Section(skipped={"picture": NO_DENSE_KERNEL})
    tree = hierarchy.tree
    rank = tree.order if tree is not None else None
    order, sorted_by = sort_order(n, labels, rank, groups.pc1_scores)
    pic = kernel_picture(corr, order, sorted_by, settings.max_plot_samples)
    distance = None
    if tree is not None:
        distance = hierarchy_picture(pic, labels, tree.distance_matrix())
    boundaries = []
    if labels is not None and tree is None:
        boundaries = label_boundaries(pic, labels, hierarchy.label_text(labels), n)
    path = plots.kernel_picture(pic.matrix, pic.caption + f"; {draws} draws",
                                folder / "kernel_picture.png", distance, boundaries)
    section = Section(numbers={"sorted_by": sorted_by, "block_averaged": pic.averaged,
                               "pixels": int(pic.matrix.shape[0]), "draws": draws})
    section.add_figure(path, "The correlation kernel",
                       "rho_ij with samples " + pic.caption
                       + (", beside the WordNet tree distance of their labels (paper Figure 1B)"
                          if distance is not None else "") + ".")
    return section


def label_boundaries(pic: KernelPicture, labels: np.ndarray, text: list[str],
                     n: int) -> list[tuple[int, int, str]]:
    """(first bin, end bin, label) of each run of one label along the sorted picture."""
    sorted_labels = labels[pic.order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    ends = np.r_[starts[1:], n]
    if len(starts) > MAX_LABEL_BOUNDARIES:
        return []
    return [(int(pic.bins[a]), int(pic.bins[b - 1]) + 1, text[pic.order[a]])
            for a, b in zip(starts, ends, strict=True)]
