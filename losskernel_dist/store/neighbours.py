"""The streamed neighbour lists, for runs whose N x N kernel is too large to store.

Written by the neighbours reduce (reduction/topk.py) one row block at a time:

    neighbours/top_index     int64   (sample, k)          -1 where fewer candidates exist
    neighbours/top_value     float64 (sample, k)          NaN there
    neighbours/bottom_index  int64   (sample, k_bottom)   (k_bottom may be 0)
    neighbours/bottom_value  float64 (sample, k_bottom)
    neighbours/done          bool    (row_block,)         true once the block's rows are written

Rows of one block are one chunk, and ``done`` has one chunk per block, so threads
writing different blocks never share a chunk and an interrupted reduce leaves only
whole blocks marked done. attrs: metric, k, k_bottom, exclude_same_label,
block_size, draws_used, chains_used and ``key`` (a digest of all of them and of the
draws used): a rerun of an unfinished group with the same key resumes, any other
recreates the group.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import StoreError
from .layout import array_codecs


class StreamNeighbours:
    """``RunStore``'s streamed neighbour lists (a mixin over its group and path)."""

    group: zarr.Group
    path: Path

    NEIGHBOUR_ARRAYS = ("top_index", "top_value", "bottom_index", "bottom_value")

    def open_stream_neighbours(
        self, n: int, k: int, k_bottom: int, block: int, attrs: Mapping[str, Any]
    ) -> tuple[dict[str, zarr.Array], np.ndarray]:
        """The ``neighbours`` arrays for a reduce with ``attrs``, and which blocks are done.

        An unfinished group whose ``key`` equals ``attrs["key"]`` is kept (resume);
        anything else, a finished group included (a reduce asked for again computes
        again), is replaced by a fresh group with no block done.
        """
        blocks = -(-n // block)
        if "neighbours" in self.group:
            old = self.group["neighbours"]
            if (old.attrs.get("key") == attrs["key"] and "done" in old
                    and not old.attrs.get("complete", False)):
                arrays = {name: old[name] for name in (*self.NEIGHBOUR_ARRAYS, "done")}
                return arrays, np.asarray(arrays["done"][...])
            del self.group["neighbours"]
        sub = self.group.create_group("neighbours")
        codecs = array_codecs()
        arrays = {}
        for name in self.NEIGHBOUR_ARRAYS:
            width = k if name.startswith("top") else k_bottom
            index = name.endswith("index")
            arrays[name] = sub.create_array(
                name, shape=(n, width), chunks=(min(n, block), max(width, 1)),
                dtype="int64" if index else "float64", fill_value=-1 if index else np.nan,
                dimension_names=("sample", "rank"), **codecs,
            )
        arrays["done"] = sub.create_array(
            "done", shape=(blocks,), chunks=(1,), dtype="bool", fill_value=False,
            dimension_names=("row_block",), **codecs,
        )
        sub.attrs.update({**dict(attrs), "complete": False})
        return arrays, np.zeros(blocks, dtype=bool)

    def finish_stream_neighbours(self, extra: Mapping[str, Any]) -> None:
        """Mark the streamed neighbours complete (every block done) and add ``extra`` attrs."""
        self.group["neighbours"].attrs.update({**dict(extra), "complete": True})

    def has_stream_neighbours(self) -> bool:
        """True when a neighbours reduce finished (every row block written)."""
        return "neighbours" in self.group and bool(
            self.group["neighbours"].attrs.get("complete", False))

    def read_stream_neighbours(self) -> dict[str, Any]:
        """The streamed neighbour arrays by name, plus ``attrs``; refuses an unfinished one."""
        if not self.has_stream_neighbours():
            raise StoreError(
                f"store {str(self.path)!r} has no complete neighbours: run 'losskernel reduce' "
                "with reduce.kernel neighbours or both (an interrupted one resumes)"
            )
        sub = self.group["neighbours"]
        out: dict[str, Any] = {name: np.asarray(sub[name][...]) for name in self.NEIGHBOUR_ARRAYS}
        out["attrs"] = dict(sub.attrs)
        return out
