"""One SGLD chain from its start (or a resumed state) to its last kept draw.

The chain is a generator of events (kept draws and checkpoint points) and
never touches files: the caller commits what it yields, in the order that
keeps a run consistent under a kill at any instant. Its randomness is keyed by
(seed, chain, step), so a chain resumed at step s continues exactly as if it
had never stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import config_default
from ..rng import noise_generator
from .data import EvalShards, minibatches
from .functional import FunctionalLoss, check_loss_count
from .host import host_array
from .schedule import StepSchedule
from .sgld import Params, draw_noise, sgld_update


@dataclass(frozen=True)
class SGLDSettings:
    """The sampler settings a chain needs: the update rule, its minibatches, its schedule.

    Defaults are the config's (``sampler.noise``, ``sampler.loader_workers``);
    the rest has none, since a chain is always built from a config (or a test).
    """

    lr: float
    nbeta: float
    localization: float
    seed: int
    batch_size: int
    schedule: StepSchedule
    noise: bool = config_default("sampler.noise")
    loader_workers: int = config_default("sampler.loader_workers")


@dataclass
class ChainEvent:
    """What a chain hands to its caller.

    ``train_loss`` holds the mean minibatch loss of steps [train_start, step).
    ``losses`` is set for a kept draw (index ``draw``), together with ``distance``,
    ||w - w*|| over all sampled parameters at that draw (the guard rails watch it
    for chains that wander off the trained solution); ``params`` is set when the
    caller should checkpoint (after ``step`` steps).
    """

    chain: int
    step: int
    train_start: int
    train_loss: np.ndarray
    draw: int | None = None
    losses: np.ndarray | None = None
    params: Params | None = None
    distance: float | None = None


class ChainDiverged(RuntimeError):
    """A chain's loss or parameters became NaN or infinite."""

    def __init__(self, chain: int, step: int, what: str) -> None:
        self.chain, self.step = chain, step
        super().__init__(
            f"chain {chain} diverged at step {step}: {what} is not finite "
            "(likely cause: sampler.lr too large for this nbeta/localization)"
        )


def loss_vector(fl: FunctionalLoss, params: Params, shards: EvalShards) -> torch.Tensor:
    """Per-sample losses of all N eval samples at ``params``, as float32 on the device."""
    with torch.inference_mode():
        parts = [fl.eval_losses(params, batch) for batch in shards]
    out = torch.cat(parts)
    check_loss_count(out, shards.n, "eval samples")
    return out


def distance_from(params: Params, anchor: Params) -> torch.Tensor:
    """||w - w*|| over every sampled parameter, as a 0-d float64 tensor on the device.

    Squares are summed in float64 without float64 copies of the weights. The value
    is NaN or infinite when a parameter is, so one pass serves as the chain's
    finiteness check too. Returned as a tensor so that the caller decides when to
    synchronise with the host (only at events).
    """
    return torch.stack([
        (p.detach() - anchor[k]).square().sum(dtype=torch.float64) for k, p in params.items()
    ]).sum().sqrt()


def _all_finite(params: Params) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in params.values()]).all())


def run_chain(
    fl: FunctionalLoss,
    train: Dataset,
    shards: EvalShards,
    settings: SGLDSettings,
    chain: int,
    *,
    start_step: int = 0,
    start_params: Params | None = None,
    anchor: Params | None = None,
    skip_draw: Callable[[int], bool] = lambda draw: False,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[ChainEvent]:
    """Advance ``chain`` from ``start_step`` to the end, yielding draws and checkpoints.

    ``skip_draw(t)`` says draw t is already stored: the chain still takes its
    steps (the state must advance identically) but skips the eval pass.
    ``should_stop()`` is asked after every step: when it says yes the chain yields
    a checkpoint event for its current state and returns early (a stop signal).
    Raises ChainDiverged when the loss or parameters stop being finite; draws
    yielded before that were computed from finite parameters.
    """
    device = fl.device
    anchor = anchor if anchor is not None else fl.initial_params()
    params = {k: v.to(device) for k, v in (start_params or anchor).items()}
    schedule = settings.schedule
    total = schedule.total_steps
    pending: list[torch.Tensor] = []
    pending_start = start_step

    def flush(step: int) -> tuple[np.ndarray, int]:
        nonlocal pending, pending_start
        values = torch.stack(pending).float().cpu().numpy() if pending else np.zeros(0, np.float32)
        if not np.isfinite(values).all():
            bad = pending_start + int(np.flatnonzero(~np.isfinite(values))[0])
            raise ChainDiverged(chain, bad, "the minibatch training loss")
        start = pending_start
        pending, pending_start = [], step
        return values, start

    batches = minibatches(
        train,
        seed=settings.seed,
        chain=chain,
        start=start_step,
        stop=total,
        batch_size=settings.batch_size,
        device=device,
        workers=settings.loader_workers,
    )
    for step, batch in zip(range(start_step, total), batches, strict=True):
        grads, loss = fl.grad_and_loss(params, batch)
        noise = None
        if settings.noise:
            noise = draw_noise(params, noise_generator(settings.seed, chain, step, device))
        params = sgld_update(
            params, grads, anchor, noise,
            lr=settings.lr, nbeta=settings.nbeta, localization=settings.localization,
        )
        pending.append(loss)
        taken = step + 1
        draw = schedule.draw_index(taken)
        keep = draw is not None and not skip_draw(draw)
        stop = should_stop()
        ckpt = stop or schedule.is_checkpoint_step(taken)
        if not (keep or ckpt):
            continue
        values, start = flush(taken)
        distance = distance_from(params, anchor)
        if not bool(torch.isfinite(distance)) and not _all_finite(params):
            raise ChainDiverged(chain, taken, "a parameter")  # (else only the square overflowed)
        event = ChainEvent(chain=chain, step=taken, train_start=start, train_loss=values)
        if keep:
            # to the host for the writer: pinned and non-blocking on CUDA (sampler/host.py)
            losses = host_array(loss_vector(fl, params, shards))
            if not np.isfinite(losses).all():
                raise ChainDiverged(chain, taken, "the eval loss vector")
            event.draw, event.losses = draw, losses
            event.distance = float(distance)
        if ckpt:
            event.params = params
        yield event
        if stop:
            return
