"""Run ``losskernel`` and SIGKILL it at an exact point of the commit sequence (a test helper).

    python tests/kill_at.py POINT COUNT LOSSKERNEL_ARGS...

The process kills itself with SIGKILL the COUNT-th time it reaches POINT:

- ``draws_written``: just after loss vectors were written (not checkpointed, not done);
- ``checkpoint_write``: in the middle of writing a checkpoint's temporary file
  (half its bytes are on disk, nothing renamed);
- ``checkpoint_saved``: just after a checkpoint was saved, before the ``done`` flags;
- ``done_marked``: just after ``done`` flags were set.

The points are reached by wrapping the functions that do the work, so the
package itself carries no test hooks. A run that ends without reaching the
point exits with status 99.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _counting(fn: Callable[..., Any], target: int, before: bool = False) -> Callable[..., Any]:
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if before and calls["n"] == target:
            _kill()
        out = fn(*args, **kwargs)
        if not before and calls["n"] == target:
            _kill()
        return out

    return wrapper


def install(point: str, count: int) -> None:
    import torch

    from losskernel_dist.jobs import commits
    from losskernel_dist.store import RunStore

    if point == "draws_written":
        RunStore.write_draws = _counting(RunStore.write_draws, count)
    elif point == "done_marked":
        RunStore.mark_done = _counting(RunStore.mark_done, count)
    elif point == "checkpoint_saved":
        commits.save_chain = _counting(commits.save_chain, count)  # where ChainWriter looks it up
    elif point == "checkpoint_write":
        real_save = torch.save
        calls = {"n": 0}

        def torn_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            calls["n"] += 1
            if calls["n"] != count or not hasattr(f, "write"):
                return real_save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            _kill()

        torch.save = torn_save
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main() -> int:
    point, count, *args = sys.argv[1:]
    install(point, int(count))
    from losskernel_dist.cli import main as cli_main

    cli_main(args)
    return 99  # the point was never reached


if __name__ == "__main__":
    sys.exit(main())
