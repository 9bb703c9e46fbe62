"""Top-k / bottom-k neighbour lists of every sample, which the maps, lifts and thumbnails use.

With the dense kernel the lists are computed block by block (neighbours.py)
and stored in the run. A run reduced with ``reduce.kernel: neighbours`` has
only the lists the reduce streamed from the draws (reduction/topk.py): they are
used as written (their k, bottom-k and same-label exclusion), and the section
says where they differ from what the analysis config asks. Lists ranked by
covariance (``reduce.neighbours_metric: cov``) cannot stand in for correlation
lists; the section is then skipped and every analysis that needs the lists
says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...config import AnalysisConfig
from ...store import RunStore
from ..attributes import attribute_lift
from ..kernelio import DenseRows
from ..neighbours import Neighbours, compute_neighbours
from ..registry import analysis
from ..section import Section, nanmean
from ..thumbnails import TEXT_ATTRIBUTE, choose_references
from .hierarchy import HierarchySection

EXAMPLES = 5  # references in the report's table
EXAMPLE_NEIGHBOURS = 5  # top and bottom neighbours shown per reference
EXAMPLE_TEXT_CHARS = 120  # a sample's text in the table is cut to this many characters


MARK_OPEN = "\u27e6"  # task.MARK_OPEN, where a marked token starts (the analysis cannot
# import the task layer, which imports torch)


def cut_text(text: str, chars: int = EXAMPLE_TEXT_CHARS) -> str:
    """``text`` cut to about ``chars`` characters around its marked token (from the start
    when it has none), an ellipsis marking each cut."""
    if len(text) <= chars:
        return text
    mark = text.find(MARK_OPEN)
    start = 0 if mark < 0 else max(0, min(mark - chars // 3, len(text) - chars))
    body = text[start:start + chars]
    return ("\u2026" if start > 0 else "") + body + (
        "\u2026" if start + chars < len(text) else "")


@dataclass
class NeighboursSection(Section):
    """The correlation neighbour lists in use, or None with why (``unavailable``)."""

    lists: Neighbours | None = None
    k: int = 0  # neighbours per sample used (analysis.neighbours or fewer)
    excluding: bool = False  # same-label exclusion in force in the lists
    streamed: bool = False  # the lists come from the reduce, not the dense kernel
    unavailable: str = ""

    def summary(self) -> dict[str, Any]:
        return {"mean_top1_corr": (self.numbers or {}).get("mean_top1_corr")}


def same_label_exclusion(settings: AnalysisConfig, labels: np.ndarray | None) -> bool:
    """Exclusion in force when recomputing: asked for, and labels with at least 2 values exist."""
    return bool(settings.exclude_same_label and labels is not None
                and np.unique(labels).size >= 2)


@analysis(report="neighbours", title="Nearest neighbours")
def neighbours(settings: AnalysisConfig, store: RunStore, corr: DenseRows | None,
               labels: np.ndarray | None, attributes: Mapping[str, np.ndarray], n: int,
               draws: int, hierarchy: HierarchySection) -> NeighboursSection:
    """The lists from the dense kernel (stored in the run), else the streamed ones."""
    texts = attributes.get(TEXT_ATTRIBUTE)
    if corr is None:
        return streamed_neighbours(settings, store, labels, n, draws, hierarchy, texts)
    k = settings.neighbours
    k_top = max(k, settings.umap_neighbours - 1)
    excluding = same_label_exclusion(settings, labels)
    lists = compute_neighbours(corr, k_top, k, labels, exclude_same_label=excluding)
    store.write_neighbours(lists.top_index, lists.top_corr, lists.bottom_index,
                           lists.bottom_corr, {**lists.attrs(), "k": k, "draws": draws})
    numbers: dict[str, Any] = {
        "k": k,
        "k_stored_top": k_top,
        "exclude_same_label": excluding,
        "draws": draws,
        "stored_in": "store.zarr analysis/neighbours (top_index, top_corr, bottom_index, "
                     "bottom_corr)",
        "mean_top1_corr": nanmean(lists.top_corr[:, 0]),
        "mean_topk_corr": nanmean(lists.top_corr[:, :k]),
        "mean_bottomk_corr": nanmean(lists.bottom_corr),
        "examples": examples(lists, k, n, settings.seed, hierarchy.label_text(labels), texts),
    }
    if settings.exclude_same_label and not excluding:
        numbers["note"] = "same-label exclusion asked for but the run has fewer than 2 labels"
    if labels is not None and not excluding:
        numbers["label_lift"] = attribute_lift(labels, lists.top_index[:, :k], None, False)
    return NeighboursSection(numbers=numbers, lists=lists, k=k, excluding=excluding)


def streamed_neighbours(settings: AnalysisConfig, store: RunStore, labels: np.ndarray | None,
                        n: int, draws: int, hierarchy: HierarchySection,
                        texts: np.ndarray | None = None) -> NeighboursSection:
    """The section of a run without the dense kernel, from the reduce's streamed lists."""
    data = store.read_stream_neighbours()
    attrs = data["attrs"]
    metric = attrs.get("metric", "corr")
    if metric != "corr":
        why = (f"the run's streamed neighbours rank by {metric} (reduce.neighbours_metric), "
               "the analysis by correlation, and there is no dense kernel to recompute them")
        return NeighboursSection(skipped={"neighbours": why}, unavailable=why)
    k_stored = int(attrs["k"])
    k = min(settings.neighbours, k_stored)
    k_bottom = min(settings.neighbours, int(attrs.get("k_bottom", 0)))
    excluding = bool(attrs.get("exclude_same_label", False))
    lists = Neighbours(data["top_index"], data["top_value"], data["bottom_index"][:, :k_bottom],
                       data["bottom_value"][:, :k_bottom], excluding)
    numbers: dict[str, Any] = {
        "k": k,
        "k_stored_top": k_stored,
        "k_bottom": k_bottom,
        "exclude_same_label": excluding,
        "draws": draws,
        "source": "streamed by the neighbours reduce from the draws (no dense kernel)",
        "stored_in": "store.zarr neighbours (top_index, top_value, bottom_index, bottom_value)",
        "mean_top1_corr": nanmean(lists.top_corr[:, 0]),
        "mean_topk_corr": nanmean(lists.top_corr[:, :k]),
        "mean_bottomk_corr": nanmean(lists.bottom_corr),
        "examples": examples(lists, k, n, settings.seed, hierarchy.label_text(labels), texts),
    }
    notes = []
    if k < settings.neighbours:
        notes.append(f"analysis.neighbours is {settings.neighbours} but the reduce kept "
                     f"{k_stored} (reduce.neighbours_k)")
    if k_bottom < settings.neighbours:
        notes.append(f"{k_bottom} least-correlated neighbours kept by the reduce "
                     "(reduce.neighbours_bottom_k)")
    asked = same_label_exclusion(settings, labels)
    if asked != excluding:
        notes.append(f"analysis.exclude_same_label asks {asked} but the lists were reduced "
                     f"with {excluding}: rerun 'losskernel reduce' to change it")
    if notes:
        numbers["note"] = "; ".join(notes)
    if labels is not None and not excluding:
        numbers["label_lift"] = attribute_lift(labels, lists.top_index[:, :k], None, False)
    return NeighboursSection(numbers=numbers, lists=lists, k=k, excluding=excluding,
                             streamed=True)


