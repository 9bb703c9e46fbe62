"""The Section 3 task: data encoding, the shipped checkpoint, build(), torch.func compatibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from losskernel_dist.task import Task
from losskernel_dist.tasks.modular import (
    ADDITION,
    DEFAULT_CHECKPOINT,
    DIVISION,
    ModularTransformer,
    build,
    enumerate_pairs,
    load_checkpoint,
    model_from_checkpoint,
    modular_loss,
    split_pairs,
    train_mask_from_checkpoint,
    vocab_size,
)
from losskernel_dist.tasks.modular_train import train_modular

P = 97


@pytest.fixture(scope="module")
def pairs():
    return enumerate_pairs(P)


@pytest.fixture(scope="module")
def shipped():
    return load_checkpoint()


@pytest.fixture(scope="module")
def task200() -> Task:
    return build(n_eval=200)


def test_vocabularies_are_disjoint(pairs):
    tokens, targets = pairs.tokens, pairs.targets
    add, div = pairs.operation == ADDITION, pairs.operation == DIVISION
    add_in, div_in = set(tokens[add].flatten().tolist()), set(tokens[div].flatten().tolist())
    add_out, div_out = set(targets[add].tolist()), set(targets[div].tolist())
    assert add_in == set(range(P)) | {2 * P}
    assert div_in == set(range(P, 2 * P)) | {2 * P + 1}
    assert add_out <= set(range(P)) and div_out <= set(range(P, 2 * P))
    assert not (add_in | add_out) & (div_in | div_out)
    assert vocab_size(P) == 2 * P + 2
    assert tokens[:, 2].tolist() == [2 * P + int(op) for op in pairs.operation]


def test_results_are_correct_and_b_zero_excluded(pairs):
    add, div = pairs.operation == ADDITION, pairs.operation == DIVISION
    assert int(add.sum()) == P * P and int(div.sum()) == P * (P - 1)
    assert not bool((pairs.b[div] == 0).any())
    for a, b, c in zip(
        pairs.a[div].tolist(), pairs.b[div].tolist(), pairs.result[div].tolist(), strict=True
    ):
        assert c == a * pow(b, -1, P) % P
    assert torch.equal(pairs.result[add], (pairs.a[add] + pairs.b[add]) % P)
    assert torch.equal(pairs.targets, pairs.result + P * pairs.operation)


def test_split_is_stratified_and_seeded(pairs):
    mask = split_pairs(pairs, 0.5, seed=3)
    assert torch.equal(mask, split_pairs(pairs, 0.5, seed=3))
    assert not torch.equal(mask, split_pairs(pairs, 0.5, seed=4))
    for op in (ADDITION, DIVISION):
        sel = pairs.operation == op
        assert int(mask[sel].sum()) == round(0.5 * int(sel.sum()))
    with pytest.raises(ValueError, match="train_fraction"):
        split_pairs(pairs, 0.0, seed=0)


def test_shipped_checkpoint_fits_its_training_set(shipped, pairs):
    assert DEFAULT_CHECKPOINT.stat().st_size < 5 * 2**20
    model = model_from_checkpoint(shipped)
    assert not model.training
    assert all(t.dtype == torch.float32 for t in shipped["state_dict"].values())
    in_train = train_mask_from_checkpoint(shipped, pairs)
    assert torch.equal(
        in_train, split_pairs(pairs, shipped["split"]["train_fraction"], shipped["split"]["seed"])
    )
    train = pairs.subset(in_train)
    with torch.no_grad():
        correct = model(train.tokens).argmax(-1) == train.targets
    for op in (ADDITION, DIVISION):
        assert bool(correct[train.operation == op].all())
    assert shipped["metrics"]["train_acc_addition"] == 1.0
    assert shipped["metrics"]["train_acc_division"] == 1.0


def test_build_gives_balanced_labelled_eval_set(task200, shipped, pairs):
    task = task200
    assert isinstance(task, Task) and task.n_eval == 200
    assert not task.model.training
    assert task.n_train == int(train_mask_from_checkpoint(shipped, pairs).sum())
    labels = np.asarray(task.labels)
    assert labels.tolist() == [0] * 100 + [1] * 100
    assert list(task.label_names) == ["addition", "division"]
    attrs = task.attributes
    assert set(attrs) >= {"operation", "a", "b", "result", "dividend_zero", "in_train"}
    assert np.array_equal(attrs["operation"], labels)
    tokens, targets = task.eval.tensors
    a, b, res = attrs["a"], attrs["b"], attrs["result"]
    assert np.array_equal(tokens[:, 0].numpy(), a + P * labels)
    assert np.array_equal(tokens[:, 1].numpy(), b + P * labels)
    assert np.array_equal(targets.numpy(), res + P * labels)
    div = labels == 1
    assert np.array_equal(
        res[div], [x * pow(int(y), -1, P) % P for x, y in zip(a[div], b[div], strict=True)]
    )
    assert np.array_equal(attrs["dividend_zero"], (div & (a == 0)).astype(int))
    assert len({(int(o), int(x), int(y)) for o, x, y in zip(labels, a, b, strict=True)}) == 200
    train_set = {tuple(t.tolist()) for t in task.train.tensors[0]}
    in_train = np.array([tuple(t.tolist()) in train_set for t in tokens])
    assert np.array_equal(attrs["in_train"], in_train.astype(int))


def test_build_is_deterministic_and_pools_work(task200):
    again = build(n_eval=200)
    assert torch.equal(task200.eval.tensors[0], again.eval.tensors[0])
    other = build(n_eval=200, eval_seed=1)
    assert not torch.equal(task200.eval.tensors[0], other.eval.tensors[0])
    fraction_in_train = build(n_eval=2000).attributes["in_train"].mean()
    assert 0.4 < fraction_in_train < 0.6  # a uniform draw, not a replay of the split
    held = build(n_eval=20, eval_from="heldout")
    assert held.attributes["in_train"].sum() == 0
    trained = build(n_eval=20, eval_from="train")
    assert trained.attributes["in_train"].all()


def test_build_rejects_bad_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="even"):
        build(n_eval=201)
    with pytest.raises(ValueError, match="pool has only"):
        build(n_eval=20000)
    with pytest.raises(ValueError, match="eval_from"):
        build(n_eval=20, eval_from="test")
    with pytest.raises(FileNotFoundError, match="not found"):
        build(checkpoint=str(tmp_path / "nope.pt"))


def test_functional_call_and_vmap_match_plain_call(task200):
    """The sampler evaluates the model through torch.func on (stacked) parameter dicts."""
    model = task200.model
    tokens = task200.eval.tensors[0][:16]
    params = {k: v.detach() for k, v in model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    moved = {k: v + 1e-3 * torch.randn(v.shape, generator=generator) for k, v in params.items()}
    close = dict(rtol=1e-4, atol=1e-4)  # float32 kernels may sum in a different order
    with torch.no_grad():
        plain = model(tokens)
        assert torch.allclose(torch.func.functional_call(model, params, (tokens,)), plain, **close)
        moved_logits = torch.func.functional_call(model, moved, (tokens,))
        assert not torch.allclose(moved_logits, plain, **close)
        stacked = {k: torch.stack([params[k], moved[k]]) for k in params}
        both = torch.func.vmap(lambda p: torch.func.functional_call(model, p, (tokens,)))(stacked)
    assert both.shape == (2, 16, vocab_size(P))
    assert torch.allclose(both[0], plain, **close)
    assert torch.allclose(both[1], moved_logits, **close)


def test_loss_is_the_cross_entropy_of_each_sample(task200):
    tokens, targets = next(iter(DataLoader(task200.eval, batch_size=64)))
    with torch.no_grad():
        losses = modular_loss(task200.model, [tokens, targets])
        logits = task200.model(tokens)
    assert losses.shape == (64,) and losses.dtype == torch.float32
    direct = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    assert torch.allclose(losses, direct, rtol=1e-5, atol=1e-8)
    # and from its definition, -log softmax(logits)[target], in float64
    logits64 = logits.double()
    by_hand = logits64.logsumexp(-1) - logits64.gather(1, targets[:, None])[:, 0]
    assert torch.allclose(losses.double(), by_hand, rtol=1e-4, atol=1e-7)
    # one loss per sample, in the batch's order
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        permuted = modular_loss(task200.model, [tokens[order], targets[order]])
    assert torch.allclose(permuted, losses[order], rtol=1e-5, atol=1e-8)
    # a wrong target costs a confident model dearly; the right one almost nothing
    with torch.no_grad():
        wrong = modular_loss(task200.model, [tokens, (targets + 1) % P + P * (targets // P)])
    assert float(losses.max()) < 0.1 < float(wrong.min())


def test_losses_reproduce_the_training_loss_recorded_in_the_checkpoint(shipped, pairs):
    """The mean loss over the training pairs is what training recorded, per operation."""
    model = model_from_checkpoint(shipped)
    train = pairs.subset(train_mask_from_checkpoint(shipped, pairs))
    with torch.no_grad():
        losses = modular_loss(model, [train.tokens, train.targets]).double()
    for op, name in ((ADDITION, "addition"), (DIVISION, "division")):
        recorded = shipped["metrics"][f"train_loss_{name}"]
        assert float(losses[train.operation == op].mean()) == pytest.approx(recorded, rel=1e-4)


def test_full_forward_matches_last_only_shortcut():
    torch.manual_seed(0)
    model = ModularTransformer(vocab_size(5)).eval()
    tokens = enumerate_pairs(5).tokens
    with torch.no_grad():
        x = model.embed(tokens) + model.pos_embed
        for block in model.blocks:
            x = block(x, model.causal_mask)
        full = model.unembed(model.ln_final(x[:, -1]))
        assert torch.allclose(full, model(tokens), atol=1e-5)


def test_train_modular_writes_loadable_checkpoints(tmp_path: Path):
    out = tmp_path / "tiny.pt"
    kwargs = dict(
        p=5, train_fraction=0.6, seed=1, steps=5, batch_size=8, save_every=4, save_at=[1], log=None
    )
    result = train_modular(out, **kwargs)
    assert result["step"] == 5 and out.is_file()
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "tiny.pt",
        "tiny_step000000.pt",
        "tiny_step000001.pt",
        "tiny_step000004.pt",
    ]
    ckpt = load_checkpoint(out)
    assert ckpt["p"] == 5 and ckpt["step"] == 5 and "train_acc_addition" in ckpt["metrics"]
    again = train_modular(tmp_path / "again" / "tiny.pt", **kwargs)
    assert again["train_loss_addition"] == result["train_loss_addition"]
    ckpt2 = load_checkpoint(tmp_path / "again" / "tiny.pt")
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(value, ckpt2["state_dict"][key])
    task = build(checkpoint=str(tmp_path / "tiny_step000004.pt"), n_eval=10)
    assert task.n_eval == 10 and task.n_train == 15 + 12
