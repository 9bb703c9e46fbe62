"""Chains advanced together under vmap give the draws of chains run one at a time."""

from __future__ import annotations

import numpy as np
import pytest

from losskernel_dist.config import config_from_dict
from losskernel_dist.jobs.sample import sample
from losskernel_dist.store import RunStore

from ..conftest import linear_config

# Batched kernels may round differently from one-chain kernels; on the CPU the
# linear task's draws agree to float32 rounding.
RTOL, ATOL = 1e-5, 1e-7


def _run(tmp_path, name, **sampler) -> RunStore:
    data = linear_config(tmp_path / name, chains=5, draws=12, checkpoint_every=5, **sampler)
    sample(config_from_dict(data), progress=False)
    return RunStore.open(tmp_path / name / "store.zarr")


@pytest.mark.parametrize("batched_eval", ["vmap", "chains"])
def test_batched_chains_match_single_chains(tmp_path, batched_eval):
    single = _run(tmp_path, "single")
    batched = _run(tmp_path, "batched", chains_per_batch=3,  # groups of 3 and 2
                   batched_eval=batched_eval)
    assert batched.done().all()
    np.testing.assert_allclose(batched.losses_array()[...], single.losses_array()[...],
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(batched.train_loss(), single.train_loss(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("batched_eval", ["vmap", "chains"])
def test_modular_transformer_batched_matches(tmp_path, batched_eval):
    data = linear_config(tmp_path / "m1", chains=2, draws=2, burnin_steps=2, batch_size=64,
                         lr=3e-8, nbeta=500.0, localization=1e5)
    data["task"] = {"target": "losskernel_dist.tasks.modular:build", "args": {"n_eval": 40}}
    sample(config_from_dict(data), progress=False)
    data["output"] = str(tmp_path / "m2")
    data["sampler"]["chains_per_batch"] = 2
    data["sampler"]["batched_eval"] = batched_eval
    sample(config_from_dict(data), progress=False)
    a = RunStore.open(tmp_path / "m1" / "store.zarr").losses_array()[...]
    b = RunStore.open(tmp_path / "m2" / "store.zarr").losses_array()[...]
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_divergence_in_a_batch_fails_only_diverged_chains(tmp_path):
    store = _run(tmp_path, "hot", chains_per_batch=5, lr=5.0)  # every chain blows up
    assert (store.chain_status() == 1).all()
    errors = store.chain_errors()
    assert sorted(errors) == [str(c) for c in range(5)]
    assert all("diverged at step" in m for m in errors.values())


@pytest.mark.parametrize("size", [1, 2, 4])
def test_batch_groups_respect_resume_steps(size):
    from losskernel_dist.checkpoint import ChainState
    from losskernel_dist.jobs.sample import batch_groups

    states = {0: None, 1: ChainState(1, 10, {}, ""), 2: None, 3: ChainState(3, 10, {}, ""),
              4: None}
    groups = batch_groups([0, 1, 2, 3, 4], states, size)
    assert sorted(c for g in groups for c in g) == [0, 1, 2, 3, 4]
    for g in groups:
        assert len(g) <= size
        assert len({states[c].step if states[c] else 0 for c in g}) == 1


def test_batched_eval_modes_and_bad_value():
    import torch

    from losskernel_dist.config import ConfigError
    from losskernel_dist.sampler.batched import batched_eval_mode

    assert batched_eval_mode("auto", torch.device("cpu")) == "chains"
    assert batched_eval_mode("auto", torch.device("cuda", 0)) == "vmap"
    assert batched_eval_mode("vmap", torch.device("cpu")) == "vmap"
    data = linear_config("unused", chains=2, draws=2)
    data["sampler"]["batched_eval"] = "loop"
    with pytest.raises(ConfigError, match="sampler.batched_eval: expected auto, vmap or chains"):
        config_from_dict(data)
