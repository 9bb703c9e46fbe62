"""``losskernel calibrate``: short pilot runs over a grid of SGLD settings, and a recommendation.

Each setting (lr, localization, nbeta) of the grid is a real, small run of the
sampler (``sample.sample``) in ``OUTPUT/calibration/<setting>/``: the same
store, checkpoints, resume and fingerprint checks as any run, so a pilot
started with one model and reused with another is refused, and an interrupted
calibration resumes where it stopped. The pilot chains of all settings are
dealt round-robin over the processes: under ``torchrun`` each rank runs its
share (rank 0 prepares every pilot first and writes the report after a final
barrier); with ``--shard I/K`` (SLURM array tasks) each task runs share I of
K and stops, and a plain ``losskernel calibrate`` afterwards reports.

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

import fcntl
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..analysis.cka import double_centred_sq_norm
from ..analysis.convergence import draw_gram
from ..analysis.kernelio import DrawReader
from ..config import CalibrateConfig, Config, ConfigError, config_default, config_from_dict
from ..distributed import Placement, ProcessGroup, placement_from_env, select_device
from ..errors import CalibrationError
from ..guards.judge import GuardReport, check_run
from ..guards.measure import measure_reference
from ..reduction.usable import usable_draws
from ..rundir import RunDir
from ..sampler.schedule import StepSchedule
from ..store import STATUS_OK, RunStore

GRID_FACTORS = (0.1, 1.0, 10.0)
RESULT_NAME = "calibration.json"
REPORT_NAME = "index.html"

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



@dataclass(frozen=True)
class Setting:
    """One point of the grid."""

    lr: float
    localization: float
    nbeta: float

    @property
    def name(self) -> str:
        """Directory name of the pilot, e.g. ``lr1e-06_loc3e+04_nbeta500``."""
        return f"lr{self.lr:.3g}_loc{self.localization:.3g}_nbeta{self.nbeta:.3g}"

    def as_dict(self) -> dict[str, float]:
        return {"lr": self.lr, "localization": self.localization, "nbeta": self.nbeta}


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


@dataclass
class Calibration:
    """The whole calibration: grid, budget, per-setting results and the recommendation."""

    directory: Path
    settings: list[Setting]
    budget: dict[str, Any]
    results: list[SettingResult]
    recommended: Setting | None
    rule: str
    reference: dict[str, Any]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "rule": self.rule,
            "recommended": self.recommended.as_dict() if self.recommended else None,
            "recommended_name": self.recommended.name if self.recommended else None,
            "budget": self.budget,
            "reference": self.reference,
            "settings": [r.as_dict() for r in self.results],
            "seconds": round(self.seconds, 1),
        }


# --------------------------------------------------------------------------- grid


def grid(config: Config) -> list[Setting]:
    """The settings to try: the configured lists, or the defaults around the sampler's values.

    Defaults: lr and localization at 0.1, 1 and 10 times the config's (localization
    [0] when it is 0), nbeta the config's only.
    """
    cal, s = config.calibrate, config.sampler
    lrs = cal.lr or [s.lr * f for f in GRID_FACTORS]
    locs = cal.localization or ([s.localization * f for f in GRID_FACTORS]
                                if s.localization > 0 else [0.0])
    nbetas = cal.nbeta or [s.nbeta]
    out = [Setting(float(lr), float(loc), float(nb))
           for nb in sorted(set(nbetas)) for lr in sorted(set(lrs)) for loc in sorted(set(locs))]
    names = [x.name for x in out]
    if len(set(names)) != len(names):
        raise ConfigError("calibrate: two grid values agree to 3 significant digits; "
                          "the pilots' directory names would collide")
    return out


def calibration_dir(config: Config) -> Path:
    """Where the pilots and the report go: ``calibrate.output`` or OUTPUT/calibration."""
    return Path(config.calibrate.output) if config.calibrate.output else \
        RunDir(config.run_dir).calibration


def pilot_schedule(config: Config) -> StepSchedule:
    """Burn-in, draws and spacing of every pilot chain from the calibrate budget.

    By default (``calibrate.draws`` 0) the pilot keeps a draw every
    ``sampler.steps_between_draws`` steps, as the run will, so that its draws
    are as correlated as the run's and the CKA projection counts them alike.
    """
    cal = config.calibrate
    burnin = cal.pilot_burnin_steps
    if cal.draws:
        every = max(1, (cal.steps - burnin) // cal.draws)
        draws = cal.draws
    else:
        every = config.sampler.steps_between_draws
        draws = (cal.steps - burnin) // every
    return StepSchedule(burnin_steps=burnin, draws=draws, steps_between_draws=every,
                        checkpoint_every=config.sampler.checkpoint_every)


def pilot_budget(config: Config) -> dict[str, int]:
    """The budget a calibration records: the pilot schedule, its chains, the run's draws."""
    schedule = pilot_schedule(config)
    return {"burnin_steps": schedule.burnin_steps, "draws": schedule.draws,
            "steps_between_draws": schedule.steps_between_draws,
            "steps": schedule.total_steps, "chains": config.calibrate.chains_per_setting,
            "run_draws": config.sampler.chains * config.sampler.draws}


