"""Several chains advanced as one batch with ``torch.func.vmap``.

The chains of a group share every step count (burn-in, draw points,
checkpoints), so they move in lockstep: their parameters are stacked along a
leading chain axis, each chain's minibatch and noise still come from its own
key (seed, chain, step), and one vmapped gradient and one vmapped eval pass
serve them all. The events are the single-chain events, one per chain, so the
caller commits them exactly as before. Draws agree with ``run_chain`` to
floating-point tolerance (batched kernels may round differently).

The loss-vector pass is either vmapped too (``eval_mode="vmap"``) or run chain
by chain on the stacked parameters' slices (``"chains"``). On an accelerator
one chain's pass may leave the device idle, so the vmapped pass wins; on a CPU
one chain's large eval shard already keeps the cores busy, and the vmapped pass
measured slower there (what vmap adds around the products: separate bias adds,
a decomposed LayerNorm, reshape copies; docs/performance.md), while the
minibatch gradient, small per chain, still gains from batching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.func import grad_and_value, vmap
from torch.utils.data import Dataset

from ..config import BatchedEval, config_default
from ..rng import minibatch_indices, noise_generator
from .chain import ChainDiverged, ChainEvent, SGLDSettings
from .data import EvalShards, fetch_batch
from .functional import FunctionalLoss, to_device
from .host import host_array
from .sgld import Params, fill_noise, sgld_update


def batched_eval_mode(setting: BatchedEval | str, device: torch.device) -> BatchedEval:
    """The eval mode ``sampler.batched_eval`` names on ``device``: 'auto' is vmap except
    on the CPU (see the module doc)."""
    mode = BatchedEval.parse(setting, "sampler.batched_eval")
    if mode is BatchedEval.AUTO:
        return BatchedEval.CHAINS if device.type == "cpu" else BatchedEval.VMAP
    return mode


def import_transform_machinery() -> None:
    """Import what ``torch.func.grad`` imports on its first call (torch._dynamo).

    That import takes seconds (``bench/components.py``, part ``startup``): a
    process start-up cost, paid here, before the chains start, rather than
    inside the first step.
    """
    import torch._dynamo  # noqa: F401


def stack_batches(batches: list[Any]) -> Any:
    """Stack same-structured batches along a new leading (chain) axis."""
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(batches)
    if isinstance(first, Mapping):
        return {k: stack_batches([b[k] for b in batches]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(stack_batches(list(items)) for items in zip(*batches, strict=True))
    raise TypeError(f"cannot stack batch element of type {type(first).__name__} across chains")


def _stack(dicts: list[Params]) -> Params:
    return {k: torch.stack([d[k] for d in dicts]) for k in dicts[0]}


def _unstack(params: Params, i: int) -> Params:
    return {k: v[i] for k, v in params.items()}


def _distances(params: Params, centre: Params) -> torch.Tensor:
    """||w_c - w*|| of every chain c, float64 of shape [chains]; NaN/inf where a parameter is."""
    return torch.stack([
        (v - centre[k]).square().reshape(v.shape[0], -1).sum(dim=1, dtype=torch.float64)
        for k, v in params.items()
    ]).sum(0).sqrt()


def run_chains_batched(
    fl: FunctionalLoss,
    train: Dataset,
    shards: EvalShards,
    settings: SGLDSettings,
    chains: list[int],
    *,
    start_step: int = 0,
    start_params: list[Params] | None = None,
    anchor: Params | None = None,
    skip_draw: Callable[[int, int], bool] = lambda chain, draw: False,
    should_stop: Callable[[], bool] = lambda: False,
    eval_mode: BatchedEval | str = config_default("sampler.batched_eval"),
) -> Iterator[ChainEvent]:
    """Advance ``chains`` together from ``start_step``; yields per-chain events.

    ``skip_draw(chain, t)`` says that chain's draw t is stored already. A draw
    point where every chain's draw is stored skips the eval pass (with
    ``eval_mode="chains"``, so does each stored chain). ``eval_mode`` is a
    ``sampler.batched_eval`` value ('auto' resolved by ``batched_eval_mode``).
    If one chain diverges, ChainDiverged names it; the caller restarts the others.
    """
    device = fl.device
    eval_mode = batched_eval_mode(eval_mode, device)
    g = len(chains)
    anchor = anchor if anchor is not None else fl.initial_params()
    starts = start_params or [anchor] * g
    params = _stack([{k: v.to(device) for k, v in p.items()} for p in starts])
    centre = {k: v.to(device)[None] for k, v in anchor.items()}  # broadcasts over chains
    schedule = settings.schedule
    total = schedule.total_steps
    grad_fn = vmap(grad_and_value(fl.mean_loss))
    eval_fn = vmap(fl.eval_losses, in_dims=(0, None))
    n = len(train)
    pending: list[torch.Tensor] = []
    pending_start = start_step

    for step in range(start_step, total):
        batch = stack_batches([
            fetch_batch(train, minibatch_indices(settings.seed, c, step, n, settings.batch_size))
            for c in chains
        ])
        grads, loss = grad_fn(params, to_device(batch, device))
        noise = None
        if settings.noise:
            noise = {k: torch.empty_like(v) for k, v in params.items()}
            for i, c in enumerate(chains):  # each chain's slice from its own key, in place
                fill_noise(_unstack(noise, i), noise_generator(settings.seed, c, step, device))
        params = sgld_update(
            params, grads, centre, noise, lr=settings.lr, nbeta=settings.nbeta, localization=settings.localization,
        )
        pending.append(loss.detach())
        taken = step + 1
        draw = schedule.draw_index(taken)
        keep = [draw is not None and not skip_draw(c, draw) for c in chains]
        stop = should_stop()
        ckpt = stop or schedule.is_checkpoint_step(taken)
        if not (any(keep) or ckpt):
            continue
        values = torch.stack(pending).float().cpu().numpy()  # [steps, chains]
        for i, c in enumerate(chains):
            bad = np.flatnonzero(~np.isfinite(values[:, i]))
            if bad.size:
                raise ChainDiverged(c, pending_start + int(bad[0]), "the minibatch training loss")
        distances = _distances(params, centre).cpu().numpy()  # also the finiteness check
        if not np.isfinite(distances).all():
            finite = torch.stack([
                torch.isfinite(v).reshape(g, -1).all(dim=1) for v in params.values()
            ]).all(dim=0)
            if not bool(finite.all()):
                raise ChainDiverged(chains[int((~finite).nonzero()[0])], taken, "a parameter")
        losses: list[np.ndarray | None] = [None] * g
        if any(keep):
            with torch.inference_mode():
                # to the host for the writer: pinned and non-blocking on CUDA (sampler/host.py)
                if eval_mode is BatchedEval.VMAP:
                    losses = list(host_array(torch.cat([eval_fn(params, b) for b in shards], dim=1)))
                else:
                    for i in np.flatnonzero(keep):
                        one = _unstack(params, int(i))
                        losses[i] = host_array(torch.cat([fl.eval_losses(one, b) for b in shards]))
            for i, c in enumerate(chains):
                if keep[i] and not np.isfinite(losses[i]).all():
                    raise ChainDiverged(c, taken, "the eval loss vector")
        for i, c in enumerate(chains):
            event = ChainEvent(chain=c, step=taken, train_start=pending_start,
                               train_loss=values[:, i].copy())
            if keep[i]:
                event.draw, event.losses = draw, losses[i]
                event.distance = float(distances[i])
            if ckpt:
                event.params = _unstack(params, i)
            yield event
        pending, pending_start = [], taken
        if stop:
            return
