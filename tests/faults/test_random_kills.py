"""SIGKILL at random commit points (chosen by a seeded generator, not a fixed list), then
resume: the finished run is bitwise the uninterrupted one, whatever point was hit."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest

from losskernel_dist.cli import main as cli_main
from losskernel_dist.config import config_from_dict
from losskernel_dist.jobs.sample import sample

from ..dist_helpers import (
    REPO,
    assert_same_arrays,
    run_config,
    store_arrays,
    subprocess_env,
    write_yaml,
)

POINTS = ("draws_written", "checkpoint_write", "checkpoint_saved", "done_marked")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 29])
def test_random_kills_then_resume_is_bitwise_identical(tmp_path, seed):
    reference = tmp_path / "reference"
    sample(config_from_dict(run_config(reference, chains=2, write_queue=0)), progress=False)
    run = tmp_path / "run"
    cfg = write_yaml(tmp_path / "config.yaml", run_config(run, chains=2, write_queue=0))
    rng = np.random.default_rng(seed)
    kills = 0
    for _ in range(4):
        point, count = str(rng.choice(POINTS)), int(rng.integers(1, 4))
        proc = subprocess.run(
            [sys.executable, str(REPO / "tests" / "kill_at.py"), point, str(count),
             "sample", str(cfg), "--no-progress"],
            env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=180,
        )
        assert proc.returncode in (-signal.SIGKILL, 99), (point, count, proc.stderr[-2000:])
        kills += proc.returncode == -signal.SIGKILL
    assert kills >= 1
    assert cli_main(["sample", str(cfg), "--no-progress"]) == 0
    assert_same_arrays(store_arrays(run), store_arrays(reference))
