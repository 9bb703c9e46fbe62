"""The background writer of ``sample``: commits run in order on one thread, off the compute path.

A commit is a callable that writes one chain's buffered draws, then its
checkpoint, then the draws' ``done`` flags (``commits.ChainWriter``). The
resume logic relies on that order per chain, and on every commit landing
after the ones handed over before it, so the queue is strictly FIFO with a
single consumer: the files on disk go through exactly the sequence of states
that synchronous writes would give, only later.

The queue is bounded (``sampler.write_queue`` commits): compute blocks only
when the writer is that many commits behind, which also bounds the memory
held by queued draws. Depth 0 runs every commit inline, as before.

A failed commit is never swallowed: the writer stops committing (later
commits could mark draws ``done`` past a hole or save checkpoints past it;
they are dropped, so the ``done`` mask never claims a draw that was not
written) and the error is raised in the calling thread at the next hand-off,
``drain`` or ``close``, as a ``WriterError`` naming the commit. Everything
handed over is committed before ``close`` returns, whether the loop ended
normally, by a stop signal or by an exception; only a ``KeyboardInterrupt``
(a second Ctrl-C: "stop now") drops what is still queued, which a resume
recomputes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType

from ..errors import WriterError

_STOP = object()



class CommitQueue:
    """Runs commits in hand-off order, on a background thread (``depth`` > 0) or inline (0).

    ``submit`` hands a commit over (blocking while ``depth`` commits are
    queued); ``drain`` waits until every commit handed over is made; ``close``
    drains and stops the thread. Each of them first raises the error of a
    failed commit, if any. Use as a context manager so that the thread is
    drained and stopped on every way out of the block.
    """

    def __init__(self, depth: int, name: str = "losskernel-writer") -> None:
        if depth < 0:
            raise ValueError(f"write queue depth must be >= 0, got {depth}")
        self.depth = depth
        self._error: WriterError | None = None
        self._reported = False
        self._discard = False
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        if depth:
            # A daemon, so that an abort in the main thread never waits on it at exit.
            self._thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ the writer thread
    def _run(self, commit: Callable[[], None], what: str) -> None:
        try:
            commit()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, not lost
            error = WriterError(f"writing {what} failed: {type(exc).__name__}: {exc}; "
                                "draws not marked done are recomputed on resume")
            error.__cause__ = exc
            self._error = error

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if self._error is None and not self._discard:
                    commit, what = item  # type: ignore[misc]
                    self._run(commit, what)
            finally:
                self._queue.task_done()

    # ------------------------------------------------------------------ the caller's side
    def _raise_error(self) -> None:
        if self._error is not None:
            self._reported = True
            raise self._error

    def submit(self, commit: Callable[[], None], what: str) -> None:
        """Hand ``commit`` over; ``what`` names it in an error. Raises an earlier failure.

        The commit must own its data: the caller may change anything it did not copy.
        """
        self._raise_error()
        if self._thread is None:
            self._run(commit, what)
            self._raise_error()
        else:
            self._queue.put((commit, what))

    def drain(self) -> None:
        """Wait until every commit handed over is made; raise the first failure."""
        if self._thread is not None:
            self._queue.join()
        self._raise_error()

    def close(self) -> None:
        """Drain, stop the thread and raise the first failure (if not raised before)."""
        self._stop()
        if not self._reported:
            self._raise_error()

    def _stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._thread = None

    def __enter__(self) -> CommitQueue:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._discard = True  # stop now: queued commits are dropped, the run stays consistent
            self._stop()
            return
        # Normal end, stop signal or exception: commit what was handed over. A writer
        # failure not yet raised is raised here (chained to an exception in flight).
        self.close()
