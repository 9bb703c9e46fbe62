"""Guard rails, the judging half: is every chain still sampling around the trained solution?

SGLD's usual failure modes are silent: with too large a step a chain blows up
(its loss climbs to chance level, or to NaN), and with too weak a localization
or too short a burn-in it wanders off w*, so that the "kernel" measures the
drift rather than the model. These checks judge each chain from what the run
stored, against the mean training loss L* and the eval losses at w*, measured
before the first step and kept in the store (by ``guards.measure``, the torch
half; this module needs numpy only, so that ``reduce``, ``analyze``, ``info``
and ``compare`` can judge a run without torch):

* **diverged**: the sampler stopped the chain on a NaN or infinite loss or
  parameter (``chain_status`` failed).
* **blew up**: the chain's *late* mean training loss (over the last
  ``guards.late_fraction`` of its recorded steps) exceeds L* by more than
  ``guards.blowup_factor`` times the drift tolerance. Counted as divergence:
  the chain has left the basin (for cross-entropy, typically to chance level).
* **loss drift**: the late mean training loss exceeds L* by more than the
  tolerance ``max(guards.max_loss_increase, guards.max_loss_increase_relative * |L*|)``,
  or the late mean eval loss (over the last ``late_fraction`` of the draws)
  exceeds its value at w* by more than the same tolerance computed from it.
  Both are needed: in directions the training data do not constrain (a
  singular model's flat valleys) a weakly localized chain wanders freely
  without changing its training loss, while the eval samples see the change.
  Blowing up is judged on the training loss only: a step too large for the
  sampler shows there, whereas an eval loss rising alone, however far, is
  wandering (drift), whose fix is a stronger localization.
* **distance growth**: ||w - w*|| at the kept draws keeps growing. The chain's
  draws are cut into 8 consecutive batches and paired into quarters; flagged
  when the means of the second, third and last quarter increase in that
  order, the last exceeds the second by more than ``guards.distance_growth``
  (relative), and by more than ``DISTANCE_NOISE_SIGMAS`` = 4 times the noise
  of that difference (the standard deviation of successive batch-mean
  differences over sqrt(2), which a steady trend does not inflate): about
  0.1-0.2% false alarms per chain of a steady 8-parameter model, simulated
  (0.5-1% at 3 times). A chain at equilibrium holds a steady distance; one
  still diffusing away (weak localization) or still relaxing (too small a
  step for the burn-in) does not. The noise term matters for small models,
  whose distance fluctuates visibly (chi-distributed with d degrees of
  freedom); in large ones it is negligible.

Each flag carries the likely fix. ``guards.action`` says whether flags are
warnings (default) or make ``losskernel sample``/``run`` fail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..config import GuardsConfig, guards_from_dict
from ..errors import GuardError
from ..store import STATUS_OK, RunStore

MIN_LATE_STEPS = 4  # recorded steps a late window needs before the loss checks speak
MIN_DISTANCE_DRAWS = 8  # draws the quarter test needs (one per batch)
DISTANCE_NOISE_SIGMAS = 4.0

FIXES = {
    "diverged": "lower sampler.lr (try x0.1); if chains still diverge at a small lr, "
                "lower sampler.nbeta",
    "blew_up": "lower sampler.lr (try x0.1); if the loss still climbs at a small lr, "
               "lower sampler.nbeta or raise sampler.localization",
    "loss_drift": "raise sampler.localization (try x10) or lower sampler.lr (try x0.3)",
    "distance_growth": "raise sampler.localization (try x10) so that chains stay near w*; "
                       "if ||w - w*|| is still small, the chains have not settled yet: "
                       "lengthen sampler.burnin_steps or raise sampler.lr",
}
DIVERGENT_KINDS = ("diverged", "blew_up")


# ---------------------------------------------------------------------- checks


@dataclass
class Flag:
    """One problem of one chain, with the numbers behind it and the likely fix."""

    kind: str
    message: str
    fix: str


@dataclass
class ChainCheck:
    """What the guards measured on one chain, and what they flagged."""

    chain: int
    steps_recorded: int
    draws_recorded: int
    late_train_loss: float | None = None
    train_increase: float | None = None
    late_eval_loss: float | None = None
    eval_increase: float | None = None
    distance_quarters: list[float] | None = None
    distance_growth: float | None = None
    distance_noise: float | None = None
    distance_last: float | None = None
    flags: list[Flag] = field(default_factory=list)

    @property
    def divergent(self) -> bool:
        return any(f.kind in DIVERGENT_KINDS for f in self.flags)

    @property
    def drifting(self) -> bool:
        return any(f.kind not in DIVERGENT_KINDS for f in self.flags)


@dataclass
class GuardReport:
    """The guard verdict on a run: the reference, the tolerances and every chain's check."""

    reference_train_loss: float | None
    reference_eval_loss: float | None
    reference_source: str | None
    loss_tolerance: float | None
    blowup_threshold: float | None
    eval_tolerance: float | None
    settings: dict[str, Any]
    chains: list[ChainCheck]

    @property
    def flagged(self) -> list[ChainCheck]:
        return [c for c in self.chains if c.flags]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["flagged_chains"] = [c.chain for c in self.flagged]
        return out

    def lines(self) -> list[str]:
        """One line per flag, with its fix: what ``info`` and the CLI print."""
        out = []
        for check in self.flagged:
            for flag in check.flags:
                what = "" if flag.kind == "diverged" else f" {flag.kind.replace('_', ' ')}"
                out.append(f"chain {check.chain}{what}: {flag.message} (likely fix: {flag.fix})")
        return out


