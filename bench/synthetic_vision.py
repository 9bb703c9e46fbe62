"""A synthetic Inception-v1 task for the GPU benchmark: real model, random images.

torchvision's GoogLeNet (Inception-v1) with random weights on random 256 x 256
images: the same compute per draw as the paper's ImageNet job, with no dataset
to download. Not a kernel anyone should interpret.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from losskernel_dist import Task


def _loss(model: torch.nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
    images, labels = batch
    return F.cross_entropy(model(images), labels, reduction="none")


def build(n_eval: int = 10_000, n_train: int = 4096, image_size: int = 256, seed: int = 0) -> Task:
    from torchvision.models import googlenet

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = googlenet(weights=None, aux_logits=False, init_weights=True, num_classes=1000).eval()
    shape = (3, image_size, image_size)
    train = TensorDataset(torch.randn(n_train, *shape, generator=gen),
                          torch.randint(0, 1000, (n_train,), generator=gen))
    evals = TensorDataset(torch.randn(n_eval, *shape, generator=gen),
                          torch.randint(0, 1000, (n_eval,), generator=gen))
    return Task(model=model, train=train, eval=evals, loss=_loss,
                labels=evals.tensors[1].numpy())
