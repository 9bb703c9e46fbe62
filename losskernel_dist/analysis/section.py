"""What one analysis hands back: its numbers, its figures, what it skipped and its summary.

Every analysis (``analysis/sections/*.py``) returns a ``Section`` or a subclass
of it. The runner (``pipeline.py``) knows nothing of any single analysis: it
writes ``numbers`` under the analysis' name in ``metrics.json``, adds its
``figures`` (tagged with the report section that shows them) and ``skipped``
entries, and merges ``summary()`` into ``metrics["summary"]``. A subclass adds
typed fields for what later analyses need from it (the neighbour lists, the
PC1 scores, the label hierarchy...), so a dependency is a declared, typed
value rather than a field of a shared mutable context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Figure:
    """One PNG the analysis wrote beside metrics.json, with the words the report shows."""

    file: str  # name of the PNG in the analysis folder
    title: str
    caption: str


@dataclass
class Section:
    """The outcome of one analysis.

    ``numbers`` is the analysis' entry of metrics.json (None when it did not
    apply), ``skipped`` maps an analysis or part name to why it was not done.
    """

    numbers: dict[str, Any] | None = None
    figures: list[Figure] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def add_figure(self, path: Path, title: str, caption: str) -> None:
        """Record a figure written to ``path`` (in the analysis folder)."""
        self.figures.append(Figure(Path(path).name, title, caption))

    def summary(self) -> dict[str, Any]:
        """Headline numbers, short name -> number, for ``metrics["summary"]`` (none by default)."""
        return {}


def nanmean(values: np.ndarray) -> float | None:
    """Mean of the finite values; None when there are none (JSON has no NaN)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def slug(text: str) -> str:
    """``text`` as a file-name part: lower case, anything but letters and digits -> '_'."""
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def jsonable(value: Any) -> Any:
    """Plain JSON data: numpy to Python, non-finite floats to None, keys and str enums to str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, (str, Path)):
        return str(value)
    return value
