"""Figures of the analysis as PNG files (matplotlib, Agg backend: no display needed).

Each function draws one figure from numbers already computed elsewhere,
writes it to ``path`` and returns the path; none computes an analysis itself.
Every figure states its sample and draw counts where they matter, so that it
can be read on its own.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "IPython" not in sys.modules:  # a notebook keeps its inline backend (figures are closed)
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..rundir import atomic_path  # noqa: E402

DPI = 110
MAX_LEGEND = 20
# A category is rare when it holds under this share of the samples and under a fifth of
# the largest category: its points are drawn last (on top) and larger, with an outline,
# so that a few samples are not lost under the majority's dots.
RARE_SHARE = 0.05
RARE_SIZE = 4.0  # marker area factor of rare points


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` (format from its suffix) atomically, close it, return ``path``.

    A reader (the report, a browser) never sees a half-written PNG, and a
    crash leaves the figure of the previous analysis in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=DPI,
                        bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def colour_spec(
    values: np.ndarray, kind: str, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """How to colour points: ``kind`` 'categorical', 'continuous' or 'order' (hierarchy rank)."""
    values = np.asarray(values)
    if kind == "categorical":
        uniq, codes = np.unique(values, return_inverse=True)
        label = [str(names[int(u)]) if names is not None and values.dtype.kind in "iu"
                 and 0 <= int(u) < len(names) else str(u) for u in uniq]
        if uniq.size <= MAX_LEGEND:
            cmap = plt.get_cmap("tab10" if uniq.size <= 10 else "tab20")
            colours = cmap(codes)
            counts, rare = np.bincount(codes), rare_categories(codes)
            legend = [(f"{label[c]} ({counts[c]}{', on top' if rare[c] else ''})", cmap(c))
                      for c in range(uniq.size)]
        else:  # too many for a legend: a hue per category
            cmap = plt.get_cmap("hsv")
            colours = cmap(codes / (uniq.size - 1))
            legend = []
        return {"colours": colours, "legend": legend, "colorbar": None, "codes": codes}
    values = values.astype(np.float64)
    cmap = plt.get_cmap("turbo" if kind == "order" else "viridis")
    lo, hi = np.nanmin(values), np.nanmax(values)
    norm = matplotlib.colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    return {"colours": cmap(norm(values)), "legend": [],
            "colorbar": matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), "codes": None}


def rare_categories(codes: np.ndarray) -> np.ndarray:
    """Per category code: True when it is rare (RARE_SHARE of the samples, a fifth of the
    largest category)."""
    counts = np.bincount(np.asarray(codes))
    return (counts > 0) & (counts < RARE_SHARE * counts.sum()) & (counts < 0.2 * counts.max())


def draw_order(spec: Mapping[str, Any], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The order to draw points in, and each drawn point's marker area factor and outline width.

    Random order (no colour always on top), except that the rare categories come last,
    from the largest to the smallest, so the rarest lie on top; their points are
    RARE_SIZE times larger and outlined.
    """
    order = np.random.default_rng(0).permutation(n)
    codes = spec.get("codes")
    if codes is None:
        return order, np.ones(n), np.zeros(n)
    counts, rare_level = np.bincount(codes), rare_categories(codes)
    key = np.where(rare_level, n + 1 - counts, 0)  # common: 0, keeping the random order
    order = order[np.argsort(key[codes[order]], kind="stable")]
    rare = rare_level[codes[order]]
    return order, np.where(rare, RARE_SIZE, 1.0), np.where(rare, 0.4, 0.0)


def _decorate(fig: Any, ax: Any, spec: dict, colour_title: str) -> None:
    if spec["legend"]:
        handles = [matplotlib.lines.Line2D([], [], marker="o", ls="", color=c, label=name)
                   for name, c in spec["legend"]]
        ax.legend(handles=handles, title=colour_title, fontsize=7, title_fontsize=8,
                  loc="upper right", markerscale=1.2, framealpha=0.8)
    if spec["colorbar"] is not None:
        fig.colorbar(spec["colorbar"], ax=ax, shrink=0.8, label=colour_title)


def _point_size(n: int) -> float:
    return float(np.clip(4000 / max(n, 1), 0.5, 25))


def scatter_2d(coords: np.ndarray, spec: dict, title: str, colour_title: str, path: Path) -> Path:
    """A 2-D map, one dot per sample."""
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    order, size, edge = draw_order(spec, len(coords))
    ax.scatter(coords[order, 0], coords[order, 1], c=spec["colours"][order],
               s=_point_size(len(coords)) * size, linewidths=edge, edgecolors="black")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    _decorate(fig, ax, spec, colour_title)
    return save_figure(fig, path)


