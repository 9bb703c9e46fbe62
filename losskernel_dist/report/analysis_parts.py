"""The analysis report's parts, one per report section, each from metrics.json's numbers.

Each part is ``(metrics, folder) -> HTML``: it explains in words how the
numbers of its analyses were computed and embeds their figures (read from
``folder``, tagged with the part's key in ``metrics["figures"]``). An empty
string means the part has nothing to show and the page leaves it out.
``PARTS`` lists them in page order with their headings; an analysis whose
report section is not here is shown by html.py's generic part.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .html_parts import details, escape, figure, fmt_value, table

Part = Callable[[Mapping[str, Any], Path], str]


def figures_for(metrics: Mapping[str, Any], key: str, folder: Path) -> str:
    """Every figure of report section ``key``, embedded, in the order they were drawn."""
    return "\n".join(figure(Path(folder) / f["file"], f["title"], f["caption"])
                     for f in metrics.get("figures", []) if f["section"] == key)


def thumbnails_part(metrics: Mapping[str, Any], folder: Path) -> str:
    return figures_for(metrics, "thumbnails", folder)


def guards_part(metrics: Mapping[str, Any], folder: Path) -> str:
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
                   + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>")
    return verdict + table(rows)


def convergence_part(metrics: Mapping[str, Any], folder: Path) -> str:
    conv = metrics.get("convergence", {})
    parts = []
    mix = conv.get("rhat_ess", {})
    if mix.get("available"):
        bad = (mix.get("rhat_max") or 0) > 1.1
        cls = "warn" if bad else "ok"
        verdict = ("Some samples have R-hat above 1.1: the chains disagree about their losses; "
                   "more or longer chains would change the kernel there." if bad else
                   "Every sample's R-hat is at most 1.1: the chains agree.")
        parts.append(f'<p class="{cls}">{escape(verdict)}</p>')
        rows = [(k, mix[k]) for k in ("chains", "draws", "rhat_median", "rhat_max",
                                      "rhat_fraction_above_1.01", "ess_bulk_median",
                                      "ess_bulk_min", "ess_tail_median", "ess_tail_min")
                if k in mix]
        parts.append(table(rows, ["split R-hat / ESS (ArviZ)", ""]))
        worst = mix.get("worst_rhat_samples", [])
        if worst:
            parts.append("<p>Samples with the worst R-hat:</p>" + table(
                [(w["sample"], w["rhat"], w["ess_bulk"]) for w in worst],
                ["sample", "R-hat", "bulk ESS"]))
    train = conv.get("train_loss", {})
    chains = train.get("chains", [])
    if chains:
        parts.append("<h3>Training loss per chain</h3>")
        parts.append(table(
            [(c["chain"], c.get("initial"), c.get("sampling_mean"), c.get("sampling_std"),
              c.get("drift"), c.get("steps_recorded")) for c in chains],
            ["chain", "first step", "mean while sampling", "sd while sampling",
             "drift (sd units)", "steps recorded"]))
    curve = conv.get("cka_over_draws", {})
    if curve.get("available"):
        parts.append(table(list(zip(curve["s"], curve["cka"], strict=True)),
                            ["draws s", "CKA(K_s, K_final)"]))
    parts.append(figures_for(metrics, "convergence", folder))
    return "\n".join(parts)


def maps_part(metrics: Mapping[str, Any], folder: Path) -> str:
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
        text += f'<p class="warn">{escape(s2["note"])}</p>'
    return text + explorer_link(metrics) + figures_for(metrics, "maps", folder)


def explorer_link(metrics: Mapping[str, Any]) -> str:
    """A paragraph linking the interactive explorer page beside the report, if there is one."""
    info = metrics.get("explorer")
    if not info:
        return ""
    thinned = (f" To stay small enough to open it embeds {escape('; '.join(info['thinned']))}."
               if info.get("thinned") else "")
    return (f'<p class="ok"><a href="{escape(info["page"])}"><b>Open the interactive explorer'
            f"</b></a> ({escape(info['page'])} beside this report, offline like it): every one "
            f"of the {fmt_value(info['n'])} samples on the 2-D map, coloured by any of "
            f"{len(info['colourings'])} colourings; hover a point to see the sample, click it "
            f"to list its {info.get('neighbours_k', 0)} nearest neighbours, search by index or "
            f"text.{thinned}</p>")


def picture_part(metrics: Mapping[str, Any], folder: Path) -> str:
    pic = metrics.get("picture")
    if not pic:
        return ""
    how = (f"each pixel is the mean of rho over a pair of bins of consecutive samples "
           f"({pic['pixels']} x {pic['pixels']} bins)" if pic["block_averaged"]
           else "each pixel is rho between two samples")
    return (f"<p>The correlation matrix with samples sorted by {escape(pic['sorted_by'])}; {how}. "
            "Blocks on the diagonal are groups of samples whose losses move together; "
            "pale off-diagonal blocks are groups the model treats independently.</p>"
            + figures_for(metrics, "picture", folder))


def groups_part(metrics: Mapping[str, Any], folder: Path) -> str:
    groups = metrics.get("groups")
    if not groups:
        return ""
    parts = []
    pc = groups.get("pc1", {})
    parts.append(f"<p>Group used: {escape(groups.get('group'))}. The first principal component of "
                 f"the standardised loss vectors explains {fmt_value(pc.get('explained_fraction'))} "
                 "of their variance.</p>")
    auc = groups.get("pc1_auc", {})
    if auc.get("available"):
        parts.append(f"<p><b>ROC-AUC {auc['auc']:.4f}</b> for telling {escape(auc['positive'])} from "
                     f"{escape(auc['negative'])} by the PC1 projection alone "
                     f"(counts {escape(auc['counts'])}; {escape(auc['orientation'])}).</p>")
    pairs = groups.get("covariance_by_pair_type", {})
    if pairs:
        parts.append(table(
            [(name, d["count"], d["mean"], d["std"], d["mean_abs"],
              d["quantiles"].get("0.05"), d["quantiles"].get("0.5"), d["quantiles"].get("0.95"))
             for name, d in pairs.items()],
            ["pairs", "count", "mean K_ij", "sd", "mean |K_ij|", "5%", "median", "95%"]))
    parts.append(figures_for(metrics, "groups", folder))
    return "\n".join(parts)


def neighbours_part(metrics: Mapping[str, Any], folder: Path) -> str:
    nb = metrics.get("neighbours")
    if not nb:
        return ""
    parts = [f"<p>For every sample, its {nb['k']} most and {nb['k']} least correlated samples "
             f"(itself excluded{', and every sample of its own label' if nb['exclude_same_label'] else ''}), "
             f"computed block by block and stored in the run ({escape(nb['stored_in'])}). Mean rho "
             f"of the nearest neighbour: {fmt_value(nb['mean_top1_corr'])}; of the top {nb['k']}: "
             f"{fmt_value(nb['mean_topk_corr'])}; of the bottom {nb['k']}: "
             f"{fmt_value(nb['mean_bottomk_corr'])}.</p>"]
    if nb.get("note"):
        parts.append(f'<p class="warn">{escape(nb["note"])}</p>')
    lift = nb.get("label_lift")
    if lift and lift.get("lift") is not None:
        parts.append(f"<p>Neighbours share the sample's label {lift['match_rate']:.3f} of the time "
                     f"against a base rate of {lift['base_rate']:.3f} (lift "
                     f"{lift['lift']:.3f}).</p>")
    rows = []
    for ex in nb.get("examples", []):
        def fmt(items: list) -> str:
            return "<br>".join(sample_html(i, f"{i['rho']:+.3f}") for i in items)
        rows.append((sample_html(ex), fmt(ex["top"]), fmt(ex["bottom"])))
    if rows:
        parts.append("<p>A few random samples and their neighbours (sample, rho, label"
                     + (", text" if any("text" in ex for ex in nb["examples"]) else "")
                     + "):</p>" + table(rows, ["sample", "most correlated", "least correlated"],
                                        fmt=str))
    return "\n".join(parts)


def sample_html(item: Mapping[str, Any], rho: str = "") -> str:
    """One sample of a neighbour table as HTML: ``#j (rho, label)`` and its text, if any,
    with a token-level kernel's token (between ⟦ and ⟧) highlighted."""
    inside = ", ".join(escape(x) for x in (rho, item.get("label")) if x)
    out = f"#{item['sample']}" + (f" ({inside})" if inside else "")
    if item.get("text") is not None:
        text = escape(item["text"]).replace("\u27e6", "<mark>").replace("\u27e7", "</mark>")
        out += f' <q class="sample">{text}</q>'
    return out


