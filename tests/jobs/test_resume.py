"""Checkpoints and resume: runs killed or stopped at any point finish bit-identical (CPU).

The reference is one uninterrupted in-process run; every interrupted run is
compared with it bitwise: ``losses``, ``done``, ``train_loss``, ``chain_status``
and the reduced kernel.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from losskernel_dist.checkpoint import ChainState, chain_path, load_chain, restore, save_chain
from losskernel_dist.cli import main as cli_main
from losskernel_dist.config import config_from_dict
from losskernel_dist.errors import RunDirError
from losskernel_dist.jobs.resume import covered
from losskernel_dist.jobs.sample import sample
from losskernel_dist.locks import holders
from losskernel_dist.sampler.schedule import StepSchedule

from ..dist_helpers import (
    REPO,
    SLOW_TARGET,
    assert_same_arrays,
    done_count,
    kernel_arrays,
    losskernel_cmd,
    reduce_as_configured,
    run_config,
    store_arrays,
    subprocess_env,
    wait_until,
    write_yaml,
)

CHAINS = 2  # the resume tests' runs: 2 chains x 12 draws, 30 SGLD steps each
WRITE_QUEUES = [0, 4]  # synchronous commits, and the background writer (sampler.write_queue)


def _reduce(run_dir: Path) -> None:
    reduce_as_configured(run_dir)  # as the CLI and the submitted reduce job do


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """Arrays and kernel of the uninterrupted run (the linear task; slow_linear is identical)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    sample(config_from_dict(run_config(run, chains=CHAINS, write_queue=0)), progress=False)
    _reduce(run)
    return {"arrays": store_arrays(run), "kernel": kernel_arrays(run)}


def _check_against(run: Path, reference: dict) -> None:
    assert_same_arrays(store_arrays(run), reference["arrays"])
    _reduce(run)
    assert_same_arrays(kernel_arrays(run), reference["kernel"])


# ---------------------------------------------------------------------------- checkpoint files


def _state(chain: int, step: int, value: float = 1.0) -> ChainState:
    return ChainState(chain, step, {"w": torch.full((3,), value), "b": torch.zeros(2)}, "key")


def test_checkpoint_round_trip_and_previous_kept(tmp_path):
    save_chain(tmp_path, _state(0, 4, 1.0))
    save_chain(tmp_path, _state(0, 8, 2.0))
    state = load_chain(tmp_path, 0)
    assert (state.chain, state.step, state.fingerprint) == (0, 8, "key")
    assert torch.equal(state.params["w"], torch.full((3,), 2.0))
    assert torch.load(chain_path(tmp_path, 0).with_suffix(".prev"), weights_only=True)["step"] == 4
    assert load_chain(tmp_path, 1) is None


def test_truncated_checkpoint_falls_back_to_previous(tmp_path):
    save_chain(tmp_path, _state(0, 4))
    path = save_chain(tmp_path, _state(0, 8))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.warns(UserWarning, match="unreadable"):
        assert load_chain(tmp_path, 0).step == 4


def test_kill_between_the_two_renames_leaves_the_previous_state(tmp_path):
    save_chain(tmp_path, _state(0, 4))
    path = save_chain(tmp_path, _state(0, 8))
    path.unlink()  # what a kill after "current -> .prev" and before "tmp -> current" leaves
    assert load_chain(tmp_path, 0).step == 4


