"""Fixed-choice keys: enums at load, one-line errors, and plain strings wherever they are
written (config.yaml, the store's config, the draw keys), exactly as before the enums."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from losskernel_dist.config import (
    Autocast,
    Choice,
    Config,
    ConfigError,
    KernelKind,
    config_from_dict,
    draw_keys,
    dump_config,
    load_config,
)

from ..conftest import linear_config


def choice_keys() -> dict[str, type[Choice]]:
    """Every fixed-choice key of the schema with its enum, by dotted name."""
    out = {}
    for section, cls in typing.get_type_hints(Config).items():
        if not dataclasses.is_dataclass(cls):
            continue
        for name, hint in typing.get_type_hints(cls).items():
            if isinstance(hint, type) and issubclass(hint, Choice):
                out[f"{section}.{name}"] = hint
    return out


def non_default_choices() -> dict[str, str]:
    """A value for every choice key that differs from its default (the last member)."""
    return {key: list(enum)[-1].value for key, enum in choice_keys().items()}


def test_the_schema_has_the_expected_choice_keys():
    assert set(choice_keys()) == {
        "sampler.batched_eval", "eval.autocast", "reduce.dtype", "reduce.engine",
        "reduce.kernel", "reduce.neighbours_metric", "analysis.wordnet", "slurm.cluster",
        "guards.action",
    }


def test_choices_load_as_enums_and_compare_as_strings(tmp_path):
    config = load_config(linear_config(tmp_path), non_default_choices())
    assert config.reduce.kernel is KernelKind.BOTH
    assert config.reduce.kernel == "both" and config.reduce.kernel in ("dense", "both")
    assert {"both": 1}[config.reduce.kernel] == 1  # hashes as its string
    assert f"{config.eval.autocast}" == str(config.eval.autocast) == "bf16"
    assert config.eval.autocast is Autocast.BF16


@pytest.mark.parametrize("key", sorted(choice_keys()))
def test_a_bad_choice_is_one_line_naming_the_key_and_the_allowed_values(tmp_path, key):
    with pytest.raises(ConfigError) as err:
        load_config(linear_config(tmp_path), {key: "bogus"})
    message = str(err.value)
    allowed = [m.value for m in choice_keys()[key]]
    assert message.startswith(f"{key}: expected ")
    assert all(value in message for value in allowed) and "'bogus'" in message
    assert "\n" not in message


def test_a_section_built_in_code_parses_its_choices_when_validated():
    from losskernel_dist.config import GuardAction, GuardsConfig

    guards = GuardsConfig(action="error")  # type: ignore[arg-type]
    guards.validate()
    assert guards.action is GuardAction.ERROR
    with pytest.raises(ConfigError, match="^guards.action: expected warn or error, got 'stop'$"):
        GuardsConfig(action="stop").validate()  # type: ignore[arg-type]


def test_dumped_config_has_plain_strings_and_the_same_draw_keys(tmp_path):
    choices = non_default_choices()
    config = load_config(linear_config(tmp_path), choices)
    text = dump_config(config)
    data = yaml.safe_load(text)
    for key, value in choices.items():
        section, name = key.split(".")
        assert type(data[section][name]) is str and data[section][name] == value
        assert f"\n  {name}: {value}\n" in text  # a plain YAML scalar, no tag
    assert "!!" not in text
    for section in config.to_dict().values():  # what the store's attrs receive
        if isinstance(section, dict):
            assert not any(isinstance(v, Choice) for v in section.values())
    again = config_from_dict(data)
    assert dump_config(again) == text
    assert draw_keys(again) == draw_keys(config)
    # pinned: the draw keys (and so every checkpoint's key) are those of the string era
    keys = draw_keys(config)
    assert keys["eval.autocast"] == "bf16" and type(keys["eval.autocast"]) is str
    assert keys == {
        "task.target": "losskernel_dist.tasks.linear:build",
        "task.args": {"n": 128, "n_eval": 24}, "sampler.chains": 2, "sampler.draws": 20,
        "sampler.burnin_steps": 10, "sampler.steps_between_draws": 1, "sampler.batch_size": 64,
        "sampler.lr": 1e-3, "sampler.nbeta": 100.0, "sampler.localization": 10.0,
        "sampler.seed": 0, "sampler.noise": True, "eval.autocast": "bf16",
    }


def test_unquoted_on_and_off_are_read_as_strings_only_where_they_are_choices(tmp_path):
    assert load_config(linear_config(tmp_path), ["analysis.wordnet=on"]).analysis.wordnet == "on"
    with pytest.raises(ConfigError, match="^guards.action: expected warn or error, got True$"):
        load_config(linear_config(tmp_path), ["guards.action=on"])
