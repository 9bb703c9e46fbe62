"""Layers point one way: an import never reaches up, never closes a cycle, never takes a
private name.

The package is layered along the flow of a run, task -> sampler -> store ->
reduce -> analysis -> report, with the jobs, the Python API and the CLI on
top, and the foundations everyone needs at the bottom. ``LAYERS`` ranks every
module, lowest first; a module may import its own layer and those below it,
never one above (a lower layer that needs something from a higher one gets it
passed in, or the thing moves down). Each rank, and why:

0. ``errors``: the exception hierarchy, imported by everything.
1. foundations, which know nothing of a run: ``config`` (the typed settings),
   ``rng`` (keyed randomness), ``fingerprint``, ``distributed`` (ranks and
   devices), ``locks`` (chain locks).
2. ``task``: what a task is, and the built-in ``tasks``; they know neither how
   they are sampled nor where results go.
3. ``sampler``: SGLD chains over a task's model and data.
4. ``store``: the Zarr store of draws and results, which knows no sampler.
5. the run directory around the store: ``rundir`` (paths, config file, atomic
   writes), ``checkpoint_meta`` and ``checkpoint`` (chain state for resume).
6. ``guards``: the losses at w* (measure: sampler + store) and the verdict on
   stored chains (judge: store only), which the jobs and the analysis use.
7. ``reduction``: blockwise moments, kernel and neighbour lists from the store.
8. ``analysis``: metrics and figures from the reduced store.
9. ``report``: the HTML pages over the analysis.
10. ``jobs``: sample, run, calibrate, develop, submit, info: the sequences
    that call every layer below.
11. ``api``, then 12. ``cli`` and the package's lazy ``__init__``.

Cycles are checked on every edge, function-level and TYPE_CHECKING imports
included: a deferred import only postpones a dependency, and two modules that
need each other cannot be read, tested or moved apart, whenever the import
runs. The layer rule already forbids such cycles across layers; this test
finds the ones inside a layer.
"""

from __future__ import annotations

import fnmatch

import pytest

from .import_graph import (
    FUNCTION,
    MODULE,
    PACKAGE,
    TYPE_CHECKING,
    Edge,
    cycles,
    package_sources,
    read_graph,
)

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("errors", ("errors",)),
    ("foundations", ("config", "config.*", "rng", "fingerprint", "distributed", "locks",
                     "fsio")),
    ("task", ("task", "tasks", "tasks.*")),
    ("sampler", ("sampler", "sampler.*")),
    ("store", ("store", "store.*")),
    ("run directory", ("rundir", "checkpoint_meta", "checkpoint")),
    ("guards", ("guards", "guards.*")),
    ("reduction", ("reduction", "reduction.*")),
    ("analysis", ("analysis", "analysis.*")),
    ("report", ("report", "report.*")),
    ("jobs", ("jobs", "jobs.*")),
    ("api", ("api",)),
    ("cli", ("cli", "")),  # "" is the package's own __init__
]


def layer_of(module: str) -> int | None:
    """The rank of a full module name in ``LAYERS``; None if no pattern matches it."""
    short = module.removeprefix(PACKAGE).removeprefix(".")
    ranks = [rank for rank, (_, patterns) in enumerate(LAYERS)
             if any(fnmatch.fnmatchcase(short, p) for p in patterns)]
    assert len(ranks) <= 1, f"{module} matches layers {ranks}"
    return ranks[0] if ranks else None


def upward(edges: list[Edge]) -> list[str]:
    """The edges whose target ranks above their source, as messages."""
    out = []
    for e in edges:
        source, target = layer_of(e.source), layer_of(e.target)
        if source is not None and target is not None and target > source:
            out.append(f"{e}: {LAYERS[source][0]} imports the higher layer {LAYERS[target][0]}")
    return out


@pytest.fixture(scope="module")
def graph():
    return read_graph(package_sources())


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in package_sources() if layer_of(m) is None]
    assert not unplaced, f"give these modules a layer in LAYERS: {unplaced}"


def test_no_import_reaches_a_higher_layer(graph) -> None:
    edges, _ = graph
    found = upward(edges)
    assert not found, "upward imports:\n" + "\n".join(found)


def test_no_import_cycles(graph) -> None:
    edges, _ = graph
    found = cycles(edges)
    detail = [" <-> ".join(c) + ": " + "; ".join(
        str(e) for e in edges if e.source in c and e.target in c) for c in found]
    assert not found, "import cycles:\n" + "\n".join(detail)


def test_no_private_name_of_another_module(graph) -> None:
    _, private = graph
    assert not private, "private names used across modules (make them public, or move the " \
        "code to where they live):\n" + "\n".join(map(str, private))


# ------------------------------------------------------------- the checks themselves


SYNTHETIC = {
    f"{PACKAGE}": "",
    f"{PACKAGE}.store": "from .errors import StoreError\n",
    f"{PACKAGE}.errors": "",
    f"{PACKAGE}.reduction": "",
    f"{PACKAGE}.reduction.kernel": (
        "from typing import TYPE_CHECKING\n"
        "from ..store import _raw\n"
        "from .. import store\n"
        "if TYPE_CHECKING:\n"
        "    from ..analysis import Thing\n"
        "def f():\n"
        "    from .tiled import g\n"
        "    return store._cache\n"
    ),
    f"{PACKAGE}.reduction.tiled": "from .kernel import f\n",
    f"{PACKAGE}.analysis": "",
}


def test_the_reader_sees_every_kind_of_import_and_private_use() -> None:
    """The tests above are only as good as the reader: on a made-up package it finds the
    TYPE_CHECKING upward edge, the function-level cycle and both private uses."""
    edges, private = read_graph(SYNTHETIC)
    kinds = {(e.source.removeprefix(PACKAGE + "."), e.target.removeprefix(PACKAGE + "."), e.kind)
             for e in edges}
    assert {("reduction.kernel", "store", MODULE), ("reduction.kernel", "analysis", TYPE_CHECKING),
            ("reduction.kernel", "reduction.tiled", FUNCTION), ("store", "errors", MODULE),
            ("reduction.tiled", "reduction.kernel", MODULE)} <= kinds
    assert [str(p).split(" (")[0] for p in private] == [
        f"{PACKAGE}.reduction.kernel uses {PACKAGE}.store._raw",
        f"{PACKAGE}.reduction.kernel uses {PACKAGE}.store._cache",
    ]
    assert cycles(edges) == [[f"{PACKAGE}.reduction.kernel", f"{PACKAGE}.reduction.tiled"]]
    assert upward(edges) == [
        f"{PACKAGE}.reduction.kernel -> {PACKAGE}.analysis (line 5) (type checking): "
        "reduction imports the higher layer analysis"
    ]
