"""The reduce on a dask cluster (reduce.scheduler) gives the threaded reduce's bits, survives a
killed worker, and an interrupted reduce resumes computing only the tiles it lacks.

One ``distributed.LocalCluster`` of 2 worker processes serves the module (its
start costs seconds on 2 cores). Each comparison reduces the same planted store
on dask's threaded scheduler and on the cluster, whose workers read the draws
from the store and write their tiles into it, and compares every array bitwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pytest

from losskernel_dist.config import ConfigError, ReduceConfig, SlurmConfig, config_from_dict
from losskernel_dist.reduction import kernel
from losskernel_dist.reduction.cluster import lifetime_args, open_cluster
from losskernel_dist.reduction.dispatch import reduce_with_config
from losskernel_dist.reduction.kernel import reduce_store
from losskernel_dist.reduction.tiles import missing_tiles
from losskernel_dist.reduction.topk import reduce_neighbours
from losskernel_dist.store import RunStore

from ..conftest import linear_config
from ..dist_helpers import REPO, assert_same_arrays, wait_until
from .test_reduce import planted_store

pytestmark = pytest.mark.slow

KERNEL = ("mean", "var", "cov", "corr")
LISTS = ("top_index", "top_value", "bottom_index", "bottom_value")


def local_settings(**kw) -> ReduceConfig:
    settings = ReduceConfig(scheduler="local", workers=2, worker_cores=1, worker_mem_gb=1.0, **kw)
    settings.validate()
    return settings


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """2 worker processes, each task slowed by 20 ms (so that a worker can be killed mid-way)."""
    with dask.config.set({"distributed.worker.preload": ["tests.reduction.slow_tasks"]}):
        os.environ["LK_TEST_TASK_SLEEP_S"] = "0.02"
        with open_cluster(local_settings(), SlurmConfig(), tmp_path_factory.mktemp("logs"),
                          announce=False) as c:
            yield c


def kernel_of(store: RunStore) -> dict[str, np.ndarray]:
    return {name: np.asarray(store.kernel_array(name)[...]) for name in KERNEL}


@pytest.mark.parametrize(("dtype", "cached"), [("float32", True), ("float64", False)])
def test_local_cluster_kernel_is_bitwise_the_threaded_one(tmp_path, cluster, dtype, cached):
    store, _ = planted_store(tmp_path / "s.zarr", chains=3, draws=20, n=230, zero_var=(7,))
    reduce_store(store, block_size=37, dtype=dtype, threads=2)
    want = kernel_of(store)
    cluster.cache_bytes = 1 << 30 if cached else 0  # workers keep the draws, or re-read them
    report = reduce_store(store, block_size=37, dtype=dtype, cluster=cluster)
    assert_same_arrays(kernel_of(store), want)
    assert store.has_kernel() and report.tiles == 7 * 8 // 2 and report.tiles_resumed == 0
    record = store.reduce_record
    assert record["scheduler"] == "local" and record["workers_requested"] == 2
    assert record["worker_processes_used"] == 2, record  # both workers computed tiles
    assert len(record["worker_peak_rss_mib"]) == 2


def test_local_cluster_neighbours_are_bitwise_the_threaded_ones(tmp_path, cluster):
    labels = np.arange(230) % 4
    store, _ = planted_store(tmp_path / "s.zarr", chains=3, draws=20, n=230, labels=labels)
    kwargs = {"k": 9, "k_bottom": 4, "block_size": 29, "exclude_same_label": True}
    reduce_neighbours(store, threads=2, **kwargs)
    want = store.read_stream_neighbours()
    for cache in (0, 1 << 30):
        cluster.cache_bytes = cache
        report = reduce_neighbours(store, cluster=cluster, **kwargs)
        assert report.blocks_resumed == 0 and report.cached is bool(cache)
        got = store.read_stream_neighbours()
        assert_same_arrays({n: got[n] for n in LISTS}, {n: want[n] for n in LISTS})
    assert store.reduce_record["neighbours"]["scheduler"] == "local"


def test_a_killed_worker_costs_only_its_tiles(tmp_path, cluster):
    """SIGKILL one worker process mid-reduce: its nanny starts a new one, dask reruns the
    worker's tiles, and the kernel has the threaded reduce's bits."""
    store, _ = planted_store(tmp_path / "s.zarr", chains=2, draws=10, n=400)
    reduce_store(store, block_size=20, threads=2)  # 210 tiles
    want = kernel_of(store)
    cluster.cache_bytes = 1 << 30
    pids = cluster.client.run(os.getpid)
    victim = sorted(pids.values())[0]

    def kill_when_started() -> None:
        wait_until(lambda: "kernel" in store.group and "done" in store.group["kernel"]
                   and 20 <= np.asarray(store.kernel_array("done")[...]).sum(), 60,
                   "20 tiles done")
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    try:
        reduce_store(store, block_size=20, cluster=cluster)
    finally:
        killer.join()
    assert victim not in cluster.client.run(os.getpid).values()  # it is gone ...
    wait_until(lambda: len(cluster.client.run(os.getpid)) == 2, 60, "a replacement worker")
    assert_same_arrays(kernel_of(store), want)  # ... and nothing of its work is missing


KILL_AFTER = """
import os, signal, sys
from losskernel_dist.reduction import kernel
from losskernel_dist.store import RunStore
real, calls = kernel.tile_task, []
def counting(plan, bi, bj):
    out = real(plan, bi, bj)
    calls.append((bi, bj))
    if len(calls) == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    return out
