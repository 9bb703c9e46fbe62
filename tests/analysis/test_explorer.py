"""The interactive explorer (analysis/explorer.html): its data, its thinning, and the page
driven in a real headless Chromium over the DevTools protocol (tests/cdp.py).

The page is checked as a reader uses it: it makes no network request and logs no error,
hovering a point (a real mouse event at its pixel) shows that sample's text, clicking it
lists neighbours equal to the top of that sample's row of the stored dense kernel, the
colour menu recolours the map (rare categories drawn last, on top), and the search box
finds the samples whose text contains a phrase. One run is a real CLI run of the linear
task, whose texts come from Task.describe through the store; the other a planted run with
a rare attribute, texts with a marked token, and images.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from losskernel_dist.analysis import explorer_data
from losskernel_dist.analysis.explorer_data import (
    Parts,
    explorer_document,
    small_thumbnails,
    thin,
    typed,
)
from losskernel_dist.cli import main
from losskernel_dist.jobs.run import analyze_run_dir
from losskernel_dist.report.explorer import about
from losskernel_dist.rundir import RunDir
from tests.analysis_helpers import planted_run, two_task_draws
from tests.cdp import CHROMIUM, Browser
from tests.dist_helpers import run_config

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (apt-get install -y chromium)")
RARE = (5, 40)  # the two samples of the planted run's rare category


def decode(entry: dict) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(entry["b64"]), dtype=entry["dtype"]).reshape(
        entry["shape"])


# ----------------------------------------------------------------------------- the data


def test_typed_arrays_round_trip_little_endian():
    values = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    entry = typed(values, "float32")
    assert entry["shape"] == [3, 4]
    assert np.array_equal(decode(entry), values.astype(np.float32))


def test_thumbnails_are_box_averaged_and_grey_when_grey():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(5, 64, 64), dtype=np.uint8)
    small = small_thumbnails(np.repeat(grey[..., None], 3, axis=-1))
    assert small.shape == (5, 32, 32, 1)
    assert small[2, 3, 4, 0] == np.rint(grey[2, 6:8, 8:10].mean())
    colour = small_thumbnails(rng.random((2, 3, 8, 8)))  # (N, 3, H, W) floats
    assert colour.shape == (2, 8, 8, 3) and colour.dtype == np.uint8


def test_thinning_takes_thumbnails_then_texts_then_neighbours_never_points():
    n = 1000
    parts = Parts(n=n, k=10, texts=["x" * 500] * n, thumbs=np.zeros((n, 32, 32, 3), np.uint8),
                  kept_thumbs=n)
    thin(parts, 150_000)
    assert parts.size() <= 150_000
    assert parts.kept_thumbs == 0
    assert max(map(len, parts.texts)) <= explorer_data.TEXT_CHARS_SHORT
    assert parts.texts[0].endswith(explorer_data.ELLIPSIS)
    assert explorer_data.MIN_NEIGHBOURS <= parts.k < 10
    assert parts.thinned == ["thumbnails of 0 of 1,000 samples (a seeded random choice); the "
                             "others show none", "texts cut to 200 characters",
                             "texts cut to 60 characters",
                             f"{parts.k} nearest neighbours per sample, not 10"]
    roomy = Parts(n=n, k=10, texts=["x"] * n, thumbs=None)
    thin(roomy, 10**8)
    assert roomy.thinned == [] and roomy.k == 10

    xy = np.random.default_rng(1).normal(size=(n, 2))
    doc = explorer_document(
        title="t", xy=xy, colourings=[("label", np.arange(n) % 3, "categorical", None)],
        label_colouring="label", top_index=np.tile(np.arange(10), (n, 1)),
        top_corr=np.ones((n, 10)), k=10, neighbour_source="s", texts=["y" * 300] * n,
        images=np.zeros((n, 64, 64, 3), np.uint8), seed=0, max_bytes=150_000)
    assert np.array_equal(decode(doc["xy"]), xy.astype(np.float32))  # every point, always
    assert doc["thinned"] and doc["neighbours"]["k"] < 10
    assert "thinned" in about({"n": n, "colourings": ["label"], "thinned": doc["thinned"]})


# ----------------------------------------------------------------------------- the runs


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory) -> Path:
    """A real run of the linear task (texts from its Task.describe) through the CLI."""
    root = tmp_path_factory.mktemp("explorer_linear")
    config = run_config(root / "run", args={"n": 256, "n_eval": 60, "dim": 6, "blocks": 2},
                        checkpoint_every=0)
    config["analysis"] = {"enabled": True, "exclude_same_label": False, "cka_grid": 3}
    (root / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(root / "run.yaml"), "--no-progress"]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """A planted run: two tasks of 30, a rare attribute (2 samples), marked texts, images."""
    path = tmp_path_factory.mktemp("explorer_planted") / "run"
    n = 60
    rare = np.zeros(n, np.int64)
    rare[list(RARE)] = 1
    texts = [f"sample {j} says \u27e6tok{j}\u27e7 in task {j // 30}" for j in range(n)]
    images = np.random.default_rng(2).integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    planted_run(path, two_task_draws(30, 30, chains=2, draws=40),
                labels=np.r_[np.zeros(30, int), np.ones(30, int)], label_names=["a", "b"],
                attributes={"text": np.asarray(texts), "rare": rare, "image": images},
                analysis={"exclude_same_label": False, "cka_grid": 3})
    analyze_run_dir(path)
    return path


def top_k_of_kernel(run: Path, j: int, k: int) -> list[int]:
    """Sample j's k most correlated samples, from its row of the stored dense kernel."""
    row = np.asarray(RunDir(run).open_store().kernel_array("corr")[j, :], dtype=np.float64)
    order = [int(i) for i in np.argsort(-row, kind="stable") if i != j]
    return order[:k]


