"""Building blocks of the config schema: described fields, choice enums, value checks.

A section is a dataclass whose fields carry their default and help text
(``described``). A field typed with a ``Choice`` enum takes one of a fixed list
of strings: ``Choice.parse`` turns the string into the enum member once, at
load, or raises a one-line ConfigError naming the key and the allowed values.
A Choice is also a ``str`` (it compares and hashes as its value), so code
downstream keeps comparing it with plain strings (``kernel == "dense"``), and
``Section.to_dict`` hands plain strings back, so that what is written (the
run directory's config.yaml, the store's attrs, the draw keys) is unchanged.
Every number of a float field is finite: ``.inf`` and ``.nan`` pass a bound
check such as ``lr > 0`` (or fail it misleadingly) and would only show up as
diverged chains, so they are refused at load, naming the key.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from typing import Any, ClassVar, TypeVar

from ..errors import ConfigError

ChoiceT = TypeVar("ChoiceT", bound="Choice")


def described(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A dataclass field with its default (or ``default_factory=``) and its help text."""
    if default is not dataclasses.MISSING:
        kw["default"] = default
    return dataclasses.field(metadata={"help": text}, **kw)


class Choice(str, enum.Enum):
    """A config value from a fixed list of strings; equal to (and formatted as) its value."""

    def __str__(self) -> str:
        return str(self.value)

    __format__ = str.__format__

    @classmethod
    def allowed(cls) -> str:
        """The allowed values as a message lists them: ``"auto, vmap or chains"``."""
        values = [str(m.value) for m in cls]
        return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"

    @classmethod
    def parse(cls: type[ChoiceT], value: Any, key: str) -> ChoiceT:
        """The member ``value`` names; a ConfigError naming ``key`` when it names none."""
        if isinstance(value, bool) and "on" in cls._value2member_map_:
            value = "on" if value else "off"  # YAML 1.1 reads an unquoted on/off as a bool
        try:
            return cls(value)
        except (ValueError, TypeError):
            raise ConfigError(f"{key}: expected {cls.allowed()}, got {value!r}") from None


def plain_dict(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """``dict_factory`` of ``dataclasses.asdict``: Choice members become plain strings."""
    return {k: str(v.value) if isinstance(v, Choice) else v for k, v in items}


class Section:
    """Base of the config sections (dataclasses): choice parsing, checks, plain export.

    ``section`` is the section's name in the config (``"sampler"``); ``check`` is the
    section's own validation, run by ``validate`` after every Choice field holds
    its enum member (a section built in code may hold plain strings).
    """

    section: ClassVar[str] = ""

    def validate(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            hint, key = hints[f.name], f"{self.section}.{f.name}"
            if isinstance(hint, type) and issubclass(hint, Choice):
                setattr(self, f.name, hint.parse(getattr(self, f.name), key))
            elif hint is float and isinstance(getattr(self, f.name), (int, float)):
                finite(key, getattr(self, f.name))  # also for a section built in code
        self.check()

    def check(self) -> None:
        """The section's checks beyond the choice fields; raise ConfigError naming the key."""

    def to_dict(self) -> dict[str, Any]:
        """The section as plain data (what YAML and the store hold)."""
        return dataclasses.asdict(self, dict_factory=plain_dict)  # type: ignore[call-overload]


def positive_int(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{key}: must be >= 1, got {value}")


def nonneg_int(key: str, value: int) -> None:
    if value < 0:
        raise ConfigError(f"{key}: must be >= 0, got {value}")


def check_device(key: str, value: str) -> None:
    """A torch device name as the config takes it: auto, cpu, cuda or cuda:K."""
    index = value.removeprefix("cuda:") if value.startswith("cuda:") else None
    if not (value in ("auto", "cpu", "cuda") or (index is not None and index.isdigit())):
        raise ConfigError(f"{key}: expected auto, cpu, cuda or cuda:K, got {value!r}")


def finite(key: str, value: float) -> float:
    """``value`` when it is a finite number; a ConfigError naming ``key`` for inf and nan,
    which pass every ``>`` or ``>=`` bound check (or fail it with a misleading message)."""
    if not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value}")
    return value


def check_type(key: str, value: Any, annotation: Any) -> Any:
    """``value`` checked against a field's annotation (ints are accepted for floats,
    a Choice's string becomes its member); a ConfigError naming ``key`` otherwise."""
    if isinstance(annotation, type) and issubclass(annotation, Choice):
        return annotation.parse(value, key)
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return finite(key, float(value))
        except OverflowError:  # an int beyond float's range
            raise ConfigError(f"{key}: must be a finite number, got {value}") from None
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if annotation is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    return value
