"""The background writer: same store as synchronous writes, FIFO commits with backpressure,
failures surfaced in the main thread without false ``done`` flags, and a full drain on stop.

The kill-and-resume tests of tests/jobs/test_resume.py run with and without the writer too.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from losskernel_dist.checkpoint import load_chain
from losskernel_dist.cli import main as cli_main
from losskernel_dist.config import ConfigError, config_from_dict
from losskernel_dist.jobs.sample import sample
from losskernel_dist.jobs.signals import SamplingInterrupted
from losskernel_dist.jobs.writer import CommitQueue, WriterError
from losskernel_dist.rundir import RunDir
from losskernel_dist.sampler.host import host_array, host_tensors
from losskernel_dist.sampler.schedule import StepSchedule
from losskernel_dist.store import RunStore

from ..dist_helpers import assert_same_arrays, run_config, store_arrays, write_yaml

# ---------------------------------------------------------------------------- the queue itself


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_commits_run_in_hand_off_order(depth):
    made: list[int] = []
    with CommitQueue(depth) as writes:
        for i in range(20):
            writes.submit(lambda i=i: made.append(i), f"commit {i}")
    assert made == list(range(20))


def test_the_caller_waits_only_when_the_writer_is_depth_commits_behind():
    release = threading.Event()
    made: list[int] = []

    def blocked() -> None:
        release.wait(10)
        made.append(0)

    with CommitQueue(2) as writes:
        writes.submit(blocked, "blocked")  # taken by the writer, which then waits
        time.sleep(0.05)
        writes.submit(lambda: made.append(1), "one")
        writes.submit(lambda: made.append(2), "two")  # the queue is now full
        third = threading.Thread(target=writes.submit, args=(lambda: made.append(3), "three"))
        third.start()
        third.join(0.2)
        assert third.is_alive() and made == []  # backpressure: the third hand-off waits
        release.set()
        third.join(10)
    assert made == [0, 1, 2, 3]


@pytest.mark.parametrize("depth", [0, 2])
def test_a_failed_commit_is_raised_at_the_next_hand_off_and_stops_later_commits(depth):
    made: list[str] = []

    def fails() -> None:
        raise OSError(28, "No space left on device")

    writes = CommitQueue(depth)
    writes.submit(lambda: made.append("a"), "a")
    with pytest.raises(WriterError, match="writing draws 3-4 failed: OSError.*No space left"):
        writes.submit(fails, "draws 3-4")
        writes.drain()  # with a thread the failure may come at the next hand-off or here
    with pytest.raises(WriterError):
        writes.submit(lambda: made.append("b"), "b")
    writes.close()  # already reported: not raised again
    assert made == ["a"]


def test_a_failure_not_yet_reported_is_raised_when_the_block_ends():
    def fails() -> None:
        raise PermissionError("read-only store")

    with pytest.raises(WriterError, match="PermissionError") as info:
        with CommitQueue(2) as writes:
            writes.submit(fails, "the last commit")
    assert isinstance(info.value.__cause__, PermissionError)


def test_an_exception_in_the_loop_still_commits_what_was_handed_over():
    release = threading.Event()
    made: list[int] = []
    with pytest.raises(RuntimeError, match="a bug in the chain"):
        with CommitQueue(3) as writes:
            writes.submit(lambda: (release.wait(10), made.append(0)), "slow")
            writes.submit(lambda: made.append(1), "queued")
            release.set()
            raise RuntimeError("a bug in the chain")
    assert made == [0, 1]


def test_a_second_ctrl_c_drops_what_is_queued():
    release = threading.Event()
    made: list[int] = []
    writes = CommitQueue(3)
    with pytest.raises(KeyboardInterrupt):
        with writes:
            writes.submit(lambda: (release.wait(10), made.append(0)), "in progress")
            time.sleep(0.05)
            writes.submit(lambda: made.append(1), "queued")
            threading.Timer(0.1, release.set).start()
            raise KeyboardInterrupt
    assert made == [0]  # the commit in progress finished; the queued one was dropped


def test_write_queue_is_validated():
    data = run_config(Path("unused"), write_queue=-1)
    with pytest.raises(ConfigError, match="^sampler.write_queue"):
        config_from_dict(data)
    assert config_from_dict(run_config(Path("unused"))).sampler.write_queue == 4


def test_host_copies_are_owned():
    t = torch.arange(6.0)
    params = host_tensors({"w": t})
    t.add_(1.0)  # the chain goes on, in place
    assert params["w"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert host_array(torch.arange(3.0)).tolist() == [0.0, 1.0, 2.0]


@pytest.mark.gpu
def test_pinned_non_blocking_host_copies_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    t = torch.randn(100_000, device="cuda")
    want = t.cpu().numpy()
    got = host_array(t * 1.0)
    assert got.tobytes() == want.tobytes()
    params = host_tensors({"w": t, "b": t[:10]})
    t.add_(1.0)
    assert params["w"].is_pinned() and params["w"].device.type == "cpu"
    assert params["w"].numpy().tobytes() == want.tobytes()
    assert params["b"].numpy().tobytes() == want[:10].tobytes()


@pytest.mark.gpu
def test_the_writer_gives_the_same_store_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    out = {}
    for q in (0, 4):
        run = tmp_path / f"q{q}"
        sample(config_from_dict(run_config(run, chains=2, device="cuda", write_queue=q)),
               progress=False)
        out[q] = store_arrays(run)
    # Equal up to CUDA's run-to-run rounding (tests/jobs/test_distributed.py's tolerance): the
    # writer does not touch the compute, but CUDA does not promise bitwise repeatability.
    assert out[4]["done"].all() and (out[4]["done"] == out[0]["done"]).all()
    for name in ("losses", "train_loss"):
        np.testing.assert_allclose(out[4][name], out[0][name], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------- in sample


@pytest.mark.parametrize("batched", [1, 2])
def test_the_writer_thread_gives_the_bitwise_same_store(tmp_path, batched):
    out = {}
    for q in (0, 1, 4):
        run = tmp_path / f"q{q}"
        sample(config_from_dict(run_config(run, chains=3, write_queue=q,
                                           chains_per_batch=batched)), progress=False)
        out[q] = store_arrays(run)
        out[q]["distance"] = np.asarray(RunDir(run).open_store().distances())
    assert out[0]["done"].all()
    assert_same_arrays(out[1], out[0])
    assert_same_arrays(out[4], out[0])


def _losses_chunk(run: Path, chain: int) -> Path:
    """The file of ``chain``'s first losses chunk (the test runs have one chunk per chain)."""
    return RunDir(run).store / "losses" / "c" / str(chain) / "0" / "0"


