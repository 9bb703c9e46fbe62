"""The interactive explorer page, ``analysis/explorer.html``: one self-contained file.

The analysis writes the explorer's data (``explorer.json``: every point of the 2-D
map, its colourings, texts, thumbnails and neighbour lists; analysis/explorer_data.py)
and records it in ``metrics["explorer"]``. This module wraps that document in a page:
plotly.js (the offline bundle of the ``plotly`` package, inlined: WebGL ``scattergl``
draws 100,000 points smoothly), the document in a ``<script type="application/json">``
element as it is, and the page's own script and style (``explorer.js``,
``explorer.css``, package data beside this module). Nothing on the page refers to a
network, so it opens from a laptop, a cluster's file browser or an e-mail attachment.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ..rundir import atomic_write
from .html_parts import escape, fmt_value

USAGE = ("Hover a point to see its sample; click it to list its nearest neighbours by "
         "correlation (click a neighbour to move to it); the menu recolours the map (rare "
         "categories are drawn on top, larger and outlined); the search box finds a sample "
         "by index (<code>123</code> or <code>#123</code>) or every sample whose text contains "
         "a phrase. Drag to zoom, double-click to zoom out, scroll to zoom.")


def plotly_js() -> str:
    """plotly.js as the ``plotly`` package ships it for offline pages."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().replace("</script", "<\\/script")


def asset(name: str) -> str:
    """A package data file beside this module (explorer.js, explorer.css)."""
    return (resources.files(__package__) / name).read_text(encoding="utf-8")


def about(info: Mapping[str, Any]) -> str:
    """What the page shows and, in a warning, what was thinned to keep it small enough."""
    items = [f"{fmt_value(info['n'])} samples, the 2-D UMAP of the loss kernel "
             f"({fmt_value(info.get('draws'))} draws); colourings: "
             f"{escape(', '.join(info['colourings']))}."]
    if info.get("neighbours_k"):
        items.append(f"Neighbours: the top {info['neighbours_k']} by correlation, "
                     f"{escape(info['neighbour_source'])}.")
    items.append("Sample texts: " + ("from the task (Task.describe or its text attribute)."
                                     if info.get("texts") else "none stored with this run."))
    if info.get("thumbnails"):
        items.append(f"Thumbnails of {fmt_value(info['thumbnails'])} samples.")
    items += [escape(note) for note in info.get("notes", [])]
    thinned = info.get("thinned") or []
    warn = ("" if not thinned else
            '<p class="warn" id="thinned">To keep this page small enough to open, it embeds '
            + "; ".join(escape(t) for t in thinned) + ". The run's store holds everything.</p>")
    return ("<details id=\"about\"" + (" open" if thinned else "") + "><summary>About this page"
            "</summary>" + warn + "<ul>" + "".join(f"<li>{i}</li>" for i in items)
            + f"</ul><p>{USAGE}</p></details>")


def render(info: Mapping[str, Any], document: str, run_name: str) -> str:
    """The page's HTML from ``metrics["explorer"]`` and the explorer's JSON document."""
    title = f"Loss kernel explorer: {run_name}"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{asset('explorer.css')}</style></head><body>",
        f"<header><h1>{escape(title)}</h1>",
        '<label>Colour by <select id="colour"></select></label>',
        '<input id="search" type="search" placeholder="find: sample index or text, Enter">',
        '<span id="status"></span><a href="index.html">the report</a></header>',
        '<div id="wrap"><div id="mapbox"><div id="plot"></div><canvas id="overlay"></canvas>'
        '<div id="key" hidden></div></div><aside id="panel"><div id="selection"><p>'
        "Hover a point to see its sample; click one to list its nearest neighbours.</p></div>"
        '<ol id="matches"></ol></aside></div>',
        '<div id="hovercard" hidden></div>',
        about(info),
        f"<script>{plotly_js()}</script>",
        f'<script type="application/json" id="explorer-data">{document}</script>',
        f"<script>{asset('explorer.js')}</script>",
        "</body></html>",
    ])


def write_explorer(metrics: Mapping[str, Any], folder: Path) -> Path | None:
    """Write the explorer page beside the analysis' document; None when the analysis made
    no explorer (no 2-D map)."""
    info = metrics.get("explorer")
    if not info:
        return None
    folder = Path(folder)
    document = (folder / info["file"]).read_text(encoding="utf-8")
    run_name = Path(metrics["run"]["run_dir"]).name or metrics["run"]["run_dir"]
    return atomic_write(folder / info["page"], render(info, document, run_name))
