"""bf16 autocast of the loss-vector pass: what it changes in the draws and the kernel.

The option exists for GPU speed (eval.autocast: bf16). It must touch only the
eval pass (the SGLD steps, hence the chain's weights, stay float32) and the
kernel it gives must stay close to the float32 kernel of the same weights. The
tolerance is the measured effect on the modular transformer (docs/performance.md,
``bench/autocast.py``), with margin; CPU autocast rounds to bf16 like CUDA's.
"""

from __future__ import annotations

import numpy as np

from losskernel_dist.analysis.cka import cka
from losskernel_dist.config import config_from_dict
from losskernel_dist.jobs.sample import sample
from losskernel_dist.reduction.kernel import reduce_store
from losskernel_dist.store import RunStore

from ..conftest import linear_config


def _modular_run(tmp_path, autocast: str) -> RunStore:
    data = linear_config(tmp_path / autocast, chains=2, draws=15, burnin_steps=5, batch_size=128,
                         lr=2e-7, nbeta=500.0, localization=3e6, checkpoint_every=0)
    data["task"] = {"target": "losskernel_dist.tasks.modular:build", "args": {"n_eval": 120}}
    data["eval"] = {"batch_size": 120, "autocast": autocast}
    sample(config_from_dict(data), progress=False)
    store = RunStore.open(tmp_path / autocast / "store.zarr", mode="r+")
    reduce_store(store, block_size=64, threads=1)
    return store


def test_bf16_eval_changes_only_the_loss_vectors_and_keeps_the_kernel(tmp_path):
    full = _modular_run(tmp_path, "none")
    half = _modular_run(tmp_path, "bf16")
    # the chains' own path (train losses of the SGLD steps) is untouched by eval autocast
    np.testing.assert_array_equal(half.train_loss(), full.train_loss())
    a, b = full.losses_array()[...], half.losses_array()[...]
    assert not np.array_equal(a, b)  # bf16 was really used for the loss vectors
    # near w* a loss is a small difference of large logits, which bf16 rounds coarsely:
    # measured here, median per-sample relative change 2%, kernel CKA 0.997
    assert np.median(np.abs(b - a) / np.abs(a)) < 0.1
    for name in ("cov", "corr"):
        assert cka(full.kernel_array(name)[...], half.kernel_array(name)[...]) > 0.98
