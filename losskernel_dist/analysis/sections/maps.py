"""UMAP maps of the kernel in 2-D and 3-D, from the kNN graph of the neighbour lists.

The graph is the distance d = sqrt(2(1 - rho)) to each sample's nearest
neighbours (same-label edges removed when the lists exclude them, paper
Appendix B). The embeddings are stored in the run; the 2-D map is drawn once
per colouring (hierarchy order, label, PC1 score, each usable attribute), the
3-D map for the first colouring. The section hands the 2-D map and every
colouring to the interactive explorer (sections/explorer.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...config import AnalysisConfig
from ...store import RunStore
from .. import plots
from ..embedding import knn_graph, umap_embedding
from ..registry import analysis
from ..section import Section, slug
from ..thumbnails import IMAGE_ATTRIBUTE, TEXT_ATTRIBUTE
from .colour_groups import ColourGroupsSection
from .groups import GroupsSection
from .hierarchy import HierarchySection
from .neighbours import NeighboursSection

MIN_UMAP_SAMPLES = 10
MAX_MAP_COLOURINGS = 8
MAX_DISCRETE_LEVELS = 20  # integer attributes with more values are coloured as continuous

Colouring = tuple[str, np.ndarray, str, list[str] | None]  # title, values, kind, names


@dataclass
class MapsSection(Section):
    """The 2-D map (None when the maps were skipped) and every colouring of it."""

    umap_2d: np.ndarray | None = None
    colourings: list[Colouring] = field(default_factory=list)


def map_colourings(labels: np.ndarray | None, attributes: Mapping[str, np.ndarray],
                   hierarchy: HierarchySection, pc1_scores: np.ndarray | None,
                   limit: int | None = MAX_MAP_COLOURINGS) -> list[Colouring]:
    """(title, values, kind, names) for each colouring of the maps, at most ``limit``
    (the static figures draw MAX_MAP_COLOURINGS; the explorer offers them all)."""
    out: list[Colouring] = []
    if hierarchy.tree is not None and labels is not None:
        out.append(("WordNet hierarchy order", hierarchy.tree.order[labels], "order", None))
    if labels is not None:
        out.append(("label", labels, "categorical", hierarchy.label_names))
    if pc1_scores is not None:
        out.append(("PC1 score", pc1_scores, "continuous", None))
    for name, values in attributes.items():
        values = np.asarray(values)
        if values.ndim != 1 or name in (IMAGE_ATTRIBUTE, TEXT_ATTRIBUTE):
            continue  # pictures and texts render samples; they are no colouring
        if labels is not None and np.array_equal(values, labels):
            continue  # the label colouring already shows it
        levels = np.unique(values).size
        if levels < 2:
            continue
        textual = values.dtype.kind in "bUSOT"  # bool, str (incl. numpy's StringDType)
        discrete = textual or (values.dtype.kind in "iu" and levels <= MAX_DISCRETE_LEVELS)
        out.append((f"attribute {name}", values, "categorical" if discrete else "continuous",
                    None))
    return out[:limit]


@analysis(report="maps", title="Maps of the kernel")
def maps(settings: AnalysisConfig, store: RunStore, labels: np.ndarray | None,
         attributes: Mapping[str, np.ndarray], n: int, draws: int, folder: Path,
         neighbours: NeighboursSection, hierarchy: HierarchySection,
         colour_groups: ColourGroupsSection, groups: GroupsSection) -> MapsSection:
    """Embed, store and draw the maps; skipped when switched off or N is too small."""
    if not settings.umap:
        return MapsSection(skipped={"umap": "analysis.umap is off"})
    if n < MIN_UMAP_SAMPLES:
        return MapsSection(skipped={"umap": f"only {n} samples (UMAP needs at least "
                                            f"{MIN_UMAP_SAMPLES})"})
    lists = neighbours.lists
    if lists is None:
        return MapsSection(skipped={"maps": neighbours.unavailable})
    want = min(settings.umap_neighbours, n - 1)
    graph = knn_graph(lists.top_index, lists.top_corr, min(want, lists.top_index.shape[1] + 1))
    numbers: dict[str, Any] = {"draws": draws, "same_label_edges_removed": neighbours.excluding}
    if neighbours.streamed:
        numbers["graph_source"] = "streamed neighbour lists (no dense kernel)"
        if graph.n_neighbors < want:
            numbers["note"] = (f"UMAP's n_neighbors is {graph.n_neighbors}, not {want}: the "
                               f"reduce kept {lists.top_index.shape[1]} neighbours per sample "
                               "(raise reduce.neighbours_k)")
    coords = {}
    for dim in (2, 3):
        xy, umap_settings = umap_embedding(graph, dim, settings.umap_min_dist, settings.seed)
        store.write_embedding(f"umap_{dim}d", xy, umap_settings)
        coords[dim] = xy
        numbers[f"umap_{dim}d"] = umap_settings
    colourings = map_colourings(labels, colour_groups.attributes_with(attributes), hierarchy,
                                groups.pc1_scores, limit=None)
    section = MapsSection(numbers=numbers, umap_2d=coords[2], colourings=colourings)
    excl = (" Same-label edges removed from the kNN graph (paper Appendix B)."
            if neighbours.excluding else "")
    for i, (title, values, kind, names) in enumerate(colourings[:MAX_MAP_COLOURINGS]):
        spec = plots.colour_spec(values, kind, names)
        path = plots.scatter_2d(coords[2], spec, f"UMAP of the loss kernel, coloured by {title}",
                                title, folder / f"umap2d_{slug(title)}.png")
        section.add_figure(path, f"UMAP coloured by {title}",
                           f"2-D UMAP of d = sqrt(2(1 - rho)) over {n} samples "
                           f"({graph.n_neighbors - 1} neighbours each, seed {settings.seed}); "
                           f"{draws} draws.{excl}")
        if i == 0:
            path = plots.scatter_3d(coords[3], spec, f"3-D UMAP, coloured by {title}", title,
                                    folder / f"umap3d_{slug(title)}.png")
            section.add_figure(path, f"3-D UMAP coloured by {title}",
                               "Three orbit views of the 3-D UMAP with the same graph and seed.")
    return section
