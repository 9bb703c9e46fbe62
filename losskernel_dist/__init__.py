"""losskernel_dist: the loss kernel of a trained network, sampled with SGLD at scale.

The loss kernel is the covariance of per-sample losses under a localized
tempered posterior around the trained weights. Flow: task -> sampler -> store
-> reduce -> analysis. Users provide a ``Task``; everything else is a command
(``losskernel``) or a function here.

Names are imported lazily so that store/reduce/analysis jobs, which never
touch a model, do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Config", "ConfigError", "Task", "TaskError", "load_config", "load_task"]
__version__ = "0.1.0"

_WHERE = {
    "Config": "config",
    "ConfigError": "config",
    "load_config": "config",
    "Task": "task",
    "TaskError": "task",
    "load_task": "task",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
