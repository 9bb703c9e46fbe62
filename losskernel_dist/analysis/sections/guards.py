"""The guard rails' verdict on the chains (guards/judge.py), so the report says when a
kernel rests on chains that blew up, drifted or kept moving away from w*."""

from __future__ import annotations

from typing import Any

from ...guards.judge import run_verdict
from ...store import RunStore
from ..registry import analysis
from ..section import Section


class GuardsSection(Section):
    """The verdict as ``run_verdict`` gives it; its summary counts the flagged chains."""

    def summary(self) -> dict[str, Any]:
        if self.numbers is None:
            return {}
        return {"guard_flagged_chains": len(self.numbers["flagged_chains"])}


@analysis(report="guards", title="Guard rails")
def guards(store: RunStore, config_dict: dict[str, Any]) -> GuardsSection:
    """Judge every chain from what the store recorded (numpy only: no torch here)."""
    return GuardsSection(numbers=run_verdict(store, config_dict))
