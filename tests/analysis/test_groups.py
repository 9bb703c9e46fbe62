"""Group structure, memorization and attribute lift on planted kernels whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from losskernel_dist.analysis.attributes import (
    attribute_lift,
    discrete_attributes,
    farthest_point_groups,
    match_and_base,
    mean_rgb,
)
from losskernel_dist.analysis.groups import (
    grouping_from,
    pair_distributions,
    pc1,
    pc1_auc,
    resolve_group,
)
from losskernel_dist.analysis.kernelio import DenseRows
from losskernel_dist.analysis.memorization import memorization
from losskernel_dist.analysis.neighbours import compute_neighbours
from losskernel_dist.reduction.kernel import reduce_store
from losskernel_dist.store import RunStore


def store_from_draws(path, x: np.ndarray, labels=None) -> RunStore:
    chains, draws, n = x.shape
    store = RunStore.create(path, chains=chains, draws=draws, n=n, total_steps=draws,
                            config={}, labels=labels)
    for c in range(chains):
        store.write_draws(c, 0, x[c].astype(np.float32))
        store.mark_done(c, range(draws))
    reduce_store(store, block_size=13)
    return store


def two_task_draws(n_a: int, n_b: int, draws: int = 60, seed: int = 0) -> np.ndarray:
    """Losses driven by one latent factor per task: a block-diagonal kernel (Appendix A.4)."""
    rng = np.random.default_rng(seed)
    n = n_a + n_b
    factor = rng.normal(size=(2, draws, 2))  # (chains, draws, task)
    loading = rng.uniform(0.5, 2.0, size=n)
    task = np.r_[np.zeros(n_a, int), np.ones(n_b, int)]
    return 1.0 + factor[:, :, task] * loading + 0.1 * rng.normal(size=(2, draws, n))


@pytest.mark.parametrize("sizes", [(20, 20), (12, 31)])
def test_block_diagonal_kernel_gives_task_auc_one(tmp_path, sizes):
    x = two_task_draws(*sizes)
    labels = np.r_[np.zeros(sizes[0], int), np.ones(sizes[1], int)]
    perm = np.random.default_rng(1).permutation(len(labels))  # tasks interleaved
    store = store_from_draws(tmp_path / "s.zarr", x[:, :, perm], labels[perm])
    grouping, why = resolve_group("", store.labels(), ["addition", "division"], {})
    assert grouping.names == ["addition", "division"] and "exactly 2" in why
    comp = pc1(DenseRows(store.kernel_array("corr")))
    result = pc1_auc(comp.scores, grouping)
    assert result["auc"] == 1.0
    assert comp.residual < 1e-6


def test_pc1_matches_dense_eigendecomposition_of_centred_rho():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 3)) @ rng.normal(size=(3, 30)) + rng.normal(size=(80, 30))
    corr = np.corrcoef(x, rowvar=False)
    h = np.eye(30) - 1 / 30
    evals, evecs = np.linalg.eigh(h @ corr @ h)
    comp = pc1(DenseRows(corr))
    expected = evecs[:, -1] * np.sqrt(evals[-1])
    sign = np.sign(expected @ comp.scores)
    np.testing.assert_allclose(comp.scores, sign * expected, atol=1e-5)
    assert comp.explained == pytest.approx(evals[-1] / np.trace(h @ corr @ h), rel=1e-6)


def test_random_kernel_gives_no_task_separation():
    rng = np.random.default_rng(3)
    corr = np.corrcoef(rng.normal(size=(40, 200)), rowvar=False)
    labels = rng.integers(0, 2, size=200)
    result = pc1_auc(pc1(DenseRows(corr)).scores, grouping_from(labels, "labels"))
    assert 0.5 <= result["auc"] < 0.65


def test_pair_distributions_match_dense_statistics(tmp_path):
    x = two_task_draws(15, 22, draws=400)
    labels = np.r_[np.zeros(15, int), np.ones(22, int)]
    store = store_from_draws(tmp_path / "s.zarr", x, labels)
    cov = store.kernel_array("cov")[...]
    dist = pair_distributions(store.kernel_array("cov"), grouping_from(labels, "labels", ["A", "B"]),
                              max_values=100, block=5)
    iu = np.triu_indices(37, 1)
    same = labels[iu[0]] == labels[iu[1]]
    for name, mask in [("A vs A", same & (labels[iu[0]] == 0)),
                       ("B vs B", same & (labels[iu[0]] == 1)), ("cross-group", ~same)]:
        vals = cov[iu][mask]
        got = dist[name]
        assert got["count"] == vals.size
        assert got["mean"] == pytest.approx(vals.mean(), rel=1e-9)
        assert got["std"] == pytest.approx(vals.std(), rel=1e-6)
        assert got["min"] == vals.min() and got["max"] == vals.max()
        assert got["values"].size <= 140  # subsampled to about max_values
    assert abs(dist["cross-group"]["mean"]) < 0.1 * dist["A vs A"]["mean"]


def test_memorization_auc_of_a_planted_high_variance_group(tmp_path):
    rng = np.random.default_rng(4)
    n = 40
    flag = np.zeros(n, int)
    flag[rng.choice(n, 8, replace=False)] = 1
    scale = np.where(flag == 1, 3.0, 1.0)
    x = 2.0 + rng.normal(size=(3, 200, n)) * scale
    store = store_from_draws(tmp_path / "s.zarr", x)
    result = memorization(store.kernel_array("var")[...], flag)
    assert result["auc"] == 1.0
    assert result["flagged"] == 8 and result["clean"] == 32
    assert result["mean_var_flagged"] > 5 * result["mean_var_clean"]
    noise = memorization(store.kernel_array("var")[...], rng.permutation(flag))
    assert noise["auc"] < 0.9


def test_match_and_base_equal_direct_counting():
    rng = np.random.default_rng(5)
    n, k = 30, 4
    codes = rng.integers(-1, 3, size=n)
    labels = rng.integers(0, 4, size=n)
    nbrs = rng.integers(-1, n, size=(n, k))
    for exclude in (False, True):
        match, base = match_and_base(codes, nbrs, labels, exclude)
        for i in range(n):
            valid = [j for j in nbrs[i] if j >= 0]
            want = np.mean([codes[j] == codes[i] and codes[i] >= 0 for j in valid]) if valid else np.nan
            np.testing.assert_equal(match[i], want)
            cands = [j for j in range(n) if j != i and not (exclude and labels[j] == labels[i])]
            want_base = np.mean([codes[j] == codes[i] for j in cands]) if codes[i] >= 0 else np.nan
            np.testing.assert_allclose(base[i], want_base)


def test_attribute_lift_is_one_for_a_random_kernel_and_high_for_a_planted_one():
    rng = np.random.default_rng(6)
    n = 600
    attr = rng.integers(0, 4, size=n)
    labels = rng.integers(0, 10, size=n)
    random_corr = np.corrcoef(rng.normal(size=(30, n)), rowvar=False)
    nb = compute_neighbours(DenseRows(random_corr), 10, 1, labels, exclude_same_label=True)
    lift = attribute_lift(attr, nb.top_index, labels, True)
    assert lift["lift"] == pytest.approx(1.0, abs=0.1)
    factors = rng.normal(size=(30, 4))
    planted = np.corrcoef(factors[:, attr] + 0.8 * rng.normal(size=(30, n)), rowvar=False)
    nb = compute_neighbours(DenseRows(planted), 10, 1, labels, exclude_same_label=True)
    lift = attribute_lift(attr, nb.top_index, labels, True)
    assert lift["lift"] > 2.5 and set(lift["per_value"]) == {"0", "1", "2", "3"}


def test_discrete_attributes_skip_continuous_and_label_determined():
    labels = np.array([0, 0, 1, 1, 2, 2])
    attrs = {
        "operation": labels.copy(),
        "coarse": np.array([0, 0, 0, 0, 1, 1]),
        "colour": np.array([1, 2, 1, 2, 1, 2]),
        "x": np.linspace(0, 1, 6),
        "img": np.zeros((6, 2, 2)),
    }
    usable, skipped = discrete_attributes(attrs, labels, max_levels=5)
    assert set(usable) == {"colour"}
    assert skipped["operation"] == skipped["coarse"] == "determined by the label"
    assert skipped["x"] == "continuous" and "one value" in skipped["img"]


def test_colour_groups_recover_planted_colours():
    rng = np.random.default_rng(7)
    palette = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250]], dtype=np.uint8)
    which = rng.integers(0, 3, size=60)
    images = np.clip(palette[which][:, None, None, :] + rng.integers(-5, 6, size=(60, 4, 4, 3)),
                     0, 255).astype(np.uint8)
    rgb = mean_rgb(images)
    np.testing.assert_allclose(mean_rgb(images.transpose(0, 3, 1, 2)), rgb)
    assert rgb.max() <= 1.0
    centres, groups = farthest_point_groups(rgb, 3, seed=0)
    assert len(set(centres.tolist())) == 3
    for g in range(3):  # each group is exactly one planted colour
        assert len(set(which[groups == g].tolist())) == 1
