"""Per-chain locks: one live writer per chain, surviving crashes of the holder.

A lock is a file created exclusively, naming the holder's host and pid. A lock
whose holder was on this host and is no longer alive is stale and is taken
over; a live holder, or one on another host, makes the request fail with a
message that names it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


class LockedError(RuntimeError):
    """Another live process is writing the same chain."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ChainLocks:
    """Exclusive locks on a set of chains of one run; release on exit or ``release()``."""

    def __init__(self, directory: Path, chains: list[int]) -> None:
        self.directory = Path(directory)
        self.chains = list(chains)
        self.held: list[Path] = []
        self.me = f"{socket.gethostname()} {os.getpid()}"

    def _path(self, chain: int) -> Path:
        return self.directory / f"chain_{chain:05d}.lock"

    def acquire(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            for chain in self.chains:
                self._acquire_one(chain)
        except BaseException:
            self.release()
            raise

    def _acquire_one(self, chain: int) -> None:
        path = self._path(chain)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = path.read_text().strip()
                except FileNotFoundError:
                    continue
                host, _, pid = holder.partition(" ")
                if holder == self.me:
                    return
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    path.unlink(missing_ok=True)  # stale: its holder died
                    continue
                raise LockedError(
                    f"chain {chain} is being sampled by another process ({holder}); "
                    f"if that process is gone, remove {path}"
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(self.me)
            self.held.append(path)
            return
        raise LockedError(f"could not lock chain {chain} at {path}")

    def release(self) -> None:
        for path in self.held:
            path.unlink(missing_ok=True)
        self.held = []

    def __enter__(self) -> ChainLocks:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
