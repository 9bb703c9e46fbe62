"""The SGLD update and chain: MATH.md's conventions, pinned exactly."""

from __future__ import annotations

import math

import numpy as np
import torch

from losskernel_dist.config import config_from_dict
from losskernel_dist.jobs.sample import sample
from losskernel_dist.rng import minibatch_indices, noise_generator
from losskernel_dist.sampler.chain import SGLDSettings, run_chain
from losskernel_dist.sampler.data import EvalShards
from losskernel_dist.sampler.functional import FunctionalLoss
from losskernel_dist.sampler.schedule import StepSchedule
from losskernel_dist.sampler.sgld import draw_noise, fill_noise, sgld_update
from losskernel_dist.store import RunStore
from losskernel_dist.tasks import linear

from ..conftest import linear_config

CPU = torch.device("cpu")


def test_update_is_the_formula():
    g = torch.Generator().manual_seed(1)
    w, grad, anchor, xi = (torch.randn(5, generator=g, dtype=torch.float64) for _ in range(4))
    lr, nbeta, loc = 1e-3, 7.0, 30.0
    out = sgld_update({"w": w}, {"w": grad}, {"w": anchor}, {"w": xi},
                      lr=lr, nbeta=nbeta, localization=loc)["w"]
    expect = w - lr / 2 * (nbeta * grad + loc * (w - anchor)) + math.sqrt(lr) * xi
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-15)


def _settings() -> SGLDSettings:
    return SGLDSettings(lr=1e-2, nbeta=3.0, localization=0.0, seed=0, batch_size=10_000,
                        schedule=StepSchedule(burnin_steps=0, draws=6, steps_between_draws=1),
                        noise=False)


def test_no_noise_no_localization_is_gradient_descent():
    task = linear.build(n=64, n_eval=8, dim=3, dtype="float64")
    # start away from the optimum so the gradient is not ~0
    with torch.no_grad():
        task.model.weight.add_(0.5)
    fl = FunctionalLoss(task, CPU)
    shards = EvalShards(task.eval, 4, CPU, cache=True)
    s = _settings()
    events = [e for e in run_chain(fl, task.train, shards, s, chain=0) if e.draw is not None]
    x, y = task.train.tensors
    e, z = task.eval.tensors
    w = task.model.weight.detach().clone().reshape(-1)
    for event in events:
        grad = -(x.T @ (y - x @ w)) / len(x)  # gradient of the mean loss 0.5 (y - xw)^2
        w = w - s.lr * s.nbeta / 2 * grad
        expected = 0.5 * (z - e @ w) ** 2
        np.testing.assert_allclose(event.losses, expected.numpy().astype(np.float32), rtol=1e-6)


def _run(tmp_path, name, args, **sampler) -> RunStore:
    data = linear_config(tmp_path / name, args=args, **sampler)
    sample(config_from_dict(data), progress=False)
    return RunStore.open(tmp_path / name / "store.zarr")


def test_doubling_loss_and_halving_nbeta_gives_identical_draws(tmp_path):
    args = {"n": 128, "n_eval": 24}
    a = _run(tmp_path, "a", args, nbeta=100.0)
    b = _run(tmp_path, "b", {**args, "loss_scale": 2.0}, nbeta=50.0)
    # identical weights at every draw, so every per-sample loss is exactly doubled
    np.testing.assert_array_equal(2 * a.losses_array()[...], b.losses_array()[...])
    np.testing.assert_array_equal(2 * a.train_loss(), b.train_loss())


def test_chain_draws_do_not_depend_on_other_chains_or_checkpoint_cadence(tmp_path):
    args = {"n": 128, "n_eval": 24}
    full = _run(tmp_path, "full", args, chains=3, checkpoint_every=0)
    other = linear_config(tmp_path / "one", args=args, chains=3, checkpoint_every=3)
    sample(config_from_dict(other), chains=[1], progress=False)
    one = RunStore.open(tmp_path / "one" / "store.zarr")
    np.testing.assert_array_equal(full.losses_array()[1], one.losses_array()[1])
    assert one.done()[1].all() and not one.done()[[0, 2]].any()
    # and chains differ from each other (own noise, own minibatches)
    assert not np.array_equal(full.losses_array()[0], full.losses_array()[1])


def test_minibatches_are_keyed_and_distinct():
    a = minibatch_indices(0, 0, 5, 100, 10)
    assert len(set(a.tolist())) == 10
    np.testing.assert_array_equal(a, minibatch_indices(0, 0, 5, 100, 10))
    assert not np.array_equal(a, minibatch_indices(0, 1, 5, 100, 10))
    assert not np.array_equal(a, minibatch_indices(0, 0, 6, 100, 10))
    assert sorted(minibatch_indices(3, 2, 1, 7, 50).tolist()) == list(range(7))


def test_loader_workers_give_the_same_draws(tmp_path):
    args = {"n": 128, "n_eval": 24}
    plain = _run(tmp_path, "plain", args, chains=1, draws=6)
    workers = _run(tmp_path, "workers", args, chains=1, draws=6, loader_workers=2)
    np.testing.assert_array_equal(plain.losses_array()[...], workers.losses_array()[...])


def test_fill_noise_writes_draw_noises_numbers_into_a_slice_of_a_stack():
    shapes = {"w": (3, 5), "b": (1000,), "c": (7,)}
    params = {k: torch.zeros(s) for k, s in shapes.items()}
    expected = draw_noise(params, noise_generator(0, 1, 2, torch.device("cpu")))
    stack = {k: torch.zeros(4, *s) for k, s in shapes.items()}
    fill_noise({k: v[2] for k, v in stack.items()}, noise_generator(0, 1, 2, torch.device("cpu")))
    for k in shapes:
        assert torch.equal(stack[k][2], expected[k])
        assert not stack[k][[0, 1, 3]].any()  # the other chains' slices untouched
