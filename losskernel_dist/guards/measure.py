"""Guard rails, the measuring half: the losses at w* that the guards judge chains against.

Before a run's first step, ``ensure_reference`` measures (once, race-safe) and
stores in the run's store:

* the mean training loss L* at w* over a fixed, keyed set of samples (the
  whole training set when it has at most ``REFERENCE_MINIBATCHES`` minibatches'
  worth of samples, otherwise the first ``REFERENCE_MINIBATCHES`` minibatches
  of chain 0's key stream, the very batches chain 0 starts on), and
* the eval loss vector at w*.

This is the only part of the guards that needs torch; the checks themselves
(``guards.judge``) read the stored arrays with numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..rng import minibatch_indices
from ..sampler.chain import loss_vector
from ..sampler.data import EvalShards, fetch_batch
from ..sampler.functional import FunctionalLoss, to_device
from ..store import RunStore

REFERENCE_MINIBATCHES = 8


def measure_reference(
    fl: FunctionalLoss,
    train: Dataset,
    shards: EvalShards,
    *,
    seed: int,
    batch_size: int,
    eval_batch_size: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The eval loss vector and the mean training loss at w* (see the module doc).

    Returns ``(eval_losses, attrs)``; ``attrs`` holds ``train_loss``,
    ``train_samples``, ``train_source`` and ``eval_loss_mean``.
    """
    anchor = fl.initial_params()
    eval_losses = loss_vector(fl, anchor, shards).cpu().numpy()
    n = len(train)
    if n <= REFERENCE_MINIBATCHES * batch_size:
        index_sets = [np.arange(i, min(i + eval_batch_size, n)) for i in range(0, n, eval_batch_size)]
        source = "the whole training set"
    else:
        index_sets = [minibatch_indices(seed, 0, step, n, batch_size)
                      for step in range(REFERENCE_MINIBATCHES)]
        source = (f"the first {REFERENCE_MINIBATCHES} minibatches (b={batch_size}) of chain 0's "
                  f"key stream")
    total, count = 0.0, 0
    with torch.inference_mode():
        for idx in index_sets:
            batch = to_device(fetch_batch(train, idx), fl.device)
            losses = fl.losses(anchor, batch).to(torch.float64)
            total += float(losses.sum())
            count += int(losses.numel())
    attrs = {
        "train_loss": total / count,
        "train_samples": count,
        "train_source": source,
        "eval_loss_mean": float(np.mean(eval_losses, dtype=np.float64)),
    }
    return eval_losses, attrs


def ensure_reference(
    store: RunStore,
    fl: FunctionalLoss,
    train: Dataset,
    shards: EvalShards,
    *,
    seed: int,
    batch_size: int,
    eval_batch_size: int,
) -> None:
    """Measure and store the reference unless the run has it (idempotent, race-safe)."""
    if store.has_reference():
        return
    eval_losses, attrs = measure_reference(
        fl, train, shards, seed=seed, batch_size=batch_size, eval_batch_size=eval_batch_size
    )
    store.write_reference(eval_losses, attrs)
