"""Benchmark: the explorer page (analysis/explorer.html) at N points, in headless Chromium.

For each N the page is built by the package's own code (analysis/explorer_data.py's
document, thinned to its budget, and report/explorer.py's page) from synthetic per-sample
data shaped like a token-level run: clustered 2-D coordinates, a 10-class label, a rare
attribute (0.5% of the samples), a continuous score, a text per sample (a token in ~70
characters of context) and k = 10 neighbour lists; ``--images`` adds 64 x 64 RGB
thumbnails (an image task: the page then thins them). ``--run RUN_DIR`` measures a run's
own explorer page as well. Each page is opened ``--repeats`` times in a fresh headless
Chromium (WebGL in software, SwiftShader, as a machine without a GPU draws it), and the
median over the browsers of each timing is kept:

    file size       bytes of explorer.html (plotly.js included)
    first paint     the browser's first-contentful-paint (ms after navigation start)
    map drawn       the scatter drawn and the page interactive (ms after navigation start)
    recolour        choosing another colouring until the map is redrawn (ms)
    select          a click on a point until its neighbours are listed and ringed (ms)
    hover           a mouse move onto a point until its card is shown (ms; median of 5)
    search          a text search over every sample until the matches are drawn (ms)

One JSON record (``bench/_record.py``'s BenchRecord: command, git commit, machine with
its load average before and after, versions, config, results) is written to
bench/results/explorer-*.json; each browser's round carries its load (LoadWatch:
foreign CPU per second and a ``loaded`` flag), since every timing here stretches with
other work on the machine.

    python bench/explorer.py [--n 2000 100000] [--images] [--repeats 3] [--run RUN_DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _record import BenchRecord, LoadWatch  # noqa: E402

from losskernel_dist.analysis.explorer_data import explorer_document  # noqa: E402
from losskernel_dist.analysis.sections.explorer import json_document  # noqa: E402
from losskernel_dist.report.explorer import render  # noqa: E402
from tests.cdp import CHROMIUM, Browser  # noqa: E402

WORDS = ("the of and to in a is that for it as was with be by on not he this are or which "
         "loss kernel model sample token weight gradient posterior layer attention").split()


def synthetic_document(n: int, images: bool, seed: int = 0) -> str:
    """The explorer's JSON document for N synthetic samples (see the module doc)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 10, size=n)
    centres = rng.normal(scale=8.0, size=(10, 2))
    xy = centres[label] + rng.normal(size=(n, 2))
    rare = (rng.random(n) < 0.005).astype(np.int64)
    words = rng.integers(0, len(WORDS), size=(n, 13))
    texts = [" ".join(WORDS[w] for w in row[:6]) + " \u27e6" + WORDS[row[6]] + "\u27e7 "
             + " ".join(WORDS[w] for w in row[7:]) for row in words]
    k = 10
    top_index = np.empty((n, k), np.int64)
    for c in range(10):  # neighbours: random samples of the same cluster, as a kernel's would be
        members = np.flatnonzero(label == c)
        top_index[members] = rng.choice(members, size=(len(members), k))
    top_corr = np.sort(rng.uniform(0.2, 0.9, size=(n, k)), axis=1)[:, ::-1]
    pics = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8) if images else None
    doc = explorer_document(
        title=f"synthetic N={n}", xy=xy,
        colourings=[("label", label, "categorical", [f"class {c}" for c in range(10)]),
                    ("attribute rare", rare, "categorical", None),
                    ("PC1 score", xy[:, 0] + rng.normal(size=n), "continuous", None)],
        label_colouring="label", top_index=top_index, top_corr=top_corr, k=k,
        neighbour_source="synthetic", texts=texts, images=pics, seed=0)
    doc["draws"] = 0
    return json_document(doc)


def page_info(document: str) -> dict:
    """``metrics["explorer"]`` as the analysis would record it, from the document."""
    doc = json.loads(document)
    return {"n": doc["n"], "draws": doc.get("draws"), "file": "explorer.json",
            "page": "explorer.html", "colourings": [c["name"] for c in doc["colourings"]],
            "neighbours_k": doc.get("neighbours", {}).get("k", 0), "neighbour_source":
            doc.get("neighbours", {}).get("source"), "texts": doc["texts"] is not None,
            "thumbnails": 0, "thinned": doc["thinned"], "notes": doc["notes"]}


