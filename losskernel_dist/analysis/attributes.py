"""Lift of a discrete per-sample attribute among kernel neighbours (paper Appendix D.2 D, D.4).

For a query i with attribute value c_i and its k nearest neighbours under rho,
the match rate is the fraction of neighbours j with c_j = c_i; the base rate
is the fraction of all candidates with c_j = c_i, where the candidates are the
samples a neighbour could have been: everyone but i, and, when the neighbours
exclude same-label samples, everyone of another label. The lift over a set of
queries is

    lift = mean_i(match rate_i) / mean_i(base rate_i)

(a base-rate-weighted mean of per-query lifts): 1 when neighbours are drawn at
random from the candidates, above 1 when the kernel groups the attribute.
Queries whose base rate is 0 (nothing could match) are left out and counted.
The taxonomic lift (wordnet.py) is this with c = the label's ancestor at depth d.

For images, ``colour_groups`` makes such an attribute: mean RGB per image,
clustered by farthest-point sampling (Appendix D.4), which spreads the centres
over the uneven distribution of mean colours (many grey and brown tones).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def match_and_base(
    codes: np.ndarray,
    neighbours: np.ndarray,
    labels: np.ndarray | None,
    exclude_same_label: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: neighbour match rate and candidate base rate of sharing its code.

    ``codes`` (N,) int, -1 meaning "matches nothing"; ``neighbours`` (N, k)
    sample indices, -1 for a missing slot. Rows with no valid neighbour get NaN.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n = len(codes)
    valid = neighbours >= 0
    nb_codes = np.where(valid, codes[np.where(valid, neighbours, 0)], -1)
    hits = (nb_codes == codes[:, None]) & valid & (codes[:, None] >= 0)
    n_valid = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        match = np.where(n_valid > 0, hits.sum(axis=1) / n_valid, np.nan)
    code_ids = np.where(codes >= 0, codes, 0)
    width = int(code_ids.max()) + 1 if n else 1
    n_code = np.bincount(code_ids[codes >= 0], minlength=width)
    if exclude_same_label and labels is not None:
        lab_ids = np.unique(labels, return_inverse=True)[1]
        n_label = np.bincount(lab_ids)
        joint = np.zeros((width, n_label.size), dtype=np.int64)
        np.add.at(joint, (code_ids[codes >= 0], lab_ids[codes >= 0]), 1)
        matching = n_code[code_ids] - joint[code_ids, lab_ids]
        candidates = n - n_label[lab_ids]
    else:
        matching = n_code[code_ids] - 1
        candidates = np.full(n, n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        base = np.where(candidates > 0, matching / candidates, np.nan)
    base = np.where(codes >= 0, base, np.nan)
    return match, base


def lift_over(match: np.ndarray, base: np.ndarray, queries: np.ndarray | None = None) -> dict:
    """Lift = mean match / mean base over ``queries`` (bool mask) with base > 0."""
    use = np.isfinite(match) & np.isfinite(base) & (base > 0)
    if queries is not None:
        use &= queries
    if not use.any():
        return {"lift": None, "queries": 0}
    m, b = float(match[use].mean()), float(base[use].mean())
    return {"lift": m / b, "match_rate": m, "base_rate": b, "queries": int(use.sum())}


def attribute_lift(
    values: np.ndarray,
    neighbours: np.ndarray,
    labels: np.ndarray | None,
    exclude_same_label: bool,
    max_levels: int = 32,
) -> dict[str, Any]:
    """Overall lift of a discrete attribute, and per value (up to ``max_levels`` values)."""
    uniq, codes = np.unique(np.asarray(values), return_inverse=True)
    match, base = match_and_base(codes, neighbours, labels, exclude_same_label)
    out: dict[str, Any] = {"k": int(neighbours.shape[1]), "levels": int(uniq.size),
                           **lift_over(match, base)}
    if uniq.size <= max_levels:
        out["per_value"] = {
            str(v): lift_over(match, base, codes == c) for c, v in enumerate(uniq.tolist())
        }
    if out["lift"] is None:
        out["reason"] = ("no query has a candidate sharing its value"
                         + (" of another label" if exclude_same_label else ""))
    return out


def discrete_attributes(
    attributes: Mapping[str, np.ndarray],
    labels: np.ndarray | None,
    max_levels: int,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The attributes usable for lift, and for each other attribute the reason it is not.

    Usable: one value per sample, 2..max_levels distinct values, and not
    determined by the label (with same-label exclusion such an attribute can
    never match, and without it, it only restates the label).
    """
    usable: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for name, values in attributes.items():
        values = np.asarray(values)
        if values.ndim != 1:
            skipped[name] = "not one value per sample"
            continue
        if values.dtype.kind == "f" and not np.all(np.isfinite(values) & (values == np.round(values))):
            skipped[name] = "continuous"
            continue
        levels = np.unique(values).size
        if levels < 2 or levels > max_levels:
            skipped[name] = f"{levels} distinct values (lift needs 2..{max_levels})"
            continue
        if labels is not None and _determined_by(values, labels):
            skipped[name] = "determined by the label"
            continue
        usable[name] = values
    return usable, skipped


def _determined_by(values: np.ndarray, labels: np.ndarray) -> bool:
    """True when every label has a single value of ``values``."""
    lab = np.unique(labels, return_inverse=True)[1]
    val = np.unique(values, return_inverse=True)[1]
    pairs = np.unique(np.stack([lab, val]), axis=1)
    return pairs.shape[1] == np.unique(lab).size


def mean_rgb(images: np.ndarray) -> np.ndarray:
    """(N, 3) mean red, green, blue of each image in [0, 1]; (N,H,W,3) or (N,3,H,W)."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, 3) or (N, 3, H, W), got shape {images.shape}")
    if images.shape[-1] == 3:
        means = images.reshape(len(images), -1, 3).mean(axis=1)
    elif images.shape[1] == 3:
        means = images.reshape(len(images), 3, -1).mean(axis=2)
    else:
        raise ValueError(f"images have no colour axis of size 3: shape {images.shape}")
    means = means.astype(np.float64)
    return means / 255.0 if images.dtype == np.uint8 else means


def farthest_point_groups(points: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Farthest-point sampling of ``k`` centres, then each point to its nearest centre.

    The first centre is a seeded random point; each next centre is the point
    farthest from all centres so far. Returns (centre indices, group of each point).
    """
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    centres = [int(rng.integers(n))]
    dist = np.linalg.norm(points - points[centres[0]], axis=1)
    for _ in range(1, k):
        nxt = int(np.argmax(dist))
        centres.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(points - points[nxt], axis=1))
    centre_pts = points[centres]
    d2 = ((points[:, None, :] - centre_pts[None, :, :]) ** 2).sum(axis=2)
    return np.asarray(centres), d2.argmin(axis=1).astype(np.int64)
