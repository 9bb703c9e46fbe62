"""The calibration report: one self-contained ``index.html`` in the analysis report's style.

Figures (calibration_figures.py; PNG files beside the page, embedded as
base64) show every pilot setting on the lr x localization grid: the chains'
training loss against the loss at w* and the drift tolerance, their distance
||w - w*|| over the draws, and the split-half CKA with each setting's verdict.
The page states the recommendation rule in words, the recommended setting as a
config snippet, and, per setting, why it was or was not admissible.

It is written from plain data: the content of ``calibration.json``
(``Calibration.as_dict``, which the calibrate job passes) and the pilots'
per-chain traces, so this layer never imports the job that computed them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..rundir import atomic_write
from .calibration_figures import Figure, trace_figures
from .html_parts import PAGE_END, details, escape, figure, page_head, table, written_at

SETTINGS_HEADER = ["lr", "localization", "nbeta", "diverged chains", "flagged chains",
                   "chain average flagged", "train drift", "eval drift", "|w - w*| reached",
                   "split-half CKA", "projected to the run", "draws for min_cka", "verdict"]


def fmt_cell(value: Any) -> str:
    """A value as the calibration tables show it: '-' for none, yes/no, 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(value)


def render(calibration: Mapping[str, Any], figures: Sequence[Figure], run_name: str) -> str:
    """The report's HTML text, from calibration.json's content and the drawn figures."""
    rec = calibration["recommended"]
    rec_name = calibration.get("recommended_name")
    budget = calibration["budget"]
    ref = calibration["reference"]
    results = calibration["settings"]
    parts = [
        *page_head(f"Loss kernel calibration: {run_name}"),
        f'<p class="lead">{len(results)} settings x {budget["chains"]} pilot chains of '
        f'{budget["steps"]} SGLD steps ({budget["burnin_steps"]} burn-in, {budget["draws"]} '
        f'draws every {budget["steps_between_draws"]} steps); written '
        f"{written_at()} by losskernel calibrate in {calibration['seconds']:.0f} s.</p>",
        "<h2>Recommendation</h2>",
    ]
    if rec is not None:
        snippet = (yaml.safe_dump({"sampler": dict(rec)}, sort_keys=False)
                   + f"  burnin_steps: {budget['burnin_steps']}  # at least: the pilots' "
                   "burn-in\n")
        parts.append(f'<p class="ok">Recommended: <b>lr {rec["lr"]:.3g}, localization '
                     f'{rec["localization"]:.3g}, nbeta {rec["nbeta"]:.3g}</b> '
                     "(<code>losskernel calibrate CONFIG --write PATH</code> writes it into a "
                     "config).</p>")
        parts.append(f"<pre>{escape(snippet)}</pre>")
    else:
        parts.append('<p class="warn">No setting passed every check. Widen the grid toward '
                     "smaller lr and larger localization (calibrate.lr, calibrate.localization), "
                     "or give the pilots more steps or chains if the split-half CKA was the "
                     "only obstacle.</p>")
    parts.append(f"<p><b>Rule.</b> {escape(calibration['rule'])}</p>")
    parts.append("<h2>Settings</h2>")
    rows = []
    for r in results:
        point = r["setting"]
        rows.append((point["lr"], point["localization"], point["nbeta"],
                     ", ".join(map(str, r["diverged_chains"])) or "none",
                     ", ".join(map(str, r["drifting_chains"])) or "none",
                     "; ".join(r["drift_flags"]) or "none",
                     r["train_drift"], r["eval_drift"], r["distance_final"], r["split_half_cka"],
                     r["projected_cka"], r["draws_for_min_cka"],
                     "RECOMMENDED" if r["name"] == rec_name else
                     ("admissible" if r["admissible"] else "; ".join(r["reasons"]))))
    parts.append(table(rows, SETTINGS_HEADER, fmt=fmt_cell))
    parts.append(
        "<p><b>How the numbers were measured.</b> Before the first step the run measures the "
        f"loss at the trained weights w*: mean training loss {fmt_cell(ref.get('train_loss'))} over "
        f"{escape(ref.get('train_source'))}, mean eval loss {fmt_cell(ref.get('eval_loss_mean'))}. "
        "<i>Train drift</i> is the mean minibatch training loss over the last "
        f"{budget['guards']['late_fraction']:.0%} of each chain's steps minus the loss at w*; "
        "<i>eval drift</i> the same for the mean eval loss over the last draws; both averaged "
        "over the chains that did not diverge. A chain is <i>flagged</i> when its train drift "
        f"exceeds the tolerance {fmt_cell(ref.get('loss_tolerance'))} (the larger of "
        "guards.max_loss_increase and guards.max_loss_increase_relative x |loss at w*|), its "
        f"eval drift exceeds {fmt_cell(ref.get('eval_tolerance'))} (the same rule), or "
        "when ||w - w*|| rises through the last three quarters of its draws by more than "
        f"{budget['guards']['distance_growth']:.0%} and more than four times its noise; it "
        f"<i>diverged</i> when its loss or weights stopped being finite or its train drift "
        f"exceeded {fmt_cell(ref.get('blowup_threshold'))} (guards.blowup_factor tolerances). "
        "<i>|w - w*| reached</i> is the distance at the last draw, averaged over chains. "
        "<i>Split-half CKA</i> compares the kernel from the first half of the chains with the "
        "kernel from the second half (disjoint draws, after burn-in): near 1 the pilot kernel is "
        "reproducible; low values mean the chains have not mixed, measure drift, or the pilot "
        "has too few draws for a kernel this noisy. <i>Projected to the run</i> is what the "
        f"configured run's {budget['run_draws']} draws would give by the rule's 1/(1 + c/m) "
        "model, and <i>draws for min_cka</i> how many draws that model says reach "
        f"calibrate.min_cka = {budget['min_cka']:g}.</p>")
    flagged = [f"{r['name']}: {x}" for r in results for x in r["flags"]]
    if flagged:
        parts.append("<h3>Guard-rail flags with their likely fixes</h3><pre>"
                     + escape("\n".join(flagged)) + "</pre>")
    parts.append("<h2>Figures</h2>")
    parts += [figure(path, title, caption) for path, title, caption in figures]
    parts.append("<h2>Pilot runs</h2><p>Each setting is a complete run directory under "
                 f"<code>{escape(calibration['directory'])}</code> (<code>losskernel info</code> works on "
                 "it).</p>")
    parts.append(details("all numbers (calibration.json)", calibration))
    parts.append(PAGE_END)
    return "\n".join(parts)


def write_calibration_report(path: Path, calibration: Mapping[str, Any],
                             traces: Sequence[Mapping[str, np.ndarray]], run_name: str) -> Path:
    """Draw the figures next to ``path`` and write the page, each atomically.

    ``calibration`` is calibration.json's content, ``traces[i]`` the per-chain
    arrays of ``calibration["settings"][i]``, ``run_name`` the run directory's name.
    """
    path = Path(path)
    figures = trace_figures(calibration, traces, path.parent)
    return atomic_write(path, render(calibration, figures, run_name))