@pytest.mark.parametrize("write_queue", [0, 4])
def test_a_failed_write_is_an_error_and_no_draw_is_claimed_done(tmp_path, capsys, write_queue):
    """The file system refuses chain 1's loss vectors (its chunk path is a directory): the
    error reaches the caller naming the commit, the draws are not marked done, the checkpoint
    stays before them, and once the path is writable a resume finishes the run unchanged."""
    run = tmp_path / "run"
    data = run_config(run, chains=2, write_queue=write_queue)
    sample(config_from_dict(data), chains=[0], progress=False)
    blocker = _losses_chunk(run, 1)
    blocker.mkdir(parents=True)
    cfg = write_yaml(tmp_path / "config.yaml", data)
    assert cli_main(["sample", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("losskernel: error: writing chain 1's draws 0-0 and checkpoint at "
                          "step 8 failed: IsADirectoryError"), err
    a = store_arrays(run)
    assert a["done"][0].all() and not a["done"][1].any()
    assert load_chain(run / "checkpoints", 1).step == 4  # the one commit before the failure
    assert not list((run / "locks").glob("*.lock"))

    blocker.rmdir()
    sample(config_from_dict(data), progress=False)
    reference = tmp_path / "reference"
    sample(config_from_dict(run_config(reference, chains=2, write_queue=0)), progress=False)
    assert_same_arrays(store_arrays(run), store_arrays(reference))


def test_a_stop_signal_commits_everything_queued(tmp_path, monkeypatch):
    """SIGTERM arrives while the writer is behind (its loss-vector writes are slowed down):
    sampling stops only after every commit handed over is made, so the chain's checkpoint
    sits exactly at its done draws and every loss vector written is marked done."""
    run = tmp_path / "run"
    data = run_config(run, chains=1, checkpoint_every=2, write_queue=3)
    real_write = RunStore.write_draws
    written: list[int] = []

    def slow_write_draws(self: RunStore, chain: int, first_draw: int, losses) -> None:
        if not written:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by sample's stop flag
        time.sleep(0.1)
        real_write(self, chain, first_draw, losses)
        written.extend(range(first_draw, first_draw + len(losses)))

    monkeypatch.setattr(RunStore, "write_draws", slow_write_draws)
    with pytest.raises(SamplingInterrupted, match="stopped by SIGTERM"):
        sample(config_from_dict(data), progress=False)
    done = store_arrays(run)["done"][0]
    state = load_chain(run / "checkpoints", 0)
    kept = StepSchedule.of(config_from_dict(data).sampler).draws_kept_by(state.step)
    assert done.tolist() == [d < kept for d in range(12)]
    assert sorted(written) == list(range(kept)) and kept >= 2
    monkeypatch.undo()
    sample(config_from_dict(data), progress=False)
    reference = tmp_path / "reference"
    sample(config_from_dict(run_config(reference, chains=1, checkpoint_every=2, write_queue=0)),
           progress=False)
    assert_same_arrays(store_arrays(run), store_arrays(reference))
