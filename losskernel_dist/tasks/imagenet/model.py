"""The model of the ImageNet task: torchvision's GoogLeNet (Inception-v1).

Weights: ``weights`` names a torchvision ``GoogLeNet_Weights`` member
(default ``IMAGENET1K_V1``; torchvision downloads it once into
``$TORCH_HOME/hub/checkpoints``); ``checkpoint`` loads a state dict from a file
instead (e.g. that download, copied to a machine without internet); and
``weights=None`` without a checkpoint gives seeded random weights (tests), whose
BatchNorm statistics are set from training images (``calibrate_batchnorm``).
In eval mode GoogLeNet has no auxiliary classifiers; the model is built
without them, so their weights are not sampled.

torchvision is imported only when a model is built, so that this module (and the
task) imports wherever torch does and a missing torchvision is a TaskError that
says what to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskernel_dist.errors import MissingFileError
from losskernel_dist.task import TaskError


def _torchvision_googlenet() -> Any:
    try:
        from torchvision.models import GoogLeNet_Weights, googlenet
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        raise TaskError(
            f"the ImageNet task needs torchvision ({type(exc).__name__}: {exc}); install a "
            "torch/torchvision pair that import together (pip install 'losskernel-dist[vision]')"
        ) from exc
    return googlenet, GoogLeNet_Weights


def _state_dict_from(path: Path) -> dict[str, Tensor]:
    """A GoogLeNet state dict from a file: plain, or under 'state_dict'/'model', DDP prefix off."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise TaskError(f"cannot read checkpoint {path}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or "fc.weight" not in {k.removeprefix("module.") for k in obj}:
        raise TaskError(f"{path} is not a GoogLeNet state dict (no fc.weight)")
    return {k.removeprefix("module."): v for k, v in obj.items()
            if not k.removeprefix("module.").startswith(("aux1.", "aux2."))}


def build_model(
    weights: str | None,
    checkpoint: str | None,
    num_classes: int | None,
    model_seed: int,
    transform_input: bool | None,
) -> nn.Module:
    """GoogLeNet without auxiliary classifiers, in eval mode.

    ``num_classes`` is needed only for random weights. ``transform_input``
    (torchvision's re-normalisation that its ported pretrained weights expect)
    defaults to True for pretrained weights and checkpoints, False for random.
    """
    googlenet, weights_enum = _torchvision_googlenet()
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise MissingFileError(f"GoogLeNet checkpoint not found: {path}")
        state = _state_dict_from(path)
        model = googlenet(weights=None, aux_logits=False, init_weights=False,
                          num_classes=int(state["fc.weight"].shape[0]),
                          transform_input=True if transform_input is None else transform_input)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise TaskError(f"{path} does not fit torchvision's GoogLeNet: {exc}") from exc
    elif weights is not None:
        try:
            member = weights_enum[weights]
        except KeyError:
            known = ", ".join(weights_enum.__members__)
            raise TaskError(f"weights={weights!r}: not a GoogLeNet_Weights member ({known})") \
                from None
        kwargs = {} if transform_input is None else {"transform_input": transform_input}
        try:
            model = googlenet(weights=member, progress=False, **kwargs)
        except Exception as exc:  # URLError, OSError, hash mismatch, ...
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            raise TaskError(
                f"cannot load torchvision's GoogLeNet weights {weights} ({type(exc).__name__}: "
                f"{exc}). Without internet, download {member.url} elsewhere and pass "
                f"checkpoint=PATH (or put the file in {hub})"
            ) from exc
    else:
        if num_classes is None:
            raise TaskError("random weights need num_classes")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(model_seed))
            model = googlenet(weights=None, aux_logits=False, init_weights=True,
                              num_classes=int(num_classes),
                              transform_input=bool(transform_input))
    return model.eval()


def calibrate_batchnorm(model: nn.Module, images: Tensor, batch_size: int = 32) -> None:
    """Set every BatchNorm's running statistics to those of ``images`` (cumulative average).

    A randomly initialised GoogLeNet has running mean 0 and variance 1, so in
    eval mode BatchNorm does not rescale, each conv layer shrinks the signal,
    and after 20-odd layers every image gets the same logits. Statistics from
    real images normalise each layer, so a random model's losses depend on
    its input, as a test of the pipeline needs. Only buffers change.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
    model.eval()
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum


def classification_loss(model: nn.Module, batch: Any) -> Tensor:
    """Per-sample cross-entropy, Tensor[B]; batch is ``[images, labels]``."""
    images, labels = batch[0], batch[1]
    out = model(images)
    logits = out.logits if hasattr(out, "logits") else out  # GoogLeNetOutputs in train mode
    return F.cross_entropy(logits, labels, reduction="none")
