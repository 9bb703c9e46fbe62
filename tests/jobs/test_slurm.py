"""The real SLURM path on the project's test cluster (``bash slurm/test-cluster.sh``).

Job arrays through ``losskernel submit``, preemption simulated with
``scancel --signal=USR2``, a failed array task reported with its reduce job
cancelled, and the sbatch template (torchrun inside one allocation) stopped and
requeued. Every finished store is compared bitwise with an uninterrupted local
run. The tests skip, saying why, unless ``scontrol ping`` reports UP and
``sacct`` works.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from losskernel_dist.config import config_from_dict
from losskernel_dist.jobs.info import format_info, run_info
from losskernel_dist.jobs.sample import sample
from losskernel_dist.jobs.submission import submission_status

from ..dist_helpers import (
    REPO,
    SLOW_TARGET,
    assert_same_arrays,
    done_count,
    kernel_arrays,
    losskernel_cmd,
    poisoned_config,
    reduce_as_configured,
    run_config,
    run_losskernel,
    store_arrays,
    subprocess_env,
    wait_until,
    write_yaml,
)

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def _cluster_problem() -> str | None:
    """Why the test cluster cannot be used, or None when it is up with accounting."""
    if shutil.which("scontrol") is None or shutil.which("sbatch") is None:
        return "SLURM is not installed (start it with: bash slurm/test-cluster.sh)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
        if "is UP" not in ping.stdout:
            return f"slurmctld is not up ({ping.stdout.strip() or ping.stderr.strip()}); " \
                   "start it with: bash slurm/test-cluster.sh"
        acct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, text=True,
                              timeout=15)
        if acct.returncode:
            return f"sacct does not work ({acct.stderr.strip()}): submitit needs accounting"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot reach SLURM: {exc}"
    return None


PROBLEM = _cluster_problem()
pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]

CHAINS = 2


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """The uninterrupted local run (slow_linear computes the same numbers as linear)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    sample(config_from_dict(run_config(run, chains=CHAINS)), progress=False)
    reduce_as_configured(run)  # as the submitted reduce job does
    return {"arrays": store_arrays(run), "kernel": kernel_arrays(run)}


def _sacct(job: str, duplicates: bool = False) -> list[tuple[str, str]]:
    cmd = ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", job]
    if duplicates:
        cmd.append("--duplicates")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    return [(a, b.split()[0] if b.strip() else "") for a, b in
            (line.split("|", 1) for line in out.splitlines() if "|" in line)]


def _wait_for_state(job: str, timeout: float) -> str:
    """Poll sacct until ``job`` is in a final state; returns it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        states = dict(_sacct(job))
        if states.get(job) in FINAL:
            return states[job]
        time.sleep(1)
    raise AssertionError(f"job {job} not finished after {timeout} s: {_sacct(job, True)}")


def test_job_array_preempted_with_usr2_requeues_and_matches_a_local_run(tmp_path, reference):
    run = tmp_path / "run"
    data = run_config(run, chains=CHAINS, target=SLOW_TARGET,
                      slurm={"cluster": "slurm", "chains_per_task": 1, "time_min": 10})
    cfg = write_yaml(tmp_path / "config.yaml", data)
    env = subprocess_env(LK_TEST_SLEEP_S="0.05")
    sub = subprocess.run(losskernel_cmd("submit", str(cfg)), env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert sub.returncode == 0, sub.stderr
    record = submission_status(run)
    task0, reduce_id = record["tasks"][0]["job_id"], record["reduce_job_id"]
    assert [t["chains"] for t in record["tasks"]] == [[0], [1]]
    try:
        wait_until(lambda: done_count(run, [0]) >= 2, 180, "chain 0 running on SLURM")
        assert done_count(run, [0]) < 12, "chain 0 finished before it could be preempted"
        subprocess.run(["scancel", "--signal=USR2", task0], check=True, timeout=20)
        assert _wait_for_state(reduce_id, 300) == "COMPLETED"
    finally:
        subprocess.run(["scancel", record["array_job_id"], reduce_id], timeout=20)
    assert "REQUEUED" in {state for _, state in _sacct(task0, duplicates=True)}
    logs = "".join(p.read_text() for p in sorted((run / "slurm").rglob("*_log.*")))
    assert "stopped by SIGUSR2 after checkpointing" in logs and "Requeued job" in logs
    assert_same_arrays(store_arrays(run), reference["arrays"])
    assert_same_arrays(kernel_arrays(run), reference["kernel"])  # from the afterok reduce job
    info = run_info(run)
    assert {t["state"] for t in info["slurm"]["tasks"]} == {"COMPLETED"}
    assert [c["state"] for c in info["per_chain"]] == ["done", "done"]


def test_failed_array_task_is_reported_and_its_reduce_job_cancelled(tmp_path):
    run = tmp_path / "run"
    data, fault = poisoned_config(run, chains=2, victim=1, cluster="slurm", chains_per_task=1)
    cfg = write_yaml(tmp_path / "config.yaml", data)
    proc = run_losskernel("submit", str(cfg), "--wait", "--poll", "1", timeout=300)
    record = submission_status(run)
    try:
        assert proc.returncode == 4, proc.stdout + proc.stderr
        task1 = record["tasks"][1]["job_id"]
        assert f"array task {task1} (chains [1]) FAILED" in proc.stdout, proc.stdout
        assert f"chain 1 diverged at step {fault}" in proc.stdout
        assert "1 job(s) failed" in proc.stderr
        assert _wait_for_state(record["reduce_job_id"], 60) == "CANCELLED"
    finally:
        subprocess.run(["scancel", record["array_job_id"], record["reduce_job_id"]], timeout=20)
    a = store_arrays(run)
    assert a["chain_status"].tolist() == [0, 1] and a["done"][0].all()
    assert _wait_for_state(task1, 60) == "FAILED"  # info reads it from accounting, which may lag
    text = format_info(run_info(run))
    assert f"array tasks ['{task1}'] did not succeed" in text, text
    assert f"chain 1 diverged at step {fault}" in text


def test_sbatch_torchrun_template_stops_requeues_and_resumes(tmp_path, reference):
    """slurm/torchrun.sbatch with 2 CPU ranks: USR2 to the batch script checkpoints both ranks,
    the job requeues itself, and the finished run (sampled and reduced) is identical."""
    run = tmp_path / "run"
    cfg = write_yaml(tmp_path / "config.yaml",
                     run_config(run, chains=CHAINS, target=SLOW_TARGET))
    env = subprocess_env(LK_TEST_SLEEP_S="0.1", LOSSKERNEL_NPROC_PER_NODE="2",
                         PYTHON=sys.executable)
    out = tmp_path / "job-%j.out"
    job = subprocess.run(
        ["sbatch", "--parsable", "--gpus-per-node=0", "--cpus-per-task=2", "--time=10",
         f"--output={out}", str(REPO / "slurm" / "torchrun.sbatch"), str(cfg)],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()
    try:
        wait_until(lambda: done_count(run, [0]) >= 2, 180, "the ranks sampling")
        assert done_count(run) < 2 * 12, "the run finished before it could be preempted"
        subprocess.run(["scancel", "--batch", "--signal=USR2", job], check=True, timeout=20)
        assert _wait_for_state(job, 300) == "COMPLETED"
    finally:
        subprocess.run(["scancel", job], timeout=20)
    log = Path(str(out).replace("%j", job)).read_text()
    assert "stopped by SIGTERM after checkpointing" in log and "requeued job" in log, log
    assert "(restart 1)" in log
    assert_same_arrays(store_arrays(run), reference["arrays"])
    assert_same_arrays(kernel_arrays(run), reference["kernel"])
