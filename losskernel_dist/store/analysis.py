"""The analysis' outputs: neighbour lists from the dense kernel and per-sample embeddings.

Written by losskernel_dist.analysis; kept under the group "analysis" so that a
new analysis replaces them without touching draws or kernel.

    analysis/neighbours/top_index     int64   (sample, k_top)     -1 where fewer exist
    analysis/neighbours/top_corr      float64 (sample, k_top)     NaN where fewer exist
    analysis/neighbours/bottom_index  int64   (sample, k_bottom)
    analysis/neighbours/bottom_corr   float64 (sample, k_bottom)
    analysis/embedding/<name>         float32 (sample, dim)       e.g. umap_2d, umap_3d
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import StoreError
from .layout import array_codecs


class AnalysisOutputs:
    """``RunStore``'s analysis outputs (a mixin over its group and path)."""

    group: zarr.Group
    path: Path

    def _analysis_group(self) -> zarr.Group:
        if "analysis" not in self.group:
            return self.group.create_group("analysis")
        return self.group["analysis"]

    def write_neighbours(
        self,
        top_index: np.ndarray,
        top_corr: np.ndarray,
        bottom_index: np.ndarray,
        bottom_corr: np.ndarray,
        attrs: Mapping[str, Any],
    ) -> None:
        """(Re)write the top-k / bottom-k neighbour lists and what they were computed with."""
        parent = self._analysis_group()
        if "neighbours" in parent:
            del parent["neighbours"]
        sub = parent.create_group("neighbours")
        codecs = array_codecs()
        arrays = {
            "top_index": np.asarray(top_index, dtype=np.int64),
            "top_corr": np.asarray(top_corr, dtype=np.float64),
            "bottom_index": np.asarray(bottom_index, dtype=np.int64),
            "bottom_corr": np.asarray(bottom_corr, dtype=np.float64),
        }
        for name, values in arrays.items():
            arr = sub.create_array(
                name, shape=values.shape, chunks=(min(max(values.shape[0], 1), 1 << 16),
                                                  max(values.shape[1], 1)),
                dtype=values.dtype, dimension_names=("sample", "rank"), **codecs,
            )
            arr[...] = values
        sub.attrs.update(dict(attrs))

    def has_neighbours(self) -> bool:
        return "analysis" in self.group and "neighbours" in self.group["analysis"]

    def read_neighbours(self) -> dict[str, Any]:
        """The neighbour arrays by name, plus ``attrs`` (k, exclusion, draws)."""
        if not self.has_neighbours():
            raise StoreError(f"store {str(self.path)!r} has no analysis/neighbours: run 'losskernel analyze'")
        sub = self.group["analysis"]["neighbours"]
        out: dict[str, Any] = {name: np.asarray(arr[...]) for name, arr in sub.arrays()}
        out["attrs"] = dict(sub.attrs)
        return out

    def write_embedding(self, name: str, coords: np.ndarray, attrs: Mapping[str, Any]) -> None:
        """(Re)write one per-sample embedding (e.g. ``umap_2d``) with its settings."""
        parent = self._analysis_group()
        sub = parent["embedding"] if "embedding" in parent else parent.create_group("embedding")
        if name in sub:
            del sub[name]
        values = np.asarray(coords, dtype=np.float32)
        arr = sub.create_array(
            name, shape=values.shape, chunks=values.shape, dtype=values.dtype,
            dimension_names=("sample", "component"), **array_codecs(),
        )
        arr[...] = values
        arr.attrs.update(dict(attrs))

    def read_embedding(self, name: str) -> np.ndarray | None:
        """A stored embedding, or None when there is none of that name."""
        if "analysis" not in self.group or "embedding" not in self.group["analysis"]:
            return None
        sub = self.group["analysis"]["embedding"]
        return np.asarray(sub[name][...]) if name in sub else None