def scatter_3d(coords: np.ndarray, spec: dict, title: str, colour_title: str, path: Path) -> Path:
    """Three orbit views of a 3-D map."""
    fig = plt.figure(figsize=(12, 4.2))
    order, size, edge = draw_order(spec, len(coords))
    for k, azim in enumerate((30, 150, 270)):
        ax = fig.add_subplot(1, 3, k + 1, projection="3d")
        ax.scatter(coords[order, 0], coords[order, 1], coords[order, 2],
                   c=spec["colours"][order], s=_point_size(len(coords)) * size,
                   linewidths=edge, edgecolors="black", depthshade=False)
        ax.view_init(elev=20, azim=azim)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
        ax.set_title(f"azimuth {azim} deg", fontsize=8)
    fig.suptitle(title, fontsize=10)
    if spec["legend"]:
        handles = [matplotlib.lines.Line2D([], [], marker="o", ls="", color=c, label=name)
                   for name, c in spec["legend"]]
        fig.legend(handles=handles, title=colour_title, fontsize=7, loc="center right")
    if spec["colorbar"] is not None:
        fig.colorbar(spec["colorbar"], ax=fig.axes, shrink=0.6, label=colour_title)
    return save_figure(fig, path)


def kernel_picture(
    matrix: np.ndarray, caption: str, path: Path, distance: np.ndarray | None = None,
    boundaries: Sequence[tuple[int, int, str]] = (),
) -> Path:
    """rho sorted (and maybe block-averaged), beside the hierarchy distance when given.

    ``boundaries``: (first, end, name) of each label's run of picture rows.
    """
    panels = 2 if distance is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.6 * panels, 5.2), squeeze=False)
    ax = axes[0, 0]
    off = matrix[~np.eye(len(matrix), dtype=bool)] if len(matrix) > 1 else matrix.ravel()
    lim = float(np.quantile(np.abs(off), 0.99)) if off.size else 1.0
    lim = lim if lim > 0 else 1.0
    im = ax.imshow(matrix, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="correlation rho")
    ax.set_title("loss correlation kernel", fontsize=10)
    for start, _end, _name in boundaries[1:]:
        ax.axhline(start - 0.5, color="k", lw=0.4)
        ax.axvline(start - 0.5, color="k", lw=0.4)
    if boundaries and len(boundaries) <= 12:
        ax.set_yticks([(a + b - 1) / 2 for a, b, _ in boundaries],
                      [name for _, _, name in boundaries], fontsize=7)
    else:
        ax.set_yticks([])
    ax.set_xticks([])
    if distance is not None:
        ax2 = axes[0, 1]
        im2 = ax2.imshow(distance, cmap="viridis_r", interpolation="nearest")
        fig.colorbar(im2, ax=ax2, shrink=0.8, label="WordNet tree distance (edges)")
        ax2.set_title("label hierarchy distance (ground truth)", fontsize=10)
        ax2.set_xticks([])
        ax2.set_yticks([])
    fig.suptitle(caption, fontsize=9)
    return save_figure(fig, path)


def pc1_histogram(scores: np.ndarray, codes: np.ndarray, names: Sequence[str], auc: float | None,
                  path: Path) -> Path:
    """Distribution of PC1 projections by group (Figure 2B)."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    bins = np.histogram_bin_edges(scores, bins=60)
    for g, name in enumerate(names):
        ax.hist(scores[codes == g], bins=bins, alpha=0.6, label=f"{name} ({(codes == g).sum()})")
    ax.set_xlabel("projection on the first principal component of standardised loss vectors")
    ax.set_ylabel("samples")
    ax.set_title("task separation" + (f": ROC-AUC {auc:.3f}" if auc is not None else ""), fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, path)


def pair_histograms(dist: Mapping[str, Mapping[str, Any]], path: Path, what: str = "covariance K_ij"
                    ) -> Path:
    """Covariance distributions by pair type, log-scaled counts (Figure 2D)."""
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    values = [d["values"] for d in dist.values() if d["values"].size]
    if values:
        lo = min(float(np.quantile(v, 0.001)) for v in values)
        hi = max(float(np.quantile(v, 0.999)) for v in values)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-12, 80)
        for name, d in dist.items():
            if d["values"].size:
                ax.hist(np.clip(d["values"], lo, hi), bins=bins, density=True, histtype="step",
                        lw=1.5, label=f"{name}: {d['count']} pairs, mean {d['mean']:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel(what)
    ax.set_ylabel("density (log scale)")
    ax.set_title("kernel values by pair type", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    return save_figure(fig, path)


def cka_curve(s: Sequence[int], values: Sequence[float], draws: int, stride: int, path: Path) -> Path:
    """CKA(K_s, K_final) against pooled draws s (Appendix D.2 A)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(s, values, marker="o")
    ax.set_xlabel("draws s (pooled over chains, draw-major)")
    ax.set_ylabel("CKA(K_s, K_final)")
    ax.set_ylim(min(0.0, float(np.nanmin(values)) if len(values) else 0.0), 1.02)
    note = f"{draws} draws" + (f", every {stride}th draw per chain" if stride > 1 else "")
    ax.set_title(f"kernel convergence ({note})", fontsize=10)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def train_loss_traces(train_loss: np.ndarray, burnin: int, path: Path) -> Path:
    """Per-chain minibatch training loss at every SGLD step; burn-in shaded."""
    fig, ax = plt.subplots(figsize=(7.2, 4))
    steps = np.arange(train_loss.shape[1])
    for c, row in enumerate(train_loss):
        ok = np.isfinite(row)
        ax.plot(steps[ok], row[ok], lw=0.6, alpha=0.8, label=f"chain {c}")
    if burnin > 0:
        ax.axvspan(0, burnin, color="0.85", zorder=-1, label="burn-in")
    ax.set_xlabel("SGLD step")
    ax.set_ylabel("minibatch training loss")
    ax.set_title(f"chain health: training loss of {train_loss.shape[0]} chains", fontsize=10)
    if train_loss.shape[0] <= 12:
        ax.legend(fontsize=7, ncol=2, loc="upper right")
    return save_figure(fig, path)


