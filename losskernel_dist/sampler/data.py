"""Batches for the sampler: keyed SGLD minibatches and the N-sample eval shards.

Minibatches are fetched by index, the indices coming from the counter-based
generator, so the batch of (chain, step) is the same whichever process asks.
A batch is exactly what a default DataLoader would yield for those indices.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.data._utils.collate import default_collate

from ..rng import minibatch_indices
from .functional import to_device


def fetch_batch(dataset: Dataset, indices: np.ndarray) -> Any:
    """The default-collated batch of ``dataset`` at ``indices``."""
    if isinstance(dataset, TensorDataset):
        idx = torch.as_tensor(indices, dtype=torch.long)
        return [t[idx] for t in dataset.tensors]
    return default_collate([dataset[int(i)] for i in indices])


class _StepBatchSampler:
    """Yields the keyed minibatch indices of one chain for steps [start, stop)."""

    def __init__(self, seed: int, chain: int, start: int, stop: int, n: int, b: int) -> None:
        self.seed, self.chain, self.start, self.stop, self.n, self.b = seed, chain, start, stop, n, b

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield minibatch_indices(self.seed, self.chain, step, self.n, self.b).tolist()

    def __len__(self) -> int:
        return self.stop - self.start


def minibatches(
    dataset: Dataset,
    *,
    seed: int,
    chain: int,
    start: int,
    stop: int,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
) -> Iterator[Any]:
    """The chain's minibatches for steps [start, stop), on ``device``.

    With ``workers`` > 0 a DataLoader prefetches them in worker processes (for
    datasets that decode files); the batches are identical either way.
    """
    n = len(dataset)
    if workers == 0:
        for step in range(start, stop):
            idx = minibatch_indices(seed, chain, step, n, batch_size)
            yield to_device(fetch_batch(dataset, idx), device)
        return
    loader = DataLoader(
        dataset,
        batch_sampler=_StepBatchSampler(seed, chain, start, stop, n, batch_size),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    for batch in loader:
        yield to_device(batch, device)


def _channels_last(batch: Any) -> Any:
    """Image tensors (4-D) in channels-last memory order, the fast layout for convolutions."""
    if isinstance(batch, torch.Tensor):
        return batch.to(memory_format=torch.channels_last) if batch.ndim == 4 else batch
    if isinstance(batch, dict):
        return {k: _channels_last(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_channels_last(v) for v in batch)
    return batch


class EvalShards:
    """The N eval samples as shards of ``batch_size``, optionally collated once and kept."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        device: torch.device,
        cache: bool,
        channels_last: bool = False,
    ) -> None:
        self.dataset = dataset
        self.channels_last = channels_last
        self.batch_size = batch_size
        self.device = device
        self.n = len(dataset)
        self._cached: list[Any] | None = None
        if cache:
            self._cached = list(self._load())

    def _load(self) -> Iterator[Any]:
        for start in range(0, self.n, self.batch_size):
            idx = np.arange(start, min(start + self.batch_size, self.n))
            batch = to_device(fetch_batch(self.dataset, idx), self.device)
            yield _channels_last(batch) if self.channels_last else batch

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cached) if self._cached is not None else self._load()
