"""The bring-your-own-model examples build real Tasks and sample with the package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losskernel_dist.cli import main
from losskernel_dist.config import load_config
from losskernel_dist.store import RunStore
from losskernel_dist.task import load_task

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def text_task(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # examples/ is imported from the repository root
    from examples import text_task

    return text_task


def test_sequence_loss_sums_real_tokens_and_ignores_padding(text_task):
    task = text_task.build(train_steps=3, n_eval=12, eval_seed=1)
    tokens, mask = task.eval.tensors
    assert tokens.shape == (12, 65) and mask.shape == (12, 64)
    losses = task.loss(task.model, [tokens, mask])
    assert losses.shape == (12,)
    # one sentence by hand: the cross-entropies of its real bytes, summed
    j = 4
    n = int(mask[j].sum())
    logits = task.model(tokens[j:j + 1, :n])[0]
    manual = F.cross_entropy(logits, tokens[j, 1:n + 1], reduction="sum")
    assert torch.allclose(losses[j], manual, rtol=1e-5)
    # whatever sits in the padding changes nothing (causal attention, masked targets)
    noisy = tokens.clone()
    pad = torch.zeros_like(noisy, dtype=torch.bool)
    pad[:, 1:] = mask == 0
    noisy[pad] = torch.randint(0, 256, (int(pad.sum()),))
    assert torch.allclose(task.loss(task.model, [noisy, mask]), losses, rtol=1e-5, atol=1e-5)
    # no labels; the sentence's source document is an attribute
    assert task.labels is None and task.n_train > 200
    assert set(np.unique(task.attributes["source"])) <= set(range(17))


def test_trainable_prefixes_freeze_the_rest(text_task):
    task = text_task.build(train_steps=1, n_eval=4, trainable=["blocks.1."])
    sampled = [n for n, p in task.model.named_parameters() if p.requires_grad]
    assert sampled and all(n.startswith("blocks.1.") for n in sampled)


def test_checkpoint_round_trip(text_task, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert text_task.main(["--out", str(out), "--steps", "2"]) == 0
    a = text_task.build(checkpoint=str(out), n_eval=5)
    b = text_task.build(checkpoint=str(out), n_eval=5)
    batch = list(a.eval.tensors)
    assert torch.equal(a.loss(a.model, batch), b.loss(b.model, batch))


def test_example_config_samples_draws(text_task, tmp_path, monkeypatch):
    config = REPO / "examples" / "text_task.yaml"
    cfg = load_config(config, ["task.args={train_steps: 3, n_eval: 10}"])
    assert load_task(cfg.task.target, cfg.task.args).n_eval == 10
    out = tmp_path / "run"
    code = main([
        "run", str(config), "--no-progress",
        "--set", "task.args={train_steps: 3, n_eval: 10}",
        "--set", "sampler.chains=1", "--set", "sampler.draws=2",
        "--set", "sampler.burnin_steps=1", "--set", "sampler.checkpoint_every=0",
        "--set", "analysis.enabled=false", "--set", f"output={out}",
    ])
    assert code == 0
    store = RunStore.open(out / "store.zarr")
    losses = np.asarray(store.group["losses"][...])
    assert losses.shape == (1, 2, 10) and np.isfinite(losses).all()
    assert not np.array_equal(losses[0, 0], losses[0, 1])  # the chain moved between draws
    assert store.has_kernel()
