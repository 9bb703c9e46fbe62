"""Dotted keys of the config: reading and setting them, defaults, the draw-changing ones.

A key is ``section.field`` (``"sampler.lr"``), as ``--set`` and error messages
spell it. ``draw_keys`` and ``differing_draw_keys`` are how a resume decides
whether a stored run and a new config would make the same draws.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

import yaml

from ..errors import ConfigError
from .base import Choice
from .schema import DRAW_KEYS, Config


def get_dotted(data: Mapping[str, Any], key: str) -> Any:
    """``data[a][b][c]`` for ``key`` 'a.b.c'; None when a part is missing."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``key`` 'a.b.c', making sections as needed."""
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def section_fields(section: str) -> tuple[str, ...]:
    """The key names of one config section (``"sampler"`` -> chains, draws, ...)."""
    cls = typing.get_type_hints(Config)[section]
    return tuple(f.name for f in dataclasses.fields(cls))


def config_default(key: str) -> Any:
    """The default of ``key`` (``"reduce.block_size"``) as plain data (a choice as its
    string), for the library functions whose defaults must equal the config's."""
    section, _, name = key.partition(".")
    hints = typing.get_type_hints(Config)
    if section not in hints or not dataclasses.is_dataclass(hints[section]):
        raise KeyError(f"{key}: not a key of a config section")
    fields = {f.name: f for f in dataclasses.fields(hints[section])}
    if name not in fields:
        raise KeyError(f"{key}: not a key of a config section")
    f = fields[name]
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        raise KeyError(f"{key}: has no default")
    return str(value.value) if isinstance(value, Choice) else value


def draw_keys(config: Config | Mapping[str, Any]) -> dict[str, Any]:
    """The values of the keys that change the draws, by dotted name."""
    data = config.to_dict() if isinstance(config, Config) else config
    return {key: get_dotted(data, key) for key in DRAW_KEYS}


def differing_draw_keys(stored: Mapping[str, Any], current: Config) -> list[str]:
    """Names of the draw-changing keys whose values differ between two configs."""
    old, new = draw_keys(stored), draw_keys(current)
    return [k for k in DRAW_KEYS if _normalise(old[k]) != _normalise(new[k])]


def _normalise(value: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(value))
