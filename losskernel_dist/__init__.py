"""losskernel_dist: the loss kernel of a trained network, sampled with SGLD at scale.

The loss kernel is the covariance of per-sample losses under a localized
tempered posterior around the trained weights. Flow: task -> sampler -> store
-> reduce -> analysis. Users provide a ``Task``; everything else is a command
(``losskernel``) or a function here.
"""

from .config import Config, ConfigError, load_config
from .task import Task, TaskError, load_task

__all__ = ["Config", "ConfigError", "Task", "TaskError", "load_config", "load_task"]
__version__ = "0.1.0"