def loss_tolerance(guards: GuardsConfig, reference_loss: float) -> float:
    """How far a late mean loss may rise above its value at w* before a chain is flagged."""
    return max(guards.max_loss_increase, guards.max_loss_increase_relative * abs(reference_loss))


def late_mean(row: np.ndarray, fraction: float) -> tuple[float | None, int]:
    """Mean of the last ``fraction`` of the finite entries of ``row`` (None if too few)."""
    seen = row[np.isfinite(row)]
    if seen.size < MIN_LATE_STEPS:
        return None, int(seen.size)
    k = max(MIN_LATE_STEPS, math.ceil(fraction * seen.size))
    return float(np.mean(seen[-k:], dtype=np.float64)), int(seen.size)


def distance_trend(values: np.ndarray) -> tuple[list[float], float, float] | None:
    """Quarter means of a chain's distances, last-vs-second growth, and the noise of q4 - q2.

    None when the chain has fewer than ``MIN_DISTANCE_DRAWS`` draws.
    """
    if values.size < MIN_DISTANCE_DRAWS:
        return None
    batches = np.array([np.mean(part, dtype=np.float64) for part in np.array_split(values, 8)])
    quarters = [float(batches[2 * k : 2 * k + 2].mean()) for k in range(4)]
    growth = quarters[3] / quarters[1] - 1.0 if quarters[1] > 0 else 0.0
    noise = float(np.std(np.diff(batches), ddof=1) / np.sqrt(2.0))
    return quarters, growth, noise


def keeps_growing(quarters: list[float], growth: float, noise: float, tolerance: float) -> bool:
    """The distance test of the module doc: rising through the last three quarters, by more
    than ``tolerance`` (relative) and more than ``DISTANCE_NOISE_SIGMAS`` times its noise."""
    return (quarters[1] < quarters[2] < quarters[3] and growth > tolerance
            and quarters[3] - quarters[1] > DISTANCE_NOISE_SIGMAS * noise)


def _loss_flag(what: str, late: float, reference: float, guards: GuardsConfig) -> Flag | None:
    """The blew-up (train loss only) or loss-drift flag of a late mean loss against w*'s."""
    tol = loss_tolerance(guards, reference)
    rise = late - reference
    if what == "train" and rise > guards.blowup_factor * tol:
        return Flag("blew_up", f"late mean {what} loss {late:.4g} vs {reference:.4g} at w* "
                    f"(+{rise:.3g} > {guards.blowup_factor:g} x tolerance {tol:.3g})",
                    FIXES["blew_up"])
    if rise > tol:
        return Flag("loss_drift", f"late mean {what} loss {late:.4g} vs {reference:.4g} at w* "
                    f"(+{rise:.3g} > tolerance {tol:.3g})", FIXES["loss_drift"])
    return None


