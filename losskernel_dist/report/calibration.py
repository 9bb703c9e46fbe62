"""The calibration report: one self-contained ``index.html`` in the analysis report's style.

Figures (PNG files beside the page, embedded as base64) show every pilot
setting on the lr x localization grid: the chains' training loss against the
loss at w* and the drift tolerance, their distance ||w - w*|| over the draws,
and the split-half CKA with each setting's verdict. The page states the
recommendation rule in words, the recommended setting as a config snippet,
and, per setting, why it was or was not admissible.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from ..sampler.schedule import StepSchedule

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Config
    from ..jobs.calibrate import Calibration

FALLBACK_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5em 2em 4em; background: #fff; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; }
td.num { text-align: right; }
figure img { max-width: 100%; }
.warn { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 0.8em; }
.ok { background: #eef8ee; border-left: 4px solid #3a3; padding: 0.5em 0.8em; }
"""


def _style() -> str:
    """The analysis report's stylesheet, so both reports look alike."""
    try:
        from .html import STYLE
    except ImportError:  # the report package is optional for calibration
        return FALLBACK_STYLE
    return STYLE


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for cell in row:
            num = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            attr = ' class="num"' if num else ""
            cells.append(f"<td{attr}>{_fmt(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _figure(path: Path, title: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(title)}">'
            f"<figcaption><b>{_e(title)}.</b> {_e(caption)} <i>(file: {_e(path.name)})</i>"
            "</figcaption></figure>")


# --------------------------------------------------------------------------- figures


def _grid_axes(cal: Calibration) -> tuple[list[float], list[float], list[float]]:
    lrs = sorted({s.lr for s in cal.settings})
    locs = sorted({s.localization for s in cal.settings})
    nbetas = sorted({s.nbeta for s in cal.settings})
    return lrs, locs, nbetas


