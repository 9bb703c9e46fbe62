"""What the pilots show per setting, and the rule that judges the settings.

Per setting it measures, from the pilots' stored data (guards/judge.py):

* **diverged**: any chain stopped on a non-finite loss or parameter, or whose
  late train loss rose more than ``guards.blowup_factor`` tolerances above the
  loss at w*;
* **drift**: the late mean train loss and eval loss minus their values at w*
  (the reference measured before the first step), averaged over healthy
  chains; the guard rails' verdict on each chain and on the chain-averaged
  traces (which decides: per-chain checks of a small model raise occasional
  false alarms, the average does not, and a systematic drift survives it);
* **distance**: ||w - w*|| at the last draw (mean over healthy chains), and
  whether it kept growing (the guard's quarter test);
* **split-half CKA**: CKA between the kernel from the first half of the
  chains and the kernel from the other half (disjoint draws), computed from
  the draws' Gram matrix in O(M^2) memory, never forming N x N; and its
  projection to the configured run's size (``project_cka``), since a short
  pilot's kernel is noisier than the run's will be.

``RULE`` (below) picks the recommendation; it is printed and written into
the report and ``calibration.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...analysis.cka import double_centred_sq_norm
from ...analysis.convergence import draw_gram
from ...analysis.kernelio import DrawReader
from ...config import CalibrateConfig, Config
from ...guards.judge import GuardReport, check_arrays, check_run
from ...reduction.usable import usable_draws
from ...rundir import RunDir
from ...store import STATUS_OK, RunStore
from .grid import Setting, pilot_config

RULE = (
    "A setting is admissible when none of its pilot chains diverged (a non-finite loss or "
    "parameter, or a late train loss more than guards.blowup_factor tolerances above the loss "
    "at w*), the guard rails do not flag its chain-averaged traces (late train or eval loss "
    "above its value at w* by more than the tolerance, or ||w - w*|| still growing over the "
    "draws; averaging over the chains keeps any systematic drift and divides the noise), and "
    "its split-half CKA projected to the configured run ({run_draws} draws: sampler.chains x "
    "sampler.draws) is at least calibrate.min_cka = {min_cka:g}. The projection: two kernels "
    "estimated from m draws each, differing by sampling noise of variance proportional to 1/m, "
    "agree with CKA = 1 / (1 + c/m); c is fitted from the pilot's split-half CKA at its own "
    "half size (the pilot keeps draws at the run's spacing, so m counts alike). Among "
    "admissible settings the recommendation is "
    "the one with the largest lr (the fastest-mixing step that is still stable), then the "
    "smallest localization (the least constrained posterior that still stays at w*), then the "
    "highest projected split-half CKA."
)


@dataclass
class SettingResult:
    """What the pilots of one setting showed."""

    setting: Setting
    chains: int
    chains_sampled: int
    diverged_chains: list[int]
    drifting_chains: list[int]
    drift_flags: list[str]
    train_loss_ref: float | None
    train_loss_late: float | None
    train_drift: float | None
    eval_loss_ref: float | None
    eval_loss_late: float | None
    eval_drift: float | None
    distance_final: float | None
    split_half_cka: float | None
    cka_draws: tuple[int, int]
    projected_cka: float | None = None
    draws_for_min_cka: int | None = None
    admissible: bool = False
    reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    reduced: bool = False

    @property
    def diverged(self) -> bool:
        return bool(self.diverged_chains)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["setting"] = self.setting.as_dict()
        out["name"] = self.setting.name
        out["diverged"] = self.diverged
        return out


def split_half_cka(store: RunStore) -> tuple[float | None, tuple[int, int]]:
    """CKA between the kernels of the first and the second half of the chains.

    With W the draws centred over samples (and by any per-sample constant),
    H K_A H is proportional to W_A^T P_A W_A (P_A centring over A's draws), so

        CKA(K_A, K_B) = ||P_A G_AB P_B||^2 / (||P_A G_AA P_A|| ||P_B G_BB P_B||),  G = W W^T,

    from one Gram matrix of the M used draws. Only done draws of healthy chains
    count. None when a half has fewer than 2 draws.
    """
    chains = store.shape[0]
    mask = usable_draws(store).mask
    half = chains // 2
    draws = mask.shape[1]
    flat = np.arange(chains * draws).reshape(chains, draws)
    rows_a, rows_b = flat[:half][mask[:half]], flat[half:][mask[half:]]
    counts = (int(rows_a.size), int(rows_b.size))
    if min(counts) < 2:
        return None, counts
    reader = DrawReader(store, mask)
    rows = np.concatenate([rows_a, rows_b])
    centre = np.zeros(reader.n)
    block = reader.column_block(len(rows))
    for j0 in range(0, reader.n, block):
        j1 = min(j0 + block, reader.n)
        centre[j0:j1] = reader.flat_columns(rows, j0, j1).mean(axis=0)
    g = draw_gram(reader, rows, centre)
    m = counts[0]
    den = double_centred_sq_norm(g[:m, :m]) * double_centred_sq_norm(g[m:, m:])
    if not den > 0:
        return None, counts
    return float(double_centred_sq_norm(g[:m, m:]) / math.sqrt(den)), counts


def evaluate_setting(config: Config, setting: Setting) -> tuple[SettingResult, GuardReport,
                                                                  dict[str, np.ndarray]]:
    """Measure one setting from its pilot store (see the module doc); also returns traces."""
    from ...reduction.dispatch import reduce_with_config

    pilot = pilot_config(config, setting)
    store = RunDir(pilot.run_dir).open_store(mode="r+")
    guards = check_run(store, config.guards)
    chains, draws, n = store.shape
    healthy = store.chain_status() == STATUS_OK
    divergent = [c.chain for c in guards.chains if c.divergent]
    drifting = [c.chain for c in guards.chains if c.flags and not c.divergent]
    ok = [c for c in range(chains) if c not in divergent]
    train = store.train_loss()
    dist = store.distances()
    done = store.done()
    late_train = [x for c in ok if (x := guards.chains[c].late_train_loss) is not None]
    late_eval = [x for c in ok if (x := guards.chains[c].late_eval_loss) is not None]
    finals = [float(dist[c][done[c]][-1]) for c in ok
              if dist is not None and done[c].any() and np.isfinite(dist[c][done[c]][-1])]
    ref_train, ref_eval = guards.reference_train_loss, guards.reference_eval_loss
    cka_value, cka_draws = split_half_cka(store) if not divergent else (None, (0, 0))
    pooled = pooled_check(store, guards, ok, config) if ok else []
    train_late = float(np.mean(late_train)) if late_train else None
    eval_late = float(np.mean(late_eval)) if late_eval else None
    result = SettingResult(
        setting=setting,
        chains=chains,
        chains_sampled=int(sum(1 for c in range(chains) if done[c].all() or not healthy[c])),
        diverged_chains=divergent,
        drifting_chains=drifting,
        drift_flags=pooled,
        train_loss_ref=ref_train,
        train_loss_late=train_late,
        train_drift=train_late - ref_train if train_late is not None and ref_train is not None
        else None,
        eval_loss_ref=ref_eval,
        eval_loss_late=eval_late,
        eval_drift=eval_late - ref_eval if eval_late is not None and ref_eval is not None else None,
        distance_final=float(np.mean(finals)) if finals else None,
        split_half_cka=cka_value,
        cka_draws=cka_draws,
        flags=guards.lines(),
    )
    if (n <= config.calibrate.reduce_max_n and usable_draws(store).count >= 2
            and not store.has_kernel()):
        reduce_with_config(store, pilot, allow_partial=True)
    result.reduced = store.has_kernel()
    traces = {"train_loss": train, "distance": dist if dist is not None else np.zeros((chains, 0)),
              "done": done, "healthy": healthy}
    return result, guards, traces


def pooled_check(store: RunStore, guards: GuardReport, chains: list[int],
                 config: Config) -> list[str]:
    """The guard rails applied to the traces averaged over ``chains``: the flag messages."""
    done = store.done()[chains].all(axis=0)
    with np.errstate(all="ignore"):
        train = np.nanmean(store.train_loss()[chains], axis=0)
    traces = []
    for arr in (store.distances(), store.eval_means()):
        traces.append(None if arr is None else np.where(done, arr[chains].mean(axis=0), np.nan))
    check = check_arrays(train[None], None if traces[0] is None else traces[0][None],
                         None if traces[1] is None else traces[1][None], done[None],
                         np.zeros(1, np.int8), {}, guards.reference_train_loss,
                         guards.reference_eval_loss, config.guards)[0]
    return [f"{f.kind.replace('_', ' ')}: {f.message}" for f in check.flags]


def project_cka(measured: float, m_measured: float, m_target: float) -> float:
    """Split-half CKA expected with ``m_target`` draws per half, from one at ``m_measured``.

    Model: each half's kernel is the true one plus sampling noise whose squared
    Frobenius norm is proportional to 1/m; then CKA = 1 / (1 + c/m) with c the
    noise-to-signal constant, fitted here as c = m_measured (1/measured - 1).
    """
    if measured <= 0:
        return 0.0
    if measured >= 1:
        return 1.0
    c = m_measured * (1.0 / measured - 1.0)
    return 1.0 / (1.0 + c / m_target)


def draws_needed(measured: float, m_measured: float, target: float) -> int | None:
    """Total draws (both halves) the projection says reach split-half CKA ``target``."""
    if measured <= 0 or target >= 1:
        return None
    if measured >= target:
        return int(2 * m_measured)
    c = m_measured * (1.0 / measured - 1.0)
    return int(math.ceil(2 * c * target / (1.0 - target) - 1e-9))


def judge(result: SettingResult, cal: CalibrateConfig, run_draws: int) -> None:
    """Fill the CKA projection, ``admissible`` and ``reasons`` per RULE.

    ``run_draws`` is the configured run's C x T; its halves have half as many.
    """
    if result.split_half_cka is not None:
        m = sum(result.cka_draws) / 2.0
        result.projected_cka = project_cka(result.split_half_cka, m, run_draws / 2.0)
        result.draws_for_min_cka = draws_needed(result.split_half_cka, m, cal.min_cka)
    reasons = []
    if result.chains_sampled < result.chains:
        reasons.append(f"only {result.chains_sampled} of {result.chains} pilot chains finished")
    if result.diverged_chains:
        reasons.append(f"chains {result.diverged_chains} diverged")
    if result.drift_flags and not result.diverged_chains:
        kinds = sorted({flag.split(":")[0] for flag in result.drift_flags})
        reasons.append(f"chain average flagged for {' and '.join(kinds)}")
    if result.split_half_cka is None:
        if not result.diverged_chains:
            reasons.append("no split-half CKA (too few draws)")
    elif result.projected_cka is not None and result.projected_cka < cal.min_cka:
        reasons.append(f"split-half CKA {result.split_half_cka:.3f}, projected to the run "
                       f"{result.projected_cka:.3f} < {cal.min_cka:g}")
    result.reasons = reasons
    result.admissible = not reasons


def recommend(results: Sequence[SettingResult]) -> Setting | None:
    """The admissible setting RULE prefers, or None when no setting is admissible."""
    admissible = [r for r in results if r.admissible]
    if not admissible:
        return None
    best = min(admissible, key=lambda r: (-r.setting.lr, r.setting.localization,
                                          -(r.projected_cka or 0.0)))
    return best.setting
