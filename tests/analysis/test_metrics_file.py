"""metrics.json is replaced atomically: a writer that dies midway leaves the previous file whole
and no temporary file behind, and a finished analysis leaves no temporary file either."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from losskernel_dist.jobs.run import analyze_run_dir as analyze_run
from losskernel_dist.rundir import RunDir

from ..analysis_helpers import planted_run, two_task_draws


def small_run(path: Path) -> RunDir:
    planted_run(path, two_task_draws(10, 10, chains=2, draws=16),
                labels=np.r_[np.zeros(10, int), np.ones(10, int)],
                analysis={"umap": False, "cka_grid": 4, "neighbours": 3})
    return RunDir(path)


def temporaries(folder: Path) -> list[str]:
    """Files an interrupted atomic write would leave (``.NAME.tmpPID``)."""
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_metrics_survive_a_writer_that_dies_midway(tmp_path, monkeypatch):
    run = small_run(tmp_path / "run")
    first = analyze_run(run.path)
    before = run.metrics_file.read_bytes()
    assert json.loads(before) == first
    assert temporaries(run.analysis) == []

    real_write_bytes = Path.write_bytes

    def dies_midway(self: Path, data: bytes) -> int:
        """The metrics writer gets half its bytes out, then the disk is full."""
        if self.name.startswith(f".{run.metrics_file.name}."):
            real_write_bytes(self, data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", dies_midway)
    with pytest.raises(OSError, match="No space left"):
        analyze_run(run.path)
    assert run.metrics_file.read_bytes() == before  # whole, and the first analysis' numbers
    assert temporaries(run.analysis) == []

    monkeypatch.undo()
    again = analyze_run(run.path)
    assert again["summary"] == first["summary"]
    assert json.loads(run.metrics_file.read_text()) == again
    assert temporaries(run.analysis) == []
