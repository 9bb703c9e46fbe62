"""Ranks and layout invariance: one process, torchrun with 2 and 4 ranks (gloo, CPU) and SLURM-style
array tasks give the same draws, bit for bit on CPU.

On GPU the same holds to a tolerance (``GPU_RTOL``/``GPU_ATOL`` on the loss vectors): a chain
runs the same kernels whichever rank runs it, but CUDA does not promise bitwise reproducibility
across processes (e.g. cuBLAS workspace choices), so the GPU test allows float32 rounding-level
differences.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from losskernel_dist.config import config_from_dict
from losskernel_dist.distributed import Placement, chains_for, placement_from_env
from losskernel_dist.jobs.sample import sample

from ..dist_helpers import (
    REPO,
    assert_same_arrays,
    run_config,
    run_losskernel,
    store_arrays,
    subprocess_env,
    write_yaml,
)

GPU_RTOL, GPU_ATOL = 1e-5, 1e-7


@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("chains", [1, 4, 7])
def test_chains_for_deals_every_chain_to_exactly_one_rank(world, chains):
    dealt = [c for rank in range(world) for c in chains_for(rank, world, chains)]
    assert sorted(dealt) == list(range(chains))


def test_placement_comes_from_torchrun_variables(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert placement_from_env() == Placement(0, 1, 0)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert placement_from_env() == Placement(5, 8, 1)
    monkeypatch.setenv("RANK", "8")
    with pytest.raises(RuntimeError, match="inconsistent"):
        placement_from_env()


def _torchrun(nproc: int, cfg) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "losskernel_dist.cli", "sample", str(cfg),
           "--no-progress"]
    return subprocess.run(cmd, env=subprocess_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(script: str, cfg, **env: str) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(REPO / "launch" / script), str(cfg), "--no-progress"],
                            env=subprocess_env(PYTHON=sys.executable, **env), cwd=REPO,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return out


def _ranks_reporting(out: str) -> int:
    return sum(1 for line in out.replace("sampled", "\nsampled").splitlines()
               if line.startswith("sampled chains"))


@pytest.mark.slow
@pytest.mark.distributed
def test_layout_invariance_is_bitwise_on_cpu(tmp_path):
    """The same config as 1 process; torchrun with 4 ranks (launch/torchrun_single_node.sh);
    torchrun over 2 "nodes" of 1 rank meeting by c10d rendezvous (launch/torchrun_multi_node.sh,
    both nodes on this host); and 2 SLURM-style array tasks (submitit, local): identical
    ``losses``, ``done`` and ``train_loss``, compared bitwise."""
    ref_run = tmp_path / "one_process" / "run"
    sample(config_from_dict(run_config(ref_run)), progress=False)
    want = store_arrays(ref_run)
    assert want["done"].all()

    run = tmp_path / "torchrun4" / "run"
    cfg = write_yaml(run.parent / "config.yaml", run_config(run))
    out = _finish(_launch("torchrun_single_node.sh", cfg, NPROC="4"))
    assert _ranks_reporting(out) == 4  # every rank ran its own share
    assert_same_arrays(store_arrays(run), want)

    run = tmp_path / "two_nodes" / "run"
    cfg = write_yaml(run.parent / "config.yaml", run_config(run))
    node = {"NNODES": "2", "NPROC": "1", "RDZV_HOST": "127.0.0.1",
            "RDZV_PORT": str(_free_port()), "RDZV_ID": f"test{os.getpid()}"}
    nodes = [_launch("torchrun_multi_node.sh", cfg, **node) for _ in range(2)]
    assert sum(_ranks_reporting(_finish(p)) for p in nodes) == 2
    assert_same_arrays(store_arrays(run), want)

    run = tmp_path / "array" / "run"
    cfg = write_yaml(run.parent / "config.yaml", run_config(run, slurm={"chains_per_task": 2,
                                                                         "reduce": False}))
    proc = run_losskernel("submit", str(cfg), "--poll", "0.5")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 array tasks" in proc.stdout
    assert_same_arrays(store_arrays(run), want)


@pytest.mark.gpu
@pytest.mark.slow
def test_layout_invariance_on_gpu_within_tolerance(tmp_path):
    """On CUDA: all chains in one process vs two array-task-like processes over halves of them
    (and torchrun with 2 ranks when there are 2 GPUs) agree to GPU_RTOL/GPU_ATOL."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    ref_run = tmp_path / "one" / "run"
    cfg_ref = write_yaml(ref_run.parent / "config.yaml", run_config(ref_run, device="cuda"))
    assert run_losskernel("sample", str(cfg_ref), "--no-progress").returncode == 0
    want = store_arrays(ref_run)

    split = tmp_path / "split" / "run"
    cfg = write_yaml(split.parent / "config.yaml", run_config(split, device="cuda"))
    proc = run_losskernel("submit", str(cfg), "--set", "slurm.cluster=local",
                          "--set", "slurm.chains_per_task=2", "--set", "slurm.reduce=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [split]
    if torch.cuda.device_count() >= 2:
        tr = tmp_path / "torchrun" / "run"
        cfg2 = write_yaml(tr.parent / "config.yaml", run_config(tr, device="cuda"))
        assert _torchrun(2, cfg2).returncode == 0
        runs.append(tr)
    for run in runs:
        got = store_arrays(run)
        assert np.array_equal(got["done"], want["done"])
        np.testing.assert_allclose(got["losses"], want["losses"], rtol=GPU_RTOL, atol=GPU_ATOL)


def test_array_tasks_cover_the_unfinished_chains_once(tmp_path):
    from losskernel_dist.jobs.submit import chain_groups, unfinished_groups

    assert chain_groups(5, 2) == [[0, 1], [2, 3], [4]]
    assert chain_groups(3, 8) == [[0, 1, 2]]
    run = tmp_path / "run"
    data = run_config(run, chains=3, slurm={"chains_per_task": 1})
    sample(config_from_dict(data), chains=[1], progress=False)  # chain 1 done, 0 and 2 not
    assert unfinished_groups(config_from_dict(data)) == [[0], [2]]


def test_slurm_options_reach_the_executor(tmp_path):
    from losskernel_dist.config import ConfigError
    from losskernel_dist.jobs.submit import make_executor

    data = run_config(tmp_path / "run", slurm={
        "cluster": "slurm", "partition": "gpu", "time_min": 90, "gpus_per_task": 1,
        "cpus_per_task": 8, "mem_gb": 32, "max_parallel": 3, "extra": {"account": "abc"},
        "setup": ["module load cuda"], "signal_delay_s": 300, "max_requeues": 5})
    executor = make_executor(config_from_dict(data), tmp_path)._executor
    params = executor.parameters
    assert (params["partition"], params["time"], params["gpus_per_node"],
            params["cpus_per_task"], params["mem"], params["array_parallelism"],
            params["additional_parameters"], params["setup"], params["signal_delay_s"]) == \
        ("gpu", 90, 1, 8, "32GB", 3, {"account": "abc"}, ["module load cuda"], 300)
    assert executor.max_num_timeout == 5
    data["slurm"]["signal_delay_s"] = 90 * 60
    with pytest.raises(ConfigError, match="slurm.signal_delay_s"):
        config_from_dict(data)
    data["slurm"].update(signal_delay_s=60, cluster="pbs")
    with pytest.raises(ConfigError, match="slurm.cluster"):
        config_from_dict(data)


@pytest.mark.parametrize("kernel", ["dense", "neighbours", "both"])
def test_the_submitted_reduce_job_honours_reduce_kernel(tmp_path, kernel):
    """The SLURM reduce job reduces as 'losskernel reduce' does, from the run's config."""
    from losskernel_dist.jobs.submit import reduce_job
    from losskernel_dist.store import RunStore

    run = tmp_path / "run"
    data = run_config(run, chains=2, draws=6)
    data["reduce"].update(kernel=kernel, neighbours_k=3, neighbours_bottom_k=0)
    sample(config_from_dict(data), progress=False)
    reduce_job(str(run), allow_partial=False)
    store = RunStore.open(run / "store.zarr")
    assert store.has_kernel() == (kernel != "neighbours")
    assert store.has_stream_neighbours() == (kernel != "dense")
