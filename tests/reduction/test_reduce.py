"""The blockwise reduction equals numpy's dense estimators and stays within its memory bound."""

from __future__ import annotations

import numpy as np
import pytest

from losskernel_dist.reduction.kernel import IncompleteRunError, reduce_store
from losskernel_dist.store import RunStore

from ..memory_helpers import run_with_peak_rss


def planted_store(path, chains=3, draws=7, n=23, seed=0, zero_var=(), duplicates=(),
                  labels=None) -> tuple[RunStore, np.ndarray]:
    """Random draws with constant columns ``zero_var`` and ``(copy, of)`` column ``duplicates``."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(chains, draws, n)) * rng.uniform(0.1, 3, size=n) + 5).astype(np.float32)
    for j in zero_var:
        x[:, :, j] = 1.25
    for j, of in duplicates:
        x[:, :, j] = x[:, :, of]
    store = RunStore.create(path, chains=chains, draws=draws, n=n, total_steps=draws,
                            config={"test": True}, labels=labels)
    for c in range(chains):
        store.write_draws(c, 0, x[c])
        store.mark_done(c, list(range(draws)))
    return store, x.reshape(chains * draws, n).astype(np.float64)


@pytest.mark.parametrize("block", [1, 5, 8, 23, 100])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_reduce_equals_numpy(tmp_path, block, dtype):
    store, x = planted_store(tmp_path / "s.zarr", zero_var=(4, 17))
    reduce_store(store, block_size=block, dtype=dtype)
    cov = np.cov(x, rowvar=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(x, rowvar=False)
    corr[~np.isfinite(corr)] = 0.0  # MATH.md: rho = 0 where a variance is 0
    tol = 1e-12 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(store.kernel_array("cov")[...], cov, rtol=tol, atol=tol)
    np.testing.assert_allclose(store.kernel_array("corr")[...], corr, rtol=tol, atol=tol)
    np.testing.assert_allclose(store.kernel_array("mean")[...], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(store.kernel_array("var")[...], x.var(0, ddof=1), rtol=1e-12)
    got = store.kernel_array("corr")[...]
    assert (got[4] == 0).all() and (got[:, 17] == 0).all()
    np.testing.assert_array_equal(got, got.T)
    assert store.kernel_array("cov").dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cached_and_re_read_draws_give_bit_identical_kernels(tmp_path, dtype):
    """Keeping the centred draws in memory (cache_bytes) changes where they come from, not bits."""
    store, _ = planted_store(tmp_path / "s.zarr", chains=2, draws=9, n=31, zero_var=(3,))
    done = store.done()
    done[1, 6:] = False  # a row selection, as a partial reduce makes
    store.group["done"][...] = done
    kernels = []
    for cache in (0, 1 << 30):
        report = reduce_store(store, block_size=7, dtype=dtype, allow_partial=True,
                              cache_bytes=cache, threads=2)
        assert report.draws_used == 15
        kernels.append({k: store.kernel_array(k)[...] for k in ("mean", "var", "cov", "corr")})
    for k in kernels[0]:
        np.testing.assert_array_equal(kernels[0][k], kernels[1][k], err_msg=k)


def test_float32_correlation_of_tiny_variances_is_scaled_in_float64(tmp_path):
    """1/(sd_i sd_j) beyond float32's range must not turn correlations into 0, 1 or NaN."""
    rng = np.random.default_rng(1)
    m, n = 40, 6
    z = rng.normal(size=m)
    scales = np.array([1.0, 1e-20, 1e-22, 1e-25, 3.0, 1e-21])
    x = ((z[:, None] + 0.4 * rng.normal(size=(m, n))) * scales).astype(np.float32)
    store = RunStore.create(tmp_path / "s.zarr", chains=2, draws=m // 2, n=n,
                            total_steps=m // 2, config={})
    for c in range(2):
        store.write_draws(c, 0, x[c * m // 2:(c + 1) * m // 2])
        store.mark_done(c, list(range(m // 2)))
    want = np.corrcoef(x.astype(np.float64), rowvar=False)
    for block in (1, 2, 6):
        reduce_store(store, block_size=block, dtype="float32")
        got = store.kernel_array("corr")[...]
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_every_engine_and_reduce_centres_with_the_same_bits(tmp_path):
    """Pass-1 statistics over several stored chunks: dense (cached or not), torch, neighbours."""
    from losskernel_dist.reduction.kernel import centred_draws, select_rows
    from losskernel_dist.reduction.tiled import reduce_store_torch
    from losskernel_dist.reduction.topk import reduce_neighbours
    from losskernel_dist.store import SAMPLE_CHUNK

    n = SAMPLE_CHUNK + 513  # a second chunk, with one 1-column statistics slice at its end
    store, _ = planted_store(tmp_path / "s.zarr", chains=2, draws=4, n=n)
    stats = []
    for cache in (0, 1 << 30):
        reduce_store(store, block_size=1000, dtype="float32", cache_bytes=cache)
        stats.append((store.kernel_array("mean")[...], store.kernel_array("var")[...]))
    reduce_store_torch(store, block_size=700, dtype="float32", device="cpu")
    stats.append((store.kernel_array("mean")[...], store.kernel_array("var")[...]))
    rows, _, _, _ = select_rows(store, False)
    draws = centred_draws(store, rows, threads=2)
    reduce_neighbours(store, k=3, k_bottom=0, block_size=900)  # centres with centred_draws
    stats.append((draws.mean, draws.var))
    for mean, var in stats[1:]:
        np.testing.assert_array_equal(mean, stats[0][0])
        np.testing.assert_array_equal(var, stats[0][1])


def test_transposed_copy_equals_numpy_transpose():
    from losskernel_dist.reduction.kernel import transposed

    a = np.random.default_rng(0).normal(size=(130, 67)).astype(np.float32)
    for strip in (1, 64, 200):
        t = transposed(a, strip)
        assert t.flags.c_contiguous
        np.testing.assert_array_equal(t, a.T)


def test_reduce_refuses_incomplete_runs_unless_partial(tmp_path):
    store, x = planted_store(tmp_path / "s.zarr", chains=2, draws=5, n=6)
    done = store.done()
    done[1, 3:] = False
    store.group["done"][...] = done
    with pytest.raises(IncompleteRunError, match="2 of 10 draws not done"):
        reduce_store(store)
    report = reduce_store(store, allow_partial=True, dtype="float64")
    assert report.draws_used == 8 and report.partial
    assert store.attrs["reduce"]["excluded"]["not_done"] == [8, 9]
    np.testing.assert_allclose(store.kernel_array("cov")[...], np.cov(x[:8], rowvar=False),
                               rtol=1e-12)


def test_failed_chain_is_excluded_only_with_partial(tmp_path):
    store, x = planted_store(tmp_path / "s.zarr", chains=3, draws=4, n=5)
    store.mark_failed(1, "chain 1 diverged at step 3")
    with pytest.raises(IncompleteRunError, match=r"failed chains \[1\]"):
        reduce_store(store)
    report = reduce_store(store, allow_partial=True, dtype="float64")
    assert report.chains_used == [0, 2]
    keep = np.r_[0:4, 8:12]
    np.testing.assert_allclose(store.kernel_array("cov")[...], np.cov(x[keep], rowvar=False),
                               rtol=1e-12)


@pytest.mark.slow
def test_peak_memory_is_bounded_by_the_block_not_n_squared(tmp_path):
    """Reduce N = 9000 (dense float64 N x N: 648 MB) in a subprocess; measure its peak RSS (VmHWM)."""
    n, chains, draws, block = 9000, 2, 20, 500
    script = f"""
        import json, sys
        import numpy as np
        from losskernel_dist.store import RunStore
        from losskernel_dist.reduction.kernel import reduce_store, peak_memory_bytes
        path = sys.argv[1]
        rng = np.random.default_rng(0)
        store = RunStore.create(path, chains={chains}, draws={draws}, n={n}, total_steps={draws},
                                config={{}})
        for c in range({chains}):
            store.write_draws(c, 0, rng.normal(size=({draws}, {n})).astype(np.float32))
            store.mark_done(c, list(range({draws})))
        before = peak_rss()
        reduce_store(store, block_size={block}, dtype="float32", threads=2)
        peak = peak_rss()
        corr = store.kernel_array("corr")
        x = np.asarray(store.losses_array()[...]).reshape(-1, {n}).astype(np.float64)
        cols = [0, 4321, {n} - 1]
        want = np.corrcoef(x[:, cols], x, rowvar=False)[:3, 3:]
        err = float(np.abs(corr.get_orthogonal_selection((cols, slice(None))) - want).max())
        print(json.dumps({{"before": before, "peak": peak, "err": err,
                           "bound": peak_memory_bytes({chains * draws}, {block}, 2, {n}, cached=True)}}))
    """
    result = run_with_peak_rss(script, str(tmp_path / "big.zarr"))
    dense = n * n * 8
    print(f"dense {dense / 2**20:.0f} MiB, peak RSS {result['peak'] / 2**20:.0f} MiB "
          f"(before reduce {result['before'] / 2**20:.0f} MiB, bound "
          f"{result['bound'] / 2**20:.0f} MiB)")
    assert result["err"] < 1e-5
    assert dense > 3 * result["peak"], "reduce's peak RSS is not far below the dense N x N"
    assert result["peak"] - result["before"] < dense / 4
    # the bound counts the working arrays; allow 32 MiB for code and buffers loaded on first use
    assert result["peak"] - result["before"] <= result["bound"] + 32 * 2**20, result


@pytest.mark.parametrize("block", [4, 23, 50])
def test_torch_tiled_engine_equals_numpy(tmp_path, block):
    from losskernel_dist.reduction.tiled import reduce_store_torch

    store, x = planted_store(tmp_path / "s.zarr", zero_var=(3,))
    done = store.done()
    done[2, 5:] = False
    store.group["done"][...] = done
    keep = np.r_[0:14, 14:19]
    for cache in (0, 1 << 30):  # re-read blocks per tile, or keep them on the device
        report = reduce_store_torch(store, block_size=block, dtype="float64", device="cpu",
                                    allow_partial=True, cache_bytes=cache)
        assert report.draws_used == 19 and store.attrs["reduce"]["engine"] == "torch:cpu"
        cov = np.cov(x[keep], rowvar=False)
        np.testing.assert_allclose(store.kernel_array("cov")[...], cov, rtol=1e-12, atol=1e-14)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.corrcoef(x[keep], rowvar=False)
        corr[~np.isfinite(corr)] = 0.0
        np.testing.assert_allclose(store.kernel_array("corr")[...], corr, rtol=1e-12, atol=1e-14)


def test_fewer_than_two_usable_draws_is_an_error_for_both_engines(tmp_path):
    from losskernel_dist.reduction.tiled import reduce_store_torch

    store, _ = planted_store(tmp_path / "s.zarr", chains=2, draws=3, n=4)
    done = np.zeros((2, 3), bool)
    done[0, 0] = True
    store.group["done"][...] = done
    for engine in (reduce_store, lambda s, **kw: reduce_store_torch(s, device="cpu", **kw)):
        with pytest.raises(IncompleteRunError, match="only 1 usable draws"):
            engine(store, allow_partial=True)
