"""The torch engine of the streamed neighbours (reduction/topk_torch.py) gives the dask engine's lists.

On the CPU build of torch here; the ``gpu`` test repeats the comparison and the resume on
CUDA where a device is present (bench/device/run.py runs ``pytest -m gpu``). Tie rule, as
the dask engine's: score descending (top) / ascending (bottom), an exact tie to the smaller
sample index; values agree to float64 rounding (the BLAS differs), so only samples whose
scores differ by rounding alone could be listed in another order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from losskernel_dist.config import ConfigError, config_from_dict
from losskernel_dist.reduction.dispatch import reduce_with_config
from losskernel_dist.reduction.kernel import reduce_store
from losskernel_dist.reduction.select import select_top
from losskernel_dist.reduction.topk import reduce_neighbours
from losskernel_dist.reduction.topk_torch import reduce_neighbours_torch, top_k_stable
from losskernel_dist.store import StoreError

from ..conftest import linear_config
from .test_reduce import planted_store

N = 41
LABELS = np.arange(N) % 3
NAMES = ("top_index", "top_value", "bottom_index", "bottom_value")


def assert_same_lists(got: dict, want: dict, tol: float = 1e-12) -> None:
    """Same indices everywhere; values equal to ``tol``; NaN exactly where a slot is empty."""
    for side in ("top", "bottom"):
        np.testing.assert_array_equal(got[f"{side}_index"], want[f"{side}_index"])
        np.testing.assert_allclose(got[f"{side}_value"], want[f"{side}_value"],
                                   rtol=tol, atol=tol)
        assert (np.isnan(got[f"{side}_value"]) == (got[f"{side}_index"] < 0)).all()


@pytest.mark.parametrize("k", [1, 3, 6, 9])
def test_top_k_stable_is_a_stable_sort_of_the_finite_entries(k):
    """Few distinct values (ties everywhere, also across the k-th), some rows mostly -inf."""
    rng = np.random.default_rng(k)
    values = rng.integers(0, 4, size=(200, 6)).astype(np.float64)
    values[rng.random(values.shape) < 0.3] = -np.inf
    values[:5] = -np.inf
    got_v, got_p = top_k_stable(torch.from_numpy(values), k)
    want_i, want_v = select_top(values, k)
    finite = np.isfinite(got_v.numpy())
    np.testing.assert_array_equal(finite, want_i >= 0)
    np.testing.assert_array_equal(np.where(finite, got_p.numpy(), -1), want_i)
    np.testing.assert_array_equal(got_v.numpy()[finite], want_v[finite])


@pytest.mark.parametrize("metric", ["corr", "cov"])
@pytest.mark.parametrize(("block", "width"), [(16, 0), (5, 7), (100, 0)])
@pytest.mark.parametrize("exclude", [False, True])
def test_torch_engine_gives_the_dask_engines_lists(tmp_path, metric, block, width, exclude):
    """Zero-variance samples (every correlation 0: exact ties) and a duplicated one
    (correlation 1 after clipping), tiles narrower, wider and off the row blocks."""
    store, _ = planted_store(tmp_path / "s.zarr", n=N, zero_var=(4, 17), duplicates=((9, 3),),
                             labels=LABELS)
    kwargs = {"k": 12, "k_bottom": 5, "metric": metric, "exclude_same_label": exclude,
              "block_size": block}
    reduce_neighbours(store, **kwargs, threads=1)
    want = store.read_stream_neighbours()
    report = reduce_neighbours_torch(store, **kwargs, device="cpu", tile_columns=width)
    got = store.read_stream_neighbours()
    assert_same_lists(got, want)
    assert report.blocks == -(-N // block) and report.blocks_resumed == 0 and report.cached
    for key in ("metric", "k", "k_bottom", "exclude_same_label", "block_size", "draws_used",
                "chains_used", "order", "exclude_self"):
        assert got["attrs"][key] == want["attrs"][key], key
    assert got["attrs"]["engine"] == "torch:cpu"
    assert got["attrs"]["tile_columns"] == (width or min(block, N))
    record = store.attrs["reduce"]
    assert record["engine"] == "torch:cpu" and record["neighbours"]["engine"] == "torch:cpu"
    assert record["kernel"] == "neighbours"


@pytest.mark.parametrize("width", [4, 0])
def test_exact_ties_go_to_the_smaller_index_across_tiles(tmp_path, width):
    """Samples 10..29 have zero variance: every correlation with them is exactly 0, so a
    row's lists end in a run of ties at 0 that must be the smallest of those indices,
    whichever tile (4 columns wide, or one tile) they arrive in."""
    store, _ = planted_store(tmp_path / "s.zarr", n=30, zero_var=tuple(range(10, 30)))
    reduce_store(store, block_size=30, dtype="float64")
    corr = np.asarray(store.kernel_array("corr")[...])
    reduce_neighbours_torch(store, k=15, k_bottom=15, block_size=8, device="cpu",
                            tile_columns=width, write_moments=False)
    got = store.read_stream_neighbours()
    for side, sign in (("top", 1.0), ("bottom", -1.0)):
        scores = sign * corr.copy()
        np.fill_diagonal(scores, -np.inf)
        want_i, _ = select_top(scores, 15)  # argsort(-row, kind="stable"): smaller index first
        np.testing.assert_array_equal(got[f"{side}_index"], want_i)
    row = got["top_index"][0]
    zeros = row[got["top_value"][0] == 0.0]
    assert len(zeros) >= 6 and zeros.tolist() == list(range(10, 10 + len(zeros)))
    assert got["top_index"][12].tolist() == [j for j in range(16) if j != 12]  # all ties, no self


def test_draws_read_per_tile_give_the_same_bits(tmp_path):
    """Without room on the device for the draws, each tile's columns are read from the store."""
    store, _ = planted_store(tmp_path / "s.zarr", n=N, zero_var=(2,), labels=LABELS)
    out = {}
    for room in (0, None):
        report = reduce_neighbours_torch(store, k=7, k_bottom=3, block_size=9, device="cpu",
                                         device_cache_bytes=room)
        assert report.cached is (room is None)
        out[room] = store.read_stream_neighbours()
    for name in NAMES:
        np.testing.assert_array_equal(out[0][name], out[None][name])


