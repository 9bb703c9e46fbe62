"""Task and group structure (paper Section 3, Figure 2B and 2D).

* ``pc1``: the first principal component of the samples' standardised loss
  vectors z_j (rho = Z^T Z). It is the leading eigenvector of H rho H, the Gram
  matrix of the z_j centred over samples (ordinary PCA centres its points;
  without centring, two equally strong uncorrelated blocks give a near-
  degenerate pair of leading eigenvectors whose mix need not separate them).
  Found by block subspace iteration on ``kernel/corr`` streamed in row blocks:
  one pass per iteration, never N x N in memory.
* ``pc1_auc``: ROC-AUC (scikit-learn) of the PC1 projection against a binary
  group. The sign of a principal component is arbitrary, so the component is
  oriented to make the group coded 1 score higher; the AUC is then >= 0.5.
* ``pair_distributions``: covariance values of within-group and cross-group
  pairs (i < j), with exact count/mean/std/min/max and quantiles from a seeded
  uniform subsample of at most ``max_values`` pairs per type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .kernelio import DenseRows

MAX_NAMED_GROUPS = 10


@dataclass
class Grouping:
    """A discrete per-sample grouping: integer codes 0..G-1 with a name per code."""

    source: str  # "labels" or "attributes/<name>"
    codes: np.ndarray
    names: list[str]

    @property
    def size(self) -> int:
        return len(self.names)


def grouping_from(values: np.ndarray, source: str, names: list[str] | None = None) -> Grouping:
    """Codes 0..G-1 of the distinct values (sorted); names from ``names`` when given by value."""
    values = np.asarray(values)
    uniq, codes = np.unique(values, return_inverse=True)
    if names is not None and values.dtype.kind in "iu" and uniq.min() >= 0 and uniq.max() < len(names):
        label = [str(names[int(u)]) for u in uniq]
    else:
        label = [str(u) for u in uniq]
    return Grouping(source, codes.astype(np.int64), label)


def resolve_group(
    requested: str,
    labels: np.ndarray | None,
    label_names: list[str] | None,
    attributes: Mapping[str, np.ndarray],
) -> tuple[Grouping | None, str]:
    """The grouping for group analyses, and a sentence saying how it was chosen.

    ``requested`` is 'labels', an attribute name, or '' for automatic: the
    labels when they take exactly two values, else none.
    """
    if requested == "labels":
        if labels is None:
            raise ValueError("analysis.group_attribute: 'labels' requested but the run has no labels")
        return grouping_from(labels, "labels", label_names), "labels (requested)"
    if requested:
        if requested not in attributes:
            known = ", ".join(sorted(attributes)) or "none"
            raise ValueError(
                f"analysis.group_attribute: no attribute {requested!r} (attributes: {known})"
            )
        values = np.asarray(attributes[requested])
        if values.ndim != 1:
            raise ValueError(f"analysis.group_attribute: {requested!r} is not one value per sample")
        return grouping_from(values, f"attributes/{requested}"), f"attribute {requested!r} (requested)"
    if labels is not None and len(np.unique(labels)) == 2:
        return grouping_from(labels, "labels", label_names), "labels (they take exactly 2 values)"
    return None, "no group: set analysis.group_attribute (labels do not take exactly 2 values)"


@dataclass
class PC1:
    scores: np.ndarray  # (N,) projection of each sample on the component
    eigenvalue: float
    explained: float  # eigenvalue / trace(H rho H)
    iterations: int
    residual: float  # ||A v - lambda v|| / lambda


def pc1(source: DenseRows, seed: int = 0, width: int = 6, max_iter: int = 60,
        tol: float = 1e-6) -> PC1:
    """Leading eigenpair of H rho H by block subspace iteration over row blocks of rho."""
    n = source.n
    rng = np.random.default_rng(seed)
    p = int(min(width, max(n - 1, 1)))
    q, _ = np.linalg.qr(_centre(rng.normal(size=(n, p))))
    trace = None
    residual = np.inf
    lam, v = 0.0, q[:, 0]
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (reported below)
        y, diag_sum, total = _centred_product(source, q)
        if trace is None:
            trace = diag_sum - total / n
        t = q.T @ y
        t = (t + t.T) / 2
        evals, evecs = np.linalg.eigh(t)
        u = evecs[:, -1]
        lam = float(evals[-1])
        v = q @ u
        av = y @ u
        residual = float(np.linalg.norm(av - lam * v) / lam) if lam > 0 else 0.0
        if residual < tol:
            break
        q, _ = np.linalg.qr(y)
    scores = v * np.sqrt(max(lam, 0.0))
    explained = lam / trace if trace and trace > 0 else float("nan")
    return PC1(scores, lam, float(explained), iterations, residual)


def _centre(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0, keepdims=True)


def _centred_product(source: DenseRows, q: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(H rho H) q for q with centred columns, plus trace(rho) and 1^T rho 1 on the way."""
    n = source.n
    y = np.empty_like(q)
    diag_sum = 0.0
    total = 0.0
    block = source.block_size()
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        rows = source.rows(i0, i1)
        y[i0:i1] = rows @ q
        diag_sum += float(np.trace(rows[:, i0:i1]))
        total += float(rows.sum())
    return _centre(y), diag_sum, total


