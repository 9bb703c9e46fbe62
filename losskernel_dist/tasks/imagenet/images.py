"""ImageNet images for the model: decoding, resizing, normalising, and the per-sample
attributes made from them.

Images are resized to ``size`` x ``size`` (aspect ratio not kept) and
normalised with the usual ImageNet mean and standard deviation (or another
``normalisation``, for the image-classifier task). Eval images are
decoded once, in threads, into a uint8 array (``DecodedImages``; N x S x S x 3,
about 2 GB for the paper's N = 10,000 at 256 px) that is normalised on access;
training images are decoded on access (``ImageFiles``). ``thumbnails`` and
``mean_rgb`` (paper Appendix D.4) make the task's ``image`` and ``mean_rgb``
attributes from the decoded pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


Normalisation = tuple[Sequence[float], Sequence[float]]  # per-channel mean and std
IMAGENET_NORMALISATION: Normalisation = (IMAGENET_MEAN, IMAGENET_STD)


def normalise(pixels: np.ndarray | Tensor,
              normalisation: Normalisation = IMAGENET_NORMALISATION) -> Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [0, 1], less the per-channel mean,
    over the std (by default the ImageNet mean and std)."""
    x = torch.as_tensor(np.asarray(pixels)).to(torch.float32).div_(255.0)
    x = x.movedim(-1, -3)
    mean = torch.tensor(normalisation[0], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(normalisation[1], dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


class ImageFiles(Dataset):
    """Images decoded on access: item i is (normalised float32 [3, S, S], label int64)."""

    def __init__(self, folder: Path, paths: np.ndarray, labels: np.ndarray, size: int,
                 normalisation: Normalisation = IMAGENET_NORMALISATION) -> None:
        self.folder = Path(folder)
        self.paths = paths
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.size = int(size)
        self.normalisation = normalisation

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> Path:
        return self.folder / self.paths[i].decode()

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return normalise(load_image(self.path(i), self.size), self.normalisation), self.labels[i]


class DecodedImages(Dataset):
    """Images decoded once into uint8 [N, S, S, 3]; item i is normalised on access."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray,
                 normalisation: Normalisation = IMAGENET_NORMALISATION) -> None:
        self.pixels = pixels
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.normalisation = normalisation

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return normalise(self.pixels[i], self.normalisation), self.labels[i]


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
