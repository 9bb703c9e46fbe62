"""The Task: the only user hook, and loading it from a ``module:function`` target.

A Task bundles what the loss kernel needs from a user: the trained model (its
parameters are the chain start w* and the localization centre), the training
set SGLD draws minibatches from, the N evaluation samples the kernel is over,
and a per-sample loss. Everything else (sampling, storage, reduction,
analysis) is the package's job.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import TaskError

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]

# task.target of a run that ``losskernel_dist.loss_kernel`` made from a Task object. No
# other process can rebuild that task: the target (api.in_memory_task) says so when loaded,
# and ``submit`` refuses such a run before queueing anything.
IN_MEMORY_TARGET = "losskernel_dist.api:in_memory_task"

# The per-sample attribute holding each eval sample's text (from ``Task.describe``, or given
# directly): stored with the run, shown by the analysis' explorer on hover and in neighbour
# lists. Text between MARK_OPEN and MARK_CLOSE is shown marked (a token-level kernel's token).
TEXT_ATTRIBUTE = "text"
MARK_OPEN, MARK_CLOSE = "\u27e6", "\u27e7"  # ⟦ ⟧


@dataclass
class Task:
    """What the user provides.

    model:  ``torch.nn.Module`` holding the trained weights w*.
    train:  Dataset SGLD minibatches come from; n = len(train).
    eval:   Dataset of the N samples of the kernel, in order (sample j is eval[j]).
    loss:   ``loss(model, batch) -> Tensor[B]`` of per-sample losses, where batch is
            what a default DataLoader yields for the dataset.
    labels: optional length-N integer labels of the eval samples (stored, used by
            analysis for colouring and for same-label exclusion).
    attributes: optional per-sample arrays of length N (e.g. ``{"operation": ...}``,
            ``{"mislabelled": ...}``) that analysis can colour by or test against.
    label_names: optional names of the label values (e.g. WordNet ids), index = label.
    describe: optional ``describe(j) -> str``, the text of eval sample j as a reader
            should see it (``"3 + 5 = 8"``; a sequence; a token in its context, marked
            ``⟦token⟧``). Called once per sample when the run is created; the texts are
            stored as the string attribute ``text`` (TEXT_ATTRIBUTE), which a task may
            also give directly instead, so that the analysis, which never imports the
            task, can show each sample.
    """

    model: torch.nn.Module
    train: Dataset
    eval: Dataset
    loss: LossFn
    labels: Sequence[int] | np.ndarray | torch.Tensor | None = None
    attributes: Mapping[str, Sequence[Any] | np.ndarray | torch.Tensor] = field(
        default_factory=dict
    )
    label_names: Sequence[str] | None = None
    describe: Callable[[int], str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, torch.nn.Module):
            raise TaskError(f"Task.model must be a torch.nn.Module, got {type(self.model).__name__}")
        if not callable(self.loss):
            raise TaskError("Task.loss must be callable as loss(model, batch) -> Tensor[B]")
        for name in ("train", "eval"):
            data = getattr(self, name)
            if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
                raise TaskError(f"Task.{name} must be a map-style Dataset with __len__")
            if len(data) == 0:
                raise TaskError(f"Task.{name} is empty")
        if not any(p.requires_grad for p in self.model.parameters()):
            raise TaskError("Task.model has no parameters with requires_grad=True to sample")
        n_eval = len(self.eval)
        if self.labels is not None:
            labels = np.asarray(
                self.labels.cpu() if isinstance(self.labels, torch.Tensor) else self.labels
            )
            if labels.shape != (n_eval,):
                raise TaskError(f"Task.labels has shape {labels.shape}, expected ({n_eval},)")
            if not np.issubdtype(labels.dtype, np.integer):
                raise TaskError(f"Task.labels must be integers, got dtype {labels.dtype}")
            self.labels = labels.astype(np.int64)
        attrs = {}
        for key, values in dict(self.attributes).items():
            arr = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values)
            if arr.shape[:1] != (n_eval,):
                raise TaskError(
                    f"Task.attributes[{key!r}] has length {arr.shape[:1]}, expected {n_eval}"
                )
            attrs[key] = arr
        self.attributes = attrs
        if self.describe is not None:
            if not callable(self.describe):
                raise TaskError("Task.describe must be callable as describe(j) -> str")
            if TEXT_ATTRIBUTE in attrs:
                raise TaskError(f"Task has both describe and attributes[{TEXT_ATTRIBUTE!r}]: "
                                "give the texts one way")

    def stored_attributes(self) -> dict[str, np.ndarray]:
        """The attributes a new run stores: ``attributes``, plus ``text`` from ``describe``."""
        if self.describe is None:
            return dict(self.attributes)
        texts = []
        for j in range(self.n_eval):
            text = self.describe(j)
            if not isinstance(text, str):
                raise TaskError(f"Task.describe({j}) returned {type(text).__name__}, not str")
            texts.append(text)
        return {**self.attributes, TEXT_ATTRIBUTE: np.asarray(texts, dtype=str)}

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_eval(self) -> int:
        return len(self.eval)


def load_task(target: str, args: Mapping[str, Any] | None = None) -> Task:
    """Import ``module:function`` and call it with ``args``; the result must be a Task."""
    if not isinstance(target, str) or target.count(":") != 1:
        raise TaskError(f"task.target must look like 'package.module:function', got {target!r}")
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TaskError(f"task.target {target!r}: cannot import module {module_name!r} ({exc})") from exc
    func = getattr(module, func_name, None)
    if func is None:
        raise TaskError(f"task.target {target!r}: module {module_name!r} has no function {func_name!r}")
    if not callable(func):
        raise TaskError(f"task.target {target!r}: {func_name!r} is not callable")
    try:
        task = func(**dict(args or {}))
    except TypeError as exc:
        raise TaskError(f"task.target {target!r} rejected task.args {dict(args or {})}: {exc}") from exc
    if not isinstance(task, Task):
        raise TaskError(
            f"task.target {target!r} returned {type(task).__name__}, expected losskernel_dist.Task"
        )
    return task
