"""Per-chain locks: one live writer per chain, surviving crashes of the holder.

A lock is a file created exclusively (``O_EXCL``) holding JSON that names its
holder: host, pid, SLURM job (when there is one) and start time. While held,
a daemon thread touches the files every ``HEARTBEAT_S`` seconds, so their
modification time says the holder is alive even where its pid cannot be
checked (another node). A lock is *stale*, and is taken over, when

- its holder was on this host and its pid is gone, or
- its holder was on another host and its heartbeat is older than ``STALE_S``, or
- its holder was an earlier run of this very SLURM job (a requeued array task:
  SLURM never runs two instances of one job, so the earlier one is dead).

Anything else (a live holder) makes the request fail with a message naming it.
Checking and taking over happen under an ``flock`` on a guard file, so two
processes that both find a stale lock cannot both take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LockedError

HEARTBEAT_S = 15.0  # how often a holder touches its lock files
STALE_S = 120.0  # a lock from another host with an older heartbeat is stale



def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _slurm_job() -> str | None:
    """This process's SLURM job as ``JOBID`` (array tasks have their own), or None."""
    return os.environ.get("SLURM_JOB_ID") or None


@dataclass(frozen=True)
class Holder:
    """Who holds a chain lock, as read from its file."""

    host: str
    pid: int
    slurm_job: str | None
    heartbeat: float  # the file's mtime (seconds since the epoch)

    @property
    def name(self) -> str:
        job = f", SLURM job {self.slurm_job}" if self.slurm_job else ""
        return f"host {self.host} pid {self.pid}{job}"

    def stale(self, now: float | None = None) -> bool:
        """True when the holder is certainly or very probably gone (see the module doc)."""
        now = time.time() if now is None else now
        if self.host == socket.gethostname():
            return not _alive(self.pid)
        if self.slurm_job is not None and self.slurm_job == _slurm_job():
            return True
        return now - self.heartbeat > STALE_S


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in a lock file; None when the file is gone or unreadable."""
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except (FileNotFoundError, PermissionError):
        return None
    try:
        data: dict[str, Any] = json.loads(text)
        return Holder(str(data["host"]), int(data["pid"]), data.get("slurm_job"), mtime)
    except (ValueError, KeyError, TypeError):
        return Holder("?", -1, None, mtime)  # torn or foreign content: judge by heartbeat


def lock_path(directory: Path, chain: int) -> Path:
    return Path(directory) / f"chain_{chain:05d}.lock"


def holders(directory: Path) -> dict[int, Holder]:
    """Every chain lock present in ``directory``, by chain (live or stale)."""
    out = {}
    for path in sorted(Path(directory).glob("chain_*.lock")):
        holder = read_holder(path)
        stem = path.stem.removeprefix("chain_")
        if holder is not None and stem.isdigit():
            out[int(stem)] = holder
    return out


def live_holders(directory: Path) -> dict[int, Holder]:
    """The chain locks in ``directory`` whose holders are alive."""
    return {c: h for c, h in holders(directory).items() if not h.stale()}


@contextmanager
def _guard(directory: Path) -> Iterator[None]:
    """An flock serialising lock acquisition and takeover within ``directory``."""
    fd = os.open(directory / ".guard", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock: O_EXCL alone still excludes writers
            pass
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


class ChainLocks:
    """Exclusive locks on a set of chains of one run; release on exit or ``release()``."""

    def __init__(self, directory: Path, chains: list[int]) -> None:
        self.directory = Path(directory)
        self.chains = list(chains)
        self.held: list[Path] = []
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> str:
        return json.dumps({
            "host": self.host, "pid": self.pid, "slurm_job": _slurm_job(), "started": time.time(),
        })

    def acquire(self) -> None:
        """Lock every chain or none: raises LockedError naming a live holder."""
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            with _guard(self.directory):
                for chain in self.chains:
                    self._acquire_one(chain)
        except BaseException:
            self.release()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="losskernel-lock-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _acquire_one(self, chain: int) -> None:
        path = lock_path(self.directory, chain)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_holder(path)
                if holder is None:
                    continue
                if holder.host == self.host and holder.pid == self.pid:
                    self.held.append(path)
                    return
                if holder.pid < 0 or holder.stale():  # unparseable under the guard: torn by a kill
                    path.unlink(missing_ok=True)
                    continue
                raise LockedError(
                    f"chain {chain} is being sampled by another live process ({holder.name}); "
                    f"if that process is gone, remove {path}"
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(self._content())
                fh.flush()
                os.fsync(fh.fileno())
            self.held.append(path)
            return
        raise LockedError(f"could not lock chain {chain} at {path}")

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            for path in list(self.held):
                try:
                    os.utime(path)
                except OSError:  # gone, or a file system turned read-only: the run's own
                    pass  # writes report that; a thread's traceback would only add noise

    def release(self) -> None:
        """Stop the heartbeat and remove the lock files this object holds.

        Never raises: it runs on the way out of a run, often while another exception
        is in flight (a full or read-only file system), which an OSError here would
        mask. Lock files that cannot be removed are reported in one line on stderr;
        their holder (this process) is dead once it exits, so the next run takes them over.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        failed: list[tuple[Path, OSError]] = []
        for path in self.held:
            try:
                holder = read_holder(path)
                if holder is not None and holder.host == self.host and holder.pid == self.pid:
                    path.unlink(missing_ok=True)
            except OSError as exc:
                failed.append((path, exc))
        self.held = []
        if failed:
            path, exc = failed[0]
            what = str(path) if len(failed) == 1 else f"{len(failed)} locks in {path.parent}"
            print(f"losskernel: warning: could not remove {what} ({exc.strerror or exc}); "
                  "the next run takes them over", file=sys.stderr)

    def __enter__(self) -> ChainLocks:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