def examples(lists: Neighbours, k: int, n: int, seed: int, text: list[str] | None,
             texts: np.ndarray | None = None) -> list[dict[str, Any]]:
    """A few references with their top and bottom neighbours, for the report's table:
    each with its label's name (``text``) and, when the run stores them, its own text
    (``texts``: a sequence, or a token in its context), cut to EXAMPLE_TEXT_CHARS."""
    k_top = min(EXAMPLE_NEIGHBOURS, lists.top_index.shape[1], k or lists.top_index.shape[1])
    k_bottom = min(EXAMPLE_NEIGHBOURS, lists.bottom_index.shape[1])

    def item(j: int, rho: float) -> dict[str, Any]:
        out: dict[str, Any] = {"sample": int(j), "rho": float(rho)}
        if text is not None and j >= 0:
            out["label"] = text[j]
        if texts is not None and j >= 0:
            out["text"] = cut_text(str(texts[j]))
        return out

    return [
        {
            "sample": int(i),
            "label": text[i] if text is not None else None,
            **({"text": cut_text(str(texts[i]))} if texts is not None else {}),
            "top": [item(j, r) for j, r in zip(lists.top_index[i, :k_top],
                                               lists.top_corr[i, :k_top], strict=True) if j >= 0],
            "bottom": [item(j, r) for j, r in zip(lists.bottom_index[i, :k_bottom],
                                                  lists.bottom_corr[i, :k_bottom], strict=True)
                       if j >= 0],
        }
        for i in choose_references(n, EXAMPLES, seed)
    ]
