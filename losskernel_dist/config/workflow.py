"""Config sections of the jobs around a run: SLURM submission, calibration, development.

They say how and where the chains are run (``losskernel submit``), which pilot
grid ``losskernel calibrate`` tries, and which training checkpoints ``losskernel
run`` maps side by side; none of them changes a run's draws. Same conventions
as ``schema.py``: defaults and help text on every field, one-line ConfigErrors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .base import Section, check_type, described, nonneg_int, positive_int
from .choices import Cluster


@dataclass
class SlurmConfig(Section):
    """How ``losskernel submit`` runs the chains as a SLURM job array (through submitit)."""

    section = "slurm"

    cluster: Cluster = described(
        "submitit executor: 'slurm', 'local' (subprocesses on this machine, for tests) or "
        "'auto' (slurm when srun is on PATH)", Cluster.SLURM)
    partition: str = described("SLURM partition ('' for the cluster's default)", "")
    time_min: int = described(
        "time limit of one array task run, in minutes; a task that reaches it checkpoints "
        "and is requeued", 60)
    chains_per_task: int = described("chains per array task", 1)
    gpus_per_task: int = described("GPUs per array task (0: none)", 0)
    cpus_per_task: int = described(
        "CPUs per array task; also its torch threads when sampler.threads is 0", 1)
    mem_gb: float = described("memory per array task in GB (0: the cluster's default)", 0.0)
    max_parallel: int = described("array tasks running at once (0: no limit)", 0)
    signal_delay_s: int = described(
        "seconds before the time limit at which SLURM sends USR2 (checkpoint and requeue)", 120)
    max_requeues: int = described(
        "timeouts or preemptions a task may be requeued after (SLURM's MaxBatchRequeue "
        "caps it too)", 3)
    extra: dict = described("extra sbatch parameters, e.g. {account: abc, qos: high}",
                            default_factory=dict)
    setup: list = described("shell lines run before each task (module load ..., source venv)",
                            default_factory=list)
    folder: str = described("submitit's folder for job pickles and logs ('': RUN_DIR/slurm)", "")
    job_name: str = described("SLURM job name", "losskernel")
    reduce: bool = described(
        "submit a reduce job that starts when every array task succeeded", True)
    reduce_time_min: int = described("time limit of the reduce job, in minutes", 60)
    reduce_cpus: int = described("CPUs of the reduce job (0: cpus_per_task)", 0)
    reduce_mem_gb: float = described(
        "memory of the reduce job in GB (0: the cluster's default)", 0.0)
    allow_partial: bool = described("run the reduce job with --allow-partial", False)

    def check(self) -> None:
        positive_int("slurm.time_min", self.time_min)
        positive_int("slurm.chains_per_task", self.chains_per_task)
        nonneg_int("slurm.gpus_per_task", self.gpus_per_task)
        positive_int("slurm.cpus_per_task", self.cpus_per_task)
        if not self.mem_gb >= 0:
            raise ConfigError(f"slurm.mem_gb: must be >= 0, got {self.mem_gb}")
        nonneg_int("slurm.max_parallel", self.max_parallel)
        nonneg_int("slurm.signal_delay_s", self.signal_delay_s)
        if self.signal_delay_s >= self.time_min * 60:
            raise ConfigError(
                f"slurm.signal_delay_s: {self.signal_delay_s} s must be shorter than "
                f"slurm.time_min ({self.time_min} min)"
            )
        nonneg_int("slurm.max_requeues", self.max_requeues)
        for key in self.extra:
            if not isinstance(key, str):
                raise ConfigError(f"slurm.extra: keys must be sbatch option names, got {key!r}")
        if not isinstance(self.setup, list) or not all(isinstance(x, str) for x in self.setup):
            raise ConfigError(f"slurm.setup: expected a list of shell lines, got {self.setup!r}")
        positive_int("slurm.reduce_time_min", self.reduce_time_min)
        nonneg_int("slurm.reduce_cpus", self.reduce_cpus)
        if not self.reduce_mem_gb >= 0:
            raise ConfigError(f"slurm.reduce_mem_gb: must be >= 0, got {self.reduce_mem_gb}")


@dataclass
class CalibrateConfig(Section):
    """The pilot grid of ``losskernel calibrate`` and its budget (see jobs/calibration/)."""

    section = "calibrate"

    lr: list = described("step sizes to try ([]: sampler.lr x 0.1, 1, 10)", default_factory=list)
    localization: list = described(
        "localizations to try ([]: sampler.localization x 0.1, 1, 10; [0] when it is 0)",
        default_factory=list)
    nbeta: list = described("nbeta values to try ([]: sampler.nbeta only)", default_factory=list)
    chains_per_setting: int = described(
        "pilot chains per setting (>= 2: the split-half CKA compares two halves of them)", 4)
    steps: int = described("SGLD steps of every pilot chain", 200)
    burnin_fraction: float = described(
        "fraction of the pilot steps before its first kept draw", 0.5)
    draws: int = described(
        "kept draws per pilot chain, spread evenly over the steps after burn-in (0: one every "
        "sampler.steps_between_draws steps, as the run will keep them)", 0)
    min_cka: float = described(
        "a setting is recommended only if its split-half CKA, projected to the configured "
        "run's sampler.chains x sampler.draws draws, is at least this", 0.9)
    reduce_max_n: int = described(
        "reduce each pilot to its N x N kernel (for 'losskernel analyze') when N <= this", 4096)
    output: str = described("where the pilot runs and the report go ('': OUTPUT/calibration)", "")

    def check(self) -> None:
        for key in ("lr", "localization", "nbeta"):
            values = getattr(self, key)
            if not isinstance(values, list):
                raise ConfigError(f"calibrate.{key}: expected a list of numbers, got {values!r}")
            clean = [check_type(f"calibrate.{key}", v, float) for v in values]
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
        after = self.steps - self.pilot_burnin_steps
        if after < max(self.draws, 8):
            raise ConfigError(
                f"calibrate.steps: {self.steps} steps leave {after} after burn-in, fewer than "
                f"the {max(self.draws, 8)} draws a pilot chain needs"
            )
        if not 0 <= self.min_cka <= 1:
            raise ConfigError(f"calibrate.min_cka: must be in [0, 1], got {self.min_cka}")
        nonneg_int("calibrate.reduce_max_n", self.reduce_max_n)

    @property
    def pilot_burnin_steps(self) -> int:
        """SGLD steps of every pilot chain before its first kept draw."""
        return round(self.steps * self.burnin_fraction)


@dataclass
class DevelopmentConfig(Section):
    """Checkpoints of one model for ``losskernel run`` to map side by side (Appendix D.5).

    Empty ``checkpoints`` (the default) means an ordinary single run. Otherwise every
    checkpoint gets its own run under OUTPUT/development/ with the same eval set,
    sampler and UMAP settings, so that the maps differ only in the weights.
    """

    section = "development"

    checkpoints: list = described(
        "checkpoint files of one model, in training order ([]: an ordinary single run); "
        "relative paths are taken from the working directory", default_factory=list)
    task_arg: str = described("the task.args key each checkpoint path is passed in", "checkpoint")

    def check(self) -> None:
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