def test_the_report_links_the_explorer_and_the_document_is_complete(linear_run):
    analysis = linear_run / "analysis"
    metrics = json.loads((analysis / "metrics.json").read_text())
    info = metrics["explorer"]
    assert info["texts"] and info["thinned"] == [] and info["n"] == 60
    assert 'href="explorer.html"' in (analysis / "index.html").read_text()
    doc = json.loads((analysis / "explorer.json").read_text())
    store = RunDir(linear_run).open_store()
    assert doc["texts"] == [str(t) for t in store.attributes()["text"]]
    assert doc["texts"][0].startswith("block 0: y = ")
    assert np.array_equal(decode(doc["xy"]), store.read_embedding("umap_2d"))
    page = (analysis / "explorer.html").read_text()
    assert page.count('<script type="application/json" id="explorer-data">') == 1


def open_explorer(browser: Browser, run: Path) -> np.ndarray:
    """Load the run's explorer page; the pixel of every sample's point."""
    browser.open((run / "analysis" / "explorer.html").as_uri())
    browser.wait_for("document.body.dataset.ready === '1'", 60)
    return np.asarray(browser.evaluate(
        "Array.from({length: explorer.N}, (_, j) => explorer.pixelOf(j))"))


def isolated(pixels: np.ndarray, count: int) -> list[int]:
    """``count`` samples whose points lie farthest from any other point (clean hovers)."""
    d = np.sqrt(((pixels[:, None] - pixels[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return [int(j) for j in np.argsort(-d.min(1), kind="stable")[:count]]


def hover(browser: Browser, xy: np.ndarray) -> str:
    """Move the mouse off the map (the card hides), then onto ``xy``: what the card shows."""
    browser.mouse("mouseMoved", 2, 2)
    browser.wait_for("document.getElementById('hovercard').hidden", 10)
    browser.mouse("mouseMoved", float(xy[0]), float(xy[1]))
    browser.wait_for("!document.getElementById('hovercard').hidden", 10)
    return browser.evaluate("document.getElementById('hovercard').dataset.sample + ' ' + "
                            "document.getElementById('hovercard').innerText")


RING = 8  # radius of a neighbour's ring at N <= 3,000 (marker size 6: 3 + 5 px)


def overlay_alpha(browser: Browser, xy: np.ndarray) -> int:
    """Opacity of the highlight layer (selection, neighbour rings) at page pixel ``xy``."""
    return browser.evaluate(
        "(() => { const c = document.getElementById('overlay'), b = c.getBoundingClientRect();"
        f" const r = c.width / b.width; return c.getContext('2d').getImageData("
        f"Math.round(({float(xy[0])} - b.left) * r), Math.round(({float(xy[1])} - b.top) * r),"
        " 1, 1).data[3]; })()")


@needs_chromium
def test_hover_click_colour_and_search_in_headless_chromium(linear_run, tmp_path):
    store = RunDir(linear_run).open_store()
    texts = [str(t) for t in store.attributes()["text"]]
    k = json.loads((linear_run / "analysis" / "metrics.json").read_text())["explorer"][
        "neighbours_k"]
    with Browser(tmp_path / "profile") as browser:
        pixels = open_explorer(browser, linear_run)
        for j in isolated(pixels, 3):
            shown = hover(browser, pixels[j])
            assert shown.startswith(f"{j} #{j} ") and texts[j] in shown
            browser.click(*pixels[j])
            browser.wait_for(f"explorer.state.selected === {j} && "
                             "document.querySelectorAll('#neighbours .sample').length > 0", 10)
            listed = browser.evaluate("[...document.querySelectorAll('#neighbours .sample')]"
                                      ".map(e => Number(e.dataset.sample))")
            assert listed == top_k_of_kernel(linear_run, j, k)
            panel = browser.evaluate("document.getElementById('neighbours').innerText")
            assert texts[listed[0]] in panel and "rho " in panel
            assert overlay_alpha(browser, pixels[j]) == 255  # the selected point, filled
            ring = [overlay_alpha(browser, pixels[i] + [RING, 0]) for i in listed]
            assert min(ring) > 0  # every neighbour ringed on the map
            other = next(i for i in isolated(pixels, 10) if i != j and i not in listed)
            assert overlay_alpha(browser, pixels[other] + [RING, 0]) == 0  # and no other

        before = browser.evaluate("JSON.stringify(document.getElementById('plot').data"
                                  ".map(t => t.marker.color))")
        shot_before = browser.screenshot(tmp_path / "before.png")
        names = browser.evaluate("[...document.getElementById('colour').options].map(o => o.text)")
        assert names[0] == "label" and "attribute block" not in names  # the label shows it
        browser.evaluate("(() => { const m = document.getElementById('colour'); m.value = '1';"
                         " m.dispatchEvent(new Event('change')); })()")
        time.sleep(0.5)
        after = browser.evaluate("JSON.stringify(document.getElementById('plot').data"
                                 ".map(t => t.marker.color))")
        assert after != before
        from PIL import Image

        a = np.asarray(Image.open(shot_before).convert("RGB"), dtype=float)
        b = np.asarray(Image.open(browser.screenshot(tmp_path / "after.png")).convert("RGB"),
                       dtype=float)
        assert np.abs(a - b).sum(axis=-1).astype(bool).mean() > 0.001  # the points changed

        browser.evaluate("(() => { const s = document.getElementById('search');"
                         " s.value = 'block 1'; s.dispatchEvent(new KeyboardEvent('keydown',"
                         " {key: 'Enter'})); })()")
        found = browser.evaluate("explorer.state.matches")
        assert found == [j for j, t in enumerate(texts) if "block 1" in t] and found
        assert browser.network_requests() == []
        assert browser.errors() == []


@needs_chromium
def test_rare_categories_on_top_marked_texts_and_thumbnails(planted, tmp_path):
    with Browser(tmp_path / "profile") as browser:
        pixels = open_explorer(browser, planted)
        names = browser.evaluate("[...document.getElementById('colour').options].map(o => o.text)")
        browser.evaluate("(() => { const m = document.getElementById('colour');"
                         f" m.value = '{names.index('attribute rare')}';"
                         " m.dispatchEvent(new Event('change')); })()")
        time.sleep(0.5)
        traces = browser.evaluate("document.getElementById('plot').data"
                                  ".map(t => [t.name, Array.from(t.x).length])")
        assert traces == [["common categories", 58], ["1 (2, rare: on top)", 2]]
        assert sorted(browser.evaluate("Array.from(explorer.state.traceIndex[1])")) == list(RARE)
        key = browser.evaluate("document.getElementById('key').innerText")
        assert key.split("\n") == ["0 (58)", "1 (2, rare: on top)"]
        j = RARE[0]
        shown = hover(browser, pixels[j])
        assert f"sample {j} says tok{j} in task 0" in shown and "rare: 1" in shown
        assert browser.evaluate("document.querySelector('#hovercard mark').textContent") == f"tok{j}"
        assert browser.evaluate("document.querySelectorAll('#hovercard canvas.thumb').length") == 1
        browser.evaluate("explorer.search('#7')")
        assert browser.evaluate("explorer.state.selected") == 7
        assert browser.network_requests() == [] and browser.errors() == []


def test_a_run_without_the_dense_kernel_shows_the_streamed_lists(tmp_path):
    """reduce.kernel: neighbours: the page's neighbours are the lists the reduce streamed,
    which equal the dense kernel's top-k; a run without texts says it shows indices."""
    from losskernel_dist.jobs.run import reduce_run_dir

    path = tmp_path / "run"
    store = planted_run(path, two_task_draws(20, 20, chains=2, draws=30),
                        labels=np.r_[np.zeros(20, int), np.ones(20, int)],
                        analysis={"exclude_same_label": False, "cka_grid": 3})
    dense = np.asarray(store.kernel_array("corr")[...], dtype=np.float64)
    reduce_run_dir(path, reduce_overrides={"kernel": "neighbours", "neighbours_k": 12})
    assert not RunDir(path).open_store().has_kernel()
    analyze_run_dir(path)
    info = json.loads((path / "analysis" / "metrics.json").read_text())["explorer"]
    assert info["neighbour_source"].startswith("streamed by the reduce") and not info["texts"]
    doc = json.loads((path / "analysis" / "explorer.json").read_text())
    assert doc["texts"] is None and "stores no sample texts" in doc["notes"][0]
    index = decode(doc["neighbours"]["index"])
    np.fill_diagonal(dense, -np.inf)
    expected = np.argsort(-dense, axis=1, kind="stable")[:, :info["neighbours_k"]]
    assert np.array_equal(index, expected)
    assert np.allclose(decode(doc["neighbours"]["corr"]),
                       np.take_along_axis(dense, expected, axis=1), atol=1e-5)
