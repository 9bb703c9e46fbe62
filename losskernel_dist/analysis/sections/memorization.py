"""Memorization (paper Appendix D.3): the ROC-AUC of the loss variance K_ii for a per-sample
0/1 flag such as 'mislabelled' (``analysis.memorization_attribute``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...config import AnalysisConfig
from ...errors import ConfigError
from ...store import RunStore
from .. import plots
from ..memorization import memorization as variance_auc
from ..memorization import resolve_flag
from ..registry import analysis
from ..section import Section


class MemorizationSection(Section):
    """The AUC and the variances it rests on; the summary carries the AUC."""

    def summary(self) -> dict[str, Any]:
        numbers = self.numbers or {}
        return {"memorization_auc": numbers["auc"]} if numbers.get("available") else {}


def choose_flag(settings: AnalysisConfig,
                attributes: Mapping[str, np.ndarray]) -> tuple[str | None, str]:
    """The flag attribute analysis.memorization_attribute asks for (or detects), and why."""
    try:
        return resolve_flag(settings.memorization_attribute, attributes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def check_flag(settings: AnalysisConfig, attributes: Mapping[str, np.ndarray]) -> None:
    """Fail before any work when analysis.memorization_attribute names no attribute."""
    choose_flag(settings, attributes)


@analysis(report="memorization", title="Memorization", check=check_flag)
def memorization(settings: AnalysisConfig, store: RunStore,
                 attributes: Mapping[str, np.ndarray], draws: int,
                 folder: Path) -> MemorizationSection:
    """K_ii of flagged against clean samples; skipped when the task has no flag."""
    name, why = choose_flag(settings, attributes)
    if name is None:
        return MemorizationSection(skipped={"memorization": why})
    variance = np.asarray(store.kernel_array("var")[...])
    flag = np.asarray(attributes[name])
    result = variance_auc(variance, flag)
    result.update(attribute=name, chosen=why, draws=draws)
    section = MemorizationSection(numbers=result)
    if result.get("available"):
        path = plots.memorization(variance, flag.astype(int), result["auc"], name,
                                  folder / "memorization.png")
        section.add_figure(path, "Memorization: loss variance of flagged samples",
                           f"Per-sample loss variance K_ii for samples flagged {name!r} and the "
                           f"rest (paper Appendix D.3); {draws} draws.")
    return section
