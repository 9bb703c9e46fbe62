"""Run configuration: one YAML file, validated at load, with dotted ``--set`` overrides.

Every section is a dataclass whose fields carry their defaults and help text.
Validation happens once, here, so that a bad value is a one-line error naming
its key before anything is written. ``draw_keys`` lists the keys that change
the draws: a resumed run whose config differs in one of them is refused.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def _help(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    if default is dataclasses.MISSING and "default_factory" not in kw:
        return field(metadata={"help": text}, **kw)
    if "default_factory" in kw:
        return field(metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text})


@dataclass
class TaskConfig:
    target: str = _help("'module:function' returning a losskernel_dist.Task")
    args: dict = _help("keyword arguments for the task function", default_factory=dict)

    def validate(self) -> None:
        if self.target.count(":") != 1 or not all(self.target.split(":")):
            raise ConfigError(f"task.target: expected 'module:function', got {self.target!r}")


@dataclass
class SamplerConfig:
    chains: int = _help("number of independent SGLD chains C", 8)
    draws: int = _help("kept draws per chain T", 100)
    burnin_steps: int = _help("SGLD steps before the first kept draw", 100)
    steps_between_draws: int = _help("SGLD steps between kept draws", 1)
    batch_size: int = _help("SGLD minibatch size b", 256)
    lr: float = _help("SGLD step size epsilon", 1.0e-4)
    nbeta: float = _help("n times the inverse temperature", 20.0)
    localization: float = _help("localization strength gamma (>= 0)", 4000.0)
    seed: int = _help("root seed of the counter-based randomness", 0)
    noise: bool = _help("inject Langevin noise (false gives plain gradient descent)", True)
    checkpoint_every: int = _help("SGLD steps between chain checkpoints (0: only at the end)", 100)
    device: str = _help("'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:K'", "auto")
    threads: int = _help("torch intra-op threads per process (0: torch default)", 0)
    chains_per_batch: int = _help("chains of a process advanced together under vmap", 1)
    batched_eval: str = _help("loss-vector pass of batched chains: 'vmap', 'chains' (one "
                              "chain after another) or 'auto' (vmap on accelerators, chains "
                              "on the CPU, where it measured faster)", "auto")
    loader_workers: int = _help("DataLoader worker processes decoding SGLD minibatches "
                                "(0: fetch in the main process)", 0)
    write_queue: int = _help("commits (draws, checkpoint, done flags) the background writer "
                             "may lag behind the chains before they wait (0: write inline)", 4)

    def validate(self) -> None:
        _positive_int("sampler.chains", self.chains)
        if self.draws < 2:
            raise ConfigError(f"sampler.draws: must be >= 2, got {self.draws}")
        _nonneg_int("sampler.burnin_steps", self.burnin_steps)
        _positive_int("sampler.steps_between_draws", self.steps_between_draws)
        _positive_int("sampler.batch_size", self.batch_size)
        if not self.lr > 0:
            raise ConfigError(f"sampler.lr: must be > 0, got {self.lr}")
        if not self.nbeta > 0:
            raise ConfigError(f"sampler.nbeta: must be > 0, got {self.nbeta}")
        if not self.localization >= 0:
            raise ConfigError(f"sampler.localization: must be >= 0, got {self.localization}")
        _nonneg_int("sampler.seed", self.seed)
        _nonneg_int("sampler.checkpoint_every", self.checkpoint_every)
        _nonneg_int("sampler.threads", self.threads)
        _positive_int("sampler.chains_per_batch", self.chains_per_batch)
        if self.batched_eval not in ("auto", "vmap", "chains"):
            raise ConfigError(
                f"sampler.batched_eval: expected auto, vmap or chains, got {self.batched_eval!r}"
            )
        _nonneg_int("sampler.loader_workers", self.loader_workers)
        _nonneg_int("sampler.write_queue", self.write_queue)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"sampler.device: expected auto, cpu, cuda or cuda:K, got {self.device!r}")

    @property
    def total_steps(self) -> int:
        return self.burnin_steps + self.draws * self.steps_between_draws


@dataclass
class EvalConfig:
    batch_size: int = _help("forward-pass shard size for loss vectors", 1024)
    cache: bool = _help("collate the eval shards once and keep them on the device", True)
    autocast: str = _help("'none' or 'bf16': autocast of the loss-vector pass (GPU speed)", "none")
    channels_last: bool = _help("channels-last memory format for convolutional models", False)

    def validate(self) -> None:
        _positive_int("eval.batch_size", self.batch_size)
        if self.autocast not in ("none", "bf16"):
            raise ConfigError(f"eval.autocast: expected none or bf16, got {self.autocast!r}")


@dataclass
class ReduceConfig:
    block_size: int = _help("columns per block of the blockwise covariance", 2048)
    dtype: str = _help(
        "dtype of kernel/cov and kernel/corr (float64 accumulation either way): float32 or float64",
        "float32")
    threads: int = _help("dask threads for the reduction (0: one per core)", 0)
    engine: str = _help("'dask' (CPU), 'torch' (tiled product on reduce.device), 'auto'", "auto")
    device: str = _help("torch engine device: 'auto' (cuda if available), 'cpu', 'cuda:K'", "auto")
    kernel: str = _help(
        "what the reduce writes: 'dense' (kernel/cov and kernel/corr, N x N), 'neighbours' "
        "(only each sample's top-k lists, streamed from the draws: for N too large for the "
        "dense kernel; always on the CPU engine) or 'both'", "dense")
    neighbours_k: int = _help(
        "k of the streamed most-similar lists (1 <= k < N); the analysis of a run without the "
        "dense kernel takes its neighbour table (analysis.neighbours) and UMAP graph "
        "(analysis.umap_neighbours - 1) from them", 15)
    neighbours_bottom_k: int = _help(
        "k of the streamed least-similar lists (0: none; < N)", 10)
    neighbours_metric: str = _help(
        "what the streamed lists rank by: 'corr' (rho, as the analysis does) or 'cov' (K)",
        "corr")
    cache_gb: float = _help(
        "keep the centred draws (M x N float64) in host memory when they fit in this many GB "
        "(dask engine: dense and neighbours); otherwise re-read them from the store for every "
        "tile or row block. A SLURM reduce job keeps at most half its slurm.reduce_mem_gb",
        4.0)

    def validate(self) -> None:
        _positive_int("reduce.block_size", self.block_size)
        if self.kernel not in ("dense", "neighbours", "both"):
            raise ConfigError(
                f"reduce.kernel: expected dense, neighbours or both, got {self.kernel!r}")
        _positive_int("reduce.neighbours_k", self.neighbours_k)
        _nonneg_int("reduce.neighbours_bottom_k", self.neighbours_bottom_k)
        if self.neighbours_metric not in ("corr", "cov"):
            raise ConfigError(
                f"reduce.neighbours_metric: expected corr or cov, got {self.neighbours_metric!r}")
        if not self.cache_gb >= 0:
            raise ConfigError(f"reduce.cache_gb: must be >= 0, got {self.cache_gb}")
        if self.engine not in ("auto", "dask", "torch"):
            raise ConfigError(f"reduce.engine: expected auto, dask or torch, got {self.engine!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"reduce.device: expected auto, cpu, cuda or cuda:K, got {self.device!r}")
        if self.dtype not in ("float64", "float32"):
            raise ConfigError(f"reduce.dtype: expected float64 or float32, got {self.dtype!r}")
        _nonneg_int("reduce.threads", self.threads)


@dataclass
class AnalysisConfig:
    enabled: bool = _help("run the analysis step at the end of 'losskernel run'", True)
    neighbours: int = _help("k of the top-k / bottom-k neighbour lists", 10)
    exclude_same_label: bool = _help("drop same-label neighbours (paper Appendix B)", True)
    umap_neighbours: int = _help("n_neighbors of UMAP", 15)
    umap_min_dist: float = _help("min_dist of UMAP", 0.1)
    seed: int = _help("seed of UMAP and other analysis randomness", 0)
    max_plot_samples: int = _help("kernel pictures above this N are block-averaged", 2000)
    umap: bool = _help("compute the 2-D and 3-D UMAP maps (switch off for huge N)", True)
    group_attribute: str = _help(
        "binary group for the PC1 AUC and covariance distributions: 'labels' or an attribute "
        "name; '' picks labels when they have exactly 2 values", "")
    memorization_attribute: str = _help(
        "per-sample 0/1 flag (e.g. mislabelled) tested against K_ii; '' uses 'mislabelled' "
        "when the task has it", "")
    wordnet: str = _help(
        "label hierarchy from WordNet: 'auto' (when label names are WordNet ids and WordNet is "
        "installed), 'on' (required), 'off', or 'imagenet1k' (labels are ImageNet-1k indices)",
        "auto")
    cka_grid: int = _help("number of draw counts s on the CKA(K_s, K_final) convergence curve", 12)
    cka_max_draws: int = _help(
        "pooled draws above which the CKA convergence curve thins draws evenly (memory ~ M^2)",
        8192)
    attribute_max_levels: int = _help(
        "attributes with more distinct values than this are treated as continuous", 128)
    colour_groups: int = _help("colour groups (farthest-point sampling of mean RGB)", 8)
    thumbnails: int = _help("reference samples in the thumbnail grid of image tasks", 8)

    def validate(self) -> None:
        _positive_int("analysis.neighbours", self.neighbours)
        if self.umap_neighbours < 2:
            raise ConfigError(f"analysis.umap_neighbours: must be >= 2, got {self.umap_neighbours}")
        if not 0 <= self.umap_min_dist <= 1:
            raise ConfigError(f"analysis.umap_min_dist: must be in [0, 1], got {self.umap_min_dist}")
        _nonneg_int("analysis.seed", self.seed)
        _positive_int("analysis.max_plot_samples", self.max_plot_samples)
        if self.wordnet not in ("auto", "on", "off", "imagenet1k"):
            raise ConfigError(
                f"analysis.wordnet: expected auto, on, off or imagenet1k, got {self.wordnet!r}"
            )
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
        _nonneg_int("analysis.thumbnails", self.thumbnails)


@dataclass
class SlurmConfig:
    """How ``losskernel submit`` runs the chains as a SLURM job array (through submitit)."""

    cluster: str = _help(
        "submitit executor: 'slurm', 'local' (subprocesses on this machine, for tests) or "
        "'auto' (slurm when srun is on PATH)", "slurm")
    partition: str = _help("SLURM partition ('' for the cluster's default)", "")
    time_min: int = _help(
        "time limit of one array task run, in minutes; a task that reaches it checkpoints "
        "and is requeued", 60)
    chains_per_task: int = _help("chains per array task", 1)
    gpus_per_task: int = _help("GPUs per array task (0: none)", 0)
    cpus_per_task: int = _help("CPUs per array task; also its torch threads when "
                               "sampler.threads is 0", 1)
    mem_gb: float = _help("memory per array task in GB (0: the cluster's default)", 0.0)
    max_parallel: int = _help("array tasks running at once (0: no limit)", 0)
    signal_delay_s: int = _help(
        "seconds before the time limit at which SLURM sends USR2 (checkpoint and requeue)", 120)
    max_requeues: int = _help(
        "timeouts or preemptions a task may be requeued after (SLURM's MaxBatchRequeue "
        "caps it too)", 3)
    extra: dict = _help("extra sbatch parameters, e.g. {account: abc, qos: high}",
                        default_factory=dict)
    setup: list = _help("shell lines run before each task (module load ..., source venv)",
                        default_factory=list)
    folder: str = _help("submitit's folder for job pickles and logs ('': RUN_DIR/slurm)", "")
    job_name: str = _help("SLURM job name", "losskernel")
    reduce: bool = _help("submit a reduce job that starts when every array task succeeded", True)
    reduce_time_min: int = _help("time limit of the reduce job, in minutes", 60)
    reduce_cpus: int = _help("CPUs of the reduce job (0: cpus_per_task)", 0)
    reduce_mem_gb: float = _help("memory of the reduce job in GB (0: the cluster's default)", 0.0)
    allow_partial: bool = _help("run the reduce job with --allow-partial", False)

    def validate(self) -> None:
        if self.cluster not in ("slurm", "local", "auto"):
            raise ConfigError(f"slurm.cluster: expected slurm, local or auto, got {self.cluster!r}")
        _positive_int("slurm.time_min", self.time_min)
        _positive_int("slurm.chains_per_task", self.chains_per_task)
        _nonneg_int("slurm.gpus_per_task", self.gpus_per_task)
        _positive_int("slurm.cpus_per_task", self.cpus_per_task)
        if not self.mem_gb >= 0:
            raise ConfigError(f"slurm.mem_gb: must be >= 0, got {self.mem_gb}")
        _nonneg_int("slurm.max_parallel", self.max_parallel)
        _nonneg_int("slurm.signal_delay_s", self.signal_delay_s)
        if self.signal_delay_s >= self.time_min * 60:
            raise ConfigError(
                f"slurm.signal_delay_s: {self.signal_delay_s} s must be shorter than "
                f"slurm.time_min ({self.time_min} min)"
            )
        _nonneg_int("slurm.max_requeues", self.max_requeues)
        for key in self.extra:
            if not isinstance(key, str):
                raise ConfigError(f"slurm.extra: keys must be sbatch option names, got {key!r}")
        if not isinstance(self.setup, list) or not all(isinstance(x, str) for x in self.setup):
            raise ConfigError(f"slurm.setup: expected a list of shell lines, got {self.setup!r}")
        _positive_int("slurm.reduce_time_min", self.reduce_time_min)
        _nonneg_int("slurm.reduce_cpus", self.reduce_cpus)
        if not self.reduce_mem_gb >= 0:
            raise ConfigError(f"slurm.reduce_mem_gb: must be >= 0, got {self.reduce_mem_gb}")


@dataclass
class GuardsConfig:
    """Guard rails on every chain, judged against the losses at w* (see guards.py)."""

    action: str = _help("what a flagged chain does: 'warn' (print, show in info and report) "
                        "or 'error' (sample/run exit non-zero, run does not reduce)", "warn")
    max_loss_increase: float = _help(
        "flag a chain whose late mean train loss exceeds the loss at w* by more than this "
        "(loss units) ...", 0.5)
    max_loss_increase_relative: float = _help(
        "... and by more than this times |loss at w*| (the tolerance is the larger of the two)",
        1.0)
    blowup_factor: float = _help(
        "a rise above this many tolerances counts as divergence ('blew up'), not drift", 4.0)
    late_fraction: float = _help(
        "the late mean train loss is taken over this last fraction of a chain's steps", 0.25)
    distance_growth: float = _help(
        "flag a chain whose ||w - w*|| rises through the last three quarters of its draws "
        "by more than this fraction", 0.1)

    def validate(self) -> None:
        if self.action not in ("warn", "error"):
            raise ConfigError(f"guards.action: expected warn or error, got {self.action!r}")
        for key in ("max_loss_increase", "max_loss_increase_relative", "distance_growth"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"guards.{key}: must be >= 0, got {getattr(self, key)}")
        if not self.blowup_factor >= 1:
            raise ConfigError(f"guards.blowup_factor: must be >= 1, got {self.blowup_factor}")
        if not 0 < self.late_fraction <= 1:
            raise ConfigError(f"guards.late_fraction: must be in (0, 1], got {self.late_fraction}")


@dataclass
class CalibrateConfig:
    """The pilot grid of ``losskernel calibrate`` and its budget (see calibrate.py)."""

    lr: list = _help("step sizes to try ([]: sampler.lr x 0.1, 1, 10)", default_factory=list)
    localization: list = _help(
        "localizations to try ([]: sampler.localization x 0.1, 1, 10; [0] when it is 0)",
        default_factory=list)
    nbeta: list = _help("nbeta values to try ([]: sampler.nbeta only)", default_factory=list)
    chains_per_setting: int = _help(
        "pilot chains per setting (>= 2: the split-half CKA compares two halves of them)", 4)
    steps: int = _help("SGLD steps of every pilot chain", 200)
    burnin_fraction: float = _help(
        "fraction of the pilot steps before its first kept draw", 0.5)
    draws: int = _help(
        "kept draws per pilot chain, spread evenly over the steps after burn-in (0: one every "
        "sampler.steps_between_draws steps, as the run will keep them)", 0)
    min_cka: float = _help(
        "a setting is recommended only if its split-half CKA, projected to the configured "
        "run's sampler.chains x sampler.draws draws, is at least this", 0.9)
    reduce_max_n: int = _help(
        "reduce each pilot to its N x N kernel (for 'losskernel analyze') when N <= this", 4096)
    output: str = _help("where the pilot runs and the report go ('': OUTPUT/calibration)", "")

    def validate(self) -> None:
        for key in ("lr", "localization", "nbeta"):
            values = getattr(self, key)
            if not isinstance(values, list):
                raise ConfigError(f"calibrate.{key}: expected a list of numbers, got {values!r}")
            clean = [_check_type(f"calibrate.{key}", v, float) for v in values]
            low_ok = (lambda v: v >= 0) if key == "localization" else (lambda v: v > 0)
            bad = [v for v in clean if not low_ok(v)]
            if bad:
                bound = ">= 0" if key == "localization" else "> 0"
                raise ConfigError(f"calibrate.{key}: values must be {bound}, got {bad[0]}")
            setattr(self, key, clean)
        if self.chains_per_setting < 2:
            raise ConfigError(
                f"calibrate.chains_per_setting: must be >= 2 (split halves), got "
                f"{self.chains_per_setting}"
            )
        if not 0 <= self.burnin_fraction < 1:
            raise ConfigError(
                f"calibrate.burnin_fraction: must be in [0, 1), got {self.burnin_fraction}"
            )
        if self.draws and self.draws < 8:
            raise ConfigError(f"calibrate.draws: must be 0 or >= 8 (the drift checks need "
                              f"them), got {self.draws}")
        after = self.steps - round(self.steps * self.burnin_fraction)
        if after < max(self.draws, 8):
            raise ConfigError(
                f"calibrate.steps: {self.steps} steps leave {after} after burn-in, fewer than "
                f"the {max(self.draws, 8)} draws a pilot chain needs"
            )
        if not 0 <= self.min_cka <= 1:
            raise ConfigError(f"calibrate.min_cka: must be in [0, 1], got {self.min_cka}")
        _nonneg_int("calibrate.reduce_max_n", self.reduce_max_n)


@dataclass
class DevelopmentConfig:
    """Checkpoints of one model for ``losskernel run`` to map side by side (Appendix D.5).

    Empty ``checkpoints`` (the default) means an ordinary single run. Otherwise every
    checkpoint gets its own run under OUTPUT/checkpoints/ with the same eval set,
    sampler and UMAP settings, so that the maps differ only in the weights.
    """

    checkpoints: list = _help(
        "checkpoint files of one model, in training order ([]: an ordinary single run); "
        "relative paths are taken from the working directory", default_factory=list)
    task_arg: str = _help("the task.args key each checkpoint path is passed in", "checkpoint")

    def validate(self) -> None:
        if not isinstance(self.checkpoints, list):
            raise ConfigError(
                f"development.checkpoints: expected a list of paths, got {self.checkpoints!r}"
            )
        for path in self.checkpoints:
            if not isinstance(path, str) or not path:
                raise ConfigError(
                    f"development.checkpoints: expected non-empty path strings, got {path!r}"
                )
            if not Path(path).expanduser().is_file():
                raise ConfigError(f"development.checkpoints: file {path!r} does not exist")
        if not self.task_arg:
            raise ConfigError("development.task_arg: must be a non-empty task.args key")


@dataclass
class Config:
    task: TaskConfig
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    reduce: ReduceConfig = field(default_factory=ReduceConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    guards: GuardsConfig = field(default_factory=GuardsConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    development: DevelopmentConfig = field(default_factory=DevelopmentConfig)
    output: str = _help("the run directory", "runs/example")

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
        after = cal.steps - round(cal.steps * cal.burnin_fraction)
        if not cal.draws and after // self.sampler.steps_between_draws < 8:
            raise ConfigError(
                f"calibrate.steps: {after} steps after burn-in give fewer than 8 pilot draws "
                f"at one every sampler.steps_between_draws={self.sampler.steps_between_draws} "
                "steps; raise calibrate.steps or set calibrate.draws"
            )
        if not self.output:
            raise ConfigError("output: must be a non-empty path")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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


def section_fields(section: str) -> tuple[str, ...]:
    """The key names of one config section (``"sampler"`` -> chains, draws, ...)."""
    cls = typing.get_type_hints(Config)[section]
    return tuple(f.name for f in dataclasses.fields(cls))


def draw_keys(config: Config | Mapping[str, Any]) -> dict[str, Any]:
    """The values of the keys that change the draws, by dotted name."""
    data = config.to_dict() if isinstance(config, Config) else config
    return {key: _get_dotted(data, key) for key in DRAW_KEYS}


def differing_draw_keys(stored: Mapping[str, Any], current: Config) -> list[str]:
    """Names of the draw-changing keys whose values differ between two configs."""
    old, new = draw_keys(stored), draw_keys(current)
    return [k for k in DRAW_KEYS if _normalise(old[k]) != _normalise(new[k])]


def _normalise(value: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(value))


def _get_dotted(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _positive_int(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{key}: must be >= 1, got {value}")


def _nonneg_int(key: str, value: int) -> None:
    if value < 0:
        raise ConfigError(f"{key}: must be >= 0, got {value}")


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field's annotation; ints are accepted for floats."""
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted on/off (e.g. wordnet: on) as a bool
            value = "on" if value else "off"
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if annotation is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    return value


