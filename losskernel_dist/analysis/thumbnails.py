"""Thumbnail grids of image tasks (paper Figure 3): references with their top and bottom neighbours.

An image task marks itself by a per-sample attribute named ``image`` of shape
(N, H, W, 3), (N, 3, H, W) or (N, H, W) (uint8 0..255 or float 0..1). Each row
shows one reference sample (chosen at random with the analysis seed), its
``k`` most correlated samples and its ``k`` least correlated, each captioned
with rho and, when there are labels, the label name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import plots

IMAGE_ATTRIBUTE = "image"
# Each sample's text (Task.describe, stored by the run; task.TEXT_ATTRIBUTE, which the
# analysis cannot import: the task layer imports torch).
TEXT_ATTRIBUTE = "text"


def as_display(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) or (N, H, W) float in [0, 1] for imshow."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 2, 3, 1)
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(f"'image' attribute must be (N,H,W,3), (N,3,H,W) or (N,H,W), got {images.shape}")
    out = images.astype(np.float64)
    if images.dtype == np.uint8:
        out = out / 255.0
    return np.clip(out, 0.0, 1.0)


def choose_references(n: int, count: int, seed: int) -> np.ndarray:
    """``count`` distinct random samples, seeded, in increasing order."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(count, n), replace=False))


def thumbnail_grid(
    images: np.ndarray,
    references: np.ndarray,
    top_index: np.ndarray,
    top_corr: np.ndarray,
    bottom_index: np.ndarray,
    bottom_corr: np.ndarray,
    path: Path,
    k: int = 5,
    label_of: Sequence[str] | None = None,
) -> Path:
    """One row per reference: the reference, its top-k, then its bottom-k neighbours."""
    plt = plots.plt
    pics = as_display(images)
    k_top = min(k, top_index.shape[1])
    k_bot = min(k, bottom_index.shape[1])
    cols = 1 + k_top + k_bot
    fig, axes = plt.subplots(len(references), cols, figsize=(1.3 * cols, 1.45 * len(references)),
                             squeeze=False)
    for r, ref in enumerate(references):
        cells = [(int(ref), "reference", None)]
        cells += [(int(top_index[ref, j]), "top", top_corr[ref, j]) for j in range(k_top)]
        cells += [(int(bottom_index[ref, j]), "bottom", bottom_corr[ref, j]) for j in range(k_bot)]
        for c, (idx, kind, rho) in enumerate(cells):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if idx < 0:
                ax.set_axis_off()
                continue
            ax.imshow(pics[idx], cmap="gray" if pics.ndim == 3 else None, vmin=0, vmax=1)
            text = f"#{idx}" if rho is None else f"{rho:+.2f}"
            if label_of is not None:
                text += f"\n{label_of[idx][:14]}"
            ax.set_title(text, fontsize=6)
            colour = {"reference": "k", "top": "tab:green", "bottom": "tab:red"}[kind]
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(1.5)
    fig.suptitle(f"reference (black), {k_top} most correlated (green), "
                 f"{k_bot} least correlated (red); captions: rho", fontsize=8)
    return plots.save_figure(fig, path)
