"""Library defaults equal config defaults: calling a public function without a setting
does what a run with the default config does.

Every public function or settings class that takes a config setting as a
parameter is listed with the config key each parameter stands for. A listed
parameter with a default must default to the key's default; one without a
default is fine (the caller always passes it). Parameters named like a key of
the callable's own config sections must be listed (None: the same name for
another thing), so that a new one cannot drift unnoticed.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

import pytest

from losskernel_dist.config import Config, config_default
from losskernel_dist.reduction.kernel import reduce_store
from losskernel_dist.reduction.tiled import reduce_store_torch
from losskernel_dist.reduction.topk import reduce_neighbours
from losskernel_dist.sampler.batched import run_chains_batched
from losskernel_dist.sampler.chain import SGLDSettings
from losskernel_dist.sampler.data import EvalShards, minibatches
from losskernel_dist.sampler.functional import FunctionalLoss
from losskernel_dist.sampler.schedule import StepSchedule


def gib(value: float) -> int:
    return int(value * 2**30)


# callable -> (its config sections, {parameter: config key or (config key, conversion)})
SETTINGS: dict[Callable[..., Any], tuple[tuple[str, ...], dict[str, Any]]] = {
    reduce_store: (("reduce",), {
        "block_size": "reduce.block_size", "dtype": "reduce.dtype", "threads": "reduce.threads",
        "cache_bytes": ("reduce.cache_gb", gib)}),
    reduce_store_torch: (("reduce",), {
        "block_size": "reduce.block_size", "dtype": "reduce.dtype", "device": "reduce.device"}),
    reduce_neighbours: (("reduce",), {
        "k": "reduce.neighbours_k", "k_bottom": "reduce.neighbours_bottom_k",
        "metric": "reduce.neighbours_metric", "exclude_same_label": "analysis.exclude_same_label",
        "block_size": "reduce.block_size", "threads": "reduce.threads",
        "cache_bytes": ("reduce.cache_gb", gib)}),
    SGLDSettings: (("sampler",), {
        "lr": "sampler.lr", "nbeta": "sampler.nbeta", "localization": "sampler.localization",
        "seed": "sampler.seed", "batch_size": "sampler.batch_size", "noise": "sampler.noise",
        "loader_workers": "sampler.loader_workers"}),
    StepSchedule: (("sampler",), {
        "burnin_steps": "sampler.burnin_steps", "draws": "sampler.draws",
        "steps_between_draws": "sampler.steps_between_draws",
        "checkpoint_every": "sampler.checkpoint_every"}),
    run_chains_batched: (("sampler",), {"eval_mode": "sampler.batched_eval",
                                        "chains": None}),  # the chain ids, not a count
    minibatches: (("sampler",), {"seed": "sampler.seed", "batch_size": "sampler.batch_size",
                                 "workers": "sampler.loader_workers",
                                 "device": "sampler.device"}),
    FunctionalLoss: (("eval",), {"eval_autocast": "eval.autocast",
                                 "channels_last": "eval.channels_last"}),
    EvalShards: (("eval",), {"batch_size": "eval.batch_size", "cache": "eval.cache",
                             "channels_last": "eval.channels_last"}),
}


def config_value(spec: Any) -> Any:
    key, convert = spec if isinstance(spec, tuple) else (spec, lambda v: v)
    return convert(config_default(key))


def section_keys(section: str) -> set[str]:
    return {f.name for f in dataclasses.fields(typing.get_type_hints(Config)[section])}


@pytest.mark.parametrize("function", list(SETTINGS), ids=lambda f: f.__name__)
def test_library_defaults_are_the_config_defaults(function):
    _, mapping = SETTINGS[function]
    params = inspect.signature(function).parameters
    missing = sorted(set(mapping) - set(params))
    assert not missing, f"{function.__name__} has no parameters {missing}: update SETTINGS"
    differ = {name: (params[name].default, config_value(spec)) for name, spec in mapping.items()
              if spec is not None and params[name].default is not inspect.Parameter.empty
              and params[name].default != config_value(spec)}
    assert not differ, f"{function.__name__}: (library, config) defaults differ: {differ}"


@pytest.mark.parametrize("function", list(SETTINGS), ids=lambda f: f.__name__)
def test_every_parameter_named_like_a_config_key_is_checked(function):
    sections, mapping = SETTINGS[function]
    keys = set().union(*(section_keys(s) for s in sections))
    unlisted = sorted(n for n in inspect.signature(function).parameters
                      if n in keys and n not in mapping)
    assert not unlisted, f"{function.__name__}: list {unlisted} in SETTINGS"


def test_config_default_gives_plain_data_and_refuses_unknown_keys():
    assert config_default("reduce.dtype") == "float32"
    assert type(config_default("reduce.dtype")) is str
    assert config_default("sampler.burnin_steps") == 100
    assert config_default("slurm.extra") == {}
    for key in ("reduce.nope", "nope.block_size", "output", "task.target"):
        with pytest.raises(KeyError):
            config_default(key)
