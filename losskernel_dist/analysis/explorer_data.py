"""The data of the interactive explorer: every point of the 2-D map, and what it shows of each.

The explorer (report/explorer.py draws it) shows every sample of the 2-D UMAP as a
point, coloured by any colouring of the maps; hovering a point shows the sample (its
text, its thumbnail), its label and attributes; clicking it lists its nearest
neighbours by correlation. This module turns those per-sample arrays into one plain
JSON document, ``explorer.json``, that the page embeds as it is: numeric arrays as
base64 of little-endian typed arrays (what the browser reads without parsing
numbers), texts as strings, thumbnails as one uint8 array of pixels.

A page must open in a browser, so the document has a byte budget. The points and
their colourings are never thinned; when the rest would exceed the budget, it is
thinned in this order, each step recorded in ``thinned`` (the page says so): fewer
thumbnails (a seeded random subset keeps theirs), texts cut to TEXT_CHARS then to
TEXT_CHARS_SHORT characters, fewer neighbours per sample (down to MIN_NEIGHBOURS,
then down to 1).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT = "losskernel explorer 1"
MAX_BYTES = 40 * 2**20  # the document's budget; the page adds plotly.js (~5 MB)
THUMBNAIL_SIDE = 32  # thumbnails are box-averaged down to at most this many pixels a side
TEXT_CHARS = 200
TEXT_CHARS_SHORT = 60
MIN_NEIGHBOURS = 5
ELLIPSIS = "\u2026"

Colouring = tuple[str, np.ndarray, str, Sequence[str] | None]  # title, values, kind, names


def typed(values: np.ndarray, dtype: str) -> dict[str, Any]:
    """``values`` as ``{"dtype", "shape", "b64"}``: base64 of its little-endian bytes."""
    arr = np.ascontiguousarray(np.asarray(values).astype(np.dtype(dtype).newbyteorder("<")))
    return {"dtype": dtype, "shape": list(arr.shape),
            "b64": base64.b64encode(arr.tobytes()).decode("ascii")}


def b64_size(raw_bytes: int) -> int:
    """Characters of the base64 of ``raw_bytes`` bytes."""
    return 4 * math.ceil(raw_bytes / 3)


def code_dtype(levels: int) -> str:
    """The smallest unsigned type holding codes 0..levels-1."""
    return "uint8" if levels <= 256 else "uint16" if levels <= 65536 else "uint32"


def colouring_entry(title: str, values: np.ndarray, kind: str,
                    names: Sequence[str] | None) -> dict[str, Any]:
    """One colouring: categories as codes into ``levels`` (with their counts), or numbers."""
    values = np.asarray(values)
    if kind == "categorical":
        uniq, codes = np.unique(values, return_inverse=True)
        levels = [str(names[int(u)]) if names is not None and values.dtype.kind in "iu"
                  and 0 <= int(u) < len(names) else str(u) for u in uniq.tolist()]
        return {"name": title, "kind": "categorical", "levels": levels,
                "counts": np.bincount(codes, minlength=len(levels)).tolist(),
                "codes": typed(codes, code_dtype(len(levels)))}
    numbers = values.astype(np.float64)
    finite = numbers[np.isfinite(numbers)]
    return {"name": title, "kind": "order" if kind == "order" else "continuous",
            "min": float(finite.min()) if finite.size else 0.0,
            "max": float(finite.max()) if finite.size else 0.0,
            "values": typed(numbers, "float32")}


def small_thumbnails(images: np.ndarray, side: int = THUMBNAIL_SIDE,
                     chunk: int = 4096) -> np.ndarray:
    """uint8 (N, h, w, c) thumbnails of at most ``side`` pixels a side, c = 1 for grey
    images (all channels equal), else 3; from (N,H,W,3), (N,3,H,W) or (N,H,W), uint8 or
    float in [0, 1], box-averaged chunk by chunk (the images may be large)."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 2, 3, 1)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"'image' must be (N,H,W,3), (N,3,H,W) or (N,H,W), got {images.shape}")
    n, h, w, c = images.shape
    f = max(1, math.ceil(max(h, w) / side))
    hh, ww = h // f, w // f
    out = np.empty((n, hh, ww, c), dtype=np.uint8)
    for i in range(0, n, chunk):
        part = images[i:i + chunk, :hh * f, :ww * f].astype(np.float32)
        if images.dtype != np.uint8:
            part = np.clip(part, 0.0, 1.0) * 255.0
        part = part.reshape(len(part), hh, f, ww, f, c).mean(axis=(2, 4))
        out[i:i + chunk] = np.rint(part).astype(np.uint8)
    if c == 3 and np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0],
                                                                              out[..., 2]):
        out = out[..., :1]
    return out


def cut(texts: Sequence[str], chars: int) -> list[str]:
    """Each text cut to ``chars`` characters, an ellipsis marking a cut."""
    return [t if len(t) <= chars else t[:chars - 1] + ELLIPSIS for t in texts]