def pilot_config(config: Config, setting: Setting) -> Config:
    """The config of one pilot run: the user's, with the setting and the pilot budget."""
    data = config.to_dict()
    schedule = pilot_schedule(config)
    data["sampler"].update(
        chains=config.calibrate.chains_per_setting, draws=schedule.draws,
        burnin_steps=schedule.burnin_steps,
        steps_between_draws=schedule.steps_between_draws,
        lr=setting.lr, localization=setting.localization, nbeta=setting.nbeta,
    )
    data["analysis"]["enabled"] = False
    data["reduce"]["kernel"] = "dense"  # pilot kernels are small (calibrate.reduce_max_n)
    data["output"] = str(calibration_dir(config) / setting.name)
    return config_from_dict(data)


def work_units(settings: Sequence[Setting], chains: int) -> list[tuple[int, int]]:
    """(setting index, chain) of every pilot chain, setting-major."""
    return [(i, c) for i in range(len(settings)) for c in range(chains)]


def share(units: list[tuple[int, int]], index: int, count: int) -> dict[int, list[int]]:
    """Process ``index`` of ``count``'s pilot chains by setting (round-robin over all units)."""
    out: dict[int, list[int]] = {}
    for s, c in units[index::count]:
        out.setdefault(s, []).append(c)
    return out


# --------------------------------------------------------------------------- running


