"""A pytest plugin: how many tests of each marked group (slow, slurm, vision, ...) ran.

At the end of a session it prints, for every marker found on a collected or deselected
test (pytest's own markers left out), how many of its tests passed, failed, skipped
(with the most common reason) or were deselected, and writes the same lines to
``$LOSSKERNEL_GROUPS_FILE`` when that is set (``scripts/test.sh`` prints them after
all its runs).

``LOSSKERNEL_REQUIRE_GROUPS=slurm,vision`` makes the session fail when a named group
had a test skipped or none ran: a CI that asked for those tests cannot pass by
skipping them. Both variables are taken out of the environment when the session
starts, so that a pytest which a test runs in a subprocess neither appends to the
file nor requires the groups. ``tests/conftest.py`` registers this module.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import pytest

GROUPS_FILE = "LOSSKERNEL_GROUPS_FILE"
REQUIRE = "LOSSKERNEL_REQUIRE_GROUPS"
PYTEST_MARKERS = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings",
                  "tryfirst", "trylast"}
ORDER = {"failed": 0, "error": 1, "skipped": 2, "xfailed": 3, "xpassed": 4, "passed": 5}


@dataclass
class Groups:
    """What the session collected and how each test ended."""

    markers: dict[str, set[str]] = field(default_factory=dict)  # nodeid -> its group markers
    deselected: Counter = field(default_factory=Counter)         # group -> deselected tests
    outcome: dict[str, str] = field(default_factory=dict)       # nodeid -> worst outcome
    skip_reason: dict[str, str] = field(default_factory=dict)   # nodeid -> why it skipped
    skipped_modules: dict[str, str] = field(default_factory=dict)  # skipped whole at collection
    required: list[str] = field(default_factory=list)           # LOSSKERNEL_REQUIRE_GROUPS
    groups_file: str = ""                                        # LOSSKERNEL_GROUPS_FILE

    def table(self, selection: str) -> list[str]:
        names = sorted({m for ms in self.markers.values() for m in ms} | set(self.deselected)
                       | set(self.required))
        lines = [f"selection: {selection}"] if selection else []
        for name in names:
            ids = [i for i, ms in self.markers.items() if name in ms]
            counts = Counter(self.outcome.get(i, "not run") for i in ids)
            ran = counts["passed"] + counts["failed"] + counts["error"] + counts["xfailed"] \
                + counts["xpassed"]
            parts = [f"{name}: {ran} ran"]
            parts += [f"{counts[k]} {k}" for k in ("passed", "failed", "error", "xfailed",
                                                   "xpassed", "skipped", "not run") if counts[k]]
            if self.deselected[name]:
                parts.append(f"{self.deselected[name]} deselected")
            reasons = Counter(self.skip_reason[i] for i in ids if i in self.skip_reason)
            if reasons:
                reason, n = reasons.most_common(1)[0]
                parts.append(f"skipped because: {reason}" + (f" (and {len(reasons) - 1} other "
                                                             "reasons)" if len(reasons) > 1 else ""))
            lines.append(", ".join(parts))
        total = Counter(self.outcome.values())
        lines.append(f"all: {len(self.outcome)} ran or skipped ("
                     + ", ".join(f"{v} {k}" for k, v in sorted(total.items())) + ")")
        for module, reason in sorted(self.skipped_modules.items()):
            lines.append(f"not collected: {module} ({reason})")
        return lines

    def missing_required(self) -> list[str]:
        """One line per required group that had a skipped test or none that ran."""
        problems = []
        for name in self.required:
            ids = [i for i, ms in self.markers.items() if name in ms]
            ran = [i for i in ids if self.outcome.get(i) not in (None, "skipped")]
            skipped = [i for i in ids if self.outcome.get(i) == "skipped"]
            if skipped:
                why = self.skip_reason.get(skipped[0], "")
                problems.append(f"required group {name!r}: {len(skipped)} test(s) skipped "
                                f"(first: {skipped[0]}: {why})")
            elif not ran:
                problems.append(f"required group {name!r}: no test of it ran")
        return problems


def group_markers(item: pytest.Item) -> set[str]:
    return {m.name for m in item.iter_markers()} - PYTEST_MARKERS


_groups = Groups()


def pytest_configure(config: pytest.Config) -> None:
    _groups.required = [g.strip() for g in os.environ.pop(REQUIRE, "").split(",") if g.strip()]
    _groups.groups_file = os.environ.pop(GROUPS_FILE, "")


def pytest_deselected(items: list[pytest.Item]) -> None:
    for item in items:
        for name in group_markers(item):
            _groups.deselected[name] += 1


def pytest_collection_finish(session: pytest.Session) -> None:
    for item in session.items:
        _groups.markers[item.nodeid] = group_markers(item)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A module skipped as a whole (pytest.importorskip, allow_module_level) has no tests."""
    if report.skipped and isinstance(report.longrepr, tuple):
        _groups.skipped_modules[report.nodeid] = str(report.longrepr[2]).removeprefix("Skipped: ")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A test's outcome is the worst of its phases (setup, call, teardown)."""
    xfail = hasattr(report, "wasxfail")
    if report.skipped:
        outcome = "xfailed" if xfail else "skipped"
        if not xfail and isinstance(report.longrepr, tuple):
            _groups.skip_reason[report.nodeid] = str(report.longrepr[2]).removeprefix("Skipped: ")
    elif report.failed:
        outcome = "failed" if report.when == "call" else "error"
    else:
        outcome = "xpassed" if xfail else "passed"
    before = _groups.outcome.get(report.nodeid, "passed")
    _groups.outcome[report.nodeid] = min(before, outcome, key=ORDER.__getitem__)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    selection = " ".join(f"-{flag} {expr!r}" for flag, expr in
                         (("m", config.option.markexpr), ("k", config.option.keyword)) if expr)
    lines = _groups.table(selection)
    terminalreporter.section("marked groups")
    for line in lines:
        terminalreporter.write_line(line)
    problems = _groups.missing_required()
    for line in problems:
        terminalreporter.write_line(f"FAILED {line}", red=True, bold=True)
    if _groups.groups_file:
        with open(_groups.groups_file, "a") as f:
            f.write("".join(f"{line}\n" for line in lines + [f"FAILED {p}" for p in problems]))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _groups.missing_required() and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
