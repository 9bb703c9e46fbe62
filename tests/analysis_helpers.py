"""Planted runs for the analysis tests: a run directory whose draws are chosen, not sampled.

``planted_run`` writes config.yaml and a store exactly as ``losskernel sample``
would lay them out (RunStore.create, write_draws, mark_done, train_loss),
then reduces it with the real reduction, so the analysis sees a genuine run
whose right answers are known from how the draws were made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from losskernel_dist.reduction.kernel import reduce_store
from losskernel_dist.rundir import RunDir
from losskernel_dist.store import RunStore


def planted_run(
    run_dir: Path,
    x: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    label_names: list[str] | None = None,
    attributes: dict[str, np.ndarray] | None = None,
    analysis: dict[str, Any] | None = None,
    burnin: int = 5,
    eval_fingerprint: str = "eval-planted",
    block: int = 16,
) -> RunStore:
    """A reduced run from draws ``x`` of shape (chains, draws, N)."""
    chains, draws, n = x.shape
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "task": {"target": "tests.analysis_helpers:planted", "args": {}},
        "sampler": {"chains": chains, "draws": draws, "burnin_steps": burnin,
                    "steps_between_draws": 1, "lr": 1e-4, "nbeta": 10.0,
                    "localization": 100.0, "seed": 0},
        "analysis": {"seed": 0, **(analysis or {})},
        "output": str(run_dir),
    }
    (RunDir(run_dir).config_file).write_text(yaml.safe_dump(config, sort_keys=False))
    store = RunStore.create(
        RunDir(run_dir).store, chains=chains, draws=draws, n=n, total_steps=burnin + draws,
        config=config, labels=labels, label_names=label_names, attributes=attributes,
        extra_attrs={"fingerprints": {"model": "model-planted", "eval_set": eval_fingerprint},
                     "n_train": 100},
    )
    rng = np.random.default_rng(0)
    for c in range(chains):
        store.write_draws(c, 0, x[c].astype(np.float32))
        store.mark_done(c, range(draws))
        trace = 0.5 + 0.02 * rng.normal(size=burnin + draws)
        trace[:burnin] -= np.linspace(0.2, 0.0, burnin)  # rises from w* during burn-in
        store.write_train_loss(c, 0, trace.astype(np.float32))
    reduce_store(store, block_size=block, dtype="float64")  # the tests compare to 1e-12
    return store


def two_task_draws(n_a: int, n_b: int, chains: int = 3, draws: int = 60,
                   seed: int = 0) -> np.ndarray:
    """Losses driven by one latent factor per task: a block-diagonal kernel (Appendix A.4)."""
    rng = np.random.default_rng(seed)
    n = n_a + n_b
    factor = rng.normal(size=(chains, draws, 2))
    loading = rng.uniform(0.5, 2.0, size=n)
    task = np.r_[np.zeros(n_a, int), np.ones(n_b, int)]
    return 1.0 + factor[:, :, task] * loading + 0.2 * rng.normal(size=(chains, draws, n))
