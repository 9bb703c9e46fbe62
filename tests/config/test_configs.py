"""Every shipped config in configs/ validates, and its task builds at a small size.

A config is loaded exactly as ``losskernel run`` loads it; then its task is built with
``task.args`` overridden to a small evaluation set (the rest of its args, e.g. the
checkpoint, kept), so a renamed argument, a missing data file or a wrong target fails
here rather than minutes into a run. A config whose task target has no small-size
recipe below fails too: add one when adding a new kind of task.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from losskernel_dist.config import load_config
from losskernel_dist.task import Task, load_task

from ..vision_helpers import torchvision_problem

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def _imagenet_args(tmp_path: Path) -> dict:
    from ..tasks.test_imagenet import make_imagenet

    make_imagenet(tmp_path / "imagenet", "folders")
    return {"root": str(tmp_path / "imagenet"), "weights": None, "image_size": 32,
            "thumbnail_size": 8, "n_eval": 6}


# target -> (small task args given a tmp dir, expected N)
SMALL: dict[str, tuple[Callable[[Path], dict], int]] = {
    "losskernel_dist.tasks.linear:build": (lambda _: {"n_eval": 8}, 8),
    "losskernel_dist.tasks.modular:build": (lambda _: {"n_eval": 20}, 20),
    "losskernel_dist.tasks.digits:build": (lambda _: {"n_eval": 20}, 20),
    "losskernel_dist.tasks.imagenet:build": (_imagenet_args, 6),
}
NEEDS_TORCHVISION = {"losskernel_dist.tasks.imagenet:build"}


def test_there_are_configs():
    names = {p.name for p in CONFIGS}
    assert {"demo_modular.yaml", "digits_memorization.yaml", "imagenet_inception_v1.yaml"} <= names


def _config_param(path: Path):
    """The config as a test parameter, marked ``vision`` when its task needs torchvision."""
    target = (yaml.safe_load(path.read_text()).get("task") or {}).get("target")
    marks = [pytest.mark.vision] if target in NEEDS_TORCHVISION else []
    return pytest.param(path, marks=marks, id=path.name)


@pytest.mark.parametrize("path", [_config_param(p) for p in CONFIGS])
def test_config_validates_and_its_task_builds_small(path, tmp_path):
    config = load_config(path)
    target = config.task.target
    assert target in SMALL, (
        f"{path.name}: no small-size recipe for task target {target!r}; add one to SMALL in "
        "tests/config/test_configs.py"
    )
    if target in NEEDS_TORCHVISION and torchvision_problem():
        pytest.skip(f"{path.name}: torchvision does not import here (run it with .venv-vision)")
    make_args, n_eval = SMALL[target]
    args = {**config.task.args, **make_args(tmp_path)}
    task = load_task(target, args)
    assert isinstance(task, Task) and task.n_eval == n_eval
    # one loss per eval sample at w*, finite: the config's task is usable as it stands
    batch = torch.utils.data.default_collate([task.eval[i] for i in range(min(4, n_eval))])
    with torch.no_grad():
        losses = task.loss(task.model, batch)
    assert losses.shape == (min(4, n_eval),) and torch.isfinite(losses).all()
