"""The Python API: everything the ``losskernel`` command does, callable from a notebook.

    import losskernel_dist as lk
    cfg = lk.load_config("configs/demo_modular.yaml", overrides={"sampler.lr": 1e-5})
    run = lk.run(cfg)                     # sample, guard rails, reduce, analyze
    run.kernel("corr")                    # xarray.DataArray (sample_i, sample_j), dask-backed
    run = lk.loss_kernel(task, output="runs/x", chains=8, lr=1e-4)   # an in-memory Task

The functions are the job layer (``jobs/``) with Python arguments and a ``Run``
as the result; the CLI is a thin shell over them. Nothing here parses
arguments or prints results (progress bars aside, ``progress=False`` silences
them); errors a user can fix are ``LosskernelError`` subclasses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config, load_config
from .errors import ConfigError, RunDirError, StoreError
from .rundir import RunDir

if TYPE_CHECKING:  # torch and xarray are imported only by the calls that need them
    import xarray

    from .task import Task

__all__ = ["Run", "analyze", "load_config", "loss_kernel", "open_run", "reduce", "run",
           "sample"]

# where a bare setting name of ``loss_kernel(**settings)`` is looked up, in this order
SETTING_SECTIONS = ("sampler", "eval", "reduce", "analysis", "guards")


def in_memory_task(**_: Any) -> Task:
    """The task target (``task.IN_MEMORY_TARGET``) of runs made from an in-memory Task: it
    cannot be rebuilt."""
    from .errors import TaskError

    raise TaskError(
        "this run was made from an in-memory Task (losskernel_dist.loss_kernel): only "
        "loss_kernel(task, output=...) with the same task can resume it; for the command "
        "line or SLURM, write a function returning the Task and set task.target to it"
    )


class Run:
    """A run directory, opened: its config, progress, draws, kernel and analysis.

    Every array is read lazily from the Zarr store through dask, so opening a
    run with N in the hundreds of thousands costs nothing until values are asked for.
    ``sample_report`` and ``reduce_report`` hold what the last ``sample``/``reduce``
    call of this session did (None otherwise).
    """

    def __init__(self, path: str | Path) -> None:
        self.rundir = RunDir(Path(path))
        self.sample_report: Any = None
        self.reduce_report: Any = None
        self._config: Config | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def path(self) -> Path:
        return self.rundir.path

    @property
    def config(self) -> Config:
        """The resolved config the run was (last) sampled with."""
        if self._config is None:
            self._config = self.rundir.read_config()
        return self._config

    def info(self) -> dict[str, Any]:
        """Config, progress and chain health: the dict of ``losskernel info --json``."""
        from .jobs.info import run_info

        return run_info(self.path)

    def verify(self, repair: bool = False):
        """Check every chunk and checkpoint (``losskernel verify``); with ``repair`` mark the
        damaged draws not done so that ``sample`` recomputes them. A ``VerifyReport``."""
        from .jobs.verify import verify_run

        return verify_run(self.path, repair=repair)

    def _store(self):
        return self.rundir.open_store()

    def _sample_coords(self, store) -> dict[str, Any]:
        coords: dict[str, Any] = {}
        labels = store.labels()
        if labels is not None:
            coords["label"] = ("sample", labels)
            names = store.label_names()
            if names is not None:
                import numpy as np

                coords["label_name"] = ("sample", np.asarray(names, dtype=object)[labels])
        for name, values in store.attributes().items():
            if values.ndim == 1 and name not in coords:
                coords[name] = ("sample", values)
        return coords

    def losses(self) -> xarray.DataArray:
        """The loss of every eval sample at every kept draw: dims (chain, draw, sample).

        Draws that are not done (or of failed chains) are there too, as the store
        holds them; ``done`` and ``usable`` (the draws a kernel uses) are coordinates.
        """
        import dask.array as da
        import xarray as xr

        from .reduction.usable import usable_draws

        store = self._store()
        usable = usable_draws(store)
        data = da.from_zarr(store.losses_array())
        chains, draws, n = store.shape
        coords = {"chain": range(chains), "draw": range(draws), "sample": range(n),
                  "done": (("chain", "draw"), usable.done),
                  "usable": (("chain", "draw"), usable.mask)}
        coords.update(self._sample_coords(store))
        return xr.DataArray(data, dims=("chain", "draw", "sample"), coords=coords,
                            name="loss", attrs={"run": str(self.path)})

    def kernel(self, kind: str = "corr") -> xarray.DataArray:
        """The reduced kernel: ``"corr"`` (rho) or ``"cov"`` (K), dims (sample_i, sample_j).

        A correlation left out of the store is derived lazily from cov and var.
        """
        import dask.array as da
        import xarray as xr

        if kind not in ("corr", "cov"):
            raise ConfigError(f"kernel kind: expected 'corr' or 'cov', got {kind!r}")
        store = self._store()
        if not store.has_kernel():
            what = ("only streamed neighbour lists (reduce.kernel: neighbours); use "
                    "run.neighbours()" if store.has_stream_neighbours()
                    else "no kernel yet: call lk.reduce(run) first")
            raise StoreError(f"run {str(self.path)!r} has {what}")
        if kind == "corr" and not store.has_kernel_array("corr"):
            cov = da.from_zarr(store.kernel_array("cov")).astype("float64")
            sd = da.sqrt(da.from_zarr(store.kernel_array("var")))
            scale = da.where(sd > 0, 1.0 / da.where(sd > 0, sd, 1.0), 0.0)
            data = cov * scale[:, None] * scale[None, :]
        else:
            data = da.from_zarr(store.kernel_array(kind))
        n = store.shape[2]
        coords: dict[str, Any] = {"sample_i": range(n), "sample_j": range(n)}
        for name, (_, values) in self._sample_coords(store).items():
            coords[f"{name}_i"] = ("sample_i", values)
            coords[f"{name}_j"] = ("sample_j", values)
        return xr.DataArray(data, dims=("sample_i", "sample_j"), coords=coords, name=kind,
                            attrs={"run": str(self.path), "draws_used": store.draws_used})

    def neighbours(self) -> dict[str, Any]:
        """The streamed neighbour lists (``reduce.kernel: neighbours`` or ``both``): arrays
        ``top_index``, ``top_value``, ... by name, and ``attrs`` (k, metric, ...)."""
        return self._store().read_stream_neighbours()

    @property
    def metrics(self) -> dict[str, Any]:
        """The dict of ``analysis/metrics.json``."""
        path = self.rundir.metrics_file
        if not path.is_file():
            raise RunDirError(f"run {str(self.path)!r} has not been analysed yet: "
                              "call lk.analyze(run) (or 'losskernel analyze')")
        return json.loads(path.read_text())

    @property
    def report_path(self) -> Path:
        """The HTML report (``analysis/index.html``), written by ``analyze``."""
        return self.rundir.report_file


def open_run(path: str | Path) -> Run:
    """Open an existing run directory (refused when it holds no run)."""
    run_ = Run(path)
    if not run_.rundir.config_file.is_file():
        raise RunDirError(f"{str(run_.path)!r} is not a run directory (no config.yaml): "
                          "give the output directory of a run")
    if not run_.rundir.has_store():
        raise RunDirError(f"{str(run_.path)!r} has no store yet: sample it first")
    return run_


def _as_run(run_or_path: Run | str | Path) -> Run:
    return run_or_path if isinstance(run_or_path, Run) else open_run(run_or_path)


def _as_config(config: Config | str | Path | Mapping[str, Any]) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def sample(config: Config | str | Path | Mapping[str, Any], *, progress: bool = True,
           task: Task | None = None) -> Run:
    """Start or resume sampling (as ``losskernel sample``); the guard rails' warnings are
    printed on stderr, and GuardError is raised where they are configured as errors."""
    from .distributed import placement_from_env
    from .jobs.run import guard_rails
    from .jobs.sample import sample as sample_job

    config = _as_config(config)
    report = sample_job(config, progress=progress, task=task)
    run_ = Run(config.run_dir)
    run_.sample_report = report
    if placement_from_env().is_main:
        guard_rails(config, run_.rundir.open_store())
    return run_


def reduce(run: Run | str | Path, allow_partial: bool = False, *, progress: bool = True) -> Run:
    """Mean, variance, covariance and correlation (or the streamed neighbours) of a sampled
    run, with the engine and settings of its config (as ``losskernel reduce``)."""
    from .jobs.run import reduce_run_dir

    run_ = _as_run(run)
    run_.reduce_report = reduce_run_dir(run_.path, allow_partial=allow_partial,
                                        progress=progress)
    return run_


def analyze(run: Run | str | Path, allow_stale: bool = False) -> Run:
    """Metrics, figures and the HTML report of a reduced run (as ``losskernel analyze``).
    A stale kernel (the usable draws changed since the reduce) is refused unless
    ``allow_stale``."""
    from .jobs.run import analyze_run_dir

    run_ = _as_run(run)
    analyze_run_dir(run_.path, allow_stale=allow_stale)
    return run_


def run(config: Config | str | Path | Mapping[str, Any], *, progress: bool = True,
        task: Task | None = None) -> Run | None:
    """The whole job, as ``losskernel run``: sample (or resume), guard rails, reduce,
    analyze (when ``analysis.enabled``). A config with ``development.checkpoints`` runs
    one sub-run per checkpoint (in ``OUTPUT/development/``) and returns ``None``, since
    its output is a set of runs: open them with ``open_run``."""
    from .jobs.run import run_sequence

    config = _as_config(config)
    if config.development.checkpoints:
        if task is not None:
            raise ConfigError("development.checkpoints: not available for an in-memory task")
        from .jobs.development import run_development

        run_development(config, progress=progress)
        return None
    outcome = run_sequence(config, progress=progress, task=task)
    run_ = Run(config.run_dir)
    run_.sample_report, run_.reduce_report = outcome.sample, outcome.reduce
    return run_


def settings_overrides(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``{"chains": 8, "eval.batch_size": 512}`` -> dotted config keys.

    A bare name is looked up in the sections sampler, eval, reduce, analysis and
    guards, in that order (so ``batch_size`` is ``sampler.batch_size``); a dotted
    name is taken as it is.
    """
    from .config import section_fields

    out: dict[str, Any] = {}
    for name, value in settings.items():
        if "." in name:
            out[name] = value
            continue
        section = next((s for s in SETTING_SECTIONS if name in section_fields(s)), None)
        if section is None:
            raise ConfigError(f"{name}: not a setting of {', '.join(SETTING_SECTIONS)} "
                              "(give other keys dotted, through overrides=)")
        out[f"{section}.{name}"] = value
    return out


