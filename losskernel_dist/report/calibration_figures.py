"""Figures of the calibration report, drawn from calibration.json's content and the pilots' traces.

Per nbeta, a grid over lr x localization of the pilot chains' training loss
(against the loss at w*, the drift tolerance and the divergence threshold) and
of their distance ||w - w*|| over the kept draws; then one map of every
setting's split-half CKA with its verdict. Each setting is a plain dict as
``calibration.json`` lists it under ``settings`` (``SettingResult.as_dict``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import atomic_path
from ..sampler.schedule import StepSchedule

DPI = 90
SMOOTHING = 10  # steps in the running mean of a training-loss trace
Figure = tuple[Path, str, str]  # path, title, caption


def grid_axes(settings: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float], list[float]]:
    """The grid's distinct lr, localization and nbeta values, sorted."""
    points = [s["setting"] for s in settings]
    return (sorted({p["lr"] for p in points}), sorted({p["localization"] for p in points}),
            sorted({p["nbeta"] for p in points}))


def verdict(result: Mapping[str, Any], recommended: str | None) -> str:
    """One word for a setting: RECOMMENDED, ok, diverged, drift or low CKA."""
    if result["name"] == recommended:
        return "RECOMMENDED"
    if result["diverged"]:
        return "diverged"
    return "ok" if result["admissible"] else "drift" if result["drift_flags"] else "low CKA"


def verdict_colour(result: Mapping[str, Any]) -> str:
    if result["diverged"]:
        return "#c0392b"
    return "#2e7d32" if result["admissible"] else "#d35400"


