"""The kernel a reduce writes: per-sample moments and the dense N x N covariance and
correlation.

    kernel/mean, kernel/var   float64 (sample,)
    kernel/cov, kernel/corr   the reduce's dtype (sample_i, sample_j), in block x block tiles

A neighbours-only reduce writes only ``mean`` and ``var``. The group always
describes the latest reduce: a new one replaces it whole.
"""

from __future__ import annotations

from pathlib import Path

import zarr

from ..errors import StoreError
from .layout import array_codecs


class Kernel:
    """``RunStore``'s kernel arrays (a mixin over its group and path)."""

    group: zarr.Group
    path: Path

    def has_kernel(self) -> bool:
        return "kernel" in self.group and "corr" in self.group["kernel"]

    def has_kernel_array(self, name: str) -> bool:
        return "kernel" in self.group and name in self.group["kernel"]

    def kernel_array(self, name: str) -> zarr.Array:
        if "kernel" not in self.group or name not in self.group["kernel"]:
            raise StoreError(f"store {str(self.path)!r} has no kernel/{name}: run 'losskernel reduce'")
        return self.group["kernel"][name]

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
