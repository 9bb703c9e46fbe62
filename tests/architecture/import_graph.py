"""The package's import graph, read with ``ast`` (nothing is imported): for the layer tests.

Every ``import`` and ``from ... import`` in every module of ``losskernel_dist``
becomes an ``Edge``, wherever it stands: at module level, inside a function
(a deferred import is still a dependency) or under ``if TYPE_CHECKING:`` (a
type is still knowledge of the other module). ``from pkg import name``
points at the submodule ``pkg.name`` when there is one, else at ``pkg``.
Uses of a private name of another module are collected too: ``from m import
_x``, and ``alias._x`` on a name bound to an imported package module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "losskernel_dist"
PACKAGE_ROOT = Path(__file__).resolve().parents[2] / PACKAGE

MODULE, FUNCTION, TYPE_CHECKING = "module", "function", "type_checking"


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (both full module names) at ``line``, in ``kind`` scope."""

    source: str
    target: str
    line: int
    kind: str

    def __str__(self) -> str:
        where = "" if self.kind == MODULE else f" ({self.kind.replace('_', ' ')})"
        return f"{self.source} -> {self.target} (line {self.line}){where}"


@dataclass(frozen=True)
class PrivateUse:
    """``source`` uses the private name ``name`` of the package module ``target``."""

    source: str
    target: str
    name: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} uses {self.target}.{self.name} (line {self.line})"


def package_sources(root: Path = PACKAGE_ROOT) -> dict[str, str]:
    """Full module name -> source text of every module of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path.read_text()
    return out


def _packages(sources: Mapping[str, str]) -> set[str]:
    """Modules that are packages: those with a submodule."""
    return {m.rpartition(".")[0] for m in sources if "." in m}


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The full name of a (possibly relative) ``from`` target seen in ``module``."""
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _is_type_checking(test: ast.expr) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "TYPE_CHECKING"
               or isinstance(n, ast.Attribute) and n.attr == "TYPE_CHECKING"
               for n in ast.walk(test))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class _Reader(ast.NodeVisitor):
    """Collects one module's edges and private-name uses."""

    def __init__(self, module: str, sources: Mapping[str, str], packages: set[str]) -> None:
        self.module, self.sources = module, sources
        self.is_package = module in packages
        self.kind = MODULE
        self.edges: list[Edge] = []
        self.private: list[PrivateUse] = []
        self.aliases: dict[str, str] = {}  # local name -> package module it is bound to

    def _scoped(self, node: ast.AST, kind: str) -> None:
        outer = self.kind
        self.kind = kind if outer == MODULE else outer
        self.generic_visit(node)
        self.kind = outer

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node, FUNCTION)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scoped(node, FUNCTION)

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        outer = self.kind
        self.kind = TYPE_CHECKING if outer == MODULE else outer
        for child in node.body:
            self.visit(child)
        self.kind = outer
        for child in node.orelse:
            self.visit(child)

    def _edge(self, target: str, line: int) -> None:
        self.edges.append(Edge(self.module, target, line, self.kind))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] != PACKAGE or alias.name not in self.sources:
                continue
            self._edge(alias.name, node.lineno)
            if alias.asname:
                self.aliases[alias.asname] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        target = _absolute(self.module, self.is_package, node.level, node.module)
        if target.split(".")[0] != PACKAGE:
            return
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            if sub in self.sources:
                self._edge(sub, node.lineno)
                self.aliases[alias.asname or alias.name] = sub
                continue
            self._edge(target, node.lineno)
            if _private(alias.name) and target != self.module:
                self.private.append(PrivateUse(self.module, target, alias.name, node.lineno))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if (isinstance(node.value, ast.Name) and node.value.id in self.aliases
                and _private(node.attr) and self.aliases[node.value.id] != self.module):
            self.private.append(PrivateUse(self.module, self.aliases[node.value.id],
                                           node.attr, node.lineno))
        self.generic_visit(node)


def read_graph(sources: Mapping[str, str]) -> tuple[list[Edge], list[PrivateUse]]:
    """Every import edge between the modules of ``sources``, and every private-name use."""
    packages = _packages(sources)
    edges: list[Edge] = []
    private: list[PrivateUse] = []
    for module, text in sources.items():
        reader = _Reader(module, sources, packages)
        reader.visit(ast.parse(text))
        edges += [e for e in reader.edges if e.target != module]
        private += reader.private
    return edges, private


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found
