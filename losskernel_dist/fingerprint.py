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


def _leaves(batch: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(batch, Mapping):
        for k in sorted(batch):
            yield from _leaves(batch[k], f"{prefix}.{k}")
    elif isinstance(batch, (list, tuple)):
        for i, v in enumerate(batch):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, batch


def samples_fingerprint(batches: Iterable[Any]) -> str:
    """sha256 of the samples in a sequence of collated batches, whatever the batch size.

    Each leaf of the batch structure (inputs, targets...) gets its own running hash
    of its rows' bytes, so that splitting the same samples into other shards gives
    the same result: ``eval.batch_size`` does not change which samples a run maps.
    """
    hashes: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    for batch in batches:
        for name, leaf in _leaves(batch):
            h = hashes.setdefault(name, hashlib.sha256())
            if isinstance(leaf, torch.Tensor):
                t = leaf.detach().cpu().contiguous()
                kind = f"{t.dtype}|{tuple(t.shape[1:])}|"
                if kinds.get(name) != kind:  # once per leaf (again only if it changes)
                    kinds[name] = kind
                    h.update(kind.encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            elif isinstance(leaf, (list, tuple)):
                h.update(repr(list(leaf)).encode())
            else:
                h.update(repr(leaf).encode())
    top = hashlib.sha256()
    for name in sorted(hashes):
        top.update(f"{name}:{hashes[name].hexdigest()}|".encode())
    return top.hexdigest()


TRAIN_SAMPLE_ITEMS = 512  # training items hashed (all of them when there are fewer)


def dataset_fingerprint(dataset: Any, items: int = TRAIN_SAMPLE_ITEMS) -> str:
    """sha256 of a dataset's length and of ``items`` of its items, evenly spaced (all of
    them for a small dataset): a changed training set changes the posterior the chains
    sample, so a resume with one is refused. Deterministic: no randomness involved."""
    n = len(dataset)
    h = hashlib.sha256(f"n={n}|".encode())
    count = min(n, items)
    picks = sorted({int(i) for i in (
        [round(k * (n - 1) / max(count - 1, 1)) for k in range(count)] if count else [])})
    for i in picks:
        _walk(dataset[i], f"i{i}", h)
    return h.hexdigest()


def numerics_description(device: torch.device, threads: int, chains_per_batch: int,
                         batched_eval: str, eval_batch_size: int) -> str:
    """What, besides the draw-changing config keys, decides the draws' last bits: the
    device type, torch's version, the intra-op thread count on a CPU (reductions split
    by thread), the shard size of the loss-vector pass (matrix shapes pick kernels: on
    the CPU here a change moves the last bits, tests/faults/test_fingerprints.py), and
    how chains are batched. Stored readable so that a refusal names the difference."""
    parts = [f"device={device.type}", f"torch={torch.__version__}"]
    if device.type == "cpu":
        parts.append(f"threads={threads}")
    parts.append(f"eval_batch_size={eval_batch_size}")
    parts.append(f"chains_per_batch={chains_per_batch}")
    if chains_per_batch > 1:
        parts.append(f"batched_eval={batched_eval}")
    return " ".join(parts)


def dict_fingerprint(data: Mapping[str, Any]) -> str:
    """sha256 of a JSON-serialisable mapping, key order ignored."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
