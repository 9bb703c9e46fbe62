"""A dask worker preload for the tests: every tile and row-block task sleeps first.

    DASK_DISTRIBUTED__WORKER__PRELOAD='["tests.reduction.slow_tasks"]'
    LK_TEST_TASK_SLEEP_S=0.1

Loaded by each worker process at start (dask's own ``--preload`` mechanism), it
wraps the task functions where pickled tasks look them up, so that a reduce
lasts long enough to lose a worker in the middle of it. The package carries no
test hook for this.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

from losskernel_dist.reduction import tiles, topk


def _slowed(fn: Callable[..., Any]) -> Callable[..., Any]:
    seconds = float(os.environ.get("LK_TEST_TASK_SLEEP_S", "0.1"))

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return fn(*args, **kwargs)

    return wrapper


tiles.tile_task = _slowed(tiles.tile_task)
topk.neighbour_block = _slowed(topk.neighbour_block)
