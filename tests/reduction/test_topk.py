"""The streamed top-k neighbours reduce equals the dense kernel's top-k, in bounded memory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from losskernel_dist.analysis.kernelio import DenseRows
from losskernel_dist.analysis.neighbours import compute_neighbours
from losskernel_dist.cli import main
from losskernel_dist.config import ConfigError, config_from_dict
from losskernel_dist.reduction.kernel import reduce_store
from losskernel_dist.reduction.topk import reduce_neighbours
from losskernel_dist.store import RunStore, StoreError

from ..conftest import linear_config
from ..memory_helpers import run_with_peak_rss
from .test_reduce import planted_store

N = 41
LABELS = np.arange(N) % 3


def assert_same_up_to_ties(got_index, got_value, want_index, want_value, kernel, tol):
    """Values agree to ``tol``; where indices differ, the kernel ties them within ``tol``."""
    np.testing.assert_array_equal(got_index < 0, want_index < 0)
    np.testing.assert_allclose(got_value, want_value, rtol=tol, atol=tol)
    rows, cols = np.nonzero(got_index != want_index)
    ties = np.abs(kernel[rows, got_index[rows, cols]] - kernel[rows, want_index[rows, cols]])
    assert (ties <= tol).all(), f"indices differ where values are not tied: {ties.max()}"
    for row in got_index:  # no sample listed twice
        valid = row[row >= 0]
        assert len(np.unique(valid)) == len(valid)


@pytest.mark.parametrize("metric", ["corr", "cov"])
@pytest.mark.parametrize("block", [1, 6, 16, N, 100])
@pytest.mark.parametrize("exclude", [False, True])
def test_streamed_neighbours_equal_the_dense_kernels_top_k(tmp_path, metric, block, exclude):
    store, _ = planted_store(tmp_path / "s.zarr", n=N, zero_var=(4, 17), duplicates=((9, 3),),
                             labels=LABELS)
    reduce_store(store, block_size=16, dtype="float64")  # compared to 1e-12
    kernel = np.asarray(store.kernel_array(metric)[...])
    want = compute_neighbours(DenseRows(kernel), 12, 5, LABELS, exclude_same_label=exclude,
                              block=N)
    report = reduce_neighbours(store, k=12, k_bottom=5, metric=metric, exclude_same_label=exclude,
                               block_size=block, threads=2, write_moments=False)
    got = store.read_stream_neighbours()
    assert report.blocks == -(-N // block) and report.blocks_resumed == 0
    assert got["attrs"]["metric"] == metric and got["attrs"]["k"] == 12
    assert got["attrs"]["exclude_same_label"] is exclude and got["attrs"]["draws_used"] == 21
    for side in ("top", "bottom"):
        assert_same_up_to_ties(got[f"{side}_index"], got[f"{side}_value"],
                               getattr(want, f"{side}_index"), getattr(want, f"{side}_corr"),
                               kernel, 1e-12)
    if exclude:  # 13 candidates per row (27 of another label): the lists are full
        assert (got["top_index"] >= 0).all()
        same = LABELS[got["top_index"]] == LABELS[:, None]
        assert not same.any()
    assert store.has_kernel()  # the dense kernel of a 'both' reduce is kept


def test_few_candidates_leave_missing_slots_like_the_dense_lists(tmp_path):
    labels = np.r_[np.zeros(20, int), np.ones(3, int)]  # 3 candidates for label-0 rows
    store, _ = planted_store(tmp_path / "s.zarr", n=23, labels=labels)
    reduce_store(store, block_size=8, dtype="float64")  # compared to 1e-12
    kernel = np.asarray(store.kernel_array("corr")[...])
    want = compute_neighbours(DenseRows(kernel), 5, 5, labels, exclude_same_label=True)
    reduce_neighbours(store, k=5, k_bottom=5, exclude_same_label=True, block_size=8,
                      write_moments=False)
    got = store.read_stream_neighbours()
    assert (got["top_index"][:20, 3:] == -1).all() and np.isnan(got["top_value"][:20, 3:]).all()
    assert_same_up_to_ties(got["top_index"], got["top_value"], want.top_index, want.top_corr,
                           kernel, 1e-12)


def test_neighbours_only_reduce_writes_moments_and_drops_a_stale_dense_kernel(tmp_path):
    store, x = planted_store(tmp_path / "s.zarr", n=N)
    reduce_store(store, block_size=16)
    reduce_neighbours(store, k=3, k_bottom=0, block_size=16)
    assert not store.has_kernel() and store.has_stream_neighbours()
    np.testing.assert_allclose(store.kernel_array("var")[...], x.var(0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(store.kernel_array("mean")[...], x.mean(0), rtol=1e-12)
    info = store.attrs["reduce"]
    assert info["kernel"] == "neighbours" and info["neighbours"]["k"] == 3
    assert store.read_stream_neighbours()["bottom_index"].shape == (N, 0)


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"k": 0}, r"reduce.neighbours_k: must be an integer >= 1, got 0"),
    ({"k": N}, rf"reduce.neighbours_k: must be < N = {N} \(a sample has N - 1 = {N - 1} others"),
    ({"k": 5, "k_bottom": N + 3}, rf"reduce.neighbours_bottom_k: must be < N = {N}"),
    ({"k": 5, "k_bottom": -1}, r"reduce.neighbours_bottom_k: must be an integer >= 0"),
    ({"k": 5, "metric": "rho"}, r"reduce.neighbours_metric: expected corr or cov"),
])
def test_bad_k_or_metric_is_a_clear_error_before_anything_is_written(tmp_path, kwargs, needle):
    store, _ = planted_store(tmp_path / "s.zarr", n=N)
    with pytest.raises(ConfigError, match=needle):
        reduce_neighbours(store, **kwargs)
    assert "neighbours" not in store.group and "kernel" not in store.group


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("kernel", "sparse", "reduce.kernel: expected dense, neighbours or both, got 'sparse'"),
    ("neighbours_k", 0, "reduce.neighbours_k: must be >= 1, got 0"),
    ("neighbours_bottom_k", -2, "reduce.neighbours_bottom_k: must be >= 0, got -2"),
    ("neighbours_metric", "rho", "reduce.neighbours_metric: expected corr or cov"),
    ("cache_gb", -1, "reduce.cache_gb: must be >= 0"),
])
def test_config_validates_the_neighbours_keys(tmp_path, key, value, needle):
    data = linear_config(tmp_path / "run")
    data["reduce"][key] = value
    with pytest.raises(ConfigError, match=needle):
        config_from_dict(data)


def test_reduce_job_keeps_at_most_half_its_memory_of_draws(tmp_path):
    from losskernel_dist.jobs.submit import reduce_job_overrides

    data = linear_config(tmp_path / "run")
    assert reduce_job_overrides(config_from_dict(data)) == {}  # no memory set
    data["slurm"] = {"reduce_mem_gb": 6}
    assert reduce_job_overrides(config_from_dict(data)) == {"cache_gb": 3.0}
    data["reduce"]["cache_gb"] = 1
    assert reduce_job_overrides(config_from_dict(data)) == {}


def test_old_cache_key_is_read_as_the_new_one(tmp_path):
    data = linear_config(tmp_path / "run")
    data["reduce"]["neighbours_cache_gb"] = 2
    with pytest.warns(UserWarning, match="reduce.neighbours_cache_gb is now reduce.cache_gb"):
        assert config_from_dict(data).reduce.cache_gb == 2
    data["reduce"]["cache_gb"] = 1
    with pytest.raises(ConfigError, match="renamed reduce.cache_gb, and both are given"):
        config_from_dict(data)


def test_interrupted_reduce_resumes_to_the_same_lists(tmp_path):
    """A reduce stopped between writing a block's rows and flagging it resumes exactly."""
    kwargs = {"k": 6, "k_bottom": 4, "block_size": 5, "threads": 1, "exclude_same_label": True}
    ref, _ = planted_store(tmp_path / "ref.zarr", n=N, labels=LABELS)
    reduce_neighbours(ref, **kwargs)
    want = ref.read_stream_neighbours()

    store, _ = planted_store(tmp_path / "s.zarr", n=N, labels=LABELS)
    ran: list[int] = []

    def stop_at_fourth(b: int) -> None:
        ran.append(b)
        if len(ran) == 4:  # rows of block b are written, its done flag is not
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reduce_neighbours(store, **kwargs, _after_block=stop_at_fourth)
    done = np.asarray(store.group["neighbours"]["done"][...])
    assert sorted(np.flatnonzero(done)) == sorted(ran[:3])
    assert not store.has_stream_neighbours()
    with pytest.raises(StoreError, match="no complete neighbours"):
        store.read_stream_neighbours()

    rerun: list[int] = []
    report = reduce_neighbours(store, **kwargs, _after_block=rerun.append)
    assert report.blocks_resumed == 3 and sorted(rerun) == sorted(set(range(9)) - set(ran[:3]))
    got = store.read_stream_neighbours()
    for name in ("top_index", "top_value", "bottom_index", "bottom_value"):
        np.testing.assert_array_equal(got[name], want[name])

    # other settings (or other draws) do not resume: the group is rebuilt
    report = reduce_neighbours(store, **{**kwargs, "k": 5})
    assert report.blocks_resumed == 0 and store.read_stream_neighbours()["top_index"].shape == (N, 5)


