"""Validated configuration dataclasses shared by the market and the environments.

Every field of a config declares its allowed range (or choices) in its metadata, so that a bad key or
value is rejected when the config is built, with a message naming the key and what is allowed
(HighwayEnv-style ``default_config()`` plus overrides).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Self


def param(default: Any, doc: str, *, lo: float | None = None, hi: float | None = None,
          choices: tuple[Any, ...] | None = None, factory: Any = None) -> Any:
    """A dataclass field with a documented range: ``lo <= value <= hi`` or ``value in choices``."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": choices}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _describe(f: dataclasses.Field[Any]) -> str:
    lo, hi, choices = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("choices")
    if choices is not None:
        return "one of " + ", ".join(repr(c) for c in choices)
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    if lo is not None:
        return f">= {lo}"
    if hi is not None:
        return f"<= {hi}"
    return "any value"


def _integer_field(f: dataclasses.Field[Any]) -> bool:
    """A field annotated ``int`` (or ``tuple[int, ...]``): its values must be integers, not 1.5."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    return kind in ("int", "int | None", "tuple[int, ...]")


def _check_number(owner: str, name: str, value: Any, f: dataclasses.Field[Any]) -> None:
    lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
    if (lo is None and hi is None) or (value is None and f.default is None):  # None: an optional key left off
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{owner}.{name} must be a number {_describe(f)}, got {value!r}")
    if _integer_field(f) and not isinstance(value, int):
        raise ValueError(f"{owner}.{name} must be an integer {_describe(f)}, got {value!r}")
    if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{owner}.{name} must be {_describe(f)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Base class: validates every field against its declared range on construction."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ValueError(f"{owner}.{f.name} must be {_describe(f)}, got {value!r}")
            if isinstance(value, tuple | list):
                for item in value:
                    _check_number(owner, f.name, item, f)
            elif not isinstance(value, Mapping):
                _check_number(owner, f.name, value, f)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; subclasses override and raise ValueError naming the keys."""

    @classmethod
    def from_dict(cls, overrides: Mapping[str, Any] | None = None) -> Self:
        """Build from a mapping of overrides; unknown keys raise ValueError naming them."""
        overrides = dict(overrides or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} key(s): {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
            )
        for name, value in list(overrides.items()):
            if isinstance(value, list):
                overrides[name] = tuple(value)
        return cls(**overrides)

    @classmethod
    def coerce(cls, config: Self | Mapping[str, Any] | None) -> Self:
        """Accept an instance, a dict of overrides or None (the defaults)."""
        if isinstance(config, cls):
            return config
        if config is None or isinstance(config, Mapping):
            return cls.from_dict(config)
        raise ValueError(f"expected a {cls.__name__} or a dict, got {type(config).__name__}")

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied, validated like a new config (ValueError on an unknown key or bad value)."""
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (tuples as lists), e.g. for YAML or JSON; ``from_dict`` reads it back."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def parameter_table(cls) -> list[tuple[str, Any, str, str]]:
        """(name, default, allowed, doc) rows, for README tables and ``--help`` output."""
        rows = []
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            rows.append((f.name, default, _describe(f), f.metadata.get("doc", "")))
        return rows
