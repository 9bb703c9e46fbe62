"""losskernel_dist: the loss kernel of a trained network, sampled with SGLD at scale.

The loss kernel is the covariance of per-sample losses under a localized
tempered posterior around the trained weights. Flow: task -> sampler -> store
-> reduce -> analysis -> report; jobs, the Python API and the CLI on top.

    import losskernel_dist as lk
    run = lk.run(lk.load_config("configs/demo_modular.yaml"))
    run.kernel("corr")

Names are imported lazily so that ``import losskernel_dist`` stays cheap, and
store/reduce/analysis work, which never touches a model, does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Config", "ConfigError", "LosskernelError", "Run", "Task", "TaskError",
    "analyze", "load_config", "load_task", "loss_kernel", "open_run", "reduce", "run",
    "sample",
]
__version__ = "0.2.0"

_WHERE = {
    "Config": "config",
    "ConfigError": "errors",
    "LosskernelError": "errors",
    "TaskError": "errors",
    "Task": "task",
    "load_task": "task",
    "load_config": "api",
    "Run": "api",
    "analyze": "api",
    "loss_kernel": "api",
    "open_run": "api",
    "reduce": "api",
    "run": "api",
    "sample": "api",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
