"""Fingerprints of what a run was computed from: trained weights, buffers, eval data, config.

A run directory is tied to one model and one eval set. Resuming or reducing
with a different one would silently mix two kernels, so the run records these
hashes and every later command compares them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import torch


def _update_tensor(h: Any, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    # reshape(-1): a 0-dim tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes;
    # for every other tensor the bytes, and so the fingerprint, are unchanged.
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted({**dict(model.named_parameters()), **dict(model.named_buffers())}.items()):
        _update_tensor(h, name, t)
    return h.hexdigest()


def _walk(batch: Any, prefix: str, h: Any) -> None:
    if isinstance(batch, torch.Tensor):
        _update_tensor(h, prefix, batch)
    elif isinstance(batch, Mapping):
        for k in sorted(batch):
            _walk(batch[k], f"{prefix}.{k}", h)
    elif isinstance(batch, (list, tuple)):
        for i, v in enumerate(batch):
            _walk(v, f"{prefix}[{i}]", h)
    else:
        h.update(f"{prefix}={batch!r}".encode())


def batches_fingerprint(batches: Iterable[Any]) -> str:
    """sha256 of a sequence of collated batches (the eval set as the sampler sees it)."""
    h = hashlib.sha256()
    for i, batch in enumerate(batches):
        _walk(batch, f"b{i}", h)
    return h.hexdigest()


def dict_fingerprint(data: Mapping[str, Any]) -> str:
    """sha256 of a JSON-serialisable mapping, key order ignored."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
