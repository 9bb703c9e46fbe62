"""Inception-v1 (GoogLeNet) on ImageNet: the paper's Section 4 task (target ``build``).

The kernel is over a reproducible random subset of ``n_eval`` validation
images (the paper: 10,000), SGLD minibatches come from the training images, and
the model is torchvision's GoogLeNet (Inception-v1). Images are resized to
``image_size`` x ``image_size`` (the paper: 256 x 256, aspect ratio not kept)
and normalised with the usual ImageNet mean and standard deviation.

The parts, one module each:

* ``folders``: the directory layouts of ``root`` (class folders, a flat ``val/``
  with the Kaggle csv or the devkit's ground truth) and the class order.
* ``images``: decoding, resizing and normalising images; the eval set, decoded
  once, and the training set, decoded on access.
* ``model``: GoogLeNet from torchvision's weights, a checkpoint, or seeded random
  weights (``weights``, ``checkpoint``).

This module puts them together in ``build``. Attributes: ``image``
(``thumbnail_size`` px thumbnails for the thumbnail grid and the analysis'
colour groups), ``mean_rgb`` (N x 3 mean red, green, blue in [0, 1] of the
resized image, paper Appendix D.4) and ``val_index`` (position in the
validation listing). The parts' public names are re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from losskernel_dist.errors import MissingFileError
from losskernel_dist.task import Task, TaskError

from .folders import (
    CLASS_ORDERS,
    DEVKIT_DIR,
    DEVKIT_GROUND_TRUTH,
    DEVKIT_META,
    IMAGE_EXTENSIONS,
    LOC_SOLUTION,
    N_IMAGENET_CLASSES,
    VAL_NUMBER,
    WNID,
    choose_label_names,
    class_folders,
    flat_val_labels,
    read_devkit_ground_truth,
    read_devkit_wnid_order,
    read_loc_val_solution,
    scan_class_folders,
    scan_val,
    seeded_subset,
    standard_wnids,
)
from .images import (
    IMAGENET_MEAN,
    IMAGENET_NORMALISATION,
    IMAGENET_STD,
    DecodedImages,
    ImageFiles,
    Normalisation,
    decode_all,
    load_image,
    mean_rgb,
    normalise,
    thumbnails,
)
from .model import build_model, calibrate_batchnorm, classification_loss

__all__ = [
    "CLASS_ORDERS",
    "DEVKIT_DIR",
    "DEVKIT_GROUND_TRUTH",
    "DEVKIT_META",
    "IMAGENET_MEAN",
    "IMAGENET_NORMALISATION",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "LOC_SOLUTION",
    "N_IMAGENET_CLASSES",
    "VAL_NUMBER",
    "WNID",
    "DecodedImages",
    "ImageFiles",
    "Normalisation",
    "build",
    "build_model",
    "calibrate_batchnorm",
    "choose_label_names",
    "class_folders",
    "classification_loss",
    "decode_all",
    "flat_val_labels",
    "load_image",
    "mean_rgb",
    "normalise",
    "read_devkit_ground_truth",
    "read_devkit_wnid_order",
    "read_loc_val_solution",
    "scan_class_folders",
    "scan_val",
    "seeded_subset",
    "standard_wnids",
    "thumbnails",
]


def build(
    root: str,
    n_eval: int | None = 10000,
    eval_seed: int = 0,
    weights: str | None = "IMAGENET1K_V1",
    checkpoint: str | None = None,
    image_size: int = 256,
    class_order: str = "auto",
    val_labels: str | None = None,
    val_wnid_order: str | None = None,
    train_subset: int | None = None,
    train_seed: int = 0,
    thumbnail_size: int = 64,
    decode_threads: int = 0,
    model_seed: int = 0,
    transform_input: bool | None = None,
    bn_images: int = 64,
) -> Task:
    """The Section 4 Task: GoogLeNet, ImageNet training images, N random validation images.

    root: folder with ``train/`` and ``val/`` (layouts in the doc of ``folders``).
    n_eval: kernel samples, a seeded random subset of the validation images
        (kept in listing order); None takes them all.
    eval_seed: seed of that subset.
    weights: torchvision ``GoogLeNet_Weights`` member name, or None (random
        weights unless ``checkpoint``).
    checkpoint: GoogLeNet state dict file; overrides ``weights``.
    image_size: side of the square the images are resized to (paper: 256).
    class_order: "auto", "standard" (ImageNet-1k order) or "folders" (see ``folders``).
    val_labels, val_wnid_order: label files of a flat val folder.
    train_subset: use a seeded random subset of this many training images
        (n = train_subset) instead of all of them.
    thumbnail_size: side of the ``image`` attribute's thumbnails (0: none; the
        analysis then has no colour groups or thumbnail grid).
    decode_threads: threads decoding the eval images (0: the CPU count, at most 16).
    model_seed: seed of random weights.
    bn_images: random weights only: training images whose statistics set the
        BatchNorm buffers (``calibrate_batchnorm``; 0 keeps the init's 0 and 1).
    transform_input: torchvision's input re-normalisation (None: automatic).
    """
    root_path = Path(root).expanduser()
    train_dir = root_path / "train"
    if not train_dir.is_dir():
        raise MissingFileError(f"no train folder in {root_path} (expected train/<wnid>/...)")
    if not isinstance(image_size, int) or image_size < 16:
        raise TaskError(f"image_size must be an integer >= 16, got {image_size!r}")
    train_classes = class_folders(train_dir)
    if not train_classes:
        raise TaskError(f"{train_dir} has no wnid folders (n + 8 digits)")

    model = None
    model_classes = None
    if checkpoint is not None or weights is not None:
        model = build_model(weights, checkpoint, None, model_seed, transform_input)
        model_classes = int(model.fc.out_features)
    names, order_reason = choose_label_names(train_classes, class_order, model_classes)
    index = {w: i for i, w in enumerate(names)}
    random_model = model is None
    if random_model:
        model = build_model(None, None, len(names), model_seed, transform_input)
    elif model_classes != len(names):
        raise TaskError(f"the model has {model_classes} classes but the label space has "
                        f"{len(names)} ({order_reason})")

    train_paths, train_wnids = scan_class_folders(train_dir, train_classes)
    keep = seeded_subset(len(train_paths), train_subset, train_seed, "train_subset")
    train = ImageFiles(train_dir, train_paths[keep],
                       np.asarray([index[train_wnids[i]] for i in keep]), image_size)
    if random_model and bn_images:
        pick = seeded_subset(len(train), min(int(bn_images), len(train)), model_seed, "bn_images")
        calibrate_batchnorm(model, torch.stack([train[int(i)][0] for i in pick]))

    val_paths, val_wnids, _layout = scan_val(root_path, val_labels, val_wnid_order)
    unknown = sorted(set(val_wnids) - set(index))
    if unknown:
        raise TaskError(f"validation classes {unknown[:3]} are not in the label space "
                        f"({order_reason})")
    chosen = seeded_subset(len(val_paths), n_eval, eval_seed, "n_eval")
    labels = np.asarray([index[val_wnids[i]] for i in chosen], dtype=np.int64)
    files = ImageFiles(root_path / "val", val_paths[chosen], labels, image_size)
    threads = decode_threads or min(16, os.cpu_count() or 1)
    pixels = decode_all(files, threads)
    attributes: dict[str, np.ndarray] = {
        "mean_rgb": mean_rgb(pixels),
        "val_index": chosen.astype(np.int64),
    }
    if thumbnail_size:
        attributes["image"] = thumbnails(pixels, int(thumbnail_size))
    return Task(
        model=model,
        train=train,
        eval=DecodedImages(pixels, labels),
        loss=classification_loss,
        labels=labels,
        attributes=attributes,
        label_names=names,
        describe=lambda j: f"val/{val_paths[chosen[j]].decode()} ({val_wnids[chosen[j]]})",
    )
