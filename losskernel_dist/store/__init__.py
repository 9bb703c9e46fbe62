"""The Zarr v3 store of a run: the only package that knows its paths and chunking.

``RunStore`` (``run``) opens or creates one run's ``store.zarr``; its layout,
codecs and chunking are in ``layout``, the checks of the ``losses`` chunks in
``damage``, and each further group in its own module (``reference``,
``kernel``, ``neighbours``, ``analysis``). Import from here.
"""

from __future__ import annotations

from ..errors import StoreError
from .damage import DamagedChunk, describe_damage
from .layout import (
    CHUNK_BYTES,
    SAMPLE_CHUNK,
    STATUS_FAILED,
    STATUS_OK,
    array_codecs,
    losses_chunks,
)
from .run import RunStore

__all__ = [
    "CHUNK_BYTES",
    "SAMPLE_CHUNK",
    "STATUS_FAILED",
    "STATUS_OK",
    "DamagedChunk",
    "RunStore",
    "StoreError",
    "array_codecs",
    "describe_damage",
    "losses_chunks",
]
