"""CKA between kernels and over draws: known values on planted kernels, and the dense formula."""

from __future__ import annotations

import numpy as np
import pytest

from losskernel_dist.analysis.cka import cka
from losskernel_dist.analysis.convergence import (
    cka_over_draws,
    rhat_ess,
    summarise_rhat_ess,
    train_loss_health,
)
from losskernel_dist.analysis.kernelio import DrawReader
from losskernel_dist.reduction.kernel import reduce_store
from losskernel_dist.store import RunStore


def dense_cka(k: np.ndarray, m: np.ndarray) -> float:
    n = len(k)
    h = np.eye(n) - 1.0 / n
    a, b = h @ k @ h, h @ m @ h
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def psd(n: int, rank: int, seed: int) -> np.ndarray:
    f = np.random.default_rng(seed).normal(size=(n, rank))
    return f @ f.T


def test_cka_of_a_kernel_with_itself_is_one_and_scale_invariant():
    k = psd(37, 5, 0)
    assert cka(k, k) == pytest.approx(1.0, abs=1e-12)
    assert cka(k, 7.5 * k) == pytest.approx(1.0, abs=1e-12)
    other = psd(37, 3, 1)
    assert cka(2.0 * k, 0.01 * other) == pytest.approx(cka(k, other), rel=1e-12)
    assert cka(k, other) < 0.9


@pytest.mark.parametrize("block", [1, 6, 37, 100])
def test_blockwise_cka_equals_dense_formula(block):
    k, other = psd(37, 5, 2), psd(37, 8, 3) + 0.5 * psd(37, 5, 2)
    assert cka(k, other, block=block) == pytest.approx(dense_cka(k, other), rel=1e-10)


def planted_store(path, x: np.ndarray, train_loss: np.ndarray | None = None) -> RunStore:
    chains, draws, n = x.shape
    steps = draws if train_loss is None else train_loss.shape[1]
    store = RunStore.create(path, chains=chains, draws=draws, n=n, total_steps=steps, config={})
    for c in range(chains):
        store.write_draws(c, 0, x[c])
        store.mark_done(c, range(draws))
        if train_loss is not None:
            store.write_train_loss(c, 0, train_loss[c])
    reduce_store(store, block_size=16)
    return store


def test_cka_over_draws_equals_dense_prefix_kernels(tmp_path):
    rng = np.random.default_rng(0)
    chains, draws, n = 3, 20, 29
    factors = rng.normal(size=(chains, draws, 3))
    loadings = rng.normal(size=(3, n))
    x = (10 + factors @ loadings + 0.5 * rng.normal(size=(chains, draws, n))).astype(np.float32)
    store = planted_store(tmp_path / "s.zarr", x)
    reader = DrawReader.for_store(store)
    got = cka_over_draws(reader, store.kernel_array("mean")[...], points=6)
    assert got["draws"] == chains * draws and got["thinning_stride"] == 1
    pooled = x.transpose(1, 0, 2).reshape(-1, n).astype(np.float64)  # draw-major
    final = np.cov(pooled, rowvar=False)
    np.testing.assert_allclose(final, store.kernel_array("cov")[...], atol=1e-5)
    expected = [dense_cka(np.cov(pooled[:s], rowvar=False), final) for s in got["s"]]
    np.testing.assert_allclose(got["cka"], expected, rtol=1e-9)
    assert got["s"][-1] == chains * draws and got["cka"][-1] == pytest.approx(1.0)
    assert got["cka"][0] < got["cka"][-1]


def test_cka_over_draws_thins_above_the_draw_cap(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 30, 11)).astype(np.float32)
    store = planted_store(tmp_path / "s.zarr", x)
    got = cka_over_draws(DrawReader.for_store(store), np.zeros(11), points=4, max_draws=20)
    assert got["thinning_stride"] == 3 and got["draws"] == 20
    pooled = x[:, ::3].transpose(1, 0, 2).reshape(-1, 11).astype(np.float64)
    final = np.cov(pooled, rowvar=False)
    expected = [dense_cka(np.cov(pooled[:s], rowvar=False), final) for s in got["s"]]
    np.testing.assert_allclose(got["cka"], expected, rtol=1e-9)


def test_rhat_flags_a_chain_stuck_elsewhere(tmp_path):
    import arviz as az

    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 50, 12)).astype(np.float32)
    x[0, :, :3] += 3.0  # chain 0 disagrees on samples 0..2
    x[:, :, 11] = 1.0  # constant loss: no R-hat
    store = planted_store(tmp_path / "s.zarr", x)
    result = rhat_ess(DrawReader.for_store(store))
    with np.errstate(all="ignore"):
        direct = az.rhat(az.convert_to_dataset({"v": x.astype(np.float64)}))["v"].values
    np.testing.assert_allclose(result["rhat"][:11], direct[:11], rtol=1e-12)
    assert (result["rhat"][:3] > 1.3).all() and (result["rhat"][3:11] < 1.1).all()
    summary = summarise_rhat_ess(result, worst=3)
    assert {w["sample"] for w in summary["worst_rhat_samples"]} == {0, 1, 2}
    assert summary["samples_with_rhat"] == 11 and summary["chains"] == 4
    subset = rhat_ess(DrawReader.for_store(store), max_samples=5, seed=1)
    assert subset["subsampled"] and len(subset["samples"]) == 5
    np.testing.assert_allclose(subset["rhat"], result["rhat"][subset["samples"]], rtol=1e-12)
    assert summarise_rhat_ess(subset)["samples_evaluated"] == 5


def test_rhat_needs_two_complete_chains(tmp_path):
    x = np.random.default_rng(3).normal(size=(1, 10, 4)).astype(np.float32)
    store = planted_store(tmp_path / "s.zarr", x)
    result = rhat_ess(DrawReader.for_store(store))
    assert not result["available"] and "2 complete chains" in result["reason"]


def test_train_loss_health_spots_a_drifting_chain():
    rng = np.random.default_rng(4)
    steps, burnin = 400, 100
    trace = 1.0 + 0.05 * rng.normal(size=(3, steps))
    trace[2, burnin:] += np.linspace(0, 1.0, steps - burnin)  # chain 2 keeps climbing
    health = train_loss_health(trace, burnin)
    drifts = [c["drift"] for c in health["chains"]]
    assert abs(drifts[0]) < 1 and abs(drifts[1]) < 1 and drifts[2] > 2
    assert health["max_abs_drift"] == pytest.approx(drifts[2])