@contextmanager
def _prepare_lock(directory: Path) -> Iterator[None]:
    """Serialises pilot preparation between array tasks that start together."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".prepare.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def prepare_pilots(config: Config, settings: Sequence[Setting]) -> None:
    """Create every pilot run (or check the existing ones) and store the reference in each.

    The task is loaded once; a pilot made from another model, eval set or pilot
    budget is refused here (RunDirError naming what differs), before any chain
    runs. The losses at w* do not depend on the setting, so they are measured
    once and written into every new pilot.
    """
    from ..rundir import prepare_run
    from ..sampler.data import EvalShards
    from ..sampler.functional import FunctionalLoss
    from ..task import load_task
    from .sample import task_fingerprints

    if config.sampler.threads:
        import torch

        torch.set_num_threads(config.sampler.threads)
    task = load_task(config.task.target, config.task.args)
    device = select_device(config.sampler.device, placement_from_env().local_rank)
    fl = FunctionalLoss(task, device)
    shards = EvalShards(task.eval, config.eval.batch_size, device, cache=config.eval.cache)
    fingerprints = task_fingerprints(task, shards)
    directory = calibration_dir(config)
    reference: tuple[np.ndarray, dict[str, Any]] | None = None
    with _prepare_lock(directory):
        for setting in settings:
            pilot = pilot_config(config, setting)
            prepare_run(pilot, task, fingerprints)
            store = RunDir(pilot.run_dir).open_store(mode="r+")
            if store.has_reference():
                continue
            if reference is None:
                reference = measure_reference(
                    fl, task.train, shards, seed=config.sampler.seed,
                    batch_size=config.sampler.batch_size,
                    eval_batch_size=config.eval.batch_size,
                )
            store.write_reference(*reference)


def run_pilots(
    config: Config,
    settings: Sequence[Setting],
    mine: dict[int, list[int]],
    local_rank: int,
    progress: bool,
    log: Any = print,
) -> dict[int, dict[int, str]]:
    """Sample this process's pilot chains, setting by setting; returns failures by setting.

    Each call to ``sample`` runs as a one-process job on its chains (the pilots
    exist already), on this process's device.
    """
    from .sample import sample

    failed: dict[int, dict[int, str]] = {}
    for index, chains in sorted(mine.items()):
        pilot = pilot_config(config, settings[index])
        report = sample(pilot, chains=chains, placement=Placement(0, 1, local_rank),
                        progress=progress)
        if log:
            log(f"pilot {settings[index].name}: sampled chains {chains}: "
                f"{report.draws_written} draws in {report.seconds:.1f} s"
                + (f", chains {sorted(report.failed)} diverged" if report.failed else ""))
        if report.failed:
            failed[index] = dict(report.failed)
    return failed


# --------------------------------------------------------------------------- evaluation


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
    from ..reduction.dispatch import reduce_with_config
    from ..rundir import RunDir

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
    from ..guards.judge import check_arrays

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


# --------------------------------------------------------------------------- the job


def calibrate(
    config: Config,
    *,
    shard: tuple[int, int] | None = None,
    progress: bool = False,
    log: Any = print,
) -> Calibration | None:
    """Run the calibration (see the module doc); None on processes that do not report.

    ``shard=(i, k)`` runs share i of k of the pilot chains and returns None (SLURM
    array tasks); otherwise the chains are shared over torchrun's ranks (one
    process: all of them) and rank 0 evaluates, reports and returns the result.
    """
    t0 = time.perf_counter()
    settings = grid(config)
    units = work_units(settings, config.calibrate.chains_per_setting)
    placement = placement_from_env()
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ConfigError(f"--shard {index}/{count}: expected 0 <= I < K")
        prepare_pilots(config, settings)
        run_pilots(config, settings, share(units, index, count), placement.local_rank, progress,
                   log)
        return None
    device = select_device(config.sampler.device, placement.local_rank)
    group = ProcessGroup(placement, device)
    try:
        if placement.is_main:
            prepare_pilots(config, settings)
        group.barrier()
        mine = share(units, placement.rank, placement.world_size)
        run_pilots(config, settings, mine, placement.local_rank, progress, log)
        group.barrier()
    finally:
        group.close()
    if not placement.is_main:
        return None
    return report(config, settings, t0, log=log)


def report(config: Config, settings: Sequence[Setting], t0: float, log: Any = print) -> Calibration:
    """Evaluate every setting, pick the recommendation, write calibration.json and the report."""
    from ..report.calibration import write_calibration_report

    directory = calibration_dir(config)
    results, guard_reports, traces = [], [], []
    for setting in settings:
        result, guards, trace = evaluate_setting(config, setting)
        judge(result, config.calibrate, config.sampler.chains * config.sampler.draws)
        results.append(result)
        guard_reports.append(guards)
        traces.append(trace)
        if log:
            log(summary_line(result))
    recommended = recommend(results)
    reference = {"train_loss": guard_reports[0].reference_train_loss,
                 "eval_loss_mean": guard_reports[0].reference_eval_loss,
                 "train_source": guard_reports[0].reference_source,
                 "loss_tolerance": guard_reports[0].loss_tolerance,
                 "eval_tolerance": guard_reports[0].eval_tolerance,
                 "blowup_threshold": guard_reports[0].blowup_threshold}
    cal = Calibration(
        directory=directory,
        settings=list(settings),
        budget={**pilot_budget(config), "min_cka": config.calibrate.min_cka,
                "guards": config.guards.to_dict()},
        results=results,
        recommended=recommended,
        rule=RULE.format(min_cka=config.calibrate.min_cka,
                         run_draws=config.sampler.chains * config.sampler.draws),
        reference=reference,
        seconds=time.perf_counter() - t0,
    )
    tmp = directory / f".{RESULT_NAME}.tmp"
    tmp.write_text(json.dumps(cal.as_dict(), indent=2))
    os.replace(tmp, directory / RESULT_NAME)
    write_calibration_report(directory / REPORT_NAME, cal.as_dict(), traces, config.run_dir.name)
    return cal


def summary_line(result: SettingResult) -> str:
    """One line per setting for the terminal."""
    def num(x: float | None, fmt: str = ".3g") -> str:
        return "-" if x is None else format(x, fmt)

    status = "ok" if result.admissible else "; ".join(result.reasons)
    return (f"{result.setting.name:<32} train drift {num(result.train_drift):>8}  "
            f"eval drift {num(result.eval_drift):>8}  |w-w*| {num(result.distance_final):>8}  "
            f"split-half CKA {num(result.split_half_cka, '.3f'):>6} "
            f"(run: {num(result.projected_cka, '.3f')})  {status}")


def write_recommended_config(
    config_path: Path, overrides: list[str], cal: Calibration, out: Path
) -> Path:
    """Write the user's config (as given, with its --set overrides) with the recommendation.

    Sets sampler.lr, sampler.localization and sampler.nbeta, and raises
    sampler.burnin_steps to at least the pilots' burn-in (the recommendation
    is known to settle within that many steps, not fewer). Refuses when
    nothing was recommended. Comments of the original file are not kept.
    """
    from ..config import apply_overrides

    if cal.recommended is None:
        raise CalibrationError("no setting passed the calibration; nothing to write "
                               f"(see {cal.directory / REPORT_NAME})")
    data = yaml.safe_load(Path(config_path).read_text()) or {}
    data = apply_overrides(data, list(overrides))
    sampler = data.setdefault("sampler", {})
    sampler.update(cal.recommended.as_dict())
    burnin = int(cal.budget["burnin_steps"])
    if int(sampler.get("burnin_steps", config_default("sampler.burnin_steps"))) < burnin:
        sampler["burnin_steps"] = burnin
    config_from_dict(yaml.safe_load(yaml.safe_dump(data)))  # still a valid config
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, out)
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``I/K`` -> (I, K)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/K, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: expected 0 <= I < K")
    return index, count