class _RunsCode:
    """An object whose unpickling would create a file (what weights_only must refuse)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_cannot_run_code(tmp_path):
    save_chain(tmp_path, _state(0, 4))
    save_chain(tmp_path, _state(0, 8))
    marker = tmp_path / "code_ran"
    path = chain_path(tmp_path, 0)
    torch.save({"chain": 0, "step": 12, "fingerprint": "key", "params": {},
                "x": _RunsCode(marker)}, path)
    with pytest.warns(UserWarning, match="unreadable"):
        state = load_chain(tmp_path, 0)
    assert state.step == 4
    assert not marker.exists()


def test_restore_promotes_an_accepted_previous_state_and_cleans_up(tmp_path):
    save_chain(tmp_path, _state(0, 4))
    save_chain(tmp_path, _state(0, 8))
    tmp = chain_path(tmp_path, 0).with_suffix(".tmp12345")
    tmp.write_bytes(b"half a checkpoint")
    state = restore(tmp_path, 0, lambda s: s.step <= 4)
    assert state.step == 4
    assert load_chain(tmp_path, 0).step == 4
    assert not chain_path(tmp_path, 0).with_suffix(".prev").exists()
    assert not tmp.exists()
    assert restore(tmp_path, 0, lambda s: False) is None
    assert not list(tmp_path.iterdir())


def test_a_state_is_resumable_only_when_its_draws_are_done():
    schedule = StepSchedule.of(config_from_dict(run_config(Path("unused"))).sampler)
    assert (schedule.burnin_steps, schedule.steps_between_draws) == (6, 2)
    assert [schedule.draws_kept_by(s) for s in (0, 5, 6, 7, 8, 9, 10, 30)] == \
        [0, 0, 0, 0, 1, 1, 2, 12]
    done = np.zeros(12, bool)
    assert covered(schedule, done, 6)
    assert not covered(schedule, done, 8)
    done[:2] = True
    assert covered(schedule, done, 10) and not covered(schedule, done, 12)


# ---------------------------------------------------------------------------- kills and signals


@pytest.mark.slow
@pytest.mark.parametrize("write_queue", WRITE_QUEUES)
def test_sigkill_at_each_commit_point_then_resume_is_bitwise_identical(tmp_path, reference,
                                                                       write_queue):
    """Six SIGKILLs in a row (burn-in, mid-draw, mid-checkpoint-write, between checkpoint and
    done flags, ...), each followed by a resume: the finished run equals the uninterrupted one.
    The background writer makes the same writes in the same order, so the states left by the
    kills are the same with it (the kill points are reached on the writer thread)."""
    run = tmp_path / "run"
    cfg = write_yaml(tmp_path / "config.yaml",
                     run_config(run, chains=CHAINS, write_queue=write_queue))
    ckpt = run / "checkpoints"

    def killed_at(point: str, count: int) -> dict[str, np.ndarray]:
        proc = subprocess.run(
            [sys.executable, str(REPO / "tests" / "kill_at.py"), point, str(count),
             "sample", str(cfg), "--no-progress"],
            env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=180,
        )
        assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr[-3000:])
        return store_arrays(run)

    def step(chain: int) -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_chain(ckpt, chain).step

    # 1. During burn-in (6 steps): killed right after chain 0's first checkpoint (step 4).
    a = killed_at("checkpoint_saved", 1)
    assert step(0) == 4 and not a["done"].any()
    # 2. Mid-draw: draws 1-2 of chain 0 written (step 12), neither checkpointed nor done.
    a = killed_at("draws_written", 2)
    assert step(0) == 8 and a["done"][0].tolist()[:4] == [True, False, False, False]
    assert np.isfinite(a["losses"][0, 1:3]).all()
    # 3. During a checkpoint write: half the temporary file is on disk, nothing renamed.
    a = killed_at("checkpoint_write", 1)
    assert list(ckpt.glob("chain_00000.tmp*")) and step(0) == 8
    assert int(a["done"][0].sum()) == 1
    # 4. Checkpoint (step 16) saved, its done flags not: the resume must step back.
    a = killed_at("checkpoint_saved", 2)
    assert step(0) == 16 and int(a["done"][0].sum()) == 3  # draws kept by step 16: 5
    # 5. Just after done flags (step 24).
    a = killed_at("done_marked", 3)
    assert step(0) == 24 and int(a["done"][0].sum()) == 9
    # 6. Chain 0 finished, chain 1 killed in its burn-in.
    a = killed_at("checkpoint_saved", 3)
    assert a["done"][0].all() and not a["done"][1].any() and step(1) == 4
    assert not holders(run / "locks") or all(h.stale() for h in holders(run / "locks").values())
    # The last resume, in this process, finishes the run.
    sample(config_from_dict(run_config(run, chains=CHAINS, write_queue=write_queue)),
           progress=False)
    _check_against(run, reference)


@pytest.mark.slow
@pytest.mark.parametrize("write_queue", WRITE_QUEUES)
def test_sigkill_from_outside_at_an_arbitrary_moment(tmp_path, reference, write_queue):
    """No hooks: SIGKILL whenever a few draws are done, then resume."""
    run = tmp_path / "run"
    cfg = write_yaml(tmp_path / "config.yaml",
                     run_config(run, chains=CHAINS, target=SLOW_TARGET, write_queue=write_queue))
    proc = subprocess.Popen(losskernel_cmd("sample", str(cfg), "--no-progress"), cwd=REPO,
                            env=subprocess_env(LK_TEST_SLEEP_S="0.02"), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: done_count(run) >= 5, 120, "5 done draws", proc)
    finally:
        proc.kill()
        proc.wait()
    assert 5 <= done_count(run) < CHAINS * 12
    sample(config_from_dict(run_config(run, chains=CHAINS, target=SLOW_TARGET)), progress=False)
    _check_against(run, reference)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "write_queue"), [(signal.SIGTERM, 0), (signal.SIGTERM, 4),
                                                  (signal.SIGINT, 4)])
def test_stop_signal_checkpoints_cleanly_and_exits_75(tmp_path, reference, sig, write_queue):
    run = tmp_path / "run"
    data = run_config(run, chains=CHAINS, target=SLOW_TARGET, write_queue=write_queue)
    cfg = write_yaml(tmp_path / "config.yaml", data)
    proc = subprocess.Popen(losskernel_cmd("sample", str(cfg), "--no-progress"), cwd=REPO,
                            env=subprocess_env(LK_TEST_SLEEP_S="0.02"), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: done_count(run, [0]) >= 3, 120, "3 done draws", proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 75, err
    assert f"stopped by {signal.Signals(sig).name} after checkpointing" in err
    assert not list((run / "locks").glob("*.lock"))
    # A clean stop leaves the chain's checkpoint exactly at its done draws.
    schedule = StepSchedule.of(config_from_dict(data).sampler)
    state = load_chain(run / "checkpoints", 0)
    done = store_arrays(run)["done"][0]
    assert state.step < schedule.total_steps
    assert done.tolist() == [d < schedule.draws_kept_by(state.step) for d in range(12)]
    sample(config_from_dict(data), progress=False)
    _check_against(run, reference)


@pytest.mark.slow
def test_submitit_local_requeue_after_usr2(tmp_path, reference):
    """`losskernel submit` on submitit's local executor: USR2 to a running task checkpoints it,
    submitit requeues it, it resumes, and the finished (and reduced) store is identical."""
    run = tmp_path / "run"
    data = run_config(run, chains=CHAINS, target=SLOW_TARGET, slurm={"chains_per_task": 1})
    cfg = write_yaml(tmp_path / "config.yaml", data)
    proc = subprocess.Popen(losskernel_cmd("submit", str(cfg), "--poll", "0.5"), cwd=REPO,
                            env=subprocess_env(LK_TEST_SLEEP_S="0.05"), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: 0 in holders(run / "locks") and done_count(run, [0]) >= 2, 120,
                   "chain 0 running with 2 done draws", proc)
        pid = holders(run / "locks")[0].pid
        assert done_count(run, [0]) < 12, "chain 0 finished before it could be signalled"
        os.kill(pid, signal.SIGUSR2)
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    logs = "".join(p.read_text() for p in sorted((run / "slurm").rglob("*_log.*")))
    assert "stopped by SIGUSR2 after checkpointing" in logs, logs[-3000:]
    assert "Requeued job" in logs, logs[-3000:]  # submitit's own handler ran after ours
    assert (run / "slurm" / "submission.json").is_file()
    assert_same_arrays(store_arrays(run), reference["arrays"])
    assert_same_arrays(kernel_arrays(run), reference["kernel"])  # reduced by submit


def test_changed_draw_key_on_resume_is_refused_naming_it(tmp_path, capsys):
    run = tmp_path / "run"
    data = run_config(run, chains=1, draws=4, burnin_steps=2, steps_between_draws=1)
    sample(config_from_dict(data), progress=False)
    before = store_arrays(run)
    changed = run_config(run, chains=1, draws=4, burnin_steps=2, steps_between_draws=1, lr=2e-3)
    with pytest.raises(RunDirError, match=r"sampler\.lr: 0\.001 -> 0\.002"):
        sample(config_from_dict(changed), progress=False)
    cfg = write_yaml(tmp_path / "changed.yaml", changed)
    assert cli_main(["sample", str(cfg), "--no-progress"]) == 2
    assert "sampler.lr" in capsys.readouterr().err
    assert_same_arrays(store_arrays(run), before)
    # Keys that do not change the draws may change.
    fine = run_config(run, chains=1, draws=4, burnin_steps=2, steps_between_draws=1,
                      checkpoint_every=1)
    sample(config_from_dict(fine), progress=False)
    assert_same_arrays(store_arrays(run), before)
