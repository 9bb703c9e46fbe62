"""The user's model and loss in functional form: losses as a function of a parameter dict.

The Task's ``loss(model, batch)`` calls the model as a module. Wrapping both in
one module lets ``torch.func.functional_call`` swap in any parameter tensors
(one chain's, or a stacked batch under ``vmap``) while the user's code stays
as written. Buffers are held fixed at their trained values and the model is
kept in eval mode, as MATH.md requires.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.func import functional_call

from ..config import Autocast, config_default
from ..errors import TaskError
from ..task import LossFn, Task

_PREFIX = "model."


class _LossModule(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, loss: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss(self.model, batch)


class FunctionalLoss:
    """Per-sample losses and mean-loss gradients of a Task's model at given parameters."""

    def __init__(
        self,
        task: Task,
        device: torch.device,
        *,
        eval_autocast: Autocast | str = config_default("eval.autocast"),
        channels_last: bool = config_default("eval.channels_last"),
    ) -> None:
        model = task.model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.eval()
        self.eval_autocast = Autocast.parse(eval_autocast, "eval.autocast")
        self.module = _LossModule(model, task.loss)
        self.device = device
        # Parameters the user froze (requires_grad=False) and buffers stay in the module,
        # fixed at their trained values: only the sampled parameters are swapped in.
        self.param_names = [n for n, p in model.named_parameters() if p.requires_grad]
        # One tensor used under two names (tied embeddings) is listed once by
        # named_parameters; only then must functional_call re-tie the other name
        # (tie_weights), which costs a search on every call.
        self.tied = (len(list(model.named_parameters(remove_duplicate=False)))
                     != len(list(model.named_parameters())))

    def initial_params(self) -> dict[str, torch.Tensor]:
        """Copies of the trained parameters w* (the chain start and localization centre)."""
        named = dict(self.module.model.named_parameters())
        return {n: named[n].detach().clone() for n in self.param_names}

    def losses(self, params: Mapping[str, torch.Tensor], batch: Any) -> torch.Tensor:
        """Per-sample losses, shape [B]; a TaskError when the Task's loss returns anything
        else (checked on every call: attribute reads only, also under vmap)."""
        swapped = {_PREFIX + n: t for n, t in params.items()}
        out = functional_call(self.module, swapped, (batch,), strict=False,
                              tie_weights=self.tied)
        if not isinstance(out, torch.Tensor) or out.ndim != 1 or not out.is_floating_point():
            raise TaskError(f"Task.loss returned {describe_loss(out)}: it must return one "
                            "float per sample, a float tensor of shape [B] (reduction='none')")
        return out

    def eval_losses(self, params: Mapping[str, torch.Tensor], batch: Any) -> torch.Tensor:
        """Per-sample losses for the loss vector: optionally under bf16 autocast, as float32."""
        if self.eval_autocast is Autocast.BF16:
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                return self.losses(params, batch).float()
        return self.losses(params, batch).float()

    def mean_loss(self, params: Mapping[str, torch.Tensor], batch: Any) -> torch.Tensor:
        return self.losses(params, batch).mean()

    def grad_and_loss(
        self, params: Mapping[str, torch.Tensor], batch: Any
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Gradient of the mean minibatch loss and the loss itself (one chain, plain autograd)."""
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        with torch.enable_grad():
            loss = self.mean_loss(leaves, batch)
            grads = torch.autograd.grad(loss, list(leaves.values()))
        return dict(zip(leaves, grads, strict=True)), loss.detach()


def describe_loss(out: Any) -> str:
    """What a loss function returned, for an error message: type, shape and dtype."""
    if not isinstance(out, torch.Tensor):
        return f"a {type(out).__name__}, not a tensor"
    what = "a scalar (0-d) tensor" if out.ndim == 0 else f"a tensor of shape {tuple(out.shape)}"
    return f"{what} of dtype {str(out.dtype).removeprefix('torch.')}"


def check_loss_count(losses: torch.Tensor, expected: int, what: str) -> None:
    """A TaskError when the losses of ``expected`` samples (``what``) are not ``expected``."""
    if losses.numel() != expected:
        raise TaskError(f"Task.loss returned {losses.numel()} losses for {expected} {what}: "
                        "it must return one float per sample of the batch")


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
