"""What one commit of a chain writes, and in which order: the order resume relies on.

Commit order for each chain, at every checkpoint point: the buffered loss
vectors are written, then the chain state is checkpointed (atomically), then
the draws' ``done`` flags are set. A kill at any instant leaves a consistent
run, because resuming starts from the newest checkpoint that every draw kept
at or before its step is ``done`` for (``resume.covered``); a checkpoint saved
just before a kill that beat the ``done`` flags is passed over for the
previous one (or for the chain's start), and the draws after it are
rewritten. Every draw is a function of (seed, chain, step) alone, so a
rewritten draw is bit-identical to the one that was lost.

The commits are made by one background writer thread (``writer.py``), in
the order they are handed over, so the sequence of states on disk is the one
above; the chain only waits when the writer is ``sampler.write_queue``
commits behind (0: every commit is made inline). What is handed over is
copied first (``sampler/host.py``), and everything handed over is committed
before ``sample`` returns or raises, and before a diverged chain's partners
are resumed from their checkpoints.

``save_chain`` is looked up in this module's namespace when a commit runs,
so a test (``tests/kill_at.py``) can wrap it here to stop the process at an
exact point of the sequence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checkpoint import ChainState, save_chain
from ..rundir import RunDir
from ..sampler.chain import ChainEvent
from ..sampler.host import host_tensors
from ..store import RunStore
from .writer import CommitQueue


class ChainWriter:
    """Buffers one chain's draws and training losses and hands them to the writer in commits.

    Commit: the buffered training losses and loss vectors are written, then (at
    a checkpoint event) the chain state is saved, then the draws' ``done``
    flags are set. Buffering turns per-draw store writes into one write per
    chunk row. Everything buffered is a copy, so a commit still queued is not
    changed by the chain going on.
    """

    MAX_BUFFER_BYTES = 64 * 1024 * 1024

    def __init__(self, store: RunStore, chain: int, run_dir: Path, ckpt_key: str,
                 writes: CommitQueue | None = None) -> None:
        self.store, self.chain, self.run_dir, self.ckpt_key = store, chain, run_dir, ckpt_key
        self.writes = writes if writes is not None else CommitQueue(0)
        self.draws: list[int] = []
        self.losses: list[np.ndarray] = []
        self.distances: list[float] = []
        self.nbytes = 0
        self.train_start: int | None = None
        self.train: list[np.ndarray] = []

    def add(self, event: ChainEvent) -> None:
        if self.train_start is None:
            self.train_start = event.train_start
        self.train.append(np.array(event.train_loss, copy=True))
        if event.draw is not None and event.losses is not None:
            self.draws.append(event.draw)
            self.losses.append(np.array(event.losses, copy=True))
            self.distances.append(np.nan if event.distance is None else event.distance)
            self.nbytes += self.losses[-1].nbytes
        if event.params is not None or self.nbytes > self.MAX_BUFFER_BYTES:
            self.commit(event)

    def commit(self, event: ChainEvent | None = None) -> None:
        """Hand what is buffered (and ``event``'s checkpoint, if it has one) to the writer."""
        train = np.concatenate(self.train) if self.train else None
        state = None
        if event is not None and event.params is not None:
            state = ChainState(self.chain, event.step, host_tensors(event.params), self.ckpt_key)
        draws, losses, distances = self.draws, self.losses, self.distances
        train_start = self.train_start
        self.train, self.train_start = [], None
        self.draws, self.losses, self.distances, self.nbytes = [], [], [], 0
        if train is None and not draws and state is None:
            return
        parts = [f"draws {draws[0]}-{draws[-1]}"] if draws else ["training losses"]
        if state is not None:
            parts.append(f"checkpoint at step {state.step}")
        what = f"chain {self.chain}'s " + " and ".join(parts)
        self.writes.submit(
            lambda: self._write(train_start, train, draws, losses, distances, state), what
        )

    def _write(
        self,
        train_start: int | None,
        train: np.ndarray | None,
        draws: list[int],
        losses: list[np.ndarray],
        distances: list[float],
        state: ChainState | None,
    ) -> None:
        """One commit, in the order resume relies on (module doc); runs on the writer thread."""
        if train is not None:
            self.store.write_train_loss(self.chain, train_start, train)
        for first, last in _runs(draws):
            rows = np.stack(losses[first : last + 1])
            self.store.write_draws(self.chain, draws[first], rows)
            self.store.write_draw_summaries(
                self.chain, draws[first], np.asarray(distances[first : last + 1]),
                rows.mean(axis=1, dtype=np.float64),
            )
        self.store.sync_draws(self.chain, draws)  # on disk before anything relies on them
        if state is not None:
            save_chain(RunDir(self.run_dir).checkpoints, state)
        if draws:
            self.store.mark_done(self.chain, draws)


def _runs(draws: list[int]) -> list[tuple[int, int]]:
    """Index ranges [first, last] of consecutive draw numbers in ``draws``."""
    out, start = [], 0
    for i in range(1, len(draws) + 1):
        if i == len(draws) or draws[i] != draws[i - 1] + 1:
            out.append((start, i - 1))
            start = i
    return out if draws else []
