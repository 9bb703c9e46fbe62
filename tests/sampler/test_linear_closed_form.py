"""The sampled kernel of the Gaussian (linear) task against MATH.md's closed form.

This pins the conventions: a wrong noise scale, nbeta scaling or localization
sign would each move the kernel far outside the Monte Carlo error checked here.
"""

from __future__ import annotations

import numpy as np
import pytest

from losskernel_dist.config import config_from_dict
from losskernel_dist.jobs.sample import sample
from losskernel_dist.reduction.kernel import reduce_store
from losskernel_dist.store import RunStore
from losskernel_dist.tasks import linear

from ..conftest import linear_config

N_TRAIN, N_EVAL, DIM = 256, 12, 4
NBETA, LOC, LR = 50.0, 50.0, 5e-4


def _corr(k: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.diag(k))
    return k / np.outer(sd, sd)


def _sampled(tmp_path, args: dict, chains: int, draws: int, every: int, burnin: int):
    data = linear_config(
        tmp_path / "run", args=args, chains=chains, draws=draws, burnin_steps=burnin,
        steps_between_draws=every, batch_size=N_TRAIN, lr=LR, nbeta=NBETA,
        localization=LOC, checkpoint_every=0,
    )
    sample(config_from_dict(data), progress=False)
    store = RunStore.open(tmp_path / "run" / "store.zarr", mode="r+")
    reduce_store(store, block_size=5)
    return store.kernel_array("cov")[...], store.kernel_array("corr")[...], store


@pytest.mark.slow
def test_kernel_matches_closed_form_and_wrong_conventions_do_not(tmp_path):
    args = {"n": N_TRAIN, "n_eval": N_EVAL, "dim": DIM}
    k, rho, _ = _sampled(tmp_path, args, chains=4, draws=1500, every=5, burnin=300)
    d = linear.make_data(N_TRAIN, N_EVAL, DIM, 1, 0.5, 0)
    w_star = np.linalg.lstsq(d["x"], d["y"], rcond=None)[0]

    def exact(nbeta: float, loc: float) -> np.ndarray:
        return linear.closed_form_kernel(d["x"], d["y"], d["e"], d["z"], w_star, nbeta, loc)

    truth = exact(NBETA, LOC)
    err = np.abs(rho - _corr(truth))[np.triu_indices(N_EVAL, 1)]
    ratio = np.trace(k) / np.trace(truth)
    print(f"trace ratio {ratio:.3f}, rho error max {err.max():.3f} mean {err.mean():.3f}")
    assert 0.85 < ratio < 1.15
    assert err.mean() < 0.06 and err.max() < 0.25

    wrong = {
        # noise sqrt(2 lr) instead of sqrt(lr): the stationary law is p^(1/2)
        "noise scale x sqrt(2)": exact(NBETA / 2, LOC / 2),
        # nbeta applied to the summed instead of the mean loss
        "nbeta on summed loss": exact(NBETA * N_TRAIN, LOC),
        # localization pushing away from w* (kept stable by the data term)
        "localization sign": exact(NBETA, -LOC / 2),
    }
    for name, other in wrong.items():
        off = np.trace(k) / np.trace(other)
        assert not 0.8 < off < 1.2, f"kernel also matches the {name} convention ({off:.2f})"


@pytest.mark.slow
def test_disjoint_parameter_blocks_have_uncorrelated_losses(tmp_path):
    """Paper Appendix A.4: losses depending on disjoint weights have zero covariance."""
    args = {"n": N_TRAIN, "n_eval": 16, "dim": 4, "blocks": 2}
    _, rho, store = _sampled(tmp_path, args, chains=4, draws=600, every=5, burnin=200)
    block = store.labels()
    same = block[:, None] == block[None, :]
    off_diag = ~np.eye(len(block), dtype=bool)
    within = np.abs(rho[same & off_diag])
    cross = rho[~same]
    # cross-block: centred on 0 within Monte Carlo error; within-block: clearly not
    draws = store.done().sum()
    se = cross.std() / np.sqrt(len(cross))
    print(f"cross mean {cross.mean():.4f} (se {se:.4f}), within |rho| mean {within.mean():.3f}")
    assert abs(cross.mean()) < max(4 * se, 2 / np.sqrt(draws))
    assert np.abs(cross).mean() < 0.15
    assert within.mean() > 3 * np.abs(cross).mean()
