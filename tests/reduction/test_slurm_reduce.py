"""The reduce on a dask-jobqueue SLURMCluster, on the project's real test SLURM cluster.

``bash slurm/test-cluster.sh`` starts it; without it (``scontrol ping`` not UP,
or no ``sacct``) these tests skip, saying why, as tests/jobs/test_slurm.py does.
The scheduler listens on 127.0.0.1 (dask-jobqueue's own config,
``jobqueue.slurm.scheduler-options``), and the workers load
``tests.reduction.slow_tasks`` (dask's worker preload) so that each tile takes
long enough for a worker job to be cancelled in the middle of the reduce.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from losskernel_dist.config import config_from_dict
from losskernel_dist.errors import StoreError
from losskernel_dist.jobs.submission import submission_status
from losskernel_dist.rundir import RunDir
from losskernel_dist.store import RunStore

from ..analysis_helpers import planted_run, two_task_draws
from ..dist_helpers import (
    REPO,
    assert_same_arrays,
    kernel_arrays,
    losskernel_cmd,
    reduce_as_configured,
    run_config,
    subprocess_env,
    wait_until,
    write_yaml,
)
from ..jobs.test_slurm import PROBLEM

pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]

DASK_ENV = {
    "DASK_JOBQUEUE__SLURM__SCHEDULER_OPTIONS": json.dumps({"host": "127.0.0.1"}),
    "DASK_DISTRIBUTED__WORKER__PRELOAD": json.dumps(["tests.reduction.slow_tasks"]),
}


def _jobs(name: str) -> list[tuple[str, str]]:
    """(job id, state) of every job called ``name`` that accounting knows, oldest first."""
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "--name", name,
                          "-S", "now-1hour"], capture_output=True, text=True, timeout=20).stdout
    return [(a, b.split()[0]) for a, b in (line.split("|", 1) for line in out.splitlines()
                                           if "|" in line)]


def _queued(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-t", "RUNNING", "-o", "%i"],
                         capture_output=True, text=True, timeout=20)
    return out.stdout.split() if out.returncode == 0 else []


def _tiles_done(store_path: Path) -> int:
    """Tiles flagged so far (0 while the reduce replaces the earlier kernel group)."""
    try:
        store = RunStore.open(store_path)
        if not store.has_kernel_array("done") or store.has_kernel():
            return 0
        return int(np.asarray(store.kernel_array("done")[...]).sum())
    except (KeyError, FileNotFoundError, StoreError):  # the group replaced between two reads
        return 0


def test_two_worker_jobs_one_cancelled_mid_reduce_give_the_threaded_bits(tmp_path):
    run = tmp_path / "run"
    planted_run(run, two_task_draws(200, 200, chains=2, draws=10), block=20)
    rundir = RunDir(run)
    data = rundir.read_config_dict()
    data["reduce"] = {"block_size": 20, "threads": 2}  # 210 tiles
    rundir.write_config(config_from_dict(data))
    reduce_as_configured(run)
    want = kernel_arrays(run)

    name = f"lk-{uuid.uuid4().hex[:8]}"
    data["reduce"].update(scheduler="slurm", workers=2, worker_cores=1, worker_mem_gb=1,
                          worker_walltime_min=10)
    data["slurm"] = {"job_name": name}
    rundir.write_config(config_from_dict(data))
    env = subprocess_env(LK_TEST_TASK_SLEEP_S="0.2", **DASK_ENV)
    proc = subprocess.Popen(losskernel_cmd("reduce", str(run)), env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers = f"{name}-dask"
    log_dir = run / "slurm" / "dask-workers"
    try:
        wait_until(lambda: _tiles_done(rundir.store) >= 30, 180, "30 tiles done", proc)
        running: list[str] = []

        def both_registered() -> bool:
            """Both worker jobs run and their workers joined the scheduler (dask-jobqueue
            notices only the loss of a worker that had joined: slurm/README.md)."""
            running[:] = _queued(workers)
            logs = [log_dir / f"{workers}-{job}.err" for job in running]
            return len(running) == 2 and all(
                log.is_file() and "Registered to" in log.read_text() for log in logs)

        wait_until(both_registered, 120, "2 worker jobs registered", proc, poll=0.5)
        subprocess.run(["scancel", running[0]], check=True, timeout=20)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["scancel", "-n", workers], timeout=20)
    assert proc.returncode == 0, out[-3000:]
    assert "reduce on dask cluster slurm (2 workers)" in out
    assert_same_arrays(kernel_arrays(run), want)
    record = rundir.open_store().reduce_record
    assert record["scheduler"] == "slurm" and record["workers_requested"] == 2
    assert record["tiles"] == 210 and record["tiles_resumed"] == 0
    jobs = dict(_jobs(workers))
    assert jobs[running[0]] == "CANCELLED", jobs
    assert len(jobs) >= 3, f"no worker job replaced the cancelled one: {jobs}"
    assert record["worker_processes_used"] >= 2, record
    logs = list(log_dir.glob(f"{workers}-*.err"))
    assert len(logs) >= 3, logs


def test_submit_runs_its_afterok_reduce_on_dask_jobqueue_workers(tmp_path):
    """``losskernel submit`` with reduce.scheduler slurm: the array, then the afterok reduce
    job, which is the driver of 2 worker jobs; the kernel is the threaded reduce's."""
    ref = tmp_path / "ref"
    name = f"lk-{uuid.uuid4().hex[:8]}"
    data = run_config(tmp_path / "run", chains=2, slurm={"cluster": "slurm", "job_name": name,
                                                          "chains_per_task": 1})
    data["reduce"].update(scheduler="slurm", workers=2, worker_mem_gb=1, worker_walltime_min=10)
    cfg = write_yaml(tmp_path / "config.yaml", data)
    sub = subprocess.run(losskernel_cmd("submit", str(cfg), "--wait", "--poll", "1"),
                         env=subprocess_env(**DASK_ENV, LK_TEST_TASK_SLEEP_S="0"), cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    record = submission_status(tmp_path / "run")
    try:
        assert sub.returncode == 0, sub.stdout + sub.stderr
    finally:
        subprocess.run(["scancel", "-n", name, "-n", f"{name}-dask"], timeout=20)
    deps = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j",
                           record["reduce_job_id"]], capture_output=True, text=True).stdout
    assert "COMPLETED" in deps
    # the driver's worker jobs ran the tiles (accounting may list them a few seconds late)
    wait_until(lambda: len(_jobs(f"{name}-dask")) >= 2, 60, "2 worker jobs in sacct", poll=1)
    reduce = RunDir(tmp_path / "run").open_store().reduce_record
    assert reduce["scheduler"] == "slurm" and reduce["workers_requested"] == 2

    # the same draws reduced on this process's threads
    ref_data = {**data, "output": str(ref)}
    ref_data["reduce"] = {**data["reduce"], "scheduler": "threads"}
    shutil.copytree(tmp_path / "run", ref, ignore=shutil.ignore_patterns("slurm"))
    RunDir(ref).write_config(config_from_dict(ref_data))
    reduce_as_configured(ref)
    assert_same_arrays(kernel_arrays(tmp_path / "run"), kernel_arrays(ref))
