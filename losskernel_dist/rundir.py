"""The owner of a run directory: every path in it, its config, its store, and atomic writes.

    RUN_DIR/
      config.yaml        the resolved config (rewritten on every resume)
      store.zarr/        the Zarr v3 store (store/ owns what is inside)
      checkpoints/       chain state for resume (checkpoint.py owns the files)
      locks/             per-chain locks of the live writers (locks.py)
      analysis/          metrics.json, figures, index.html (the report)
      calibration/       pilot runs and report of ``losskernel calibrate``
      development/       one sub-run per training checkpoint (``development.checkpoints``)
      slurm/             submitit's pickles and logs (unless ``slurm.folder`` is set)

No other module spells one of these names. ``RunDir`` answers "where"; the
functions below answer "may this config write here" (``check_existing_run``),
"make it" (``create_run``) and "both" (``prepare_run``), all before anything is
written. ``atomic_write`` is the one way any module replaces a file: readers see
the old or the new content, never a torn one, also after a power loss.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .config import Config, config_from_dict, differing_draw_keys, draw_keys, dump_config
from .errors import RunDirError, StoreError
from .fsio import fsync_path
from .sampler.schedule import StepSchedule
from .store import RunStore

if TYPE_CHECKING:  # the task is only read here; importing it would import torch
    from .task import Task

STORE_NAME = "store.zarr"
CONFIG_NAME = "config.yaml"
CHECKPOINTS_NAME = "checkpoints"
LOCKS_NAME = "locks"
ANALYSIS_NAME = "analysis"
METRICS_NAME = "metrics.json"
REPORT_NAME = "index.html"
CALIBRATION_NAME = "calibration"
DEVELOPMENT_NAME = "development"
SLURM_NAME = "slurm"



@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The caller writes the temporary file (with any writer: ``torch.save``,
    ``savefig``, ``open``); it is then fsynced, renamed over ``path`` and the
    directory fsynced. On an exception the temporary file is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_path(path.parent)


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Replace ``path`` with ``data`` (text is written as UTF-8) atomically; see ``atomic_path``."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(raw)
    return path


@dataclass(frozen=True)
class RunDir:
    """Where everything of one run lives; cheap to make, touches nothing on disk."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def store(self) -> Path:
        return self.path / STORE_NAME

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_NAME

    @property
    def locks(self) -> Path:
        return self.path / LOCKS_NAME

    @property
    def analysis(self) -> Path:
        return self.path / ANALYSIS_NAME

    @property
    def metrics_file(self) -> Path:
        return self.analysis / METRICS_NAME

    @property
    def report_file(self) -> Path:
        return self.analysis / REPORT_NAME

    @property
    def calibration(self) -> Path:
        return self.path / CALIBRATION_NAME

    @property
    def development(self) -> Path:
        return self.path / DEVELOPMENT_NAME

    @property
    def slurm(self) -> Path:
        return self.path / SLURM_NAME

    def has_store(self) -> bool:
        return self.store.exists()

    def read_config_dict(self) -> dict[str, Any]:
        """The resolved config this run was last sampled with, as a plain dict."""
        if not self.config_file.is_file():
            raise RunDirError(f"{str(self.path)!r} is not a run directory (no {CONFIG_NAME}): "
                              "give the output directory of a 'losskernel sample' or 'run'")
        return yaml.safe_load(self.config_file.read_text())

    def read_config(self) -> Config:
        """The typed config of this run (validated as at load)."""
        return config_from_dict(self.read_config_dict())

    def open_store(self, mode: str = "r") -> RunStore:
        return RunStore.open(self.store, mode=mode)

    def write_config(self, config: Config) -> None:
        text = dump_config(config)
        if self.config_file.is_file() and self.config_file.read_text() == text:
            return
        atomic_write(self.config_file, text)


def _ignorable(entry: Path) -> bool:
    """Entries a run directory may hold before its store exists (other ranks' locks, a killed
    creation's temporary store, the pilot runs of ``losskernel calibrate``)."""
    return (entry.name in (LOCKS_NAME, CALIBRATION_NAME)
            or entry.name.startswith(f"{STORE_NAME}.tmp"))


def check_existing_run(config: Config, fingerprints: Mapping[str, str]) -> RunStore | None:
    """Validate an existing run directory against this config; None when it is new.

    Refuses (RunDirError, nothing written) an output that is a file (or lies under one),
    a directory that is not a run, a run whose draw-changing keys differ, or one made
    from a different model or eval set.
    """
    run = RunDir(config.run_dir)
    if not run.path.exists():
        above = next((p for p in run.path.absolute().parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise RunDirError(f"output {str(run.path)!r} lies under {str(above)!r}, which is a "
                              "file, not a directory: choose another output")
        return None
    if not run.path.is_dir():
        raise RunDirError(f"output {str(run.path)!r} is an existing file, not a directory: "
                          "choose another output")
    if not run.has_store():
        if any(not _ignorable(entry) for entry in run.path.iterdir()):
            raise RunDirError(
                f"output {str(run.path)!r} exists, is not empty and holds no run ({STORE_NAME}): "
                "choose another output or empty it"
            )
        return None
    try:
        store = run.open_store(mode="r+")
    except StoreError as exc:
        raise RunDirError(str(exc)) from exc
    changed = differing_draw_keys(store.config, config)
    if changed:
        old = draw_keys(store.config)
        new = draw_keys(config)
        detail = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise RunDirError(
            f"run {str(run.path)!r} was sampled with a different config; "
            f"refusing to resume with changed {detail}"
        )
    stored = store.fingerprints
    for key, value in fingerprints.items():
        if key in stored and stored[key] != value:
            raise RunDirError(
                f"run {str(run.path)!r} was sampled from a different {key.replace('_', ' ')} "
                f"(stored {stored[key][:12]}, now {value[:12]}); refusing to mix kernels"
            )
    return store


def create_run(config: Config, task: Task, fingerprints: Mapping[str, str]) -> RunStore:
    """Create the run directory's store and config.yaml.

    The store is built under a temporary name and renamed into place, so a kill
    during creation leaves no half-made store that a resume would trip over.
    """
    run = RunDir(config.run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    for stale in run.path.glob(f"{STORE_NAME}.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = run.path / f"{STORE_NAME}.tmp{os.getpid()}"
    RunStore.create(
        tmp,
        chains=config.sampler.chains,
        draws=config.sampler.draws,
        n=task.n_eval,
        total_steps=StepSchedule.of(config.sampler).total_steps,
        config=config.to_dict(),
        labels=task.labels,
        label_names=list(task.label_names) if task.label_names is not None else None,
        attributes=task.stored_attributes(),
        extra_attrs={"fingerprints": dict(fingerprints), "n_train": task.n_train},
    )
    os.replace(tmp, run.store)
    fsync_path(run.path)
    run.write_config(config)
    return run.open_store(mode="r+")


def prepare_run(config: Config, task: Task, fingerprints: Mapping[str, str]) -> bool:
    """Create the run, or check that an existing one matches; True when it was created.

    Every check happens before anything is written: a refused config leaves the
    directory as it was.
    """
    existing = check_existing_run(config, fingerprints)
    if existing is None:
        create_run(config, task, fingerprints)
        return True
    RunDir(config.run_dir).write_config(config)
    return False