def smooth(row: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Running mean of the finite prefix of a per-step series, with its step numbers."""
    finite = np.isfinite(row)
    steps = np.flatnonzero(finite)
    values = row[finite]
    if values.size < width or width < 2:
        return steps + 1, values
    kernel = np.ones(width) / width
    return steps[width - 1:] + 1, np.convolve(values, kernel, mode="valid")


def save(fig: Any, path: Path) -> Path:
    """Write the PNG atomically (a reader never sees half of it) and close the figure."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


def trace_figures(calibration: Mapping[str, Any], traces: Sequence[Mapping[str, np.ndarray]],
                  folder: Path) -> list[Figure]:
    """Per-nbeta grids of training-loss and distance traces, and the CKA/verdict map.

    ``traces[i]`` holds the per-chain arrays (train_loss, distance, done) of
    ``calibration["settings"][i]``.
    """
    import matplotlib

    if "IPython" not in sys.modules:  # a notebook keeps its inline backend
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = calibration["settings"]
    lrs, locs, nbetas = grid_axes(results)
    by_point = {(r["setting"]["lr"], r["setting"]["localization"], r["setting"]["nbeta"]): (r, t)
                for r, t in zip(results, traces, strict=True)}
    ref = calibration["reference"]
    budget = calibration["budget"]
    schedule = StepSchedule(burnin_steps=int(budget["burnin_steps"]), draws=int(budget["draws"]),
                            steps_between_draws=int(budget["steps_between_draws"]))
    out = []
    for nb in nbetas:
        for kind in ("train_loss", "distance"):
            fig, axes = plt.subplots(len(lrs), len(locs), squeeze=False, sharex=True,
                                     figsize=(3.2 * len(locs) + 0.8, 2.4 * len(lrs) + 0.8))
            for i, lr in enumerate(lrs):
                for j, loc in enumerate(locs):
                    ax = axes[i][j]
                    if (lr, loc, nb) not in by_point:
                        ax.set_axis_off()
                        continue
                    result, trace = by_point[(lr, loc, nb)]
                    panel(ax, kind, trace, ref, schedule)
                    ax.set_title(f"lr {lr:.3g}, loc {loc:.3g}", fontsize=8,
                                 color=verdict_colour(result))
                    ax.tick_params(labelsize=7)
            fig.supylabel("train loss (running mean)" if kind == "train_loss" else "||w - w*||",
                          fontsize=9)
            fig.supxlabel("SGLD step", fontsize=9)
            fig.tight_layout()
            path = save(fig, Path(folder) / f"{kind}_nbeta{nb:.3g}.png")
            out.append((path, *trace_words(kind, nb)))
    out.append(cka_map(calibration, Path(folder), plt))
    return out


def trace_words(kind: str, nbeta: float) -> tuple[str, str]:
    """Title and caption of a trace grid."""
    if kind == "train_loss":
        return ("Training loss of the pilot chains",
                f"nbeta {nbeta:.3g}. Each line is one pilot chain's minibatch training "
                f"loss (running mean over {SMOOTHING} steps; log scale). Dashed: the loss at "
                "w*; dotted: w* plus the drift tolerance; dash-dot: the divergence "
                "threshold. The grey band is the burn-in. Panel titles are green for "
                "admissible settings, orange for flagged, red for diverged.")
    return ("Distance ||w - w*|| of the pilot chains",
            f"nbeta {nbeta:.3g}. Distance from the trained weights at each kept "
            "draw, one line per chain. A chain at equilibrium holds a steady "
            "distance; a rising curve means the chain is still moving away "
            "(too weak a localization, or not yet settled).")


def panel(ax: Any, kind: str, trace: Mapping[str, np.ndarray], ref: Mapping[str, Any],
          schedule: StepSchedule) -> None:
    """One setting's chains: training loss per step, or distance per kept draw."""
    from matplotlib.ticker import NullFormatter

    chains = trace["train_loss"].shape[0]
    if kind == "train_loss":
        ax.axvspan(0, schedule.burnin_steps, color="#eeeeee", zorder=0)
        for c in range(chains):
            steps, values = smooth(trace["train_loss"][c], SMOOTHING)
            if values.size:
                ax.plot(steps, np.clip(values, 1e-8, 1e8), lw=0.8)
        loss, tol, blow = (ref.get("train_loss"), ref.get("loss_tolerance"),
                           ref.get("blowup_threshold"))
        if loss is not None:
            ax.axhline(max(loss, 1e-8), color="k", ls="--", lw=0.8)
            if tol is not None:
                ax.axhline(loss + tol, color="k", ls=":", lw=0.8)
            if blow is not None:
                ax.axhline(loss + blow, color="#c0392b", ls="-.", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        dist, done = trace["distance"], trace["done"]
        for c in range(min(chains, dist.shape[0])):
            draws = np.flatnonzero(done[c] & np.isfinite(dist[c]))
            if draws.size:
                steps = [schedule.draw_step(int(t)) for t in draws]
                ax.plot(steps, dist[c][draws], lw=0.8, marker=".", ms=2)


def cka_map(calibration: Mapping[str, Any], folder: Path, plt: Any) -> Figure:
    """Split-half CKA (and its projection) with the verdict of every setting, per nbeta."""
    results = calibration["settings"]
    recommended = calibration.get("recommended_name")
    lrs, locs, nbetas = grid_axes(results)
    fig, axes = plt.subplots(1, len(nbetas), squeeze=False,
                             figsize=(1.3 * len(locs) * len(nbetas) + 2.2, 0.7 * len(lrs) + 1.8))
    for k, nb in enumerate(nbetas):
        ax = axes[0][k]
        values = np.full((len(lrs), len(locs)), np.nan)
        for r in results:
            point = r["setting"]
            if point["nbeta"] != nb:
                continue
            i, j = lrs.index(point["lr"]), locs.index(point["localization"])
            values[i, j] = r["projected_cka"] if r["projected_cka"] is not None else np.nan
            mark = verdict(r, recommended)
            text = (f"{r['split_half_cka']:.2f} ({r['projected_cka']:.2f})\n"
                    if r["split_half_cka"] is not None and r["projected_cka"] is not None
                    else "-\n") + mark
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=verdict_colour(r),
                    fontweight="bold" if mark == "RECOMMENDED" else None)
        ax.imshow(values, vmin=0, vmax=1, cmap="Blues", aspect="auto", alpha=0.6)
        ax.set_xticks(range(len(locs)), [f"{x:.3g}" for x in locs], fontsize=7)
        ax.set_yticks(range(len(lrs)), [f"{x:.3g}" for x in lrs], fontsize=7)
        ax.set_xlabel("localization", fontsize=8)
        ax.set_ylabel("lr", fontsize=8)
        ax.set_title(f"nbeta {nb:.3g}", fontsize=9)
    fig.tight_layout()
    path = save(fig, folder / "split_half_cka.png")
    return (path, "Split-half CKA and verdict per setting",
            "Each cell: the CKA between the kernels of the two halves of that setting's pilot "
            "chains, in brackets its projection to the configured run (1 = the halves agree "
            "exactly; shading by the projection) and the verdict: ok "
            "(admissible), drift (the chain-averaged traces flagged by the guard rails), "
            "diverged, or low CKA.")
