"""The analysis report: one self-contained ``index.html`` that opens offline in any browser.

Figures are embedded as base64 PNG data (they also lie beside the page as
files), styles are inline, and the page has no script and no external
reference, so it renders the same from a laptop, a cluster's file browser or
an e-mail attachment. It is written from ``metrics.json``'s content alone:
every number on the page is one the analysis recorded, explained in words for
a reader who did not run it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #1d1d1f; background: #fafafa; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5em 2em 4em; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
p.lead { color: #444; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.88em; color: #444; margin-top: 0.3em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.82em; }
.warn { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 0.8em; }
.ok { background: #eef8ee; border-left: 4px solid #3a3; padding: 0.5em 0.8em; }
nav a { margin-right: 0.9em; font-size: 0.9em; }
"""

SECTIONS = [
    ("summary", "Summary"),
    ("run", "The run"),
    ("guards", "Guard rails"),
    ("convergence", "Chain health and convergence"),
    ("maps", "Maps of the kernel"),
    ("picture", "The kernel matrix"),
    ("groups", "Task and group structure"),
    ("neighbours", "Nearest neighbours"),
    ("lift", "Lift: do neighbours share labels' ancestors and attributes?"),
    ("memorization", "Memorization"),
    ("thumbnails", "Thumbnails"),
    ("skipped", "Analyses that did not apply"),
]

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


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for cell in row:
            cls = ' class="num"' if isinstance(cell, (int, float)) and not isinstance(cell, bool) else ""
            cells.append(f"<td{cls}>{_fmt(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _figure(fig: Mapping[str, str], folder: Path) -> str:
    path = folder / fig["file"]
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(fig["title"])}">'
            f"<figcaption><b>{_e(fig['title'])}.</b> {_e(fig['caption'])} "
            f"<i>(file: {_e(fig['file'])})</i></figcaption></figure>")


def _figures(metrics: Mapping[str, Any], section: str, folder: Path) -> str:
    return "\n".join(_figure(f, folder) for f in metrics.get("figures", [])
                     if f["section"] == section)


def _details(title: str, data: Any) -> str:
    return (f"<details><summary>{_e(title)}</summary><pre>"
            f"{_e(json.dumps(data, indent=2))}</pre></details>")


# --------------------------------------------------------------------------- sections


def _summary(metrics: Mapping[str, Any]) -> str:
    rows = [(k, v, SUMMARY_TEXT.get(k, _lift_text(k))) for k, v in metrics["summary"].items()]
    return ("<p>The headline numbers of this analysis (also printed by <code>losskernel analyze"
            "</code>); each section below explains how it was computed.</p>"
            + _table(rows, ["name", "value", "meaning"]))


def _lift_text(key: str) -> str:
    if key.startswith("lift_"):
        return f"lift of attribute {key[5:]!r} among nearest neighbours (1 = chance)"
    return ""


def _run(metrics: Mapping[str, Any], config: Mapping[str, Any]) -> str:
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
    return (intro + _table(rows)
            + "<details><summary>Resolved configuration (config.yaml)</summary><pre>"
            + _e(yaml.safe_dump(dict(config), sort_keys=False)) + "</pre></details>")


