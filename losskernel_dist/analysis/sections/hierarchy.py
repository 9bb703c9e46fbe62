"""The WordNet hierarchy of the labels, when configured (analysis.wordnet) or detected.

It also settles the label names every section shows: with ``analysis.wordnet:
imagenet1k`` the labels are ImageNet-1k indices and their names become the
wnids. Sections that print or colour by label names therefore need this one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...config import AnalysisConfig
from ...errors import ConfigError
from .. import wordnet
from ..registry import analysis
from ..section import Section


@dataclass
class HierarchySection(Section):
    """The label tree (None when there is none) and the label names in force."""

    tree: wordnet.Hierarchy | None = None
    label_names: list[str] | None = None

    def label_text(self, labels: np.ndarray | None) -> list[str] | None:
        """Display name of each sample's label (its number where there is no name)."""
        if labels is None:
            return None
        names = self.label_names
        return [str(names[v]) if names is not None and 0 <= v < len(names) else str(v)
                for v in labels.tolist()]


def wordnet_names(settings: AnalysisConfig, labels: np.ndarray | None,
                  label_names: list[str] | None) -> list[str] | None:
    """The label names to place in WordNet; None when analysis.wordnet is auto and they are
    not WordNet ids. A setting that cannot apply to the run is a ConfigError."""
    mode = settings.wordnet
    if mode in ("on", "imagenet1k") and labels is None:
        raise ConfigError(f"analysis.wordnet: {mode}, but the run has no labels")
    if mode == "imagenet1k":
        if labels.min() < 0 or labels.max() >= 1000:
            raise ConfigError("analysis.wordnet: imagenet1k, but labels are not in 0..999")
        return wordnet.imagenet1k_wnids()
    if wordnet.looks_like_wordnet(label_names):
        return label_names
    if mode == "on":
        raise ConfigError("analysis.wordnet: on, but the label names are not WordNet ids "
                          "(n02084071) or synset names (dog.n.01)")
    return None


def check_hierarchy(settings: AnalysisConfig, labels: np.ndarray | None,
                    label_names: list[str] | None) -> None:
    """Fail before any work when analysis.wordnet asks for a hierarchy the labels cannot give."""
    if settings.wordnet != "off":
        wordnet_names(settings, labels, label_names)


@analysis(report="lift", title="WordNet label hierarchy", check=check_hierarchy)
def hierarchy(settings: AnalysisConfig, labels: np.ndarray | None,
              label_names: list[str] | None) -> HierarchySection:
    """Build the tree of the labels' synsets; skipped (with why) when it does not apply."""
    mode = settings.wordnet
    unchanged = HierarchySection(label_names=label_names)
    if mode == "off":
        unchanged.skipped["wordnet"] = "analysis.wordnet is off"
        return unchanged
    if labels is None:
        unchanged.skipped["wordnet"] = "the run has no labels"
        return unchanged
    names = wordnet_names(settings, labels, label_names)
    if names is None:
        unchanged.skipped["wordnet"] = "label names are not WordNet ids"
        return unchanged
    try:
        tree = wordnet.build_hierarchy(names)
    except wordnet.WordNetUnavailable as exc:
        if mode == "auto":
            unchanged.skipped["wordnet"] = str(exc)
            return unchanged
        raise ConfigError(f"analysis.wordnet: {exc}") from exc
    return HierarchySection(numbers=tree.describe(), tree=tree, label_names=list(names))