def lift_part(metrics: Mapping[str, Any], folder: Path) -> str:
    parts = []
    tax = metrics.get("taxonomic_lift")
    hierarchy = metrics.get("hierarchy")
    if hierarchy:
        parts.append(f"<p>Labels are WordNet synsets: {hierarchy['labels']} labels, depths "
                     f"{escape(hierarchy['depth_counts'])}; a synset with several hypernym paths is "
                     f"placed {escape(hierarchy['placement'])}; order {escape(hierarchy['order'])}.</p>")
    if tax:
        rows = [(d, v.get("lift"), v.get("match_rate"), v.get("base_rate"), v.get("queries"))
                for d, v in tax["overall"].items()]
        parts.append(f"<p>Taxonomic lift with the {tax['k']} nearest neighbours of another label, "
                     f"over all queries deep enough (peak {fmt_value(tax.get('peak_lift'))} at depth "
                     f"{fmt_value(tax.get('peak_depth'))}):</p>"
                     + table(rows, ["ancestor depth d", "lift", "match rate", "base rate",
                                     "queries"]))
        parts.append(details("lift per query depth D and ancestor depth d", tax["curves"]))
    attrs = metrics.get("attribute_lift")
    if attrs:
        rows = [(name, v.get("lift"), v.get("match_rate"), v.get("base_rate"), v.get("levels"),
                 v.get("reason", ""))
                for name, v in attrs["attributes"].items()]
        parts.append(f"<p>Attribute lift with the {attrs['k']} nearest neighbours"
                     f"{' of another label' if attrs['exclude_same_label'] else ''}:</p>"
                     + table(rows, ["attribute", "lift", "match rate", "base rate", "values",
                                     "note"]))
        if attrs.get("not_used"):
            parts.append(table(list(attrs["not_used"].items()), ["attribute not used", "why"]))
    colour = metrics.get("colour_groups")
    if colour:
        parts.append(f"<p>Colour groups: {colour['groups']} groups by {escape(colour['method'])}; "
                     f"sizes {escape(colour['sizes'])}.</p>")
    parts.append(figures_for(metrics, "lift", folder))
    return "\n".join(parts)


