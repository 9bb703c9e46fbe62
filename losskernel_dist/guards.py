"""Guard rails: is every chain still sampling around the trained solution?

SGLD's usual failure modes are silent: with too large a step a chain blows up
(its loss climbs to chance level, or to NaN), and with too weak a localization
or too short a burn-in it wanders off w*, so that the "kernel" measures the
drift rather than the model. These checks judge each chain from what the run
stored, against the losses at w* measured before the first step:

* **reference** (``measure_reference``): the mean training loss L* at w* over a
  fixed, keyed set of samples (the whole training set when it has at most
  ``REFERENCE_MINIBATCHES`` minibatches' worth of samples, otherwise the first
  ``REFERENCE_MINIBATCHES`` minibatches of chain 0's key stream, the very
  batches chain 0 starts on), and the eval loss vector at w*.
* **diverged**: the sampler stopped the chain on a NaN or infinite loss or
  parameter (``chain_status`` failed).
* **blew up**: the chain's *late* mean training loss (over the last
  ``guards.late_fraction`` of its recorded steps) exceeds L* by more than
  ``guards.blowup_factor`` times the drift tolerance. Counted as divergence:
  the chain has left the basin (for cross-entropy, typically to chance level).
* **loss drift**: the late mean training loss exceeds L* by more than the
  tolerance ``max(guards.max_loss_increase, guards.max_loss_increase_relative * |L*|)``.
* **distance growth**: ||w - w*|| at the kept draws keeps growing. The chain's
  draws are cut into 8 consecutive batches and paired into quarters; flagged
  when the means of the second, third and last quarter increase in that
  order, the last exceeds the second by more than ``guards.distance_growth``
  (relative), and by more than twice the noise of that difference (the
  standard deviation of successive batch-mean differences over sqrt(2), which
  a steady trend does not inflate). A chain at equilibrium holds a steady
  distance; one still diffusing away (weak localization) or still relaxing
  (too small a step for the burn-in) does not. The noise term matters for
  small models, whose distance fluctuates visibly (chi-distributed with d
  degrees of freedom); in large ones it is negligible.

Each flag carries the likely fix. ``guards.action`` says whether flags are
warnings (default) or make ``losskernel sample``/``run`` fail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import GuardsConfig
from .rng import minibatch_indices
from .sampler.chain import loss_vector
from .sampler.data import EvalShards, fetch_batch
from .sampler.functional import FunctionalLoss, to_device
from .store import STATUS_OK, RunStore

REFERENCE_MINIBATCHES = 8
MIN_LATE_STEPS = 4  # recorded steps a late window needs before the loss checks speak
MIN_DISTANCE_DRAWS = 8  # draws the quarter test needs (two per quarter)

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


class GuardError(RuntimeError):
    """Chains were flagged and ``guards.action`` is ``error``."""


# ---------------------------------------------------------------------- reference at w*


def measure_reference(
    fl: FunctionalLoss,
    train: Dataset,
    shards: EvalShards,
    *,
    seed: int,
    batch_size: int,
    eval_batch_size: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The eval loss vector and the mean training loss at w* (see the module doc).

    Returns ``(eval_losses, attrs)``; ``attrs`` holds ``train_loss``,
    ``train_samples``, ``train_source`` and ``eval_loss_mean``.
    """
    anchor = fl.initial_params()
    eval_losses = loss_vector(fl, anchor, shards).cpu().numpy()
    n = len(train)
    if n <= REFERENCE_MINIBATCHES * batch_size:
        index_sets = [np.arange(i, min(i + eval_batch_size, n)) for i in range(0, n, eval_batch_size)]
        source = "the whole training set"
    else:
        index_sets = [minibatch_indices(seed, 0, step, n, batch_size)
                      for step in range(REFERENCE_MINIBATCHES)]
        source = (f"the first {REFERENCE_MINIBATCHES} minibatches (b={batch_size}) of chain 0's "
                  f"key stream")
    total, count = 0.0, 0
    with torch.inference_mode():
        for idx in index_sets:
            batch = to_device(fetch_batch(train, idx), fl.device)
            losses = fl.losses(anchor, batch).to(torch.float64)
            total += float(losses.sum())
            count += int(losses.numel())
    attrs = {
        "train_loss": total / count,
        "train_samples": count,
        "train_source": source,
        "eval_loss_mean": float(np.mean(eval_losses, dtype=np.float64)),
    }
    return eval_losses, attrs