def test_uncached_draws_give_the_same_lists(tmp_path):
    """Draws re-read from the store per tile (cache_bytes=0) give bit-identical lists."""
    store, _ = planted_store(tmp_path / "s.zarr", n=N, zero_var=(2,))
    out = {}
    for cache in (0, 1 << 30):
        report = reduce_neighbours(store, k=7, k_bottom=3, block_size=9, cache_bytes=cache)
        assert report.cached is bool(cache)
        out[cache] = store.read_stream_neighbours()
    for name in ("top_index", "top_value", "bottom_index", "bottom_value"):
        np.testing.assert_array_equal(out[0][name], out[1 << 30][name])


@pytest.mark.slow
def test_peak_memory_is_bounded_by_the_block_not_n_squared(tmp_path):
    """N = 12,000 (dense float64 N x N: 1.07 GiB) with B = 500: peak RSS a small fraction of it."""
    n, chains, draws, block, k = 12_000, 2, 8, 500, 10
    script = f"""
        import json, sys
        import numpy as np
        from losskernel_dist.store import RunStore
        from losskernel_dist.reduction.topk import reduce_neighbours, peak_memory_bytes
        path = sys.argv[1]
        rng = np.random.default_rng(0)
        store = RunStore.create(path, chains={chains}, draws={draws}, n={n},
                                total_steps={draws}, config={{}})
        for c in range({chains}):
            store.write_draws(c, 0, rng.normal(size=({draws}, {n})).astype(np.float32))
            store.mark_done(c, list(range({draws})))
        before = peak_rss()
        reduce_neighbours(store, k={k}, k_bottom={k}, block_size={block}, threads=2)
        peak = peak_rss()
        got = store.read_stream_neighbours()
        x = np.asarray(store.losses_array()[...]).reshape(-1, {n}).astype(np.float64)
        rows = [0, 6001, {n} - 1]
        rho = np.corrcoef(x[:, rows], x, rowvar=False)[:3, 3:]
        rho[np.arange(3), rows] = -np.inf
        want = np.argsort(-rho, axis=1, kind="stable")[:, :{k}]
        print(json.dumps({{"before": before, "peak": peak,
                           "same": bool((got["top_index"][rows] == want).all()),
                           "bound": peak_memory_bytes({chains * draws}, {n}, {block}, {2 * k},
                                                      2, True)}}))
    """
    result = run_with_peak_rss(script, str(tmp_path / "big.zarr"))
    dense = n * n * 8
    used = result["peak"] - result["before"]
    print(f"dense {dense / 2**20:.0f} MiB, peak RSS {result['peak'] / 2**20:.0f} MiB, "
          f"reduce's own {used / 2**20:.0f} MiB (bound {result['bound'] / 2**20:.0f} MiB)")
    assert result["same"]
    # the bound counts the working arrays; allow 32 MiB for code and buffers loaded on first use
    assert used < result["bound"] + 32 * 2**20, "the neighbours reduce exceeded its memory bound"
    assert used < dense / 10