def _guards(metrics: Mapping[str, Any]) -> str:
    guards = metrics.get("guards")
    if not guards:
        return ""
    rows = [("training loss at w* (reference)", guards.get("reference_train_loss")),
            ("drift tolerance", guards.get("loss_tolerance")),
            ("blow-up threshold", guards.get("blowup_threshold")),
            ("eval-loss tolerance", guards.get("eval_tolerance"))]
    lines = guards.get("lines") or []
    if not lines:
        verdict = ('<p class="ok">No chain flagged: every chain kept its training and eval '
                   "losses near their values at w* and its distance from w* steady.</p>")
    else:
        verdict = (f'<p class="warn">{len(guards["flagged_chains"])} chain(s) flagged: the '
                   "kernel may measure a drift or a blow-up rather than the model. Each flag "
                   "with its likely fix:</p><ul>"
                   + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>")
    return verdict + _table(rows)


def _convergence(metrics: Mapping[str, Any], folder: Path) -> str:
    conv = metrics.get("convergence", {})
    parts = []
    mix = conv.get("rhat_ess", {})
    if mix.get("available"):
        bad = (mix.get("rhat_max") or 0) > 1.1
        cls = "warn" if bad else "ok"
        verdict = ("Some samples have R-hat above 1.1: the chains disagree about their losses; "
                   "more or longer chains would change the kernel there." if bad else
                   "Every sample's R-hat is at most 1.1: the chains agree.")
        parts.append(f'<p class="{cls}">{_e(verdict)}</p>')
        rows = [(k, mix[k]) for k in ("chains", "draws", "rhat_median", "rhat_max",
                                      "rhat_fraction_above_1.01", "ess_bulk_median",
                                      "ess_bulk_min", "ess_tail_median", "ess_tail_min")
                if k in mix]
        parts.append(_table(rows, ["split R-hat / ESS (ArviZ)", ""]))
        worst = mix.get("worst_rhat_samples", [])
        if worst:
            parts.append("<p>Samples with the worst R-hat:</p>" + _table(
                [(w["sample"], w["rhat"], w["ess_bulk"]) for w in worst],
                ["sample", "R-hat", "bulk ESS"]))
    train = conv.get("train_loss", {})
    chains = train.get("chains", [])
    if chains:
        parts.append("<h3>Training loss per chain</h3>")
        parts.append(_table(
            [(c["chain"], c.get("initial"), c.get("sampling_mean"), c.get("sampling_std"),
              c.get("drift"), c.get("steps_recorded")) for c in chains],
            ["chain", "first step", "mean while sampling", "sd while sampling",
             "drift (sd units)", "steps recorded"]))
    curve = conv.get("cka_over_draws", {})
    if curve.get("available"):
        parts.append(_table(list(zip(curve["s"], curve["cka"], strict=True)),
                            ["draws s", "CKA(K_s, K_final)"]))
    parts.append(_figures(metrics, "convergence", folder))
    return "\n".join(parts)


def _maps(metrics: Mapping[str, Any], folder: Path) -> str:
    maps = metrics.get("maps")
    if not maps:
        return ""
    s2 = maps.get("umap_2d", {})
    text = (f"<p>UMAP (umap-learn) of the distance d = sqrt(2(1 - rho)), fed each sample's "
            f"{s2.get('n_neighbors', 0) - 1} nearest neighbours from the blockwise neighbour "
            f"lists (min_dist {s2.get('min_dist')}, seed {s2.get('seed')}, "
            f"{s2.get('init')} initialisation). Nearby points are samples the model treats "
            "alike. "
            + ("Edges between samples of the same label were removed, so two samples are never "
               "neighbours merely because they share a label (paper Appendix B)."
               if maps.get("same_label_edges_removed") else "") + "</p>")
    if s2.get("note"):
        text += f'<p class="warn">{_e(s2["note"])}</p>'
    return text + _figures(metrics, "maps", folder)


def _picture(metrics: Mapping[str, Any], folder: Path) -> str:
    pic = metrics.get("picture")
    if not pic:
        return ""
    how = (f"each pixel is the mean of rho over a pair of bins of consecutive samples "
           f"({pic['pixels']} x {pic['pixels']} bins)" if pic["block_averaged"]
           else "each pixel is rho between two samples")
    return (f"<p>The correlation matrix with samples sorted by {_e(pic['sorted_by'])}; {how}. "
            "Blocks on the diagonal are groups of samples whose losses move together; "
            "pale off-diagonal blocks are groups the model treats independently.</p>"
            + _figures(metrics, "picture", folder))


def _groups(metrics: Mapping[str, Any], folder: Path) -> str:
    groups = metrics.get("groups")
    if not groups:
        return ""
    parts = []
    pc = groups.get("pc1", {})
    parts.append(f"<p>Group used: {_e(groups.get('group'))}. The first principal component of "
                 f"the standardised loss vectors explains {_fmt(pc.get('explained_fraction'))} "
                 "of their variance.</p>")
    auc = groups.get("pc1_auc", {})
    if auc.get("available"):
        parts.append(f"<p><b>ROC-AUC {auc['auc']:.4f}</b> for telling {_e(auc['positive'])} from "
                     f"{_e(auc['negative'])} by the PC1 projection alone "
                     f"(counts {_e(auc['counts'])}; {_e(auc['orientation'])}).</p>")
    pairs = groups.get("covariance_by_pair_type", {})
    if pairs:
        parts.append(_table(
            [(name, d["count"], d["mean"], d["std"], d["mean_abs"],
              d["quantiles"].get("0.05"), d["quantiles"].get("0.5"), d["quantiles"].get("0.95"))
             for name, d in pairs.items()],
            ["pairs", "count", "mean K_ij", "sd", "mean |K_ij|", "5%", "median", "95%"]))
    parts.append(_figures(metrics, "groups", folder))
    return "\n".join(parts)


def _neighbours(metrics: Mapping[str, Any]) -> str:
    nb = metrics.get("neighbours")
    if not nb:
        return ""
    parts = [f"<p>For every sample, its {nb['k']} most and {nb['k']} least correlated samples "
             f"(itself excluded{', and every sample of its own label' if nb['exclude_same_label'] else ''}), "
             f"computed block by block and stored in the run ({_e(nb['stored_in'])}). Mean rho "
             f"of the nearest neighbour: {_fmt(nb['mean_top1_corr'])}; of the top {nb['k']}: "
             f"{_fmt(nb['mean_topk_corr'])}; of the bottom {nb['k']}: "
             f"{_fmt(nb['mean_bottomk_corr'])}.</p>"]
    if nb.get("note"):
        parts.append(f'<p class="warn">{_e(nb["note"])}</p>')
    lift = nb.get("label_lift")
    if lift and lift.get("lift") is not None:
        parts.append(f"<p>Neighbours share the sample's label {lift['match_rate']:.3f} of the time "
                     f"against a base rate of {lift['base_rate']:.3f} (lift "
                     f"{lift['lift']:.3f}).</p>")
    rows = []
    for ex in nb.get("examples", []):
        def fmt(items: list) -> str:
            return ", ".join(f"#{i['sample']} ({i['rho']:+.3f}"
                             + (f", {i['label']}" if i.get("label") is not None else "") + ")"
                             for i in items)
        rows.append((f"#{ex['sample']}" + (f" ({ex['label']})" if ex.get("label") else ""),
                     fmt(ex["top"]), fmt(ex["bottom"])))
    if rows:
        parts.append("<p>A few random samples and their neighbours (sample, rho, label):</p>"
                     + _table(rows, ["sample", "most correlated", "least correlated"]))
    return "\n".join(parts)


def _lift(metrics: Mapping[str, Any], folder: Path) -> str:
    parts = []
    tax = metrics.get("taxonomic_lift")
    hierarchy = metrics.get("hierarchy")
    if hierarchy:
        parts.append(f"<p>Labels are WordNet synsets: {hierarchy['labels']} labels, depths "
                     f"{_e(hierarchy['depth_counts'])}; a synset with several hypernym paths is "
                     f"placed {_e(hierarchy['placement'])}; order {_e(hierarchy['order'])}.</p>")
    if tax:
        rows = [(d, v.get("lift"), v.get("match_rate"), v.get("base_rate"), v.get("queries"))
                for d, v in tax["overall"].items()]
        parts.append(f"<p>Taxonomic lift with the {tax['k']} nearest neighbours of another label, "
                     f"over all queries deep enough (peak {_fmt(tax.get('peak_lift'))} at depth "
                     f"{_fmt(tax.get('peak_depth'))}):</p>"
                     + _table(rows, ["ancestor depth d", "lift", "match rate", "base rate",
                                     "queries"]))
        parts.append(_details("lift per query depth D and ancestor depth d", tax["curves"]))
    attrs = metrics.get("attribute_lift")
    if attrs:
        rows = [(name, v.get("lift"), v.get("match_rate"), v.get("base_rate"), v.get("levels"),
                 v.get("reason", ""))
                for name, v in attrs["attributes"].items()]
        parts.append(f"<p>Attribute lift with the {attrs['k']} nearest neighbours"
                     f"{' of another label' if attrs['exclude_same_label'] else ''}:</p>"
                     + _table(rows, ["attribute", "lift", "match rate", "base rate", "values",
                                     "note"]))
        if attrs.get("not_used"):
            parts.append(_table(list(attrs["not_used"].items()), ["attribute not used", "why"]))
    colour = metrics.get("colour_groups")
    if colour:
        parts.append(f"<p>Colour groups: {colour['groups']} groups by {_e(colour['method'])}; "
                     f"sizes {_e(colour['sizes'])}.</p>")
    parts.append(_figures(metrics, "lift", folder))
    return "\n".join(parts)


def _memorization(metrics: Mapping[str, Any], folder: Path) -> str:
    mem = metrics.get("memorization")
    if not mem:
        return ""
    if not mem.get("available"):
        return f"<p>{_e(mem.get('reason'))}</p>"
    return (f"<p>Flag: {_e(mem['chosen'])}. ROC-AUC of the per-sample loss variance K_ii for "
            f"telling the {mem['flagged']} flagged samples from the {mem['clean']} others: "
            f"<b>{mem['auc']:.4f}</b>. Mean K_ii flagged {_fmt(mem['mean_var_flagged'])}, clean "
            f"{_fmt(mem['mean_var_clean'])}.</p>" + _figures(metrics, "memorization", folder))


def _skipped(metrics: Mapping[str, Any]) -> str:
    skipped = metrics.get("skipped", {})
    if not skipped:
        return "<p>Every analysis applied to this run.</p>"
    return _table(list(skipped.items()), ["analysis", "why it was not done"])


def render(metrics: Mapping[str, Any], config: Mapping[str, Any], folder: Path) -> str:
    """The report's HTML text; figures are read from ``folder`` and embedded."""
    folder = Path(folder)
    bodies = {
        "summary": _summary(metrics),
        "run": _run(metrics, config),
        "guards": _guards(metrics),
        "convergence": _convergence(metrics, folder),
        "maps": _maps(metrics, folder),
        "picture": _picture(metrics, folder),
        "groups": _groups(metrics, folder),
        "neighbours": _neighbours(metrics),
        "lift": _lift(metrics, folder),
        "memorization": _memorization(metrics, folder),
        "thumbnails": _figures(metrics, "thumbnails", folder),
        "skipped": _skipped(metrics),
    }
    shown = [(key, title) for key, title in SECTIONS if bodies[key].strip()]
    run_name = Path(metrics["run"]["run_dir"]).name or metrics["run"]["run_dir"]
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Loss kernel analysis: {_e(run_name)}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        f"<h1>Loss kernel analysis: {_e(run_name)}</h1>",
        f'<p class="lead">{_fmt(metrics["run"]["n"])} samples, {_fmt(metrics["run"]["draws"])} '
        f"draws; written {when} by losskernel analyze.</p>",
        "<nav>" + "".join(f'<a href="#{k}">{_e(t)}</a>' for k, t in shown) + "</nav>",
    ]
    for key, title in shown:
        out.append(f'<section id="{key}"><h2>{_e(title)}</h2>{bodies[key]}</section>')
    out.append(_details("all numbers (metrics.json)",
                        {k: v for k, v in metrics.items() if k != "figures"}))
    out.append("</main></body></html>")
    return "\n".join(out)


def write_report(path: Path, metrics: Mapping[str, Any], config: Mapping[str, Any],
                 folder: Path) -> Path:
    """Write the self-contained report to ``path``."""
    path = Path(path)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render(metrics, config, folder), encoding="utf-8")
    tmp.replace(path)
    return path