kernel.tile_task = counting
kernel.reduce_store(RunStore.open(sys.argv[1], mode="r+"), block_size=10, threads=1)
sys.exit(99)
"""


def killed_halfway(path: Path, after: int) -> RunStore:
    """A planted store (120 tiles) whose reduce was SIGKILLed after ``after`` tiles."""
    store, _ = planted_store(path, chains=2, draws=10, n=150, zero_var=(3,))
    done = subprocess.run([sys.executable, "-c", KILL_AFTER, str(path), str(after)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    return RunStore.open(path, mode="r+")


def test_a_reduce_killed_halfway_resumes_computing_only_the_missing_tiles(tmp_path, monkeypatch):
    ref, _ = planted_store(tmp_path / "ref.zarr", chains=2, draws=10, n=150, zero_var=(3,))
    reduce_store(ref, block_size=10, threads=1)
    store = killed_halfway(tmp_path / "s.zarr", after=50)
    done = np.asarray(store.kernel_array("done")[...])
    assert int(done.sum()) == 50 and not store.has_kernel()  # an unfinished kernel is no kernel
    missing = set(missing_tiles(done))
    assert len(missing) == 120 - 50

    computed: list[tuple[int, int]] = []
    real = kernel.tile_task

    def counting(plan, bi, bj):
        computed.append((bi, bj))
        return real(plan, bi, bj)

    monkeypatch.setattr(kernel, "tile_task", counting)
    report = reduce_store(store, block_size=10, threads=2)
    assert sorted(computed) == sorted(missing)  # each missing tile once, no other
    assert (report.tiles, report.tiles_resumed) == (120, 50)
    assert store.has_kernel() and store.reduce_record["tiles_resumed"] == 50
    assert_same_arrays(kernel_of(store), kernel_of(ref))

    # asked again, a finished kernel is computed again (not taken as resumable)
    computed.clear()
    assert reduce_store(store, block_size=10, threads=2).tiles_resumed == 0
    assert len(computed) == 120


def test_a_killed_reduce_resumes_on_the_cluster(tmp_path, cluster):
    ref, _ = planted_store(tmp_path / "ref.zarr", chains=2, draws=10, n=150, zero_var=(3,))
    reduce_store(ref, block_size=10, threads=1)
    store = killed_halfway(tmp_path / "s.zarr", after=30)
    cluster.cache_bytes = 0
    report = reduce_store(store, block_size=10, cluster=cluster)
    assert (report.tiles, report.tiles_resumed) == (120, 30)
    assert_same_arrays(kernel_of(store), kernel_of(ref))


def test_other_settings_do_not_resume_an_unfinished_kernel(tmp_path):
    store = killed_halfway(tmp_path / "s.zarr", after=5)
    report = reduce_store(store, block_size=10, dtype="float64", threads=2)
    assert report.tiles_resumed == 0 and store.kernel_array("cov").dtype == np.float64


def test_reduce_with_config_on_a_local_cluster_records_where_it_ran(tmp_path, capsys):
    store, _ = planted_store(tmp_path / "run" / "store.zarr", chains=2, draws=12, n=60,
                             labels=np.arange(60) % 2)
    data = linear_config(tmp_path / "run")
    data["reduce"] = {"kernel": "both", "neighbours_k": 5, "block_size": 16, "engine": "auto"}
    reduce_with_config(store, config_from_dict(data))
    want = {**kernel_of(store), **{n: store.read_stream_neighbours()[n] for n in LISTS}}
    data["reduce"].update(scheduler="local", workers=2, worker_mem_gb=1)
    t0 = time.perf_counter()
    reduce_with_config(store, config_from_dict(data), progress=True)
    assert time.perf_counter() - t0 < 120
    assert "reduce on dask cluster local (2 workers)" in capsys.readouterr().err
    got = {**kernel_of(store), **{n: store.read_stream_neighbours()[n] for n in LISTS}}
    assert_same_arrays(got, want)
    record = store.reduce_record
    assert record["scheduler"] == "local" and record["workers"] == 2
    assert record["kernel"] == "both" and record["neighbours"]["scheduler"] == "local"


@pytest.mark.parametrize(("reduce", "needle"), [
    ({"scheduler": "kubernetes"}, "reduce.scheduler: expected threads, local or slurm or a "
                                  "scheduler address"),
    ({"scheduler": "tcp://nohost"}, "reduce.scheduler: expected a scheduler address like"),
    ({"scheduler": "local", "workers": 0}, "reduce.workers: must be >= 1"),
    ({"worker_cores": 0}, "reduce.worker_cores: must be >= 1"),
    ({"worker_mem_gb": 0}, "reduce.worker_mem_gb: must be > 0"),
    ({"worker_walltime_min": 0}, "reduce.worker_walltime_min: must be >= 1"),
    ({"scheduler": "slurm", "engine": "torch"}, "set reduce.engine to dask or auto"),
])
def test_config_validates_the_scheduler_keys(tmp_path, reduce, needle):
    data = linear_config(tmp_path / "run")
    data["reduce"] = reduce
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        config_from_dict(data)


def test_a_scheduler_address_is_kept_as_given(tmp_path):
    data = linear_config(tmp_path / "run")
    data["reduce"] = {"scheduler": "tcp://10.1.2.3:8786"}
    config = config_from_dict(data)
    assert config.reduce.scheduler == "tcp://10.1.2.3:8786"
    assert config.to_dict()["reduce"]["scheduler"] == "tcp://10.1.2.3:8786"


def test_workers_retire_before_their_walltime():
    assert lifetime_args(60) == ["--lifetime", "54m", "--lifetime-stagger", "3m"]
    assert lifetime_args(4) == ["--lifetime", "2m", "--lifetime-stagger", "1m"]
    assert lifetime_args(3) == []
