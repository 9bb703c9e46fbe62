"""The interactive explorer's data: the 2-D map, its colourings, texts, thumbnails, neighbours.

Writes ``explorer.json`` beside metrics.json (explorer_data.py says what it holds
and how it is thinned to a page's budget); the report layer turns it into the
self-contained page ``explorer.html`` (report/explorer.py), linked from the maps
section. The neighbours are the lists the analysis uses everywhere: the top of each
row of the dense kernel, or the lists the reduce streamed from the draws.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...config import AnalysisConfig
from ...rundir import atomic_write
from .. import explorer_data
from ..registry import analysis
from ..section import Section
from ..thumbnails import IMAGE_ATTRIBUTE, TEXT_ATTRIBUTE
from .maps import MapsSection
from .neighbours import NeighboursSection

FILE = "explorer.json"
PAGE = "explorer.html"  # written by the report layer from FILE


@analysis(report="maps", title="Interactive explorer")
def explorer(settings: AnalysisConfig, attributes: Mapping[str, np.ndarray], run_dir: Path,
             n: int, draws: int, folder: Path, maps: MapsSection,
             neighbours: NeighboursSection) -> Section:
    """Write the explorer's document; skipped without a 2-D map."""
    if maps.umap_2d is None:
        return Section(skipped={"explorer": "needs the 2-D map, which was not made (see umap "
                                            "or maps)"})
    lists = neighbours.lists
    texts = attributes.get(TEXT_ATTRIBUTE)
    notes = []
    if texts is None:
        notes.append("This run stores no sample texts (the task has no describe, or the run "
                     "was made before texts were stored): samples are shown by index.")
    if lists is None:
        notes.append(f"No neighbour lists: {neighbours.unavailable}.")
    source = ("streamed by the reduce from the draws (no dense kernel)" if neighbours.streamed
              else "the top of each row of the dense kernel")
    if neighbours.excluding:
        source += "; samples of the sample's own label excluded"
    label = next((title for title, *_ in maps.colourings if title == "label"), None)
    doc = explorer_data.explorer_document(
        title=Path(run_dir).name or str(run_dir), xy=maps.umap_2d, colourings=maps.colourings,
        label_colouring=label,
        top_index=None if lists is None else lists.top_index,
        top_corr=None if lists is None else lists.top_corr,
        k=neighbours.k, neighbour_source=source,
        texts=None if texts is None else [str(t) for t in np.asarray(texts).tolist()],
        images=attributes.get(IMAGE_ATTRIBUTE), seed=settings.seed, notes=notes,
        max_bytes=explorer_data.MAX_BYTES,
    )
    doc["draws"] = draws
    text = json_document(doc)
    atomic_write(folder / FILE, text)
    numbers: dict[str, Any] = {
        "file": FILE, "page": PAGE, "n": n, "draws": draws,
        "colourings": [c["name"] for c in doc["colourings"]],
        "neighbours_k": doc["neighbours"]["k"] if "neighbours" in doc else 0,
        "neighbour_source": source if "neighbours" in doc else None,
        "texts": texts is not None,
        "thumbnails": 0 if "thumbnails" not in doc else (
            n if doc["thumbnails"]["which"] is None else doc["thumbnails"]["which"]["shape"][0]),
        "thinned": doc["thinned"],
        "notes": notes,
        "bytes": len(text.encode("utf-8")),
    }
    return Section(numbers=numbers)


def json_document(doc: Mapping[str, Any]) -> str:
    """The document as JSON text that can sit inside an HTML ``<script>`` element as it is:
    every '<' escaped (so no '</script>' or '<!--' can occur), UTF-8 otherwise."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c")