def json_size(value: Any) -> int:
    """Bytes of ``value`` as the page embeds it (UTF-8 JSON)."""
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


@dataclass
class Parts:
    """What the document holds besides the points; thinned in place to fit the budget."""

    n: int
    k: int  # neighbours per sample
    texts: list[str] | None
    thumbs: np.ndarray | None  # (N, h, w, c) uint8
    kept_thumbs: int = 0  # thumbnails embedded (a seeded random subset when fewer than N)
    thinned: list[str] = field(default_factory=list)

    def size(self) -> int:
        """Bytes of the neighbour lists, texts and thumbnails as embedded."""
        nb = 2 * b64_size(self.n * self.k * 4)
        text = json_size(self.texts) if self.texts is not None else 0
        pics = 0
        if self.thumbs is not None:
            pics = b64_size(self.kept_thumbs * int(np.prod(self.thumbs.shape[1:])))
            pics += b64_size(self.kept_thumbs * 4) if self.kept_thumbs < self.n else 0
        return nb + text + pics


def thin(parts: Parts, room: int) -> None:
    """Thin ``parts`` until they take at most ``room`` bytes, recording each step."""
    if parts.size() <= room:
        return
    if parts.thumbs is not None and parts.kept_thumbs:
        per = b64_size(int(np.prod(parts.thumbs.shape[1:]))) + 6
        rest = parts.size() - b64_size(parts.kept_thumbs * int(np.prod(parts.thumbs.shape[1:])))
        keep = int(np.clip((room - rest) // per, 0, parts.n))
        if keep < parts.kept_thumbs:
            parts.kept_thumbs = keep
            parts.thinned.append(f"thumbnails of {keep:,} of {parts.n:,} samples (a seeded "
                                 "random choice); the others show none")
    for chars in (TEXT_CHARS, TEXT_CHARS_SHORT):
        if parts.size() <= room or parts.texts is None:
            break
        if max(map(len, parts.texts), default=0) > chars:
            parts.texts = cut(parts.texts, chars)
            parts.thinned.append(f"texts cut to {chars} characters")
    for floor in (MIN_NEIGHBOURS, 1):
        if parts.size() <= room or parts.k <= floor:
            continue
        per_k = 2 * b64_size(parts.n * 4)
        k = int(np.clip(parts.k - math.ceil((parts.size() - room) / per_k), floor, parts.k))
        if k < parts.k:
            parts.thinned.append(f"{k} nearest neighbours per sample, not {parts.k}")
            parts.k = k
    if parts.size() > room:
        parts.thinned.append("still over the page's budget after thinning")


def explorer_document(
    *,
    title: str,
    xy: np.ndarray,
    colourings: Sequence[Colouring],
    label_colouring: str | None,
    top_index: np.ndarray | None,
    top_corr: np.ndarray | None,
    k: int,
    neighbour_source: str,
    texts: Sequence[str] | None,
    images: np.ndarray | None,
    seed: int,
    notes: Sequence[str] = (),
    max_bytes: int = MAX_BYTES,
) -> dict[str, Any]:
    """The explorer's JSON document (see the module doc), thinned to ``max_bytes``.

    ``xy`` (N, 2) the map; ``colourings`` (title, values, kind, names) as the maps draw
    them, ``label_colouring`` the title of the one that holds the label; ``top_index``,
    ``top_corr`` (N, >= k) each sample's neighbours, best first (-1 / NaN where fewer);
    ``texts`` each sample's text or None; ``images`` the ``image`` attribute or None.
    """
    n = len(xy)
    doc: dict[str, Any] = {
        "format": FORMAT, "title": title, "n": n,
        "xy": typed(xy, "float32"),
        "colourings": [colouring_entry(*c) for c in colourings],
        "label": label_colouring,
        "notes": list(notes),
    }
    have_lists = top_index is not None and top_corr is not None
    parts = Parts(n=n, k=min(k, top_index.shape[1]) if have_lists else 0,
                  texts=[str(t) for t in texts] if texts is not None else None,
                  thumbs=small_thumbnails(images) if images is not None else None)
    parts.kept_thumbs = n if parts.thumbs is not None else 0
    thin(parts, max_bytes - json_size(doc))
    if have_lists and parts.k:
        doc["neighbours"] = {"k": parts.k, "source": neighbour_source,
                             "index": typed(top_index[:, :parts.k], "int32"),
                             "corr": typed(top_corr[:, :parts.k], "float32")}
    doc["texts"] = parts.texts
    if parts.thumbs is not None and parts.kept_thumbs:
        which = np.arange(n)
        if parts.kept_thumbs < n:
            rng = np.random.default_rng(seed)
            which = np.sort(rng.choice(n, size=parts.kept_thumbs, replace=False))
        doc["thumbnails"] = {"shape": list(parts.thumbs.shape[1:]),
                             "which": None if parts.kept_thumbs == n else typed(which, "int32"),
                             "pixels": typed(parts.thumbs[which], "uint8")}
    doc["thinned"] = parts.thinned
    return doc