def memorization_part(metrics: Mapping[str, Any], folder: Path) -> str:
    mem = metrics.get("memorization")
    if not mem:
        return ""
    if not mem.get("available"):
        return f"<p>{escape(mem.get('reason'))}</p>"
    return (f"<p>Flag: {escape(mem['chosen'])}. ROC-AUC of the per-sample loss variance K_ii for "
            f"telling the {mem['flagged']} flagged samples from the {mem['clean']} others: "
            f"<b>{mem['auc']:.4f}</b>. Mean K_ii flagged {fmt_value(mem['mean_var_flagged'])}, clean "
            f"{fmt_value(mem['mean_var_clean'])}.</p>" + figures_for(metrics, "memorization", folder))


PARTS: dict[str, tuple[str, Part]] = {
    "guards": ("Guard rails", guards_part),
    "convergence": ("Chain health and convergence", convergence_part),
    "maps": ("Maps of the kernel", maps_part),
    "picture": ("The kernel matrix", picture_part),
    "groups": ("Task and group structure", groups_part),
    "neighbours": ("Nearest neighbours", neighbours_part),
    "lift": ("Lift: do neighbours share labels' ancestors and attributes?", lift_part),
    "memorization": ("Memorization", memorization_part),
    "thumbnails": ("Thumbnails", thumbnails_part),
}
