"""Guard rails: is every chain still sampling around the trained solution?

Two halves, so that reading a run never needs torch:

* ``guards.measure`` (torch): the losses at w* measured before the first step
  (``measure_reference``); import it explicitly.
* ``guards.judge`` (numpy): every check on what a run stored (``check_run``,
  ``check_arrays``, ``enforce``, ``run_verdict``), re-exported here.
"""

from __future__ import annotations

from .judge import (
    FIXES,
    ChainCheck,
    Flag,
    GuardReport,
    check_arrays,
    check_run,
    enforce,
    run_verdict,
)

__all__ = [
    "FIXES",
    "ChainCheck",
    "Flag",
    "GuardReport",
    "check_arrays",
    "check_run",
    "enforce",
    "run_verdict",
]
