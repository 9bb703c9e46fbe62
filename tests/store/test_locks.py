"""Per-chain locks on their own: exclusion, re-entry, stale takeover, release."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from losskernel_dist.locks import ChainLocks, LockedError, holders, live_holders, lock_path


def _live_pid() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _write_holder(path, pid, host=None, started=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid,
                                "slurm_job": None, "started": started or time.time()}))


def test_locks_are_taken_and_released(tmp_path):
    with ChainLocks(tmp_path, [0, 2]) as locks:
        assert sorted(holders(tmp_path)) == [0, 2]
        assert locks.held
    assert holders(tmp_path) == {}


def test_a_live_holder_is_refused_by_name_and_nothing_is_kept(tmp_path):
    other = _live_pid()
    try:
        _write_holder(lock_path(tmp_path, 1), other.pid)
        with pytest.raises(LockedError, match=f"chain 1 .*pid {other.pid}"):
            ChainLocks(tmp_path, [0, 1]).acquire()
        assert sorted(holders(tmp_path)) == [1]  # chain 0's lock was released again
        assert sorted(live_holders(tmp_path)) == [1]
    finally:
        other.kill()
        other.wait()


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_holder(lock_path(tmp_path, 0), dead.pid)
    assert live_holders(tmp_path) == {}
    with ChainLocks(tmp_path, [0]):
        assert holders(tmp_path)[0].pid == os.getpid()


def test_a_silent_holder_on_another_host_goes_stale(tmp_path):
    path = lock_path(tmp_path, 0)
    _write_holder(path, 12345, host="elsewhere.invalid")
    assert 0 in live_holders(tmp_path)  # its heartbeat is fresh
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert live_holders(tmp_path) == {}
    with ChainLocks(tmp_path, [0]):
        assert holders(tmp_path)[0].host == socket.gethostname()
