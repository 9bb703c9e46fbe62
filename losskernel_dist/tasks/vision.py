"""Any image classifier on ``ImageFolder`` data as a ready-made task (target ``image_classifier``).

    task:
      target: losskernel_dist.tasks.vision:image_classifier
      args:
        model: torchvision:resnet18      # or timm:NAME, or a file saved with torch.save(model)
        weights: default                 # none (seeded random), default (the library's
                                         # pretrained weights, online), or a state-dict file
        train_root: data/train           # <class>/<image> folders (ImageFolder layout)
        eval_root: data/val
        image_size: 224
        normalisation: imagenet          # none, or {mean: [r, g, b], std: [r, g, b]}
        n_eval: 1000
        seed: 0

Class indices are the sorted class folders of ``train_root`` (ImageFolder's rule),
and the folder names are the label names, except when the folders are ImageNet
wnids and the model has the 1000 ImageNet outputs: then label k is ImageNet class
k, so that pretrained weights are used as trained. The eval classes must be among
the training classes.

The loading code is the ImageNet task's (``tasks/imagenet``): images are decoded
and resized by its ``images`` module (eval images once, in threads; training
images on access), subsets are drawn by its ``seeded_subset``, random weights get
their BatchNorm statistics from training images (``calibrate_batchnorm``), and
the loss is its per-sample cross-entropy. Attributes: ``image`` (thumbnails),
``mean_rgb``, ``eval_index``; each sample is described by its file and class.
torchvision and timm are imported only when a model of theirs is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from losskernel_dist.errors import MissingFileError, TaskError
from losskernel_dist.task import Task

from .imagenet import (
    IMAGENET_NORMALISATION,
    DecodedImages,
    ImageFiles,
    Normalisation,
    calibrate_batchnorm,
    choose_label_names,
    classification_loss,
    decode_all,
    mean_rgb,
    scan_class_folders,
    seeded_subset,
    thumbnails,
)

WEIGHTS = ("none", "default")
LIBRARIES = ("torchvision", "timm")


def class_folders(root: Path, what: str) -> list[str]:
    """The sorted class folders of an ImageFolder root."""
    if not root.is_dir():
        raise MissingFileError(f"{what} not found: {root}")
    with os.scandir(root) as entries:
        names = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise TaskError(f"{what} {root} has no class folders (expected {root}/<class>/<image>)")
    return names


def parse_normalisation(value: Any) -> Normalisation:
    """``imagenet``, ``none`` or ``{mean: [3 floats], std: [3 floats]}`` as (mean, std)."""
    if value == "imagenet":
        return IMAGENET_NORMALISATION
    if value == "none":
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if isinstance(value, Mapping) and set(value) == {"mean", "std"}:
        mean, std = value["mean"], value["std"]
        ok = all(isinstance(v, (list, tuple)) and len(v) == 3
                 and all(isinstance(x, (int, float)) for x in v) for v in (mean, std))
        if ok and all(s > 0 for s in std):
            return tuple(map(float, mean)), tuple(map(float, std))
    raise TaskError("normalisation must be imagenet, none or {mean: [r, g, b], std: [r, g, b]} "
                    f"(std > 0), got {value!r}")


def _library(name: str, model: str) -> Any:
    """torchvision.models or timm, or a TaskError saying what to install."""
    try:
        if name == "torchvision":
            import torchvision.models as library
        else:
            import timm as library
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        raise TaskError(f"model {model} needs {name} ({type(exc).__name__}: {exc}); "
                        "pip install 'losskernel-dist[vision]'") from exc
    return library


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise TaskError(f"cannot read the weights file {path}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TaskError(f"{path} is not a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def build_classifier(model: str, weights: str, num_classes: int, seed: int) -> nn.Module:
    """The classifier ``model`` names, with ``weights``, in eval mode.

    ``num_classes`` is the head's size for random weights and for a weights file
    (the library's pretrained weights keep their own head).
    """
    if not isinstance(model, str) or not model:
        raise TaskError(f"model must be torchvision:NAME, timm:NAME or a file, got {model!r}")
    if not isinstance(weights, str) or not weights:
        raise TaskError(f"weights must be none, default or a state-dict file, got {weights!r}")
    weights_file = None if weights in WEIGHTS else Path(weights).expanduser()
    if weights_file is not None and not weights_file.is_file():
        raise MissingFileError(f"weights file not found: {weights_file}")
    library, _, name = model.partition(":")
    if library not in LIBRARIES or not name:
        path = Path(model).expanduser()
        if not path.is_file():
            raise MissingFileError(f"model is neither torchvision:NAME nor timm:NAME, and no "
                                   f"file {path} exists")
        if weights == "default":
            raise TaskError("weights: default needs a library model (torchvision:NAME or "
                            "timm:NAME); a saved model carries its own weights")
        try:
            net = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # unpickling errors come in many types
            raise TaskError(f"cannot load the saved model {path}: {exc}") from exc
        if not isinstance(net, nn.Module):
            raise TaskError(f"{path} holds a {type(net).__name__}, not a torch.nn.Module "
                            "(save the model with torch.save(model, path))")
    else:
        lib = _library(library, model)
        pretrained = weights == "default"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            try:
                if library == "torchvision":
                    net = (lib.get_model(name, weights="DEFAULT") if pretrained
                           else lib.get_model(name, weights=None, num_classes=num_classes))
                else:
                    net = (lib.create_model(name, pretrained=True) if pretrained
                           else lib.create_model(name, pretrained=False,
                                                 num_classes=num_classes))
            except (ValueError, RuntimeError, OSError, KeyError) as exc:
                why = " ".join(str(exc).split())[:300]
                raise TaskError(f"cannot build {model} with weights {weights} "
                                f"({type(exc).__name__}: {why})") from exc
    if weights_file is not None:
        try:
            net.load_state_dict(_state_dict(weights_file))
        except RuntimeError as exc:
            why = " ".join(str(exc).split())[:300]
            raise TaskError(f"{weights_file} does not fit {model} with {num_classes} classes: "
                            f"{why}") from exc
    return net.eval()


def output_count(net: nn.Module, image_size: int) -> int:
    """How many logits the classifier gives (one forward pass of a blank image)."""
    with torch.no_grad():
        out = net(torch.zeros(1, 3, image_size, image_size))
    logits = out.logits if hasattr(out, "logits") else out
    return int(logits.shape[-1])


def image_classifier(
    model: str,
    train_root: str,
    eval_root: str,
    weights: str = "none",
    image_size: int = 224,
    normalisation: str | Mapping[str, Any] = "imagenet",
    n_eval: int | None = 1000,
    seed: int = 0,
    train_subset: int | None = None,
    thumbnail_size: int = 64,
    decode_threads: int = 0,
    bn_images: int = 64,
) -> Task:
    """The loss kernel task of an image classifier on ImageFolder data.

    model: ``torchvision:NAME``, ``timm:NAME`` or a file saved with ``torch.save(model)``.
    weights: ``none`` (seeded random; BatchNorm statistics from ``bn_images``
        training images), ``default`` (the library's pretrained weights) or a
        state-dict file.
    train_root, eval_root: ``<class>/<image>`` folders; training images are SGLD's,
        eval images (a seeded subset of ``n_eval``, all when null) the kernel's.
    image_size: side of the square images are resized to.
    normalisation: ``imagenet``, ``none`` or ``{mean: [...], std: [...]}``.
    seed: seed of the eval subset (and of ``train_subset``) and of random weights.
    train_subset: a seeded subset of this many training images instead of all.
    thumbnail_size: side of the ``image`` attribute's thumbnails (0: none).
    decode_threads: threads decoding the eval images (0: the CPU count, at most 16).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise TaskError(f"image_size must be an integer >= 16, got {image_size!r}")
    norm = parse_normalisation(normalisation)
    train_dir, eval_dir = Path(train_root).expanduser(), Path(eval_root).expanduser()
    train_classes = class_folders(train_dir, "train_root")
    eval_classes = class_folders(eval_dir, "eval_root")
    unknown = sorted(set(eval_classes) - set(train_classes))
    if unknown:
        raise TaskError(f"eval_root has classes that train_root has not: {unknown[:3]}")
    names = train_classes
    net = build_classifier(model, weights, len(names), seed)
    outputs = output_count(net, image_size)
    if outputs != len(names):
        names, why = choose_label_names(train_classes, "auto", outputs)
        if len(names) != outputs:
            raise TaskError(f"{model} has {outputs} outputs but train_root has {len(names)} "
                            f"classes ({why}): use weights none or a state-dict file "
                            "trained on these classes")
    index = {name: i for i, name in enumerate(names)}

    train_paths, train_names = scan_class_folders(train_dir, train_classes)
    if len(train_paths) == 0:
        raise TaskError(f"train_root {train_dir} has no images (.jpeg, .jpg, .png)")
    keep = seeded_subset(len(train_paths), train_subset, seed, "train_subset")
    train = ImageFiles(train_dir, train_paths[keep],
                       np.asarray([index[train_names[i]] for i in keep]), image_size, norm)
    if weights == "none" and bn_images:
        pick = seeded_subset(len(train), min(int(bn_images), len(train)), seed, "bn_images")
        calibrate_batchnorm(net, torch.stack([train[int(i)][0] for i in pick]))

    eval_paths, eval_names = scan_class_folders(eval_dir, eval_classes)
    if len(eval_paths) < 2:
        raise TaskError(f"eval_root {eval_dir} has {len(eval_paths)} images: a kernel needs 2")
    chosen = seeded_subset(len(eval_paths), n_eval, seed, "n_eval")
    labels = np.asarray([index[eval_names[i]] for i in chosen], dtype=np.int64)
    files = ImageFiles(eval_dir, eval_paths[chosen], labels, image_size, norm)
    pixels = decode_all(files, decode_threads or min(16, os.cpu_count() or 1))
    attributes: dict[str, np.ndarray] = {"mean_rgb": mean_rgb(pixels),
                                         "eval_index": chosen.astype(np.int64)}
    if thumbnail_size:
        attributes["image"] = thumbnails(pixels, int(thumbnail_size))
    return Task(
        model=net,
        train=train,
        eval=DecodedImages(pixels, labels, norm),
        loss=classification_loss,
        labels=labels,
        attributes=attributes,
        label_names=list(names),
        describe=lambda j: f"{eval_paths[chosen[j]].decode()} ({eval_names[chosen[j]]})",
    )
