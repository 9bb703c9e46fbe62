"""Task and group structure: PC1 of the standardised loss vectors, its ROC-AUC for a binary
group (paper Figure 2B), and the covariance K_ij by pair type (paper Figure 2D).

The group is the labels or an attribute (``analysis.group_attribute``); a
setting naming nothing usable fails before any analysis runs (``check_group``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...config import AnalysisConfig
from ...errors import ConfigError
from ...store import RunStore
from .. import plots
from ..groups import Grouping, pair_distributions, pc1, pc1_auc, resolve_group
from ..kernelio import DenseRows
from ..registry import analysis
from ..rundata import NO_DENSE_KERNEL
from ..section import Section

CROSS = "cross-group"


@dataclass
class GroupsSection(Section):
    """PC1 scores of every sample (None without the dense kernel) and the group numbers."""

    pc1_scores: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        numbers = self.numbers or {}
        out: dict[str, Any] = {}
        auc = numbers.get("pc1_auc", {})
        if auc.get("available"):
            out["pc1_auc"] = auc["auc"]
        pairs = numbers.get("covariance_by_pair_type", {})
        if CROSS in pairs:
            within = [v for k, v in pairs.items() if k != CROSS]
            total = sum(v["count"] for v in within)
            if total:
                out["within_cov_mean"] = sum(v["mean"] * v["count"] for v in within) / total
            out["cross_cov_mean"] = pairs[CROSS]["mean"]
        return out


def choose_group(settings: AnalysisConfig, labels: np.ndarray | None,
                 label_names: list[str] | None,
                 attributes: Mapping[str, np.ndarray]) -> tuple[Grouping | None, str]:
    """The grouping analysis.group_attribute asks for, and how it was chosen."""
    try:
        return resolve_group(settings.group_attribute, labels, label_names, attributes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def check_group(settings: AnalysisConfig, labels: np.ndarray | None,
                label_names: list[str] | None, attributes: Mapping[str, np.ndarray]) -> None:
    """Fail before any work when analysis.group_attribute names nothing usable."""
    choose_group(settings, labels, label_names, attributes)


@analysis(report="groups", title="Task and group structure", check=check_group)
def groups(settings: AnalysisConfig, store: RunStore, corr: DenseRows | None,
           labels: np.ndarray | None, label_names: list[str] | None,
           attributes: Mapping[str, np.ndarray], draws: int, folder: Path) -> GroupsSection:
    """PC1 always (with the dense kernel); the AUC and pair types when there is a group."""
    if corr is None:
        return GroupsSection(skipped={"groups": NO_DENSE_KERNEL})
    comp = pc1(corr, seed=settings.seed)
    grouping, why = choose_group(settings, labels, label_names, attributes)
    numbers: dict[str, Any] = {
        "draws": draws,
        "pc1": {
            "eigenvalue": comp.eigenvalue,
            "explained_fraction": comp.explained,
            "iterations": comp.iterations,
            "relative_residual": comp.residual,
            "definition": "leading eigenvector of H rho H (PCA of standardised loss vectors)",
        },
        "group": why,
    }
    section = GroupsSection(numbers=numbers, pc1_scores=comp.scores)
    if grouping is None:
        section.skipped["task_auc"] = why
        return section
    numbers["group_source"] = grouping.source
    numbers["group_names"] = grouping.names
    if grouping.size == 2:
        auc = pc1_auc(comp.scores, grouping)
        numbers["pc1_auc"] = auc
        path = plots.pc1_histogram(comp.scores * auc["sign"], grouping.codes, grouping.names,
                                   auc["auc"], folder / "pc1_groups.png")
        section.add_figure(
            path, "Task separation along PC1",
            f"Projection of each sample's standardised loss vector on the first principal "
            f"component, by {grouping.source} (paper Figure 2B). ROC-AUC {auc['auc']:.3f}; "
            f"{draws} draws.")
    else:
        section.skipped["task_auc"] = f"group has {grouping.size} values; the AUC needs exactly 2"
    dist = pair_distributions(store.kernel_array("cov"), grouping, seed=settings.seed)
    numbers["covariance_by_pair_type"] = {
        name: {k: v for k, v in d.items() if k != "values"} for name, d in dist.items()
    }
    path = plots.pair_histograms(dist, folder / "covariance_pairs.png")
    section.add_figure(
        path, "Covariance distributions by pair type",
        f"K_ij for pairs i < j within each group and across groups of {grouping.source} "
        f"(paper Figure 2D), log-scaled density; {draws} draws. Histograms from a "
        "uniform subsample of at most 200,000 pairs per type; statistics are exact.")
    return section

