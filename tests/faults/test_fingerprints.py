"""What a run is tied to: a resume that would mix two posteriors or two numerics is refused.

Refused, naming what differs: a changed training set (same weights and eval set),
another thread count on a CPU. Accepted: another eval.batch_size, which splits the
same eval samples differently (the eval set is fingerprinted by content).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from losskernel_dist.cli import main as cli_main
from losskernel_dist.config import config_from_dict
from losskernel_dist.jobs.sample import sample
from losskernel_dist.rundir import RunDir
from losskernel_dist.task import Task
from losskernel_dist.tasks import linear

from ..dist_helpers import assert_same_arrays, run_config, store_arrays, write_yaml

SHIFTED_TARGET = "tests.faults.test_fingerprints:shifted_train_linear"


def shifted_train_linear(shift: float = 0.0, **args: Any) -> Task:
    """The linear task with training target 0 moved by ``shift``: same w*, same eval set."""
    task = linear.build(**args)
    x, y = task.train.tensors
    y = y.clone()
    y[0] += shift
    return dataclasses.replace(task, train=torch.utils.data.TensorDataset(x, y))


def _last_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    return err[-1]


def test_changed_training_set_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    args = {"n": 128, "n_eval": 20, "dim": 6}
    first = run_config(run, chains=2, target=SHIFTED_TARGET, args={**args, "shift": 0.0})
    sample(config_from_dict(first), chains=[0], progress=False)
    cfg = write_yaml(tmp_path / "same.yaml", first)
    # the same config, but the data behind it changed (as when a training file is edited):
    import tests.faults.test_fingerprints as me

    original = me.shifted_train_linear
    me.shifted_train_linear = lambda **a: original(**{**a, "shift": 1.0})
    try:
        capsys.readouterr()
        assert cli_main(["sample", str(cfg), "--no-progress"]) == 2
    finally:
        me.shifted_train_linear = original
    line = _last_line(capsys)
    assert "different train set" in line, line
    assert cli_main(["sample", str(cfg), "--no-progress"]) == 0  # the original set resumes


def test_other_thread_count_is_refused_naming_the_fix(tmp_path, capsys):
    run = tmp_path / "run"
    data = run_config(run, chains=2, threads=1)
    sample(config_from_dict(data), chains=[0], progress=False)
    data["sampler"]["threads"] = 2
    cfg = write_yaml(tmp_path / "two_threads.yaml", data)
    capsys.readouterr()
    assert cli_main(["sample", str(cfg), "--no-progress"]) == 2
    line = _last_line(capsys)
    assert "threads 1 -> 2" in line and "sampler.threads=1" in line, line
    assert RunDir(run).open_store().done()[1].sum() == 0  # nothing was added


def test_eval_batch_size_changes_bits_so_a_resume_with_another_is_refused(tmp_path, capsys):
    """Not a different eval set (same samples), but other matrix shapes in the loss pass:
    on this CPU the last bits of the draws move, so the resume names eval.batch_size."""
    reference = tmp_path / "reference"
    sample(config_from_dict(run_config(reference, chains=2)), progress=False)
    other = tmp_path / "other"
    data = run_config(other, chains=2)
    data["eval"]["batch_size"] = 5
    sample(config_from_dict(data), progress=False)
    a, b = store_arrays(other)["losses"], store_arrays(reference)["losses"]
    assert np.allclose(a, b, rtol=1e-5) and not np.array_equal(a, b)
    run = tmp_path / "run"
    data = run_config(run, chains=2)
    sample(config_from_dict(data), chains=[0], progress=False)
    data["eval"]["batch_size"] = 5
    cfg = write_yaml(tmp_path / "five.yaml", data)
    capsys.readouterr()
    assert cli_main(["sample", str(cfg), "--no-progress"]) == 2
    line = _last_line(capsys)
    assert "eval_batch_size 8 -> 5" in line and "eval.batch_size=8" in line, line
    assert "different eval" not in line
    sample(config_from_dict(run_config(run, chains=2)), progress=False)
    assert_same_arrays(store_arrays(run), store_arrays(reference))
