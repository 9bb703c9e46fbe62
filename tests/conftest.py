"""Shared test helpers: small configs and runs of the built-in tasks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    """The vision marker, and the count of tests per marked group (tests/marker_groups.py)."""
    from . import marker_groups

    config.addinivalue_line(
        "markers", "vision: needs torchvision (scripts/test.sh runs these in .venv-vision)")
    if not config.pluginmanager.is_registered(marker_groups):
        config.pluginmanager.register(marker_groups, "losskernel-marker-groups")


def linear_config(output: Path, args: dict | None = None, **sampler: Any) -> dict:
    """Raw config data for a small linear-task run; ``sampler`` overrides sampler keys."""
    base = {
        "chains": 2,
        "draws": 20,
        "burnin_steps": 10,
        "steps_between_draws": 1,
        "batch_size": 64,
        "lr": 1.0e-3,
        "nbeta": 100.0,
        "localization": 10.0,
        "seed": 0,
        "checkpoint_every": 10,
        "device": "cpu",
        "threads": 1,
    }
    base.update(sampler)
    return {
        "task": {"target": "losskernel_dist.tasks.linear:build",
                 "args": args or {"n": 128, "n_eval": 24}},
        "sampler": base,
        "eval": {"batch_size": 10},
        "reduce": {"block_size": 7},
        "analysis": {"enabled": False},
        "output": str(output),
    }


@pytest.fixture
def weights_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A user task ``weights_task:build(path)`` whose weights come from a file.

    Yields the weights path: saving other weights there changes the model and
    nothing else (same config), which fingerprint checks must notice.
    """
    import sys

    (tmp_path / "weights_task.py").write_text(
        "import torch\n"
        "from losskernel_dist.tasks import linear\n"
        "def build(path):\n"
        "    task = linear.build(n=64, n_eval=8)\n"
        "    task.model.weight.data.copy_(torch.load(path))\n"
        "    return task\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "w.pt"
    sys.modules.pop("weights_task", None)


@pytest.fixture
def write_config(tmp_path: Path):
    """Write raw config data as YAML and return the path."""
    import yaml

    def _write(data: dict, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return _write
