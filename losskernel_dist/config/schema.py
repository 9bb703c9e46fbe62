"""The config schema: one dataclass per section, its defaults, help text and checks.

The sections of the run itself live here, those of the jobs around it (slurm,
calibrate, development) in ``workflow.py``. Every field carries its default and
help text (``described``); a fixed-choice field is typed with its enum
(``choices.py``). ``Config.validate`` runs each
section's checks and the checks across sections, so that a bad value is a
one-line ConfigError naming its key before anything is written. ``DRAW_KEYS``
lists the keys that change the draws: a resumed run whose config differs in
one of them is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Section, check_device, described, nonneg_int, plain_dict, positive_int
from .choices import (
    Autocast,
    BatchedEval,
    GuardAction,
    KernelDtype,
    KernelKind,
    NeighboursMetric,
    ReduceEngine,
    ReduceScheduler,
    WordnetMode,
)
from .workflow import CalibrateConfig, DevelopmentConfig, SlurmConfig


@dataclass
class TaskConfig(Section):
    """The model and data: a function that returns a losskernel_dist.Task."""

    section = "task"

    target: str = described("'module:function' returning a losskernel_dist.Task")
    args: dict = described("keyword arguments for the task function", default_factory=dict)

    def check(self) -> None:
        if self.target.count(":") != 1 or not all(self.target.split(":")):
            raise ConfigError(f"task.target: expected 'module:function', got {self.target!r}")


@dataclass
class SamplerConfig(Section):
    """The SGLD chains: how many, how long, the update rule, where they run."""

    section = "sampler"

    chains: int = described("number of independent SGLD chains C", 8)
    draws: int = described("kept draws per chain T", 100)
    burnin_steps: int = described("SGLD steps before the first kept draw", 100)
    steps_between_draws: int = described("SGLD steps between kept draws", 1)
    batch_size: int = described("SGLD minibatch size b", 256)
    lr: float = described("SGLD step size epsilon", 1.0e-4)
    nbeta: float = described("n times the inverse temperature", 20.0)
    localization: float = described("localization strength gamma (>= 0)", 4000.0)
    seed: int = described("root seed of the counter-based randomness", 0)
    noise: bool = described("inject Langevin noise (false gives plain gradient descent)", True)
    checkpoint_every: int = described(
        "SGLD steps between chain checkpoints (0: only at the end)", 100)
    device: str = described("'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:K'", "auto")
    threads: int = described("torch intra-op threads per process (0: torch default)", 0)
    chains_per_batch: int = described("chains of a process advanced together under vmap", 1)
    batched_eval: BatchedEval = described(
        "loss-vector pass of batched chains: 'vmap', 'chains' (one chain after another) or "
        "'auto' (vmap on accelerators, chains on the CPU, where it measured faster)",
        BatchedEval.AUTO)
    loader_workers: int = described(
        "DataLoader worker processes decoding SGLD minibatches (0: fetch in the main process)", 0)
    write_queue: int = described(
        "commits (draws, checkpoint, done flags) the background writer may lag behind the "
        "chains before they wait (0: write inline)", 4)

    def check(self) -> None:
        positive_int("sampler.chains", self.chains)
        if self.draws < 2:
            raise ConfigError(f"sampler.draws: must be >= 2, got {self.draws}")
        nonneg_int("sampler.burnin_steps", self.burnin_steps)
        positive_int("sampler.steps_between_draws", self.steps_between_draws)
        positive_int("sampler.batch_size", self.batch_size)
        if not self.lr > 0:
            raise ConfigError(f"sampler.lr: must be > 0, got {self.lr}")
        if not self.nbeta > 0:
            raise ConfigError(f"sampler.nbeta: must be > 0, got {self.nbeta}")
        if not self.localization >= 0:
            raise ConfigError(f"sampler.localization: must be >= 0, got {self.localization}")
        nonneg_int("sampler.seed", self.seed)
        nonneg_int("sampler.checkpoint_every", self.checkpoint_every)
        nonneg_int("sampler.threads", self.threads)
        positive_int("sampler.chains_per_batch", self.chains_per_batch)
        nonneg_int("sampler.loader_workers", self.loader_workers)
        nonneg_int("sampler.write_queue", self.write_queue)
        check_device("sampler.device", self.device)


@dataclass
class EvalConfig(Section):
    """The loss-vector pass over the N eval samples at every kept draw."""

    section = "eval"

    batch_size: int = described("forward-pass shard size for loss vectors", 1024)
    cache: bool = described("collate the eval shards once and keep them on the device", True)
    autocast: Autocast = described(
        "'none' or 'bf16': autocast of the loss-vector pass (GPU speed)", Autocast.NONE)
    channels_last: bool = described("channels-last memory format for convolutional models", False)

    def check(self) -> None:
        positive_int("eval.batch_size", self.batch_size)


@dataclass
class ReduceConfig(Section):
    """Draws -> kernel: what the reduce writes, in which dtype, on which engine."""

    section = "reduce"

    block_size: int = described("columns per block of the blockwise covariance", 2048)
    dtype: KernelDtype = described(
        "dtype of kernel/cov and kernel/corr (float64 accumulation either way): float32 or float64",
        KernelDtype.FLOAT32)
    threads: int = described("dask threads for the reduction (0: one per core)", 0)
    engine: ReduceEngine = described(
        "'dask' (CPU), 'torch' (tiled product on reduce.device), 'auto'", ReduceEngine.AUTO)
    device: str = described(
        "torch engine device: 'auto' (cuda if available), 'cpu', 'cuda:K'", "auto")
    kernel: KernelKind = described(
        "what the reduce writes: 'dense' (kernel/cov and kernel/corr, N x N), 'neighbours' "
        "(only each sample's top-k lists, streamed from the draws: for N too large for the "
        "dense kernel; on reduce.engine, the torch one on a GPU) or 'both'", KernelKind.DENSE)
    neighbours_k: int = described(
        "k of the streamed most-similar lists (1 <= k < N); the analysis of a run without the "
        "dense kernel takes its neighbour table (analysis.neighbours) and UMAP graph "
        "(analysis.umap_neighbours - 1) from them", 15)
    neighbours_bottom_k: int = described(
        "k of the streamed least-similar lists (0: none; < N)", 10)
    neighbours_metric: NeighboursMetric = described(
        "what the streamed lists rank by: 'corr' (rho, as the analysis does) or 'cov' (K)",
        NeighboursMetric.CORR)
    cache_gb: float = described(
        "keep the centred draws (M x N float64) in host memory when they fit in this many GB "
        "(dask engine: dense and neighbours); otherwise re-read them from the store for every "
        "tile or row block. A SLURM reduce job keeps at most half its slurm.reduce_mem_gb, "
        "a dask worker at most half its reduce.worker_mem_gb",
        4.0)
    scheduler: str = described(
        "where the dask engine's tiles (and neighbour row blocks) run: 'threads' (this "
        "process), 'local' (a distributed.LocalCluster of reduce.workers processes), 'slurm' "
        "(a dask-jobqueue SLURMCluster of reduce.workers SLURM jobs, slurm.partition and "
        "slurm.extra's account) or the address of a running scheduler (tcp://host:port)",
        "threads")
    workers: int = described(
        "worker processes of a 'local' cluster, worker jobs of a 'slurm' one", 2)
    worker_cores: int = described("threads of each worker (CPUs of each worker job)", 1)
    worker_mem_gb: float = described(
        "memory limit of each worker (memory of each worker job), in GB", 4.0)
    worker_walltime_min: int = described(
        "time limit of each SLURM worker job, in minutes; a worker retires a little before "
        "it and a new job replaces it", 60)

    def check(self) -> None:
        self.scheduler = ReduceScheduler.parse_setting(self.scheduler, "reduce.scheduler")
        positive_int("reduce.workers", self.workers)
        positive_int("reduce.worker_cores", self.worker_cores)
        if not self.worker_mem_gb > 0:
            raise ConfigError(f"reduce.worker_mem_gb: must be > 0, got {self.worker_mem_gb}")
        positive_int("reduce.worker_walltime_min", self.worker_walltime_min)
        if self.scheduler != ReduceScheduler.THREADS and self.engine == ReduceEngine.TORCH:
            raise ConfigError(
                f"reduce.scheduler: {self.scheduler} runs the dask engine's tiles on workers; "
                "reduce.engine torch runs in this process: set reduce.engine to dask or auto, "
                "or reduce.scheduler to threads")
        positive_int("reduce.block_size", self.block_size)
        positive_int("reduce.neighbours_k", self.neighbours_k)
        nonneg_int("reduce.neighbours_bottom_k", self.neighbours_bottom_k)
        if not self.cache_gb >= 0:
            raise ConfigError(f"reduce.cache_gb: must be >= 0, got {self.cache_gb}")
        check_device("reduce.device", self.device)
        nonneg_int("reduce.threads", self.threads)


@dataclass
class AnalysisConfig(Section):
    """What ``losskernel analyze`` computes from the kernel and how it shows it."""

    section = "analysis"

    enabled: bool = described("run the analysis step at the end of 'losskernel run'", True)
    neighbours: int = described("k of the top-k / bottom-k neighbour lists", 10)
    exclude_same_label: bool = described("drop same-label neighbours (paper Appendix B)", True)
    umap_neighbours: int = described("n_neighbors of UMAP", 15)
    umap_min_dist: float = described("min_dist of UMAP", 0.1)
    seed: int = described("seed of UMAP and other analysis randomness", 0)
    max_plot_samples: int = described("kernel pictures above this N are block-averaged", 2000)
    umap: bool = described("compute the 2-D and 3-D UMAP maps (switch off for huge N)", True)
    group_attribute: str = described(
        "binary group for the PC1 AUC and covariance distributions: 'labels' or an attribute "
        "name; '' picks labels when they have exactly 2 values", "")
    memorization_attribute: str = described(
        "per-sample 0/1 flag (e.g. mislabelled) tested against K_ii; '' uses 'mislabelled' "
        "when the task has it", "")
    wordnet: WordnetMode = described(
        "label hierarchy from WordNet: 'auto' (when label names are WordNet ids and WordNet is "
        "installed), 'on' (required), 'off', or 'imagenet1k' (labels are ImageNet-1k indices)",
        WordnetMode.AUTO)
    cka_grid: int = described(
        "number of draw counts s on the CKA(K_s, K_final) convergence curve", 12)
    cka_max_draws: int = described(
        "pooled draws above which the CKA convergence curve thins draws evenly (memory ~ M^2)",
        8192)
    attribute_max_levels: int = described(
        "attributes with more distinct values than this are treated as continuous", 128)
    colour_groups: int = described("colour groups (farthest-point sampling of mean RGB)", 8)
    thumbnails: int = described("reference samples in the thumbnail grid of image tasks", 8)

    def check(self) -> None:
        positive_int("analysis.neighbours", self.neighbours)
        if self.umap_neighbours < 2:
            raise ConfigError(f"analysis.umap_neighbours: must be >= 2, got {self.umap_neighbours}")
        if not 0 <= self.umap_min_dist <= 1:
            raise ConfigError(
                f"analysis.umap_min_dist: must be in [0, 1], got {self.umap_min_dist}")
        nonneg_int("analysis.seed", self.seed)
        positive_int("analysis.max_plot_samples", self.max_plot_samples)
        if self.cka_grid < 2:
            raise ConfigError(f"analysis.cka_grid: must be >= 2, got {self.cka_grid}")
        if self.cka_max_draws < 4:
            raise ConfigError(f"analysis.cka_max_draws: must be >= 4, got {self.cka_max_draws}")
        if self.attribute_max_levels < 2:
            raise ConfigError(
                f"analysis.attribute_max_levels: must be >= 2, got {self.attribute_max_levels}"
            )
        if self.colour_groups < 2:
            raise ConfigError(f"analysis.colour_groups: must be >= 2, got {self.colour_groups}")
        nonneg_int("analysis.thumbnails", self.thumbnails)


@dataclass
class GuardsConfig(Section):
    """Guard rails on every chain, judged against the losses at w* (see guards.py)."""

    section = "guards"

    action: GuardAction = described(
        "what a flagged chain does: 'warn' (print, show in info and report) or 'error' "
        "(sample/run exit non-zero, run does not reduce)", GuardAction.WARN)
    max_loss_increase: float = described(
        "flag a chain whose late mean train loss exceeds the loss at w* by more than this "
        "(loss units) ...", 0.5)
    max_loss_increase_relative: float = described(
        "... and by more than this times |loss at w*| (the tolerance is the larger of the two)",
        1.0)
    blowup_factor: float = described(
        "a rise above this many tolerances counts as divergence ('blew up'), not drift", 4.0)
    late_fraction: float = described(
        "the late mean train loss is taken over this last fraction of a chain's steps", 0.25)
    distance_growth: float = described(
        "flag a chain whose ||w - w*|| rises through the last three quarters of its draws "
        "by more than this fraction", 0.1)

    def check(self) -> None:
        for key in ("max_loss_increase", "max_loss_increase_relative", "distance_growth"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"guards.{key}: must be >= 0, got {getattr(self, key)}")
        if not self.blowup_factor >= 1:
            raise ConfigError(f"guards.blowup_factor: must be >= 1, got {self.blowup_factor}")
        if not 0 < self.late_fraction <= 1:
            raise ConfigError(f"guards.late_fraction: must be in (0, 1], got {self.late_fraction}")


@dataclass
class Config:
    """A whole run: one section per concern, plus the run directory."""

    task: TaskConfig
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    reduce: ReduceConfig = field(default_factory=ReduceConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    guards: GuardsConfig = field(default_factory=GuardsConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    development: DevelopmentConfig = field(default_factory=DevelopmentConfig)
    output: str = described("the run directory", "runs/example")

    def validate(self) -> None:
        self.task.validate()
        self.sampler.validate()
        self.eval.validate()
        self.reduce.validate()
        self.analysis.validate()
        self.slurm.validate()
        self.guards.validate()
        self.calibrate.validate()
        self.development.validate()
        cal = self.calibrate
        after = cal.steps - cal.pilot_burnin_steps
        if not cal.draws and after // self.sampler.steps_between_draws < 8:
            raise ConfigError(
                f"calibrate.steps: {after} steps after burn-in give fewer than 8 pilot draws "
                f"at one every sampler.steps_between_draws={self.sampler.steps_between_draws} "
                "steps; raise calibrate.steps or set calibrate.draws"
            )
        if not self.output:
            raise ConfigError("output: must be a non-empty path")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data: what config.yaml and the store hold."""
        return dataclasses.asdict(self, dict_factory=plain_dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.output)


# Keys whose change alters the draws; a resume with a different value is refused.
DRAW_KEYS: tuple[str, ...] = (
    "task.target",
    "task.args",
    "sampler.chains",
    "sampler.draws",
    "sampler.burnin_steps",
    "sampler.steps_between_draws",
    "sampler.batch_size",
    "sampler.lr",
    "sampler.nbeta",
    "sampler.localization",
    "sampler.seed",
    "sampler.noise",
    "eval.autocast",
)
