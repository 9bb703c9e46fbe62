"""``Task.describe``: each sample's text, validated when the Task is made and stored as the
``text`` attribute when a run is created, for the analysis (which never imports the task)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from losskernel_dist import Task, TaskError
from losskernel_dist.config import config_from_dict
from losskernel_dist.rundir import create_run
from losskernel_dist.task import TEXT_ATTRIBUTE
from losskernel_dist.tasks import digits, linear, modular

from ..dist_helpers import run_config


def tiny_task(**fields) -> Task:
    data = TensorDataset(torch.randn(8, 2), torch.randn(8))
    return Task(model=torch.nn.Linear(2, 1), train=data, eval=data,
                loss=lambda m, b: (m(b[0]).squeeze(-1) - b[1]) ** 2, **fields)


def test_describe_must_be_callable_returning_str_and_not_doubled():
    with pytest.raises(TaskError, match="describe must be callable"):
        tiny_task(describe="sample")
    with pytest.raises(TaskError, match="both describe and attributes"):
        tiny_task(describe=str, attributes={TEXT_ATTRIBUTE: [str(i) for i in range(8)]})
    with pytest.raises(TaskError, match=r"describe\(0\) returned int"):
        tiny_task(describe=lambda j: j).stored_attributes()
    assert TEXT_ATTRIBUTE not in tiny_task().stored_attributes()


def test_a_new_run_stores_the_texts(tmp_path):
    config = config_from_dict(run_config(tmp_path / "r"))
    task = linear.build(n=128, n_eval=20, dim=6)
    store = create_run(config, task, {"model": "m", "eval_samples": "e"})
    texts = store.attributes()[TEXT_ATTRIBUTE]
    assert texts.shape == (20,)
    assert [str(t) for t in texts] == [task.describe(j) for j in range(20)]
    assert str(texts[0]).startswith("block 0: y = ")


def test_modular_texts_are_the_equations():
    task = modular.build(n_eval=40)
    texts = task.stored_attributes()[TEXT_ATTRIBUTE]
    attrs, p = task.attributes, 97
    for j, text in enumerate(texts):
        a, op, b, _, c = str(text).split()
        assert (int(a), int(b), int(c)) == (attrs["a"][j], attrs["b"][j], attrs["result"][j])
        assert op == ("/" if attrs["operation"][j] else "+")
        if op == "/":
            assert (int(b) * int(c)) % p == int(a)
        else:
            assert (int(a) + int(b)) % p == int(c)


def test_digits_texts_say_the_digit_and_the_flip():
    task = digits.build(n_eval=200)
    texts = task.stored_attributes()[TEXT_ATTRIBUTE]
    flipped = np.array(["(flipped)" in str(t) for t in texts])
    assert np.array_equal(flipped, task.attributes["mislabelled"] == 1)
    j = int(np.argmax(flipped))
    assert str(texts[j]) == (f"digit #{task.attributes['digit_index'][j]}: a "
                             f"{task.attributes['true_label'][j]}, trained as {task.labels[j]} "
                             "(flipped)")
