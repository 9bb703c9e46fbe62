"""The functional form of a user's model: the same losses and gradients as the module itself."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from losskernel_dist.sampler.functional import FunctionalLoss
from losskernel_dist.task import Task


class TiedLM(torch.nn.Module):
    """Embedding and unembedding share one weight (as GPT-2 does)."""

    def __init__(self, vocab: int = 11, width: int = 6) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.mix = torch.nn.Linear(width, width)
        self.unembed = torch.nn.Linear(width, vocab, bias=False)
        self.unembed.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.unembed(torch.tanh(self.mix(self.embed(tokens))))


def _loss(model: torch.nn.Module, batch) -> torch.Tensor:
    tokens, targets = batch
    return torch.nn.functional.cross_entropy(model(tokens), targets, reduction="none")


def test_tied_weights_are_swapped_under_both_names():
    torch.manual_seed(0)
    model = TiedLM().double()
    tokens, targets = torch.randint(0, 11, (32,)), torch.randint(0, 11, (32,))
    data = TensorDataset(tokens, targets)
    fl = FunctionalLoss(Task(model=model, train=data, eval=data, loss=_loss), torch.device("cpu"))
    assert fl.tied and fl.param_names == ["embed.weight", "mix.weight", "mix.bias"]

    params = {k: v + 0.1 * torch.randn_like(v) for k, v in fl.initial_params().items()}
    grads, loss = fl.grad_and_loss(params, [tokens, targets])

    # the module itself with the moved weights (the tie carries the change to unembed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    model.zero_grad()
    expected = _loss(model, [tokens, targets]).mean()
    expected.backward()
    torch.testing.assert_close(loss, expected.detach())
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad)  # both uses of the tied weight
    with torch.no_grad():
        torch.testing.assert_close(fl.losses(params, [tokens, targets]),
                                   _loss(model, [tokens, targets]))


def test_untied_models_skip_the_tie_search():
    model = torch.nn.Linear(3, 2)
    data = TensorDataset(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    fl = FunctionalLoss(Task(model=model, train=data, eval=data,
                             loss=lambda m, b: m(b[0]).sum(1)), torch.device("cpu"))
    assert not fl.tied
