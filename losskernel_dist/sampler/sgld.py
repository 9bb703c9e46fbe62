"""The SGLD update as a pure function of parameters, gradients and noise.

MATH.md's update for the target exp(-nbeta * L_n(w) - localization/2 * ||w - w*||^2):

    w <- w - lr/2 * (nbeta * grad(mean minibatch loss) + localization * (w - w*))
           + sqrt(lr) * xi,      xi ~ N(0, I)

Kept free of models, data and files so that it can be tested on its own and
batched over chains unchanged (it is elementwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

Params = dict[str, torch.Tensor]


def sgld_update(
    params: Mapping[str, torch.Tensor],
    grads: Mapping[str, torch.Tensor],
    anchor: Mapping[str, torch.Tensor],
    noise: Mapping[str, torch.Tensor] | None,
    *,
    lr: float,
    nbeta: float,
    localization: float,
) -> Params:
    """One SGLD step; ``noise`` holds standard normal tensors, or None for no noise."""
    half_lr = lr / 2.0
    noise_scale = math.sqrt(lr)
    out: Params = {}
    for name, w in params.items():
        # one new tensor per parameter, then in-place accumulation into it: the same
        # arithmetic as the formula with a third of the temporaries
        new = torch.add(w, grads[name], alpha=-half_lr * nbeta)
        if localization:
            new.add_(w - anchor[name], alpha=-half_lr * localization)
        if noise is not None:
            new.add_(noise[name], alpha=noise_scale)
        out[name] = new
    return out


def draw_noise(params: Mapping[str, torch.Tensor], generator: torch.Generator) -> Params:
    """Standard normal tensors shaped like ``params``, in the parameters' fixed order."""
    return {
        name: torch.randn(w.shape, generator=generator, device=w.device, dtype=w.dtype)
        for name, w in params.items()
    }


def fill_noise(out: Mapping[str, torch.Tensor], generator: torch.Generator) -> None:
    """``draw_noise`` written into existing tensors (e.g. one chain's slice of a stack).

    The same numbers as ``draw_noise`` with the same generator state: randn is
    normal_ on a fresh tensor, and the parameters are visited in the same order.
    """
    for w in out.values():
        w.normal_(generator=generator)