def _smooth(row: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Running mean of the finite prefix of a per-step series, with its step numbers."""
    finite = np.isfinite(row)
    steps = np.flatnonzero(finite)
    values = row[finite]
    if values.size < width or width < 2:
        return steps + 1, values
    kernel = np.ones(width) / width
    return steps[width - 1:] + 1, np.convolve(values, kernel, mode="valid")


def trace_figures(cal: Calibration, traces: Sequence[Mapping[str, np.ndarray]],
                  folder: Path) -> list[tuple[Path, str, str]]:
    """Per-nbeta grids of training-loss and distance traces, and the CKA/verdict map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs, locs, nbetas = _grid_axes(cal)
    by_setting = {r.setting: (r, t) for r, t in zip(cal.results, traces, strict=True)}
    ref = cal.reference.get("train_loss")
    tol = cal.reference.get("loss_tolerance")
    blow = cal.reference.get("blowup_threshold")
    schedule = StepSchedule(burnin_steps=int(cal.budget["burnin_steps"]),
                            draws=int(cal.budget["draws"]),
                            steps_between_draws=int(cal.budget["steps_between_draws"]))
    out = []
    for nb in nbetas:
        for kind in ("train_loss", "distance"):
            fig, axes = plt.subplots(len(lrs), len(locs), squeeze=False, sharex=True,
                                     figsize=(3.2 * len(locs) + 0.8, 2.4 * len(lrs) + 0.8))
            for i, lr in enumerate(lrs):
                for j, loc in enumerate(locs):
                    ax = axes[i][j]
                    key = next((s for s in by_setting
                                if (s.lr, s.localization, s.nbeta) == (lr, loc, nb)), None)
                    if key is None:
                        ax.set_axis_off()
                        continue
                    result, trace = by_setting[key]
                    _panel(ax, kind, result, trace, ref, tol, blow, schedule)
                    ax.set_title(f"lr {lr:.3g}, loc {loc:.3g}", fontsize=8,
                                 color=_verdict_colour(result))
                    ax.tick_params(labelsize=7)
            ylabel = "train loss (running mean)" if kind == "train_loss" else "||w - w*||"
            fig.supylabel(ylabel, fontsize=9)
            fig.supxlabel("SGLD step", fontsize=9)
            fig.tight_layout()
            path = folder / f"{kind}_nbeta{nb:.3g}.png"
            fig.savefig(path, dpi=90)
            plt.close(fig)
            if kind == "train_loss":
                caption = (f"nbeta {nb:.3g}. Each line is one pilot chain's minibatch training "
                           "loss (running mean over 10 steps; log scale). Dashed: the loss at "
                           "w*; dotted: w* plus the drift tolerance; dash-dot: the divergence "
                           "threshold. The grey band is the burn-in. Panel titles are green for "
                           "admissible settings, orange for flagged, red for diverged.")
                title = "Training loss of the pilot chains"
            else:
                caption = (f"nbeta {nb:.3g}. Distance from the trained weights at each kept "
                           "draw, one line per chain. A chain at equilibrium holds a steady "
                           "distance; a rising curve means the chain is still moving away "
                           "(too weak a localization, or not yet settled).")
                title = "Distance ||w - w*|| of the pilot chains"
            out.append((path, title, caption))
    out.append(_cka_map(cal, folder, plt))
    return out


def _verdict_colour(result: Any) -> str:
    if result.diverged:
        return "#c0392b"
    return "#2e7d32" if result.admissible else "#d35400"


def _panel(ax: Any, kind: str, result: Any, trace: Mapping[str, np.ndarray], ref: float | None,
           tol: float | None, blow: float | None, schedule: StepSchedule) -> None:
    from matplotlib.ticker import NullFormatter

    chains = trace["train_loss"].shape[0]
    if kind == "train_loss":
        ax.axvspan(0, schedule.burnin_steps, color="#eeeeee", zorder=0)
        for c in range(chains):
            steps, values = _smooth(trace["train_loss"][c], 10)
            if values.size:
                ax.plot(steps, np.clip(values, 1e-8, 1e8), lw=0.8)
        if ref is not None:
            ax.axhline(max(ref, 1e-8), color="k", ls="--", lw=0.8)
            if tol is not None:
                ax.axhline(ref + tol, color="k", ls=":", lw=0.8)
            if blow is not None:
                ax.axhline(ref + blow, color="#c0392b", ls="-.", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        dist, done = trace["distance"], trace["done"]
        for c in range(min(chains, dist.shape[0])):
            draws = np.flatnonzero(done[c] & np.isfinite(dist[c]))
            if draws.size:
                steps = [schedule.draw_step(int(t)) for t in draws]
                ax.plot(steps, dist[c][draws], lw=0.8, marker=".", ms=2)


def _cka_map(cal: Calibration, folder: Path, plt: Any) -> tuple[Path, str, str]:
    lrs, locs, nbetas = _grid_axes(cal)
    fig, axes = plt.subplots(1, len(nbetas), squeeze=False,
                             figsize=(1.3 * len(locs) * len(nbetas) + 2.2, 0.7 * len(lrs) + 1.8))
    for k, nb in enumerate(nbetas):
        ax = axes[0][k]
        values = np.full((len(lrs), len(locs)), np.nan)
        for r in cal.results:
            if r.setting.nbeta != nb:
                continue
            i, j = lrs.index(r.setting.lr), locs.index(r.setting.localization)
            values[i, j] = r.projected_cka if r.projected_cka is not None else np.nan
            mark = ("diverged" if r.diverged else "ok" if r.admissible else
                    "drift" if r.drift_flags else "low CKA")
            if cal.recommended == r.setting:
                mark = "RECOMMENDED"
            text = (f"{r.split_half_cka:.2f} ({r.projected_cka:.2f})\n"
                    if r.split_half_cka is not None and r.projected_cka is not None
                    else "-\n") + mark
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color=_verdict_colour(r), fontweight="bold" if mark == "RECOMMENDED" else None)
        ax.imshow(values, vmin=0, vmax=1, cmap="Blues", aspect="auto", alpha=0.6)
        ax.set_xticks(range(len(locs)), [f"{x:.3g}" for x in locs], fontsize=7)
        ax.set_yticks(range(len(lrs)), [f"{x:.3g}" for x in lrs], fontsize=7)
        ax.set_xlabel("localization", fontsize=8)
        ax.set_ylabel("lr", fontsize=8)
        ax.set_title(f"nbeta {nb:.3g}", fontsize=9)
    fig.tight_layout()
    path = folder / "split_half_cka.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return (path, "Split-half CKA and verdict per setting",
            "Each cell: the CKA between the kernels of the two halves of that setting's pilot "
            "chains, in brackets its projection to the configured run (1 = the halves agree "
            "exactly; shading by the projection) and the verdict: ok "
            "(admissible), drift (the chain-averaged traces flagged by the guard rails), "
            "diverged, or low CKA.")


# --------------------------------------------------------------------------- page


