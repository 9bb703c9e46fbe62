"""The config's fixed-choice values, one enum per key, validated once at load (base.Choice).

Each member's value is the string written in YAML; members compare equal to
those strings, so ``config.reduce.kernel == "neighbours"`` holds either way.
Device names (``cuda:1``) are open-ended and stay plain strings.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import Choice


class BatchedEval(Choice):
    """sampler.batched_eval: the loss-vector pass of chains advanced together."""

    AUTO = "auto"  # vmap on accelerators, one chain after another on the CPU
    VMAP = "vmap"
    CHAINS = "chains"


class Autocast(Choice):
    """eval.autocast: the precision of the loss-vector pass."""

    NONE = "none"
    BF16 = "bf16"


class KernelDtype(Choice):
    """reduce.dtype: the stored dtype of kernel/cov and kernel/corr."""

    FLOAT32 = "float32"
    FLOAT64 = "float64"


class ReduceEngine(Choice):
    """reduce.engine: where the dense kernel's product runs."""

    AUTO = "auto"  # torch when a GPU is present, dask otherwise
    DASK = "dask"
    TORCH = "torch"


class KernelKind(Choice):
    """reduce.kernel: what the reduce writes."""

    DENSE = "dense"
    NEIGHBOURS = "neighbours"
    BOTH = "both"


class ReduceScheduler(Choice):
    """reduce.scheduler: where the reduce's tile graph runs (besides a scheduler address)."""

    THREADS = "threads"  # dask's threaded scheduler in this process
    LOCAL = "local"  # a distributed.LocalCluster of worker processes on this node
    SLURM = "slurm"  # a dask_jobqueue.SLURMCluster: workers are SLURM jobs

    @classmethod
    def parse_setting(cls, value: object, key: str) -> ReduceScheduler | str:
        """A member, or the address of a running dask scheduler (``tcp://host:port``,
        ``tls://host:port``) kept as a plain string; a ConfigError naming ``key``."""
        if isinstance(value, str) and value.startswith(ADDRESS_PREFIXES):
            host, _, port = value.split("://", 1)[1].rpartition(":")
            if host and port.isdigit():
                return value
            raise ConfigError(f"{key}: expected a scheduler address like tcp://host:8786, "
                              f"got {value!r}")
        try:
            return cls(value)
        except (ValueError, TypeError):
            raise ConfigError(f"{key}: expected {cls.allowed()} or a scheduler address "
                              f"(tcp://host:port), got {value!r}") from None


ADDRESS_PREFIXES = ("tcp://", "tls://")


class NeighboursMetric(Choice):
    """reduce.neighbours_metric: what the streamed neighbour lists rank by."""

    CORR = "corr"
    COV = "cov"


class WordnetMode(Choice):
    """analysis.wordnet: where the label hierarchy comes from."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"
    IMAGENET1K = "imagenet1k"


class Cluster(Choice):
    """slurm.cluster: the submitit executor."""

    SLURM = "slurm"
    LOCAL = "local"
    AUTO = "auto"  # slurm when srun is on PATH


class GuardAction(Choice):
    """guards.action: what a flagged chain does."""

    WARN = "warn"
    ERROR = "error"
