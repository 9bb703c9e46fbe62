"""The run directory owner: paths, config round trip, atomic writes, create/check."""

from __future__ import annotations

import os

import pytest

from losskernel_dist.config import config_from_dict
from losskernel_dist.errors import RunDirError
from losskernel_dist.rundir import RunDir, atomic_path, atomic_write, check_existing_run

from ..dist_helpers import run_config


def test_paths_are_inside_the_run(tmp_path):
    run = RunDir(tmp_path / "r")
    for path in (run.store, run.config_file, run.checkpoints, run.locks, run.analysis,
                 run.calibration, run.development, run.slurm):
        assert path.parent == run.path
    assert run.metrics_file.parent == run.report_file.parent == run.analysis


def test_atomic_write_replaces_or_keeps(tmp_path):
    target = tmp_path / "f.json"
    atomic_write(target, "one")
    atomic_write(target, b"two")
    assert target.read_text() == "two"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "two"
    assert sorted(os.listdir(tmp_path)) == ["f.json"]


def test_a_non_run_directory_is_refused_and_the_config_round_trips(tmp_path):
    config = config_from_dict(run_config(tmp_path / "r"))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="holds no run"):
        check_existing_run(config, {})
    with pytest.raises(RunDirError, match="not a run directory"):
        RunDir(tmp_path / "r").read_config()
    RunDir(tmp_path / "r").write_config(config)
    assert RunDir(tmp_path / "r").read_config() == config
