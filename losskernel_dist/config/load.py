"""Reading a config: YAML files, ``--set``/dict overrides, renamed keys, typed sections.

``load_config`` is the one entry point for a user's config (file or dict, with
overrides); ``config_from_dict`` builds a validated Config from plain data (a
run's saved config.yaml, a submitit task's argument); ``section_from_dict``
reads one section of a stored config, with defaults for the keys an older run
lacks. Every value is type-checked (and every choice turned into its enum)
while the dataclasses are built, then the sections validate themselves.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ..errors import ConfigError
from .base import Section, check_type
from .keys import set_dotted
from .schema import Config, GuardsConfig

# Keys that were renamed: the old name (in configs and in runs' saved config.yaml) is
# read as the new one, with a warning.
RENAMED = {"reduce.neighbours_cache_gb": "reduce.cache_gb"}

SectionT = TypeVar("SectionT", bound=Section)


def _renamed_keys(data: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``data`` with renamed keys moved to their new names (an error if both are given)."""
    moved = dict(data)
    for name in list(moved):
        new = RENAMED.get(where + name)
        if new is None:
            continue
        new_name = new.rsplit(".", 1)[-1]
        if new_name in moved:
            raise ConfigError(f"{where}{name}: renamed {new}, and both are given: keep {new}")
        warnings.warn(f"config key {where}{name} is now {new} (it applies to every reduce); "
                      "reading it as that", UserWarning, stacklevel=3)
        moved[new_name] = moved.pop(name)
    return moved


def _build(cls: type, data: Any, prefix: str) -> Any:
    """An instance of dataclass ``cls`` from plain ``data``, every value type-checked."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    where = f"{prefix}." if prefix else ""
    data = _renamed_keys(data, where)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}{unknown[0]}: unknown key (known: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if name not in data:
            if f.default is dataclasses.MISSING and \
                    f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                what = "section" if dataclasses.is_dataclass(hint) else "required key"
                raise ConfigError(f"{key}: missing {what}")
            continue
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, data[name], key)
        else:
            kwargs[name] = check_type(key, data[name], hint)
    return cls(**kwargs)


def section_from_dict(data: Mapping[str, Any] | None, cls: type[SectionT]) -> SectionT:
    """Section ``cls`` (``GuardsConfig``) of a stored config, validated: defaults for the
    keys it lacks, and for all of them when the run was made before the section existed."""
    built = _build(cls, (data or {}).get(cls.section), cls.section)
    built.validate()
    return built


def guards_from_dict(data: Mapping[str, Any] | None) -> GuardsConfig:
    """The guards section of a stored config (defaults for runs made before it existed)."""
    return section_from_dict(data, GuardsConfig)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build and validate a Config from plain data (as loaded from YAML)."""
    config = _build(Config, data, "")
    config.validate()
    return config


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[str] | Mapping[str, Any] | None
) -> dict[str, Any]:
    """Apply overrides to raw config data: ``KEY=VALUE`` strings (dotted key, YAML value,
    as ``--set`` gives them) or a mapping ``{"sampler.lr": 1e-5}`` of Python values."""
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            set_dotted(data, str(key), value)
        return data
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: value {raw!r} is not valid YAML ({exc})") from exc
        set_dotted(data, key, value)
    return data


def load_config(
    source: str | Path | Mapping[str, Any],
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
) -> Config:
    """Read a YAML config file (or take a dict of the same shape), apply overrides, validate.

    ``overrides``: ``{"sampler.lr": 1e-5}`` or ``["sampler.lr=1e-5"]`` (as ``--set``).
    """
    if isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r}: top level must be a mapping")
    return config_from_dict(apply_overrides(data, overrides))


def dump_config(config: Config) -> str:
    """The resolved config as YAML text (plain strings for the choices)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
