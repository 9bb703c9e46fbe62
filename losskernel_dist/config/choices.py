"""The config's fixed-choice values, one enum per key, validated once at load (base.Choice).

Each member's value is the string written in YAML; members compare equal to
those strings, so ``config.reduce.kernel == "neighbours"`` holds either way.
Device names (``cuda:1``) are open-ended and stay plain strings.
"""

from __future__ import annotations

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
