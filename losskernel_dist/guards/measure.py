"""Guard rails, the measuring half: the losses at w* that the guards judge chains against.

Before anything of a run is written, ``measure_reference`` measures (and the
sample job then stores, once, race-safe: ``RunStore.write_reference``):

* the mean training loss L* at w* over a fixed, keyed set of samples (the
  whole training set when it has at most ``REFERENCE_MINIBATCHES`` minibatches'
  worth of samples, otherwise the first ``REFERENCE_MINIBATCHES`` minibatches
  of chain 0's key stream, the very batches chain 0 starts on), and
* the eval loss vector at w*.

A loss that is not finite at w* is the task's fault, not the sampler's: it is a
TaskError naming the first such sample, raised before the run directory is
touched (else every chain would "diverge" at its first draw and blame
``sampler.lr``, and the fixed task would be refused as a different one).

This is the only part of the guards that needs torch; the checks themselves
(``guards.judge``) read the stored arrays with numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import TaskError
from ..rng import minibatch_indices
from ..sampler.chain import loss_vector
from ..sampler.data import EvalShards, fetch_batch
from ..sampler.functional import FunctionalLoss, check_loss_count, to_device

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
    bad = np.flatnonzero(~np.isfinite(eval_losses))
    if len(bad):
        raise TaskError(
            f"the task's loss is not finite at the trained weights w*: eval sample {bad[0]} "
            f"has loss {eval_losses[bad[0]]} ({len(bad)} of {len(eval_losses)} eval losses are "
            "not finite); fix the model, its checkpoint or the eval data (no sampler setting "
            "can)"
        )
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
            check_loss_count(losses, len(idx), "training samples")
            finite = torch.isfinite(losses)
            if not bool(finite.all()):
                first = int(np.asarray(idx)[int(torch.nonzero(~finite)[0, 0])])
                raise TaskError(
                    "the task's loss is not finite at the trained weights w*: training sample "
                    f"{first} has loss {float(losses[~finite][0])}; fix the model, its "
                    "checkpoint or the training data (no sampler setting can)"
                )
            total += float(losses.sum())
            count += int(losses.numel())
    attrs = {
        "train_loss": total / count,
        "train_samples": count,
        "train_source": source,
        "eval_loss_mean": float(np.mean(eval_losses, dtype=np.float64)),
    }
    return eval_losses, attrs