def loss_kernel(task: Task, output: str | Path, *, progress: bool = True,
                overrides: Mapping[str, Any] | Sequence[str] | None = None,
                **settings: Any) -> Run:
    """The whole job for a Task built in this process (a notebook's model and data).

    ``settings`` are config keys by name (``chains=8, draws=200, lr=1e-4``; see
    ``settings_overrides``), ``overrides`` any others, dotted. Calling it again with
    the same task and output resumes the run (the model and eval set are checked
    by their fingerprints, the settings like any resume). Such a run cannot be
    submitted to SLURM, whose array tasks would have to rebuild the task.
    """
    from .config import apply_overrides
    from .task import IN_MEMORY_TARGET
    from .task import Task as TaskClass

    if not isinstance(task, TaskClass):
        raise ConfigError(f"loss_kernel: task must be a losskernel_dist.Task, got "
                          f"{type(task).__name__}")
    data: dict[str, Any] = {"task": {"target": IN_MEMORY_TARGET, "args": {}},
                            "output": str(output)}
    apply_overrides(data, settings_overrides(settings))
    if overrides:
        apply_overrides(data, overrides)
    config = load_config(data)
    if config.task.target != IN_MEMORY_TARGET:
        raise ConfigError("task.target: loss_kernel runs the task it is given; do not set it")
    return run(config, progress=progress, task=task)