def pc1_auc(scores: np.ndarray, grouping: Grouping) -> dict[str, Any]:
    """ROC-AUC of the (oriented) PC1 projection for a two-valued grouping."""
    from sklearn.metrics import roc_auc_score

    if grouping.size != 2:
        return {"available": False, "reason": f"group has {grouping.size} values, not 2"}
    positive = grouping.codes == 1
    raw = float(roc_auc_score(positive, scores))
    sign = 1.0 if raw >= 0.5 else -1.0
    return {
        "available": True,
        "auc": max(raw, 1.0 - raw),
        "orientation": f"component oriented so that {grouping.names[1]!r} scores higher",
        "sign": sign,
        "positive": grouping.names[1],
        "negative": grouping.names[0],
        "counts": {grouping.names[0]: int((~positive).sum()), grouping.names[1]: int(positive.sum())},
    }


def pair_types(grouping: Grouping) -> list[str]:
    """Names of the pair types: one within-type per group (up to 10 groups), and cross."""
    if grouping.size <= MAX_NAMED_GROUPS:
        return [f"{name} vs {name}" for name in grouping.names] + ["cross-group"]
    return ["within-group", "cross-group"]


def pair_distributions(
    cov: Any, grouping: Grouping, max_values: int = 200_000, seed: int = 0,
    block: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Exact summary statistics and a uniform subsample of K_ij by pair type (i < j).

    Returns ``{type: {"count", "mean", "std", "min", "max", "quantiles", "values"}}``
    where ``values`` is the subsample (a numpy array, for plotting).
    """
    source = DenseRows(cov)
    n = source.n
    codes = grouping.codes
    named = grouping.size <= MAX_NAMED_GROUPS
    types = pair_types(grouping)
    counts = np.bincount(codes, minlength=grouping.size).astype(np.float64)
    within_pairs = counts * (counts - 1) / 2
    total_pairs = n * (n - 1) / 2
    expected = {}
    if named:
        for g, name in enumerate(types[:-1]):
            expected[name] = within_pairs[g]
    else:
        expected["within-group"] = within_pairs.sum()
    expected["cross-group"] = total_pairs - within_pairs.sum()
    keep = {t: min(1.0, max_values / c) if c > 0 else 0.0 for t, c in expected.items()}
    acc = {t: {"count": 0, "sum": 0.0, "sumsq": 0.0, "sumabs": 0.0, "min": np.inf,
               "max": -np.inf, "values": []} for t in types}
    rng = np.random.default_rng(seed)
    block = block or source.block_size()
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        rows = source.rows(i0, i1)
        upper = np.arange(n)[None, :] > np.arange(i0, i1)[:, None]
        same = codes[i0:i1, None] == codes[None, :]
        masks = {}
        if named:
            for g, name in enumerate(types[:-1]):
                masks[name] = upper & same & (codes[i0:i1, None] == g)
        else:
            masks["within-group"] = upper & same
        masks["cross-group"] = upper & ~same
        for name, mask in masks.items():
            vals = rows[mask]
            if vals.size == 0:
                continue
            a = acc[name]
            a["count"] += vals.size
            a["sum"] += float(vals.sum())
            a["sumsq"] += float((vals**2).sum())
            a["sumabs"] += float(np.abs(vals).sum())
            a["min"] = min(a["min"], float(vals.min()))
            a["max"] = max(a["max"], float(vals.max()))
            if keep[name] >= 1.0:
                a["values"].append(vals)
            else:
                a["values"].append(vals[rng.random(vals.size) < keep[name]])
    out = {}
    for name, a in acc.items():
        if a["count"] == 0:
            continue
        values = np.concatenate(a["values"]) if a["values"] else np.empty(0)
        mean = a["sum"] / a["count"]
        var = max(a["sumsq"] / a["count"] - mean**2, 0.0)
        qs = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]
        out[name] = {
            "count": int(a["count"]),
            "mean": mean,
            "std": float(np.sqrt(var)),
            "min": a["min"],
            "max": a["max"],
            "mean_abs": a["sumabs"] / a["count"],
            "quantiles": {str(q): float(np.quantile(values, q)) for q in qs} if values.size else {},
            "quantiles_from": int(values.size),
            "values": values,
        }
    return out