def measure(page: Path, profile: Path) -> dict:
    """One fresh browser: load the page, then recolour, select and search; timings in ms."""
    with Browser(profile, timeout=300) as browser:
        browser.open(page.as_uri())
        browser.wait_for("document.body.dataset.ready === '1'", 300)
        paint = browser.evaluate("(performance.getEntriesByName('first-contentful-paint')[0]"
                                 " || {}).startTime")
        drawn = browser.evaluate("explorer.state.plottedMs")
        timed = """(async () => { const t0 = performance.now(); await (%s);
            await new Promise(r => requestAnimationFrame(() => r()));
            return performance.now() - t0; })()"""

        def median_of(expressions: list[str]) -> float:
            return float(statistics.median(browser.evaluate(timed % e, await_promise=True)
                                           for e in expressions))

        recolour = "(() => { document.getElementById('colour').value = '%d'; " \
                   "return explorer.recolour(); })()"
        recolour_first = median_of([recolour % 2])
        recolour_again = median_of([recolour % c for c in (0, 2, 0, 2)])
        select = median_of([f"explorer.select(Math.floor(explorer.N * {f}))"
                            for f in (0.1, 0.3, 0.5, 0.7, 0.9)])
        search = median_of([f"explorer.search('{w}')" for w in ("gradient", "kernel", "42")])
        matches = browser.evaluate("explorer.search('gradient').then(() => "
                                   "explorer.state.matches.length)", await_promise=True)
        hover = hover_ms(browser)
        errors = browser.errors()
        network = browser.network_requests()
    return {"first_paint_ms": paint, "map_drawn_ms": drawn,
            "recolour_first_ms": recolour_first, "recolour_ms": recolour_again,
            "select_ms": select, "search_ms": search, "search_matches": matches, "hover_ms": hover,
            "errors": errors, "network_requests": network}


def hover_ms(browser: Browser, points: int = 5) -> float:
    """Median ms from a real mouse move onto a point until its card is shown (the move's
    time stamped by a capturing listener, the card's by the page)."""
    browser.evaluate("document.addEventListener('mousemove', e => { window.movedAt = "
                     "performance.now(); }, true)")
    out = []
    for j in np.linspace(0, browser.evaluate("explorer.N") - 1, points).astype(int):
        x, y = browser.evaluate(f"explorer.pixelOf({j})")
        browser.mouse("mouseMoved", 2, 2)
        browser.wait_for("document.getElementById('hovercard').hidden", 30)
        browser.mouse("mouseMoved", x, y)
        browser.wait_for("!document.getElementById('hovercard').hidden", 30)
        out.append(browser.evaluate("explorer.state.hoveredAt - window.movedAt"))
    return float(statistics.median(out))


def bench_page(page: Path, repeats: int, workdir: Path) -> dict:
    runs = []
    for r in range(repeats):
        watch = LoadWatch()
        runs.append(measure(page, workdir / f"profile-{page.stem}-{r}"))
        runs[-1]["load"] = watch.stop()
    out = {"bytes": page.stat().st_size, "repeats": runs,
           "loaded_repeats": sum(r["load"]["loaded"] for r in runs)}
    for key in ("first_paint_ms", "map_drawn_ms", "recolour_first_ms", "recolour_ms",
                "select_ms", "search_ms", "hover_ms"):
        out[key] = round(statistics.median(r[key] for r in runs), 1)
    return out


def chromium_version() -> str:
    return subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[2000, 100000])
    p.add_argument("--images", action="store_true", help="add 64 x 64 RGB thumbnails")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--run", type=Path, action="append", default=[],
                   help="also measure RUN_DIR/analysis/explorer.html")
    args = p.parse_args(argv)
    import plotly

    record = BenchRecord("explorer", {"n": args.n, "images": args.images,
                                      "repeats": args.repeats, "runs": [str(r) for r in args.run]})
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for n in args.n:
            document = synthetic_document(n, args.images)
            page = workdir / f"explorer-{n}.html"
            page.write_text(render(page_info(document), document, f"synthetic N={n}"))
            row = {"case": f"synthetic N={n}" + (" with images" if args.images else ""), "n": n,
                   "thinned": json.loads(document)["thinned"],
                   **bench_page(page, args.repeats, workdir)}
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "repeats"}), flush=True)
        for run in args.run:
            page = run / "analysis" / "explorer.html"
            info = json.loads((run / "analysis" / "metrics.json").read_text())["explorer"]
            row = {"case": f"run {run}", "n": info["n"], "thinned": info["thinned"],
                   **bench_page(page, args.repeats, workdir)}
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "repeats"}), flush=True)
    path = record.write({
        "browser": {"plotly": plotly.__version__,
                    "plotly_js": __import__("plotly.offline").offline.get_plotlyjs_version(),
                    "chromium": chromium_version(), "webgl": "SwiftShader (software)"},
        "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
