"""Failures: a diverging chain is isolated, partial reduces are explicit, corruption is caught,
and a second writer on a live run is refused (while stale locks are taken over)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from losskernel_dist import locks
from losskernel_dist.cli import main as cli_main
from losskernel_dist.config import config_from_dict
from losskernel_dist.errors import StoreError
from losskernel_dist.jobs.info import format_info, run_info
from losskernel_dist.jobs.sample import sample
from losskernel_dist.jobs.submit import SubmitError, prepare
from losskernel_dist.locks import ChainLocks, LockedError, lock_path
from losskernel_dist.reduction.kernel import IncompleteRunError, reduce_store
from losskernel_dist.rundir import RunDir
from losskernel_dist.sampler.schedule import StepSchedule

from ..dist_helpers import (
    REPO,
    SLOW_TARGET,
    assert_same_arrays,
    done_count,
    losskernel_cmd,
    poisoned_config,
    run_config,
    store_arrays,
    subprocess_env,
    wait_until,
    write_yaml,
)


def test_nan_chain_is_reported_and_isolated_and_reduce_needs_allow_partial(tmp_path, capsys):
    run = tmp_path / "run"
    data, fault = poisoned_config(run)
    cfg = write_yaml(tmp_path / "config.yaml", data)
    assert cli_main(["sample", str(cfg), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert f"chain 1 diverged at step {fault}" in err and "sampler.lr too large" in err

    a = store_arrays(run)
    assert a["chain_status"].tolist() == [0, 1, 0]
    assert a["done"][[0, 2]].all()
    kept = StepSchedule.of(config_from_dict(data).sampler).draws_kept_by(fault)
    assert a["done"][1].tolist() == [d < kept for d in range(12)]  # nothing done after the fault
    assert 0 < kept < 12 and np.isfinite(a["losses"][1, :kept]).all()
    info = run_info(run)
    assert [c["state"] for c in info["per_chain"]] == ["done", "failed", "done"]
    assert f"diverged at step {fault}" in format_info(info)

    # A resume leaves the failed chain alone (and says so again).
    assert cli_main(["sample", str(cfg), "--no-progress"]) == 3
    assert_same_arrays(store_arrays(run), a)

    capsys.readouterr()
    assert cli_main(["reduce", str(run), "--no-progress"]) == 2
    assert "failed chains [1]" in capsys.readouterr().err
    assert cli_main(["reduce", str(run), "--allow-partial", "--no-progress"]) == 0
    store = RunDir(run).open_store()
    used = store.attrs["reduce"]
    assert used["partial"] and used["chains_used"] == [0, 2]
    assert used["excluded"]["failed_chains"] == [1] and used["draws_used"] == 24
    x = a["losses"][[0, 2]].reshape(24, -1).astype(np.float64)
    # stored as float32 (reduce.dtype's default), accumulated in float64
    np.testing.assert_allclose(np.asarray(store.kernel_array("cov")[...]), np.cov(x.T),
                               rtol=1e-6, atol=1e-12)


def test_unfinished_chains_need_allow_partial_which_records_the_missing_draws(tmp_path):
    run = tmp_path / "run"
    config = config_from_dict(run_config(run, chains=2))
    sample(config, chains=[0], progress=False)  # chain 1 never ran
    store = RunDir(run).open_store(mode="r+")
    with pytest.raises(IncompleteRunError, match="12 of 24 draws not done"):
        reduce_store(store, block_size=8, threads=1)
    report = reduce_store(store, block_size=8, threads=1, allow_partial=True)
    assert report.chains_used == [0] and report.draws_used == 12
    assert report.excluded["not_done"] == list(range(12, 24))
    assert run_info(run)["per_chain"][1]["state"] == "pending"


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_chunk_is_an_error_never_a_wrong_kernel(tmp_path, capsys):
    run = tmp_path / "run"
    config = config_from_dict(run_config(run, chains=2))
    sample(config, progress=False)
    chunks = sorted(p for p in (RunDir(run).store / "losses").rglob("*")
                    if p.is_file() and p.name != "zarr.json")
    _flip_a_byte(chunks[-1])
    with pytest.raises(StoreError, match=r"losses chunk .* of chain 1 .* fails its checksum"):
        reduce_store(RunDir(run).open_store(mode="r+"), block_size=8, threads=1)
    assert cli_main(["reduce", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checksum" in err[0], err
    assert not RunDir(run).open_store().has_kernel()
    done_chunk = next(p for p in (RunDir(run).store / "done").rglob("*")
                      if p.is_file() and p.name != "zarr.json")
    _flip_a_byte(done_chunk)
    with pytest.raises(StoreError, match="'done' fails its checksum"):
        sample(config, progress=False)


@pytest.mark.slow
def test_second_sample_on_a_live_run_is_refused(tmp_path):
    run = tmp_path / "run"
    data = run_config(run, chains=2, target=SLOW_TARGET)
    cfg = write_yaml(tmp_path / "config.yaml", data)
    proc = subprocess.Popen(losskernel_cmd("sample", str(cfg), "--no-progress"), cwd=REPO,
                            env=subprocess_env(LK_TEST_SLEEP_S="0.02"), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: done_count(run) >= 1, 120, "a done draw", proc)
        before = (run / "config.yaml").read_text()
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            sample(config_from_dict({**data, "sampler": {**data["sampler"],
                                                         "checkpoint_every": 2}}),
                   progress=False)
        assert (run / "config.yaml").read_text() == before  # the refused run wrote nothing
        with pytest.raises(SubmitError, match="being sampled"):
            prepare(config_from_dict(data))
        info = run_info(run)
        assert info["per_chain"][0]["state"] == "running"
        assert f"pid {proc.pid}" in info["per_chain"][0]["holder"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 75
    finally:
        proc.kill()
    report = sample(config_from_dict(data), progress=False)  # the lock went with its holder
    assert report.draws_written > 0 and done_count(run) == 24


def _write_lock(directory: Path, chain: int, host: str, pid: int, slurm_job: str | None = None,
                age_s: float = 0.0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = lock_path(directory, chain)
    path.write_text(json.dumps({"host": host, "pid": pid, "slurm_job": slurm_job}))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_locks_are_taken_over_and_live_ones_refused(tmp_path, monkeypatch):
    here = socket.gethostname()
    d = tmp_path / "locks"
    # A live holder on this host (our parent process) is refused, naming it.
    _write_lock(d, 0, here, os.getppid())
    with pytest.raises(LockedError, match=f"host {here} pid {os.getppid()}"):
        ChainLocks(d, [0, 1]).acquire()
    assert not lock_path(d, 1).exists()  # all or nothing
    # A dead holder on this host, or a torn lock file, is stale.
    _write_lock(d, 0, here, _dead_pid())
    lock_path(d, 1).write_text("")
    with ChainLocks(d, [0, 1]) as held:
        assert len(held.held) == 2
        assert json.loads(lock_path(d, 0).read_text())["pid"] == os.getpid()
    assert not lock_path(d, 0).exists()
    # Another host: judged by its heartbeat, or by being an earlier run of this SLURM job.
    _write_lock(d, 0, "elsewhere", 1, age_s=10)
    with pytest.raises(LockedError, match="host elsewhere"):
        ChainLocks(d, [0]).acquire()
    _write_lock(d, 0, "elsewhere", 1, age_s=locks.STALE_S + 5)
    ChainLocks(d, [0]).acquire()
    _write_lock(d, 1, "elsewhere", 1, slurm_job="4242", age_s=1)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    ChainLocks(d, [1]).acquire()


def test_lock_heartbeat_keeps_a_live_lock_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "HEARTBEAT_S", 0.05)
    d = tmp_path / "locks"
    with ChainLocks(d, [0]):
        path = lock_path(d, 0)
        old = time.time() - 1000
        os.utime(path, (old, old))
        wait_until(lambda: path.stat().st_mtime > old + 900, 5, "a heartbeat")
    assert not path.exists()
