"""The ``calibrate`` job: pilots over the grid, then the evaluation, report and recommendation.

The pilot chains of all settings are dealt round-robin over the processes:
under ``torchrun`` each rank runs its share (rank 0 prepares every pilot first
and writes the report after a final barrier); with ``--shard I/K`` (SLURM
array tasks) each task runs share I of K and stops, and a plain ``losskernel
calibrate`` afterwards reports. The report (``rundir.REPORT_NAME``) and
``calibration.json`` (``RESULT_NAME``) go to the calibration directory, each
written atomically; ``--write`` writes the user's config with the recommended
setting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ...config import Config, ConfigError, config_default, config_from_dict
from ...distributed import ProcessGroup, placement_from_env, select_device
from ...errors import CalibrationError
from ...rundir import REPORT_NAME, atomic_write
from .evaluate import RULE, SettingResult, evaluate_setting, judge, recommend
from .grid import Setting, calibration_dir, grid, pilot_budget, share, work_units
from .pilots import prepare_pilots, run_pilots

RESULT_NAME = "calibration.json"


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
    from ...report.calibration import write_calibration_report

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
    atomic_write(directory / RESULT_NAME, json.dumps(cal.as_dict(), indent=2))
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
    from ...config import apply_overrides

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
    return atomic_write(Path(out), yaml.safe_dump(data, sort_keys=False))


def parse_shard(text: str) -> tuple[int, int]:
    """``I/K`` -> (I, K)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/K, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: expected 0 <= I < K")
    return index, count
