"""The kernel a reduce writes: per-sample moments and the dense N x N covariance and
correlation.

    kernel/mean, kernel/var   float64 (sample,)
    kernel/cov, kernel/corr   the reduce's dtype (sample_i, sample_j), in block x block tiles

    kernel/done               bool (row_block, column_block), one chunk per tile: true once
                              tile (i, j >= i) and its transpose are written

A neighbours-only reduce writes only ``mean`` and ``var``. The group always
describes the latest reduce: a new one replaces it whole, except that the dask
reduce of an unfinished kernel (attrs ``complete`` false) with the same ``key``
(a digest of the draws used, N, block and dtype) keeps it and computes only the
tiles not done. Tiles are written by whichever process or node computes them;
each tile writes whole chunks of its own, so writers never share a chunk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from ..errors import StoreError
from .layout import array_codecs


class Kernel:
    """``RunStore``'s kernel arrays (a mixin over its group and path)."""

    group: zarr.Group
    path: Path

    def has_kernel(self) -> bool:
        """True when the dense kernel is complete (an interrupted reduce's is not)."""
        if "kernel" not in self.group or "corr" not in self.group["kernel"]:
            return False
        return bool(self.group["kernel"].attrs.get("complete", True))

    def has_kernel_array(self, name: str) -> bool:
        return "kernel" in self.group and name in self.group["kernel"]

    def kernel_array(self, name: str) -> zarr.Array:
        if "kernel" not in self.group or name not in self.group["kernel"]:
            raise StoreError(f"store {str(self.path)!r} has no kernel/{name}: run 'losskernel reduce'")
        return self.group["kernel"][name]

    def open_kernel(
        self, n: int, block: int, dtype: str, key: str
    ) -> tuple[dict[str, zarr.Array], np.ndarray]:
        """The dense kernel arrays and the (row block, column block) tiles already done.

        An unfinished kernel whose ``key`` equals ``key`` is kept (resume); anything
        else is replaced by fresh arrays with a ``done`` mask of no tile.
        """
        blocks = -(-n // min(n, block))
        if self.has_kernel_array("done"):
            old = self.group["kernel"]
            if old.attrs.get("key") == key and not old.attrs.get("complete", True):
                arrays = {name: old[name] for name in ("mean", "var", "cov", "corr", "done")}
                return arrays, np.asarray(arrays["done"][...])
        arrays = self.create_kernel(n, block, dtype)
        arrays["done"] = self.group["kernel"].create_array(
            "done", shape=(blocks, blocks), chunks=(1, 1), dtype="bool", fill_value=False,
            dimension_names=("row_block", "column_block"), **array_codecs(),
        )
        self.group["kernel"].attrs.update({"key": key, "complete": False})
        return arrays, np.zeros((blocks, blocks), dtype=bool)

    def finish_kernel(self) -> None:
        """Mark the dense kernel complete: every tile is written."""
        self.group["kernel"].attrs["complete"] = True

    def create_kernel(
        self, n: int, block: int, dtype: str, dense: bool = True
    ) -> dict[str, zarr.Array]:
        """(Re)create the kernel arrays, chunked in ``block`` x ``block`` tiles.

        ``dense=False`` (a neighbours-only reduce) creates only ``mean`` and ``var``:
        the group always describes the latest reduce, so an older dense kernel,
        which may rest on other draws, is removed with it.
        """
        if "kernel" in self.group:
            del self.group["kernel"]
        sub = self.group.create_group("kernel")
        codecs = array_codecs()
        out = {}
        for name in ("mean", "var"):
            out[name] = sub.create_array(
                name, shape=(n,), chunks=(min(n, 1 << 20),), dtype="float64",
                dimension_names=("sample",), **codecs,
            )
        for name in ("cov", "corr") if dense else ():
            out[name] = sub.create_array(
                name, shape=(n, n), chunks=(min(n, block), min(n, block)), dtype=dtype,
                dimension_names=("sample_i", "sample_j"), **array_codecs(compress=False),
                # every tile is written once, whole: skip zarr's all-equal-to-fill scan
                config={"write_empty_chunks": True},
            )
        return out