def render(cal: Calibration, figures: Sequence[tuple[Path, str, str]], config: Config) -> str:
    """The report's HTML text."""
    rec = cal.recommended
    budget = cal.budget
    ref = cal.reference
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Loss kernel calibration: {_e(config.run_dir.name)}</title>",
        f"<style>{_style()}</style></head><body><main>",
        f"<h1>Loss kernel calibration: {_e(config.run_dir.name)}</h1>",
        f'<p class="lead">{len(cal.settings)} settings x {budget["chains"]} pilot chains of '
        f'{budget["steps"]} SGLD steps ({budget["burnin_steps"]} burn-in, {budget["draws"]} '
        f'draws every {budget["steps_between_draws"]} steps); written '
        f'{_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")} by losskernel '
        f"calibrate in {cal.seconds:.0f} s.</p>",
        "<h2>Recommendation</h2>",
    ]
    if rec is not None:
        snippet = (yaml.safe_dump({"sampler": rec.as_dict()}, sort_keys=False)
                   + f"  burnin_steps: {budget['burnin_steps']}  # at least: the pilots' "
                   "burn-in\n")
        parts.append(f'<p class="ok">Recommended: <b>lr {rec.lr:.3g}, localization '
                     f'{rec.localization:.3g}, nbeta {rec.nbeta:.3g}</b> '
                     "(<code>losskernel calibrate CONFIG --write PATH</code> writes it into a "
                     "config).</p>")
        parts.append(f"<pre>{_e(snippet)}</pre>")
    else:
        parts.append('<p class="warn">No setting passed every check. Widen the grid toward '
                     "smaller lr and larger localization (calibrate.lr, calibrate.localization), "
                     "or give the pilots more steps or chains if the split-half CKA was the "
                     "only obstacle.</p>")
    parts.append(f"<p><b>Rule.</b> {_e(cal.rule)}</p>")
    parts.append("<h2>Settings</h2>")
    rows = []
    for r in cal.results:
        rows.append((r.setting.lr, r.setting.localization, r.setting.nbeta,
                     ", ".join(map(str, r.diverged_chains)) or "none",
                     ", ".join(map(str, r.drifting_chains)) or "none",
                     "; ".join(r.drift_flags) or "none",
                     r.train_drift, r.eval_drift, r.distance_final, r.split_half_cka,
                     r.projected_cka, r.draws_for_min_cka,
                     "RECOMMENDED" if rec == r.setting else
                     ("admissible" if r.admissible else "; ".join(r.reasons))))
    parts.append(_table(rows, ["lr", "localization", "nbeta", "diverged chains",
                               "flagged chains", "chain average flagged", "train drift", "eval drift", "|w - w*| reached",
                               "split-half CKA", "projected to the run", "draws for min_cka",
                               "verdict"]))
    parts.append(
        "<p><b>How the numbers were measured.</b> Before the first step the run measures the "
        f"loss at the trained weights w*: mean training loss {_fmt(ref.get('train_loss'))} over "
        f"{_e(ref.get('train_source'))}, mean eval loss {_fmt(ref.get('eval_loss_mean'))}. "
        "<i>Train drift</i> is the mean minibatch training loss over the last "
        f"{budget['guards']['late_fraction']:.0%} of each chain's steps minus the loss at w*; "
        "<i>eval drift</i> the same for the mean eval loss over the last draws; both averaged "
        "over the chains that did not diverge. A chain is <i>flagged</i> when its train drift "
        f"exceeds the tolerance {_fmt(ref.get('loss_tolerance'))} (the larger of "
        "guards.max_loss_increase and guards.max_loss_increase_relative x |loss at w*|), its "
        f"eval drift exceeds {_fmt(ref.get('eval_tolerance'))} (the same rule), or "
        "when ||w - w*|| rises through the last three quarters of its draws by more than "
        f"{budget['guards']['distance_growth']:.0%} and more than four times its noise; it "
        f"<i>diverged</i> when its loss or weights stopped being finite or its train drift "
        f"exceeded {_fmt(ref.get('blowup_threshold'))} (guards.blowup_factor tolerances). "
        "<i>|w - w*| reached</i> is the distance at the last draw, averaged over chains. "
        "<i>Split-half CKA</i> compares the kernel from the first half of the chains with the "
        "kernel from the second half (disjoint draws, after burn-in): near 1 the pilot kernel is "
        "reproducible; low values mean the chains have not mixed, measure drift, or the pilot "
        "has too few draws for a kernel this noisy. <i>Projected to the run</i> is what the "
        f"configured run's {budget['run_draws']} draws would give by the rule's 1/(1 + c/m) "
        "model, and <i>draws for min_cka</i> how many draws that model says reach "
        f"calibrate.min_cka = {budget['min_cka']:g}.</p>")
    flagged = [line for r in cal.results for line in
               [f"{r.setting.name}: {x}" for x in r.flags]]
    if flagged:
        parts.append("<h3>Guard-rail flags with their likely fixes</h3><pre>"
                     + _e("\n".join(flagged)) + "</pre>")
    parts.append("<h2>Figures</h2>")
    parts += [_figure(path, title, caption) for path, title, caption in figures]
    parts.append("<h2>Pilot runs</h2><p>Each setting is a complete run directory under "
                 f"<code>{_e(cal.directory)}</code> (<code>losskernel info</code> works on "
                 "it).</p>")
    parts.append(f"<details><summary>all numbers (calibration.json)</summary><pre>"
                 f"{_e(json.dumps(cal.as_dict(), indent=2))}</pre></details>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_calibration_report(path: Path, cal: Calibration,
                             traces: Sequence[Mapping[str, np.ndarray]], config: Config) -> Path:
    """Draw the figures next to ``path`` and write the page (atomically)."""
    path = Path(path)
    figures = trace_figures(cal, traces, path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(cal, figures, config), encoding="utf-8")
    tmp.replace(path)
    return path
