"""Config loading: every bad value is a one-line error that names its key."""

from __future__ import annotations

import pytest
import yaml

from losskernel_dist.config import (
    ConfigError,
    config_from_dict,
    differing_draw_keys,
    dump_config,
    load_config,
)
from losskernel_dist.sampler.schedule import StepSchedule

from ..conftest import linear_config


def test_valid_config_roundtrips(tmp_path):
    data = linear_config(tmp_path / "run")
    config = config_from_dict(data)
    again = config_from_dict(yaml.safe_load(dump_config(config)))
    assert again == config
    assert StepSchedule.of(config.sampler).total_steps == 10 + 20 * 1


@pytest.mark.parametrize(
    "section,key,value,needle",
    [
        ("sampler", "lr", 0.0, "sampler.lr"),
        ("sampler", "lr", -1e-4, "sampler.lr"),
        ("sampler", "chains", 0, "sampler.chains"),
        ("sampler", "draws", 1, "sampler.draws"),
        ("sampler", "nbeta", 0, "sampler.nbeta"),
        ("sampler", "localization", -1.0, "sampler.localization"),
        ("sampler", "batch_size", 0, "sampler.batch_size"),
        ("sampler", "chains", 2.5, "sampler.chains"),
        ("sampler", "lr", "fast", "sampler.lr"),
        ("sampler", "noise", "yes", "sampler.noise"),
        ("sampler", "device", "tpu", "sampler.device"),
        ("eval", "batch_size", -3, "eval.batch_size"),
        ("reduce", "dtype", "float16", "reduce.dtype"),
        ("sampler", "bogus", 1, "sampler.bogus"),
    ],
)
def test_bad_values_name_their_key(tmp_path, section, key, value, needle):
    data = linear_config(tmp_path / "run")
    data[section][key] = value
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert str(err.value).startswith(needle)
    assert "\n" not in str(err.value)


def test_unknown_section_and_missing_task(tmp_path):
    data = linear_config(tmp_path / "run")
    data["smapler"] = {}
    with pytest.raises(ConfigError, match="^smapler: unknown key"):
        config_from_dict(data)
    with pytest.raises(ConfigError, match="^task: missing"):
        config_from_dict({"output": "x"})
    with pytest.raises(ConfigError, match="^task.target"):
        config_from_dict({"task": {"target": "no_colon"}})


def test_overrides_are_dotted_yaml_values(tmp_path, write_config):
    path = write_config(linear_config(tmp_path / "run"))
    config = load_config(path, ["sampler.lr=1e-5", "sampler.noise=false", "task.args={n: 64}"])
    assert config.sampler.lr == 1e-5
    assert config.sampler.noise is False
    assert config.task.args == {"n": 64}
    with pytest.raises(ConfigError, match="^--set"):
        load_config(path, ["sampler.lr"])
    with pytest.raises(ConfigError, match="^sampler.lr"):
        load_config(path, ["sampler.lr=-1"])


@pytest.mark.parametrize(("written", "expected"), [("on", "on"), ("off", "off"), ("'on'", "on"),
                                                  ("imagenet1k", "imagenet1k")])
def test_unquoted_wordnet_on_off_is_not_read_as_a_boolean(tmp_path, write_config, written,
                                                           expected):
    path = write_config(linear_config(tmp_path / "run"))
    assert load_config(path, [f"analysis.wordnet={written}"]).analysis.wordnet == expected


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_draw_changing_keys_are_detected(tmp_path):
    a = config_from_dict(linear_config(tmp_path / "run"))
    data = linear_config(tmp_path / "run", lr=2e-3)
    data["eval"]["batch_size"] = 99  # does not change the draws
    assert differing_draw_keys(a.to_dict(), config_from_dict(data)) == ["sampler.lr"]
