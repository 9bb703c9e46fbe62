"""The analysis report: one self-contained ``index.html`` that opens offline in any browser.

Figures are embedded as base64 PNG data (they also lie beside the page as
files), styles are inline, and the page has no script and no external
reference, so it renders the same from a laptop, a cluster's file browser or
an e-mail attachment. It is written from ``metrics.json``'s content alone:
every number on the page is one the analysis recorded, explained in words for
a reader who did not run it.

The page is the summary, the run, one part per report section
(analysis_parts.py) and the skipped analyses. An analysis whose report section
has no part there (one added without touching the report) still appears: a
generic part shows its numbers and figures under the title it declared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..rundir import atomic_write
from .analysis_parts import PARTS, figures_for
from .html_parts import (
    PAGE_END,
    details,
    escape,
    fmt_value,
    is_number,
    page_head,
    table,
    written_at,
)

SUMMARY_TEXT = {
    "n": "samples N in the kernel",
    "draws": "draws (pooled over chains) the kernel rests on",
    "guard_flagged_chains": "chains the guard rails flagged (0 = none; see Guard rails)",
    "mean_top1_corr": "mean correlation of each sample with its nearest neighbour",
    "pc1_auc": "ROC-AUC of the first principal component for the two groups (1 = separated)",
    "within_cov_mean": "mean covariance of pairs within a group",
    "cross_cov_mean": "mean covariance of pairs across groups",
    "cka_half_draws": "CKA of the half-draws kernel with the final kernel (1 = converged)",
    "rhat_median": "median split R-hat over samples (near 1 = chains agree)",
    "rhat_max": "worst split R-hat",
    "ess_bulk_median": "median bulk effective sample size",
    "ess_bulk_min": "smallest bulk effective sample size",
    "train_loss_max_drift": "largest drift of a chain's training loss while sampling (sd units)",
    "memorization_auc": "ROC-AUC of the loss variance for flagged samples",
    "taxonomic_lift_peak": "highest taxonomic lift over ancestor depths",
    "taxonomic_lift_peak_depth": "WordNet depth of that highest lift",
}


def summary_part(metrics: Mapping[str, Any]) -> str:
    rows = [(k, v, SUMMARY_TEXT.get(k, _lift_text(k))) for k, v in metrics["summary"].items()]
    return ("<p>The headline numbers of this analysis (also printed by <code>losskernel analyze"
            "</code>); each section below explains how it was computed.</p>"
            + table(rows, ["name", "value", "meaning"]))


def _lift_text(key: str) -> str:
    if key.startswith("lift_"):
        return f"lift of attribute {key[5:]!r} among nearest neighbours (1 = chance)"
    return ""


def run_part(metrics: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    run = metrics["run"]
    task = config.get("task", {})
    sampler = config.get("sampler", {})
    rows = [
        ("task", f"{task.get('target')} {task.get('args') or ''}"),
        ("samples N", run["n"]),
        ("chains x draws per chain", f"{run['chains']} x {run['draws_per_chain']}"),
        ("draws used by the kernel", run["draws"]),
        ("training set size n", run.get("n_train")),
        ("labels", run.get("labels")),
        ("per-sample attributes", ", ".join(run.get("attributes", {})) or "none"),
    ]
    for key in ("lr", "nbeta", "localization", "batch_size", "burnin_steps",
                "steps_between_draws", "seed"):
        if key in sampler:
            rows.append((f"sampler.{key}", sampler[key]))
    reduce = run.get("reduce") or {}
    if reduce.get("partial"):
        rows.append(("partial kernel", f"excluded: {reduce.get('excluded')}"))
    fp = run.get("fingerprints") or {}
    for key, value in fp.items():
        rows.append((f"{key} fingerprint", str(value)[:16]))
    intro = ("<p>The <b>loss kernel</b> K is the covariance, over weights drawn by SGLD from a "
             "tempered posterior localized at the trained weights, of the per-sample losses of "
             "N evaluation samples; its normalized form rho is their correlation. Samples whose "
             "losses rise and fall together under these perturbations are treated alike by the "
             "model.</p>")
    return (intro + table(rows)
            + "<details><summary>Resolved configuration (config.yaml)</summary><pre>"
            + escape(yaml.safe_dump(dict(config), sort_keys=False)) + "</pre></details>")


def skipped_part(metrics: Mapping[str, Any]) -> str:
    skipped = metrics.get("skipped", {})
    if not skipped:
        return "<p>Every analysis applied to this run.</p>"
    return table(list(skipped.items()), ["analysis", "why it was not done"])


def generic_part(metrics: Mapping[str, Any], key: str, folder: Path) -> str:
    """An analysis the report has no part for: its scalar numbers, all of them, its figures."""
    numbers = metrics.get(key)
    out = []
    if isinstance(numbers, Mapping):
        rows = [(k, v) for k, v in numbers.items() if is_number(v) or isinstance(v, str)]
        if rows:
            out.append(table(rows))
        out.append(details(f"all numbers of {key}", numbers))
    elif numbers is not None:
        out.append(f"<p>{fmt_value(numbers)}</p>")
    out.append(figures_for(metrics, key, folder))
    return "\n".join(part for part in out if part)


def render(metrics: Mapping[str, Any], config: Mapping[str, Any], folder: Path,
           parts: Sequence[tuple[str, str]] = ()) -> str:
    """The report's HTML text; figures are read from ``folder`` and embedded.

    ``parts`` lists (report section, title) of the analyses that ran; those
    with a section of their own in ``PARTS`` are shown there, the others by
    the generic part, after the known ones.
    """
    folder = Path(folder)
    extra = {key: title for key, title in parts if key not in PARTS}
    sections: list[tuple[str, str, str]] = [
        ("summary", "Summary", summary_part(metrics)),
        ("run", "The run", run_part(metrics, config)),
    ]
    sections += [(key, title, part(metrics, folder)) for key, (title, part) in PARTS.items()]
    sections += [(key, title, generic_part(metrics, key, folder)) for key, title in extra.items()]
    sections.append(("skipped", "Analyses that did not apply", skipped_part(metrics)))
    shown = [(key, title, body) for key, title, body in sections if body.strip()]
    run_name = Path(metrics["run"]["run_dir"]).name or metrics["run"]["run_dir"]
    out = [
        *page_head(f"Loss kernel analysis: {run_name}"),
        f'<p class="lead">{fmt_value(metrics["run"]["n"])} samples, '
        f'{fmt_value(metrics["run"]["draws"])} draws; written {written_at()} by losskernel '
        "analyze.</p>",
        kernel_warning(metrics["run"].get("kernel_state")),
        "<nav>" + "".join(f'<a href="#{k}">{escape(t)}</a>' for k, t, _ in shown) + "</nav>",
    ]
    for key, title, body in shown:
        out.append(f'<section id="{key}"><h2>{escape(title)}</h2>{body}</section>')
    out.append(details("all numbers (metrics.json)",
                       {k: v for k, v in metrics.items() if k not in ("figures", "report_sections")}))
    out.append(PAGE_END)
    return "\n".join(out)


def write_report(path: Path, metrics: Mapping[str, Any], config: Mapping[str, Any],
                 folder: Path, parts: Sequence[tuple[str, str]] = ()) -> Path:
    """Write the self-contained report to ``path``, atomically."""
    return atomic_write(path, render(metrics, config, folder, parts))


def kernel_warning(state: Mapping[str, Any] | None) -> str:
    """A warning line at the top of the report for a partial or stale kernel ('' otherwise)."""
    if not state or not (state.get("partial") or state.get("stale")):
        return ""
    if state.get("stale"):
        text = (f"Stale kernel: reduced from {state['draws_used']} draws, but "
                f"{state['draws_usable']} are usable now; run 'losskernel reduce' again.")
    else:
        text = (f"Partial kernel: reduced with --allow-partial from {state['draws_used']} "
                "draws, not all of the run's.")
    return f'<p class="lead"><strong>{escape(text)}</strong></p>'