def _interrupt_and_resume(store, kwargs: dict, stop_after: int) -> tuple[list[int], list[int]]:
    """Stop the reduce once ``stop_after`` blocks are written and flagged (the next one
    written, not flagged), then rerun it; the blocks of the first run and of the rerun."""
    ran: list[int] = []

    def stop(b: int) -> None:
        ran.append(b)
        if len(ran) == stop_after + 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reduce_neighbours_torch(store, **kwargs, _after_block=stop)
    assert not store.has_stream_neighbours()
    with pytest.raises(StoreError, match="no complete neighbours"):
        store.read_stream_neighbours()
    rerun: list[int] = []
    report = reduce_neighbours_torch(store, **kwargs, _after_block=rerun.append)
    assert report.blocks_resumed == stop_after
    return ran, rerun


def test_interrupted_torch_reduce_resumes_to_the_same_lists(tmp_path):
    kwargs = {"k": 6, "k_bottom": 4, "block_size": 5, "exclude_same_label": True,
              "device": "cpu"}
    ref, _ = planted_store(tmp_path / "ref.zarr", n=N, labels=LABELS)
    reduce_neighbours_torch(ref, **kwargs)
    want = ref.read_stream_neighbours()

    store, _ = planted_store(tmp_path / "s.zarr", n=N, labels=LABELS)
    ran, rerun = _interrupt_and_resume(store, kwargs, stop_after=3)
    assert ran == [0, 1, 2, 3] and rerun == [3, 4, 5, 6, 7, 8]  # block 3 was not flagged
    got = store.read_stream_neighbours()
    for name in NAMES:
        np.testing.assert_array_equal(got[name], want[name])

    # the other engine (another key) starts again, and so does the torch engine after it
    dask_kwargs = {key: value for key, value in kwargs.items() if key != "device"}
    assert reduce_neighbours(store, **dask_kwargs, threads=1).blocks_resumed == 0
    assert reduce_neighbours_torch(store, **kwargs).blocks_resumed == 0


def test_an_interrupted_dask_reduce_is_not_resumed_by_the_torch_engine(tmp_path):
    store, _ = planted_store(tmp_path / "s.zarr", n=N)

    def stop(b: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reduce_neighbours(store, k=5, block_size=10, threads=1, _after_block=stop)
    report = reduce_neighbours_torch(store, k=5, block_size=10, device="cpu")
    assert report.blocks_resumed == 0 and store.has_stream_neighbours()


@pytest.mark.parametrize("kernel", ["neighbours", "both"])
def test_the_dispatcher_runs_the_torch_engine_when_asked(tmp_path, kernel):
    store, _ = planted_store(tmp_path / "s.zarr", n=N, zero_var=(4,), labels=LABELS)
    data = linear_config(tmp_path / "run")
    data["reduce"] = {"engine": "dask", "device": "cpu", "kernel": kernel, "block_size": 16,
                      "neighbours_k": 8, "neighbours_bottom_k": 3, "dtype": "float64"}
    reduce_with_config(store, config_from_dict(data))
    want = store.read_stream_neighbours()
    assert "engine" not in want["attrs"]
    data["reduce"]["engine"] = "torch"
    report = reduce_with_config(store, config_from_dict(data))
    got = store.read_stream_neighbours()
    assert_same_lists(got, want)
    record = store.attrs["reduce"]
    assert record["neighbours"]["engine"] == "torch:cpu" and record["kernel"] == kernel
    if kernel == "both":  # the dense kernel came from the tiled torch engine
        assert store.has_kernel() and record["engine"] == "torch:cpu"
        assert report.n == N and not hasattr(report, "k")
    else:
        assert not store.has_kernel() and report.k == 8


def test_a_cuda_device_this_machine_lacks_is_a_config_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    store, _ = planted_store(tmp_path / "s.zarr", n=N)
    with pytest.raises(ConfigError, match="reduce.device=cuda: CUDA is not available"):
        reduce_neighbours_torch(store, k=3, device="cuda")
    assert "neighbours" not in store.group


@pytest.mark.gpu
def test_cuda_engine_gives_the_dask_engines_lists_and_resumes(tmp_path):
    """On CUDA: the lists of the dask engine (same indices, values to float64 rounding) at a
    size with several row blocks and a wide default tile; a resumed reduce equals an
    uninterrupted one bit for bit."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    n, labels = 3000, np.arange(3000) % 7
    store, _ = planted_store(tmp_path / "s.zarr", chains=4, draws=16, n=n,
                             zero_var=(5, 900, 2999), duplicates=((11, 10), (2000, 7)),
                             labels=labels)
    kwargs = {"k": 15, "k_bottom": 10, "block_size": 512, "exclude_same_label": True}
    reduce_neighbours(store, **kwargs)
    want = store.read_stream_neighbours()
    reduce_neighbours_torch(store, **kwargs, device="cuda")
    got = store.read_stream_neighbours()
    assert got["attrs"]["engine"] == "torch:cuda"
    assert_same_lists(got, want, tol=1e-10)

    cuda = {**kwargs, "device": "cuda"}
    _interrupt_and_resume(store, cuda, stop_after=2)
    resumed = store.read_stream_neighbours()
    for name in NAMES:
        np.testing.assert_array_equal(resumed[name], got[name])
