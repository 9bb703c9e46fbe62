"""The analyses ``losskernel analyze`` runs, and the order their declared needs impose.

An analysis is a function decorated with ``@analysis(...)`` in a module of
``analysis/sections/``; every module there is imported on first use, so adding
an analysis is adding one file. What it needs is its parameter list: each
parameter names either a run input (a field of ``rundata.RunData``: ``store``,
``settings``, ``corr``, ``labels``, ``draws``...) or another analysis, whose
returned ``Section`` it then receives. ``ordered`` runs every analysis after
those it names (ties by name, so the order is reproducible), and refuses a
need that names nothing, an analysis named like an input, and a cycle, all
before any work.

An analysis may also declare ``check``, a function of run inputs that raises
ConfigError for a setting that cannot apply (an unknown group attribute...).
The runner calls every check before the first analysis, so a bad config
fails in a second rather than after the expensive analyses.
"""

from __future__ import annotations

import heapq
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .section import Section

SectionFunction = TypeVar("SectionFunction", bound=Callable[..., Section])


@dataclass(frozen=True)
class Analysis:
    """One registered analysis: its name (its metrics.json key), function and needs."""

    name: str
    compute: Callable[..., Section]
    needs: tuple[str, ...]  # run inputs and analyses, by name
    report: str  # the report section that shows its numbers and figures
    title: str  # the heading of that report section when the report has no page part for it
    check: Callable[..., None] | None = None
    check_needs: tuple[str, ...] = ()

    def run(self, available: Mapping[str, Any]) -> Section:
        """Compute the analysis from the run inputs and the sections computed so far."""
        return self.compute(**{name: available[name] for name in self.needs})

    def run_check(self, inputs: Mapping[str, Any]) -> None:
        """Raise ConfigError when the settings ask for something this run cannot give."""
        if self.check is not None:
            self.check(**{name: inputs[name] for name in self.check_needs})


REGISTRY: dict[str, Analysis] = {}


def parameter_names(function: Callable[..., Any]) -> tuple[str, ...]:
    """The names a function takes, all of which must be passable by keyword."""
    params = inspect.signature(function).parameters.values()
    loose = [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY)]
    if loose:
        raise TypeError(f"{function.__qualname__}: analysis parameters must be named inputs, "
                        f"not {', '.join(loose)}")
    return tuple(p.name for p in params)


def register(entry: Analysis) -> Analysis:
    """Add ``entry`` to the registry; a second, different analysis of the same name is refused."""
    known = REGISTRY.get(entry.name)
    if known is not None and _origin(known.compute) != _origin(entry.compute):
        raise ValueError(f"two analyses named {entry.name!r}: {_origin(known.compute)} and "
                         f"{_origin(entry.compute)}")
    REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove an analysis (tests register one for a while)."""
    REGISTRY.pop(name, None)


def analysis(
    name: str | None = None,
    *,
    report: str | None = None,
    title: str = "",
    check: Callable[..., None] | None = None,
) -> Callable[[SectionFunction], SectionFunction]:
    """Register the decorated function as an analysis; it is returned unchanged.

    ``name`` (default: the function's name) is its key in metrics.json and the
    name other analyses use to need it; ``report`` is the report section that
    shows it (default: its name) and ``title`` that section's heading when the
    report has no part of its own for it.
    """

    def decorate(function: SectionFunction) -> SectionFunction:
        key = name or function.__name__
        register(Analysis(
            name=key, compute=function, needs=parameter_names(function),
            report=report or key, title=title or key.replace("_", " ").capitalize(),
            check=check, check_needs=parameter_names(check) if check is not None else (),
        ))
        return function

    return decorate


def load_sections() -> None:
    """Import every module of ``analysis/sections/``, which registers its analyses."""
    from . import sections

    for info in sorted(pkgutil.iter_modules(sections.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{sections.__name__}.{info.name}")


def registered() -> list[Analysis]:
    """Every analysis, the shipped ones and any registered since."""
    load_sections()
    return list(REGISTRY.values())


def ordered(analyses: Iterable[Analysis], inputs: Iterable[str]) -> list[Analysis]:
    """``analyses`` sorted so that each comes after every analysis it needs.

    Among analyses whose needs are met, the one first by name goes first. A
    need that is neither an input nor an analysis, an analysis named like an
    input, and a cycle are ValueErrors naming the analyses concerned.
    """
    by_name = {a.name: a for a in analyses}
    provided = set(inputs)
    for a in by_name.values():
        if a.name in provided:
            raise ValueError(f"analysis {a.name!r} has the name of a run input")
        unknown = [n for n in (*a.needs, *a.check_needs) if n not in provided and n not in by_name]
        if unknown:
            raise ValueError(f"analysis {a.name!r} needs {', '.join(map(repr, unknown))}, which "
                             "is neither a run input nor an analysis")
        if any(n in by_name for n in a.check_needs):
            raise ValueError(f"the check of analysis {a.name!r} may only need run inputs")
    waiting = {a.name: {n for n in a.needs if n in by_name} for a in by_name.values()}
    ready = [name for name, needs in waiting.items() if not needs]
    heapq.heapify(ready)
    out: list[Analysis] = []
    while ready:
        name = heapq.heappop(ready)
        out.append(by_name[name])
        for other, needs in waiting.items():
            if name in needs:
                needs.discard(name)
                if not needs:
                    heapq.heappush(ready, other)
    if len(out) < len(by_name):
        stuck = sorted(set(by_name) - {a.name for a in out})
        raise ValueError(f"analyses {', '.join(stuck)} need each other in a cycle")
    return out


def _origin(function: Callable[..., Any]) -> str:
    return f"{function.__module__}.{function.__qualname__}"
