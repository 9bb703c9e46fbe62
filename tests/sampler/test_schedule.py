"""The SGLD step schedule: one object answers every "which step" question, and the chain
runners keep their draws and checkpoints exactly where it says."""

from __future__ import annotations

import pytest
import torch

from losskernel_dist.config import config_from_dict
from losskernel_dist.jobs.sample import settings_from
from losskernel_dist.sampler.batched import run_chains_batched
from losskernel_dist.sampler.chain import run_chain
from losskernel_dist.sampler.data import EvalShards
from losskernel_dist.sampler.functional import FunctionalLoss
from losskernel_dist.sampler.schedule import StepSchedule
from losskernel_dist.tasks import linear

from ..conftest import linear_config

CPU = torch.device("cpu")
SCHEDULES = [StepSchedule(0, 5, 1, 0), StepSchedule(3, 4, 2, 5), StepSchedule(7, 3, 3, 1),
             StepSchedule(2, 6, 1, 4)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=str)
def test_schedule_agrees_with_an_enumeration_of_the_draw_steps(schedule):
    b, t, k = schedule.burnin_steps, schedule.draws, schedule.steps_between_draws
    draw_steps = [b + (i + 1) * k for i in range(t)]  # written out independently
    assert schedule.total_steps == b + t * k == draw_steps[-1]
    for step in range(schedule.total_steps + 3):
        index = draw_steps.index(step) if step in draw_steps else None
        assert schedule.draw_index(step) == index
        assert schedule.is_draw_step(step) == (index is not None)
        assert schedule.draws_kept_by(step) == sum(s <= step for s in draw_steps)
    assert [schedule.draw_step(i) for i in range(t)] == draw_steps
    with pytest.raises(IndexError):
        schedule.draw_step(t)


def test_checkpoints_fall_every_checkpoint_every_steps_and_at_the_end():
    assert [s for s in range(1, 12) if StepSchedule(3, 4, 2, 5).is_checkpoint_step(s)] == \
        [5, 10, 11]
    assert [s for s in range(1, 12) if StepSchedule(3, 4, 2, 0).is_checkpoint_step(s)] == [11]


def test_schedule_of_the_sampler_section(tmp_path):
    config = config_from_dict(linear_config(tmp_path, burnin_steps=6, draws=5,
                                            steps_between_draws=2, checkpoint_every=4))
    assert StepSchedule.of(config.sampler) == StepSchedule(6, 5, 2, 4)
    assert settings_from(config).schedule == StepSchedule(6, 5, 2, 4)


def test_impossible_schedules_are_refused():
    with pytest.raises(ValueError):
        StepSchedule(0, 5, 0)
    with pytest.raises(ValueError):
        StepSchedule(-1, 5, 1)


@pytest.mark.parametrize("batched", [False, True])
def test_chains_keep_draws_and_checkpoint_where_the_schedule_says(tmp_path, batched):
    config = config_from_dict(linear_config(tmp_path, burnin_steps=3, draws=4,
                                            steps_between_draws=2, checkpoint_every=5))
    settings = settings_from(config)
    schedule = settings.schedule
    task = linear.build(n=64, n_eval=8, dim=3)
    fl = FunctionalLoss(task, CPU)
    shards = EvalShards(task.eval, 8, CPU, cache=True)
    if batched:
        events = [e for e in run_chains_batched(fl, task.train, shards, settings, [0, 1])
                  if e.chain == 1]
    else:
        events = list(run_chain(fl, task.train, shards, settings, chain=1))
    draws = [(e.step, e.draw) for e in events if e.draw is not None]
    assert draws == [(schedule.draw_step(t), t) for t in range(schedule.draws)]
    checkpoints = [e.step for e in events if e.params is not None]
    assert checkpoints == [s for s in range(1, schedule.total_steps + 1)
                           if schedule.is_checkpoint_step(s)]
