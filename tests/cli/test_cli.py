"""The command line: exit codes, one-line errors, and refused commands that write nothing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from losskernel_dist.cli import main
from losskernel_dist.store import RunStore

from ..conftest import linear_config


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash: to prove nothing changed."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def finished_run(tmp_path, write_config):
    data = linear_config(tmp_path / "run")
    path = write_config(data)
    assert main(["sample", str(path), "--no-progress"]) == 0
    assert main(["reduce", str(tmp_path / "run"), "--no-progress"]) == 0
    return tmp_path / "run", path, data


def test_sample_reduce_info(finished_run, capsys):
    run, _, data = finished_run
    store = RunStore.open(run / "store.zarr")
    assert store.done().all() and store.has_kernel()
    assert yaml.safe_load((run / "config.yaml").read_text())["sampler"]["lr"] == 1e-3
    assert store.config["sampler"]["chains"] == 2
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "draws done 40/40" in out and "kernel reduced" in out


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["sampler.lr=2e-3"], "sampler.lr: 0.001 -> 0.002"),
        (["sampler.seed=3"], "sampler.seed"),
        (["task.args={n: 100, n_eval: 24}"], "task.args"),
        (["sampler.lr=-1"], "sampler.lr: must be > 0"),
        (["sampler.chainz=3"], "sampler.chainz: unknown key"),
        (["task.target=nowhere_xyz:build"], "task.target 'nowhere_xyz:build'"),
    ],
)
def test_refused_commands_exit_nonzero_and_write_nothing(finished_run, capsys, overrides, needle):
    run, path, _ = finished_run
    before = tree_digest(run)
    args = ["sample", str(path), "--no-progress"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("losskernel: error:") and needle in err
    assert len(err.splitlines()) == 1
    assert tree_digest(run) == before


def test_output_dir_that_is_not_a_run_is_refused(tmp_path, write_config, capsys):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("do not touch")
    path = write_config(linear_config(other))
    assert main(["sample", str(path), "--no-progress"]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == ["thesis.tex"]


def test_changed_weights_with_the_same_config_are_refused(tmp_path, write_config, capsys,
                                                         weights_task):
    weights = weights_task
    torch.save(torch.ones(1, 8), weights)
    data = linear_config(tmp_path / "run", draws=4)
    data["task"] = {"target": "weights_task:build", "args": {"path": str(weights)}}
    path = write_config(data)
    assert main(["sample", str(path), "--no-progress"]) == 0
    before = tree_digest(tmp_path / "run")
    torch.save(torch.full((1, 8), 2.0), weights)  # retrained model, same config
    assert main(["sample", str(path), "--no-progress"]) == 2
    assert "different model" in capsys.readouterr().err
    assert tree_digest(tmp_path / "run") == before


def test_resume_of_finished_run_changes_nothing(finished_run):
    run, path, _ = finished_run
    losses = RunStore.open(run / "store.zarr").losses_array()[...]
    assert main(["sample", str(path), "--no-progress"]) == 0
    np.testing.assert_array_equal(RunStore.open(run / "store.zarr").losses_array()[...], losses)


def test_reduce_of_missing_run_and_console_script(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "losskernel_dist.cli", "reduce", str(tmp_path / "none")],
        capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("losskernel: error:") and "not a run directory" in out.stderr
