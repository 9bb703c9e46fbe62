"""The reference at w*: the losses at the trained weights, measured once before sampling.

The guard rails (``guards/``) judge against it how far the chains have drifted:

    reference/eval_losses  float32 (sample,)   the eval loss vector at w*
    reference attrs        train_loss (mean train loss at w*), train_samples,
                           train_source (which samples), eval_loss_mean

Several processes of one run may measure it at once, so every access opens the
group afresh and the write happens under the store's lock; the attrs, written
last, mark it complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .layout import array_codecs, store_lock


class Reference:
    """``RunStore``'s reference at w* (a mixin over its path)."""

    path: Path

    def _fresh_group(self) -> zarr.Group:
        return zarr.open_group(str(self.path), mode="r", zarr_format=3)

    def has_reference(self) -> bool:
        """True once the reference is completely written (by this or another process)."""
        group = self._fresh_group()
        return "reference" in group and "train_loss" in group["reference"].attrs

    def write_reference(self, eval_losses: np.ndarray, attrs: Mapping[str, Any]) -> bool:
        """Write the reference once; False when another process already had.

        Processes of one run may race to it (ranks, array tasks), so the check and
        the write happen under the store's flock; the attrs, written last, mark it
        complete.
        """
        with store_lock(self.path):
            group = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
            if "reference" in group and "train_loss" in group["reference"].attrs:
                return False
            if "reference" in group:
                del group["reference"]  # a write cut short by a kill
            sub = group.create_group("reference")
            values = np.asarray(eval_losses, dtype=np.float32)
            arr = sub.create_array(
                "eval_losses", shape=values.shape, chunks=(min(len(values), 1 << 20),),
                dtype="float32", dimension_names=("sample",), **array_codecs(),
            )
            arr[:] = values
            sub.attrs.update(dict(attrs))
            return True

    def reference(self) -> dict[str, Any] | None:
        """The reference attrs plus ``eval_losses``, or None when it was never measured."""
        group = self._fresh_group()
        if "reference" not in group or "train_loss" not in group["reference"].attrs:
            return None
        sub = group["reference"]
        return {**dict(sub.attrs), "eval_losses": np.asarray(sub["eval_losses"][...])}