def rhat_ess(rhat: np.ndarray, ess_bulk: np.ndarray, draws: int, path: Path) -> Path:
    """Histograms of per-sample split R-hat and bulk ESS."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    r = rhat[np.isfinite(rhat)]
    e = ess_bulk[np.isfinite(ess_bulk)]
    if r.size:
        axes[0].hist(r, bins=50)
    axes[0].axvline(1.01, color="k", ls="--", lw=0.8, label="1.01")
    axes[0].set_xlabel("split R-hat of the per-sample loss")
    axes[0].set_ylabel("samples")
    axes[0].legend(fontsize=8, loc="upper right")
    if e.size:
        axes[1].hist(e, bins=50)
    axes[1].axvline(draws, color="k", ls="--", lw=0.8, label=f"draws = {draws}")
    axes[1].set_xlabel("bulk effective sample size")
    axes[1].legend(fontsize=8, loc="upper right")
    fig.suptitle("mixing across chains (ArviZ)", fontsize=10)
    return save_figure(fig, path)


def lift_curves(curves: Mapping[int, Mapping[int, Mapping[str, Any]]], k: int, path: Path,
                min_queries: int = 5) -> Path:
    """Taxonomic lift against ancestor depth d, one line per query depth D (Figure D.1)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    depths = sorted(curves)
    cmap = plt.get_cmap("viridis")
    for i, depth in enumerate(depths):
        points = [(d, v["lift"]) for d, v in sorted(curves[depth].items())
                  if v["lift"] is not None and v["queries"] >= min_queries]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", ms=3, color=cmap(i / max(len(depths) - 1, 1)),
                    label=f"D = {depth}")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("depth d of the shared ancestor (edges from the root)")
    ax.set_ylabel("lift (neighbour match rate / base rate)")
    ax.set_title(f"taxonomic lift, {k} nearest neighbours of another label", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="upper right", title="query depth", title_fontsize=7)
    return save_figure(fig, path)


def attribute_lifts(lifts: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Overall lift of each discrete attribute among kernel neighbours."""
    names = [n for n, v in lifts.items() if v.get("lift") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * max(len(names), 2) + 1.2))
    values = [lifts[n]["lift"] for n in names]
    ax.barh(names, values)
    ax.axvline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("lift (neighbour match rate / base rate)")
    ax.set_title("attribute lift among kernel neighbours", fontsize=10)
    return save_figure(fig, path)


def memorization(variance: np.ndarray, flag: np.ndarray, auc: float, name: str, path: Path) -> Path:
    """K_ii of flagged against clean samples (Appendix D.3)."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    positive = variance[variance > 0]
    lo = float(positive.min()) if positive.size else 1e-12
    bins = np.geomspace(lo, float(max(variance.max(), lo * 10)), 60)
    ax.hist(np.clip(variance[flag == 0], lo, None), bins=bins, alpha=0.6,
            label=f"clean ({int((flag == 0).sum())}), mean {variance[flag == 0].mean():.3g}")
    ax.hist(np.clip(variance[flag == 1], lo, None), bins=bins, alpha=0.6,
            label=f"{name} ({int((flag == 1).sum())}), mean {variance[flag == 1].mean():.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("per-sample loss variance K_ii")
    ax.set_ylabel("samples")
    ax.set_title(f"memorization: ROC-AUC of K_ii for {name!r} = {auc:.3f}", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return save_figure(fig, path)
