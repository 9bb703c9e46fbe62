"""The digits memorization task (paper Appendix D.3 on real data): data, checkpoint, config, run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from losskernel_dist.cli import main
from losskernel_dist.config import load_config
from losskernel_dist.task import load_task
from losskernel_dist.tasks import digits

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "digits_memorization.yaml"


@pytest.fixture(scope="module")
def full_task():
    return digits.build()


def test_flip_labels_flips_exactly_the_fraction_to_other_classes():
    labels = np.arange(500) % 10
    noisy, flipped = digits.flip_labels(labels, 0.2, seed=3)
    assert flipped.sum() == 100
    assert np.all((noisy != labels) == flipped.astype(bool))  # a flip never keeps the class
    assert set(np.unique(noisy)) <= set(range(10))
    again, _ = digits.flip_labels(labels, 0.2, seed=3)
    other, _ = digits.flip_labels(labels, 0.2, seed=4)
    assert np.array_equal(noisy, again) and not np.array_equal(noisy, other)
    # every other class is reachable: the new label is not a fixed shift
    shifts = (noisy - labels)[flipped.astype(bool)] % 10
    assert len(np.unique(shifts)) == 9


def test_split_is_stratified_and_seeded():
    _, y = digits.load_digit_arrays()
    idx = digits.split_train(y, 0.8, seed=0)
    for c in range(10):
        assert (y[idx] == c).sum() == round(0.8 * (y == c).sum())
    assert np.array_equal(idx, digits.split_train(y, 0.8, seed=0))
    assert not np.array_equal(idx, digits.split_train(y, 0.8, seed=1))


def test_shipped_task_memorized_the_flipped_labels(full_task):
    task = full_task
    x, y = digits.load_digit_arrays()
    flag = task.attributes["mislabelled"]
    assert task.n_eval == task.n_train == 1438
    assert flag.sum() == round(0.1 * task.n_train) == 144
    true = task.attributes["true_label"]
    assert np.array_equal(true, y[task.attributes["digit_index"]])
    assert np.all((task.labels != true) == flag.astype(bool))
    pixels, targets = task.eval.tensors
    assert torch.equal(pixels, torch.from_numpy(x[task.attributes["digit_index"]]))
    assert np.array_equal(targets.numpy(), task.labels)
    with torch.no_grad():
        predicted = task.model(pixels).argmax(1).numpy()
        losses = task.loss(task.model, [pixels, targets]).numpy()
    assert np.array_equal(predicted, task.labels)  # 100% on the noisy labels: memorized
    assert losses.shape == (1438,) and losses.mean() < 0.01
    assert losses[flag == 1].mean() > losses[flag == 0].mean()
    image = task.attributes["image"]
    assert image.shape == (1438, 8, 8, 3) and image.dtype == np.uint8
    assert task.label_names == [str(c) for c in range(10)]


def test_subset_keeps_attributes_aligned(full_task):
    task = digits.build(n_eval=100, eval_seed=5)
    assert task.n_eval == 100 and task.n_train == 1438
    pos = np.searchsorted(full_task.attributes["digit_index"], task.attributes["digit_index"])
    for key in ("mislabelled", "true_label"):
        assert np.array_equal(task.attributes[key], full_task.attributes[key][pos])
    assert np.array_equal(task.labels, full_task.labels[pos])
    with pytest.raises(ValueError, match="n_eval"):
        digits.build(n_eval=5000)


def test_train_digits_fits_noisy_labels_and_round_trips(tmp_path):
    ckpt = digits.train_digits(hidden=64, train_fraction=0.3, flip_fraction=0.25,
                               max_steps=3000, target_loss=0.05)
    assert ckpt["training"]["train_accuracy"] == 1.0
    path = tmp_path / "small.pt"
    torch.save(ckpt, path)
    task = digits.build(checkpoint=str(path))
    flag = task.attributes["mislabelled"]
    assert flag.sum() == round(0.25 * task.n_train)
    with torch.no_grad():
        assert np.array_equal(task.model(task.eval.tensors[0]).argmax(1).numpy(), task.labels)


def test_config_validates_and_builds_small():
    config = load_config(CONFIG, ["task.args={n_eval: 50}"])
    assert config.task.target == "losskernel_dist.tasks.digits:build"
    task = load_task(config.task.target, config.task.args)
    assert task.n_eval == 50


@pytest.mark.slow
def test_run_reports_memorization_auc(tmp_path):
    out = tmp_path / "run"
    code = main([
        "run", str(CONFIG), "--no-progress",
        "--set", f"output={out}",
        "--set", "sampler.chains=2", "--set", "sampler.draws=20",
        "--set", "sampler.burnin_steps=100", "--set", "sampler.checkpoint_every=0",
        "--set", "analysis.umap=false", "--set", "analysis.thumbnails=0",
    ])
    assert code == 0
    metrics = json.loads((out / "analysis" / "metrics.json").read_text())
    mem = metrics["memorization"]
    assert mem["attribute"] == "mislabelled" and mem["available"]
    assert mem["flagged"] == 144 and mem["clean"] == 1438 - 144 and mem["draws"] == 40
    # even 40 draws separate memorized samples clearly (the full config gives ~0.98)
    assert mem["auc"] > 0.8
    assert mem["mean_var_flagged"] > mem["mean_var_clean"]
    assert metrics["summary"]["memorization_auc"] == mem["auc"]
