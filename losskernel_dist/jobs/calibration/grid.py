"""The calibration grid and the pilots' budget: which settings, and each pilot's config.

Each setting of the grid becomes a pilot run in ``OUTPUT/calibration/<setting>/``
(or under ``calibrate.output``) with the user's config, the setting's lr,
localization and nbeta, and the pilot budget (``calibrate.chains_per_setting``
chains of ``pilot_schedule``). The pilot chains of all settings are dealt
round-robin over the processes (``work_units`` and ``share``), so that every
process gets a near-equal share whatever the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...config import Config, ConfigError, config_from_dict
from ...rundir import RunDir
from ...sampler.schedule import StepSchedule

GRID_FACTORS = (0.1, 1.0, 10.0)


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