@pytest.mark.slow
def test_neighbours_only_run_is_analysed_without_a_dense_kernel(tmp_path, write_config, capsys):
    data = linear_config(tmp_path / "run", args={"n": 128, "n_eval": 40, "blocks": 2})
    data["reduce"].update(kernel="neighbours", neighbours_k=12, neighbours_bottom_k=4)
    data["analysis"] = {"enabled": True, "neighbours": 5, "umap_neighbours": 10,
                        "cka_grid": 4}
    assert main(["run", str(write_config(data)), "--no-progress"]) == 0
    assert "top-12 corr neighbours of 40 samples" in capsys.readouterr().out
    store = RunStore.open(tmp_path / "run" / "store.zarr")
    assert not store.has_kernel() and store.has_stream_neighbours()
    assert "cov" not in store.group["kernel"] and "corr" not in store.group["kernel"]

    metrics = json.loads((tmp_path / "run" / "analysis" / "metrics.json").read_text())
    section = metrics["neighbours"]
    assert section["source"].startswith("streamed") and section["k"] == 5
    assert section["exclude_same_label"] is True  # two blocks: labels 0 and 1
    assert len(section["examples"]) == 5 and section["examples"][0]["top"]
    assert metrics["maps"]["umap_2d"]["n_neighbors"] == 10
    assert store.read_embedding("umap_2d").shape == (40, 2)
    for name in ("groups", "picture"):
        assert "dense N x N kernel" in metrics["skipped"][name]
    assert "memorization" in metrics["skipped"] or "memorization" in metrics
    assert metrics["convergence"]["cka_over_draws"]["available"]
    assert "dense N x N kernel" in (tmp_path / "run" / "analysis" / "index.html").read_text()

    # the same run reduced 'both' again has the dense kernel, and the analysis uses it
    data["reduce"]["kernel"] = "both"
    (tmp_path / "run" / "config.yaml").write_text(json.dumps(data))
    assert main(["reduce", str(tmp_path / "run"), "--no-progress"]) == 0
    store = RunStore.open(tmp_path / "run" / "store.zarr")
    assert store.has_kernel() and store.has_stream_neighbours()
    assert store.attrs["reduce"]["kernel"] == "both"
