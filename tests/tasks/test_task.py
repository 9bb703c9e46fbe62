"""Loading a Task from ``module:function``: every failure names the target."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch.utils.data import TensorDataset

from losskernel_dist import Task, TaskError, load_task


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_tasks.py").write_text(textwrap.dedent("""
        import torch
        from torch.utils.data import TensorDataset
        from losskernel_dist import Task

        def build(n_eval=4):
            model = torch.nn.Linear(2, 1)
            data = TensorDataset(torch.randn(8, 2), torch.randn(8))
            ev = TensorDataset(torch.randn(n_eval, 2), torch.randn(n_eval))
            return Task(model=model, train=data, eval=ev,
                        loss=lambda m, b: (m(b[0]).squeeze(-1) - b[1]) ** 2)

        def not_a_task():
            return 42

        value = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_tasks"
    sys.modules.pop("my_tasks", None)


def test_loads_user_task(user_module):
    task = load_task(f"{user_module}:build", {"n_eval": 6})
    assert isinstance(task, Task) and task.n_eval == 6


@pytest.mark.parametrize(
    "target,args,needle",
    [
        ("no_such_module_xyz:build", {}, "cannot import module 'no_such_module_xyz'"),
        ("my_tasks:missing", {}, "has no function 'missing'"),
        ("my_tasks:value", {}, "is not callable"),
        ("my_tasks:not_a_task", {}, "returned int, expected losskernel_dist.Task"),
        ("my_tasks:build", {"wrong": 1}, "rejected task.args"),
        ("my_tasks.build", {}, "module:function"),
    ],
)
def test_load_errors_name_the_target(user_module, target, args, needle):
    with pytest.raises(TaskError) as err:
        load_task(target, args)
    assert needle in str(err.value)


def test_task_validates_its_fields():
    model = torch.nn.Linear(2, 1)
    data = TensorDataset(torch.randn(5, 2), torch.randn(5))
    loss = lambda m, b: m(b[0]).squeeze(-1)  # noqa: E731
    with pytest.raises(TaskError, match="labels has shape"):
        Task(model=model, train=data, eval=data, loss=loss, labels=[0, 1])
    with pytest.raises(TaskError, match="labels must be integers"):
        Task(model=model, train=data, eval=data, loss=loss, labels=[0.5] * 5)
    with pytest.raises(TaskError, match="attributes"):
        Task(model=model, train=data, eval=data, loss=loss, attributes={"x": [1, 2]})
    with pytest.raises(TaskError, match="eval is empty"):
        Task(model=model, train=data, eval=TensorDataset(torch.zeros(0, 2)), loss=loss)
    with pytest.raises(TaskError, match="model must be"):
        Task(model="m", train=data, eval=data, loss=loss)