def ensure_reference(
    store: RunStore,
    fl: FunctionalLoss,
    train: Dataset,
    shards: EvalShards,
    *,
    seed: int,
    batch_size: int,
    eval_batch_size: int,
) -> None:
    """Measure and store the reference unless the run has it (idempotent, race-safe)."""
    if store.has_reference():
        return
    eval_losses, attrs = measure_reference(
        fl, train, shards, seed=seed, batch_size=batch_size, eval_batch_size=eval_batch_size
    )
    store.write_reference(eval_losses, attrs)


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
    loss_increase: float | None = None
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
    """How far the late mean training loss may rise above L* before a chain is flagged."""
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
    than ``tolerance`` (relative) and more than twice its noise."""
    return (quarters[1] < quarters[2] < quarters[3] and growth > tolerance
            and quarters[3] - quarters[1] > 2.0 * noise)


def check_arrays(
    train_loss: np.ndarray,
    distances: np.ndarray | None,
    done: np.ndarray,
    status: np.ndarray,
    errors: Mapping[str, str],
    reference_loss: float | None,
    guards: GuardsConfig,
) -> list[ChainCheck]:
    """Per-chain checks from plain arrays (the store's, or a test's)."""
    tol = loss_tolerance(guards, reference_loss) if reference_loss is not None else None
    checks = []
    for c in range(train_loss.shape[0]):
        late, steps = late_mean(train_loss[c], guards.late_fraction)
        mask = done[c].copy()
        if distances is not None:
            mask &= np.isfinite(distances[c])
        dist = distances[c][mask] if distances is not None else np.zeros(0)
        check = ChainCheck(chain=c, steps_recorded=steps, draws_recorded=int(dist.size),
                           late_train_loss=late)
        if status[c] != STATUS_OK:
            error = errors.get(str(c), "the chain failed").removeprefix(f"chain {c} ")
            check.flags.append(Flag("diverged", error, FIXES["diverged"]))
        if late is not None and reference_loss is not None and tol is not None \
                and status[c] == STATUS_OK:
            check.loss_increase = late - reference_loss
            if check.loss_increase > guards.blowup_factor * tol:
                check.flags.append(Flag(
                    "blew_up",
                    f"late mean train loss {late:.4g} vs {reference_loss:.4g} at w* "
                    f"(+{check.loss_increase:.3g} > {guards.blowup_factor:g} x tolerance "
                    f"{tol:.3g})",
                    FIXES["blew_up"],
                ))
            elif check.loss_increase > tol:
                check.flags.append(Flag(
                    "loss_drift",
                    f"late mean train loss {late:.4g} vs {reference_loss:.4g} at w* "
                    f"(+{check.loss_increase:.3g} > tolerance {tol:.3g})",
                    FIXES["loss_drift"],
                ))
        trend = distance_trend(dist)
        if dist.size:
            check.distance_last = float(dist[-1])
        if trend is not None:
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
    """Check every chain of a run (cheap: reads train_loss, distance, done and status)."""
    ref = store.reference()
    reference_loss = float(ref["train_loss"]) if ref is not None else None
    distances = store.distances()
    checks = check_arrays(
        store.train_loss(), distances, store.done(), store.chain_status(),
        store.chain_errors(), reference_loss, guards,
    )
    tol = loss_tolerance(guards, reference_loss) if reference_loss is not None else None
    return GuardReport(
        reference_train_loss=reference_loss,
        reference_eval_loss=float(ref["eval_loss_mean"]) if ref is not None else None,
        reference_source=ref.get("train_source") if ref is not None else None,
        loss_tolerance=tol,
        blowup_threshold=guards.blowup_factor * tol if tol is not None else None,
        settings=asdict(guards),
        chains=checks,
    )


def eval_loss_means(store: RunStore) -> np.ndarray:
    """(chains, draws) mean eval loss of every draw (NaN where not done), read chain by chain."""
    chains, draws, _ = store.shape
    done = store.done()
    out = np.full((chains, draws), np.nan)
    arr = store.losses_array()
    for c in range(chains):
        if done[c].any():
            rows = np.asarray(arr[c], dtype=np.float64)
            out[c] = np.where(done[c], rows.mean(axis=1), np.nan)
    return out


def enforce(report: GuardReport, guards: GuardsConfig) -> list[str]:
    """The flag lines; raises GuardError when there are any and the action is ``error``."""
    lines = report.lines()
    if lines and guards.action == "error":
        raise GuardError(
            f"{len(report.flagged)} chain(s) flagged by the guard rails (guards.action=error): "
            + lines[0]
        )
    return lines