def check_arrays(
    train_loss: np.ndarray,
    distances: np.ndarray | None,
    eval_means: np.ndarray | None,
    done: np.ndarray,
    status: np.ndarray,
    errors: Mapping[str, str],
    reference_train: float | None,
    reference_eval: float | None,
    guards: GuardsConfig,
) -> list[ChainCheck]:
    """Per-chain checks from plain arrays (the store's, or a test's); see the module doc.

    ``train_loss`` is (chains, steps), ``distances`` and ``eval_means`` are
    (chains, draws); NaN marks what was not recorded. The loss checks use the
    train loss against ``reference_train`` and the per-draw mean eval loss
    against ``reference_eval``.
    """
    checks = []
    for c in range(train_loss.shape[0]):
        late, steps = late_mean(train_loss[c], guards.late_fraction)
        dist = np.zeros(0)
        if distances is not None:
            dist = distances[c][done[c] & np.isfinite(distances[c])]
        late_eval = None
        if eval_means is not None:
            late_eval, _ = late_mean(np.where(done[c], eval_means[c], np.nan),
                                     guards.late_fraction)
        check = ChainCheck(chain=c, steps_recorded=steps, draws_recorded=int(dist.size),
                           late_train_loss=late, late_eval_loss=late_eval)
        if status[c] != STATUS_OK:
            error = errors.get(str(c), "the chain failed").removeprefix(f"chain {c} ")
            check.flags.append(Flag("diverged", error, FIXES["diverged"]))
        else:
            if late is not None and reference_train is not None:
                check.train_increase = late - reference_train
                flag = _loss_flag("train", late, reference_train, guards)
                check.flags += [flag] if flag else []
            if late_eval is not None and reference_eval is not None:
                check.eval_increase = late_eval - reference_eval
                flag = _loss_flag("eval", late_eval, reference_eval, guards)
                if flag and not check.divergent:
                    check.flags.append(flag)
        if dist.size:
            check.distance_last = float(dist[-1])
        trend = distance_trend(dist)
        if trend is not None and status[c] == STATUS_OK:
            check.distance_quarters, check.distance_growth, check.distance_noise = trend
            if keeps_growing(*trend, guards.distance_growth):
                q = check.distance_quarters
                check.flags.append(Flag(
                    "distance_growth",
                    f"||w - w*|| keeps growing over the draws (quarter means {q[1]:.4g} -> "
                    f"{q[2]:.4g} -> {q[3]:.4g}, +{100 * check.distance_growth:.0f}% > "
                    f"{100 * guards.distance_growth:.0f}%)",
                    FIXES["distance_growth"],
                ))
        checks.append(check)
    return checks


def check_run(store: RunStore, guards: GuardsConfig) -> GuardReport:
    """Check every chain of a run; cheap: reads the per-step and per-draw summaries only."""
    ref = store.reference()
    ref_train = float(ref["train_loss"]) if ref is not None else None
    ref_eval = float(ref["eval_loss_mean"]) if ref is not None else None
    checks = check_arrays(
        store.train_loss(), store.distances(), store.eval_means(), store.done(),
        store.chain_status(), store.chain_errors(), ref_train, ref_eval, guards,
    )
    tol = loss_tolerance(guards, ref_train) if ref_train is not None else None
    return GuardReport(
        reference_train_loss=ref_train,
        reference_eval_loss=ref_eval,
        reference_source=ref.get("train_source") if ref is not None else None,
        loss_tolerance=tol,
        blowup_threshold=guards.blowup_factor * tol if tol is not None else None,
        eval_tolerance=loss_tolerance(guards, ref_eval) if ref_eval is not None else None,
        settings=asdict(guards),
        chains=checks,
    )


def enforce(report: GuardReport, guards: GuardsConfig) -> list[str]:
    """The flag lines; raises GuardError when there are any and the action is ``error``."""
    lines = report.lines()
    if lines and guards.action == "error":
        raise GuardError(
            f"{len(report.flagged)} chain(s) flagged by the guard rails (guards.action=error): "
            + lines[0]
        )
    return lines


def run_verdict(store: RunStore, run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The guard rails' verdict on every chain of a run, with each flag's likely fix.

    What ``losskernel info`` prints and the analysis report shows, judged with the
    run's own ``guards`` settings.
    """
    report = check_run(store, guards_from_dict(dict(run_config)))
    return {**report.as_dict(), "lines": report.lines()}
