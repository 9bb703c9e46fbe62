"""The SGLD step schedule of a chain: which steps keep a draw, which checkpoint, how many.

A chain takes ``burnin_steps`` steps, then keeps a draw after every
``steps_between_draws`` steps until it has ``draws`` of them, so it ends after
``total_steps`` steps. Steps are counted as steps *taken*: "after step s"
is the state once s SGLD updates have been applied (s = 0 is w*), which is
what a ChainEvent's ``step`` and a checkpoint's ``step`` hold. Every part of
the package that needs the schedule (the chain runners, the resume logic,
the store layout, the calibration pilots, the plots) asks this object, so
that they cannot disagree about it. Plain integers, no torch: cheap to import.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import SamplerConfig, config_default


@dataclass(frozen=True)
class StepSchedule:
    """When a chain keeps its draws and checkpoints (``checkpoint_every`` 0: only at the end)."""

    burnin_steps: int
    draws: int
    steps_between_draws: int
    checkpoint_every: int = config_default("sampler.checkpoint_every")

    def __post_init__(self) -> None:
        if self.burnin_steps < 0 or self.draws < 0 or self.checkpoint_every < 0:
            raise ValueError(f"negative entry in {self}")
        if self.steps_between_draws < 1:
            raise ValueError(f"steps_between_draws must be >= 1 in {self}")

    @classmethod
    def of(cls, sampler: SamplerConfig) -> StepSchedule:
        """The schedule of the config's ``sampler`` section."""
        return cls(burnin_steps=sampler.burnin_steps, draws=sampler.draws,
                   steps_between_draws=sampler.steps_between_draws,
                   checkpoint_every=sampler.checkpoint_every)

    @property
    def total_steps(self) -> int:
        """Steps of the whole chain: burn-in, then one spacing per kept draw."""
        return self.burnin_steps + self.draws * self.steps_between_draws

    def draw_index(self, step: int) -> int | None:
        """Index of the draw kept after ``step`` steps, or None when that step keeps none."""
        after = step - self.burnin_steps
        if after <= 0 or after % self.steps_between_draws:
            return None
        index = after // self.steps_between_draws - 1
        return index if index < self.draws else None

    def is_draw_step(self, step: int) -> bool:
        """Whether the state after ``step`` steps is a kept draw."""
        return self.draw_index(step) is not None

    def draw_step(self, draw: int) -> int:
        """The step after which draw ``draw`` (0-based) is kept."""
        if not 0 <= draw < self.draws:
            raise IndexError(f"draw {draw} out of range: the chain keeps {self.draws}")
        return self.burnin_steps + (draw + 1) * self.steps_between_draws

    def is_checkpoint_step(self, step: int) -> bool:
        """Whether the chain checkpoints after ``step`` steps: every ``checkpoint_every``
        steps and at its last step (a stop signal checkpoints wherever it lands)."""
        return step == self.total_steps or (
            self.checkpoint_every > 0 and step % self.checkpoint_every == 0
        )

    def draws_kept_by(self, step: int) -> int:
        """How many draws a chain has kept after ``step`` steps."""
        after = max(0, step - self.burnin_steps)
        return min(self.draws, after // self.steps_between_draws)
