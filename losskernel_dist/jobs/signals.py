"""Stop signals of the ``sample`` job: a clean checkpoint instead of a killed process.

Stop signals (SIGTERM, SIGUSR2, SIGINT) do not kill the process while
``sample`` runs: they set a flag that the chain reads after every SGLD step;
the chain then yields a checkpoint, the writer commits it after everything
queued before it, and ``sample`` raises ``SamplingInterrupted`` once every
handler it replaced is back in place (so that a caller such as a submitit
task can hand the signal on). A second SIGINT aborts at once (commits still
queued are dropped; the run stays consistent and a resume recomputes them).
"""

from __future__ import annotations

import signal
import sys
import threading
import types

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


class SamplingInterrupted(RuntimeError):
    """A stop signal ended sampling early; every chain it stopped was checkpointed first."""

    def __init__(self, signum: int, unfinished: list[int]) -> None:
        self.signum = signum
        self.unfinished = unfinished
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} after checkpointing; chains {unfinished} are unfinished: "
            "run 'losskernel sample' again to resume"
        )


class StopSignals:
    """While active, SIGTERM / SIGUSR2 / SIGINT set a flag instead of ending the process.

    The previous handlers are saved on entry and restored on exit. Handlers can
    only be installed from the main thread; elsewhere the object is inert.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        if self.signum is None:
            self.signum = signum
            print(f"losskernel: {signal.Signals(signum).name} received: checkpointing and "
                  "stopping after the current SGLD step", file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous = {}
