"""Shared test helpers: small configs and runs of the built-in tasks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


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
def write_config(tmp_path: Path):
    """Write raw config data as YAML and return the path."""
    import yaml

    def _write(data: dict, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return _write