# Keys that were renamed: the old name (in configs and in runs' saved config.yaml) is
# read as the new one, with a warning.
RENAMED = {"reduce.neighbours_cache_gb": "reduce.cache_gb"}


def _renamed_keys(data: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``data`` with renamed keys moved to their new names (an error if both are given)."""
    moved = dict(data)
    for name in list(moved):
        new = RENAMED.get(where + name)
        if new is None:
            continue
        new_name = new.rsplit(".", 1)[-1]
        if new_name in moved:
            raise ConfigError(f"{where}{name}: renamed {new}, and both are given: keep {new}")
        warnings.warn(f"config key {where}{name} is now {new} (it applies to every reduce); "
                      "reading it as that", UserWarning, stacklevel=3)
        moved[new_name] = moved.pop(name)
    return moved


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    where = f"{prefix}." if prefix else ""
    data = _renamed_keys(data, where)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}{unknown[0]}: unknown key (known: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if name not in data:
            if dataclasses.is_dataclass(hint) and f.default is dataclasses.MISSING and \
                    f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise ConfigError(f"{key}: missing section")
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise ConfigError(f"{key}: missing required key")
            continue
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, data[name], key)
        else:
            kwargs[name] = _check_type(key, data[name], hint)
    return cls(**kwargs)


def guards_from_dict(data: Mapping[str, Any] | None) -> GuardsConfig:
    """The guards section of a stored config (defaults for runs made before it existed)."""
    guards = _build(GuardsConfig, (data or {}).get("guards"), "guards")
    guards.validate()
    return guards


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build and validate a Config from plain data (as loaded from YAML)."""
    config = _build(Config, data, "")
    config.validate()
    return config


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``key`` 'a.b.c', making sections as needed."""
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[str] | Mapping[str, Any] | None
) -> dict[str, Any]:
    """Apply overrides to raw config data: ``KEY=VALUE`` strings (dotted key, YAML value,
    as ``--set`` gives them) or a mapping ``{"sampler.lr": 1e-5}`` of Python values."""
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            set_dotted(data, str(key), value)
        return data
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: value {raw!r} is not valid YAML ({exc})") from exc
        set_dotted(data, key, value)
    return data


def load_config(
    source: str | Path | Mapping[str, Any],
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
) -> Config:
    """Read a YAML config file (or take a dict of the same shape), apply overrides, validate.

    ``overrides``: ``{"sampler.lr": 1e-5}`` or ``["sampler.lr=1e-5"]`` (as ``--set``).
    """
    if isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r}: top level must be a mapping")
    return config_from_dict(apply_overrides(data, overrides))


def dump_config(config: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
