"""Linear regression with a Gaussian probe distribution: the kernel in closed form.

With l_i(w) = 0.5 * (y_i - x_i^T w)^2 the target exp(-nbeta L_n - gamma/2 ||w - w*||^2)
is Gaussian, so MATH.md's closed form gives the exact loss kernel. Tests use
it to pin every convention of the sampler (noise scale, nbeta scaling, sign of
the localization). ``blocks`` > 1 splits the features into disjoint blocks,
each sample using only its own block: the paper's Appendix A.4 setting of
independent mechanisms, where cross-block covariances vanish.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..errors import TaskError
from ..task import Task


def linear_loss(model: torch.nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return 0.5 * (y - model(x).squeeze(-1)) ** 2


def make_data(
    n: int, n_eval: int, dim: int, blocks: int, noise_std: float, seed: int
) -> dict[str, np.ndarray]:
    """Train and eval features/targets (float64), and each eval sample's block."""
    if dim % blocks:
        raise TaskError(f"task.args: dim={dim} must be divisible by blocks={blocks}")
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=dim)

    def draw(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = rng.normal(size=(m, dim))
        block = np.arange(m) % blocks
        if blocks > 1:
            width = dim // blocks
            mask = (np.arange(dim)[None, :] // width) == block[:, None]
            x = x * mask
        y = x @ w_true + noise_std * rng.normal(size=m)
        return x, y, block

    x, y, _ = draw(n)
    e, z, eval_block = draw(n_eval)
    order = np.argsort(eval_block, kind="stable")
    return {"x": x, "y": y, "e": e[order], "z": z[order], "eval_block": eval_block[order]}


def build(
    n: int = 512,
    n_eval: int = 64,
    dim: int = 8,
    blocks: int = 1,
    noise_std: float = 0.5,
    seed: int = 0,
    dtype: str = "float32",
    loss_scale: float = 1.0,
) -> Task:
    """The linear task; w* is the least-squares fit. ``loss_scale`` multiplies every loss."""
    for key, value in (("n", n), ("n_eval", n_eval), ("dim", dim), ("blocks", blocks)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TaskError(f"task.args.{key} must be an integer >= 1, got {value!r}")
    if dtype not in ("float32", "float64"):
        raise TaskError(f"task.args.dtype must be float32 or float64, got {dtype!r}")
    data = make_data(n, n_eval, dim, blocks, noise_std, seed)
    tdtype = getattr(torch, dtype)
    w_star = np.linalg.lstsq(data["x"], data["y"], rcond=None)[0]
    model = torch.nn.Linear(dim, 1, bias=False).to(tdtype)
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(w_star, dtype=tdtype)[None, :])
    model.eval()

    def loss(m: torch.nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        out = linear_loss(m, batch)
        return out * loss_scale if loss_scale != 1.0 else out

    def tensors(a: np.ndarray, b: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.as_tensor(a, dtype=tdtype), torch.as_tensor(b, dtype=tdtype))

    return Task(
        model=model,
        train=tensors(data["x"], data["y"]),
        eval=tensors(data["e"], data["z"]),
        loss=loss,
        labels=data["eval_block"].astype(np.int64),
        attributes={"block": data["eval_block"]},
        describe=lambda j: f"block {int(data['eval_block'][j])}: y = {float(data['z'][j]):.3f}",
    )


def closed_form_kernel(
    x: np.ndarray,
    y: np.ndarray,
    e: np.ndarray,
    z: np.ndarray,
    w_star: np.ndarray,
    nbeta: float,
    localization: float,
) -> np.ndarray:
    """MATH.md's exact K for the Gaussian target: K_ij = 0.5 S_ij^2 + mu_i mu_j S_ij."""
    n = len(x)
    precision = (nbeta / n) * x.T @ x + localization * np.eye(x.shape[1])
    cov_w = np.linalg.inv(precision)
    mean_w = cov_w @ ((nbeta / n) * x.T @ y + localization * w_star)
    mu = z - e @ mean_w
    s = e @ cov_w @ e.T
    return 0.5 * s**2 + np.outer(mu, mu) * s
