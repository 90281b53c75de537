"""Declared, checked fields of the run's frozen dataclasses (`lkswarm.config`).

Each field carries a `Rule` in its metadata: its kind (`as_int`, `as_float`, `as_bool`, `as_str`,
`as_choice` of a few words, or `as_any`), bounds, a conversion run before the kind's check (a
duration like ``30s``) and a check run after it. `validate_fields` applies the rules in declaration
order, from ``__post_init__``, and writes the converted values back; the first broken rule is a
`FieldError` naming the key, which the CLI and scenario files show as ``key: message``.

Why not pydantic, which did this before: importing it and building the two models cost about 80 ms of
CPU at every start (``import lkswarm.config``: 132 ms, now 53), which every ``--workers`` process and
Ray actor pays again, for a few dozen scalar fields (bench/bench_startup.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from lkswarm.errors import ConfigError

Path = tuple[str | int, ...]
T = TypeVar("T")
# Converts a field's value to its kind, or raises ValueError with the message for the user.
Kind = Callable[["Rule", Any], Any]

# Spellings of a flag accepted from text (scenario files use TOML booleans; these come from flags or JSON).
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class FieldError(ConfigError):
    """A value that breaks its field's rule: ``loc`` is the key (and index, inside a list), ``msg`` why."""

    def __init__(self, loc: Path, msg: str) -> None:
        self.loc = loc
        self.msg = msg
        where = ".".join(str(part) for part in loc)
        super().__init__(f"{where}: {msg}" if where else msg)

    def under(self, prefix: Path) -> FieldError:
        """The same error, located inside ``prefix`` (a nested record's key in its parent)."""
        return FieldError(prefix + self.loc, self.msg)


@dataclass(frozen=True, slots=True)
class Rule:
    """What one field accepts. ``kind`` converts the value or refuses it: one of the ``as_*`` functions
    below (`as_choice` takes one of ``choices``; with `as_any`, ``before`` does all the work);
    ``optional`` lets None through unchecked."""

    kind: Kind
    optional: bool = False
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    before: Callable[[Any], Any] | None = None
    check: Callable[[Any], Any] | None = None

    def apply(self, value: Any) -> Any:
        """The field's value from ``value``, converted; ValueError (its message for the user) if it breaks the rule."""
        if value is None and self.optional:
            return None
        if self.before is not None:
            value = self.before(value)
        value = self.kind(self, value)
        self._bounds(value)
        if self.check is not None:
            self.check(value)
        return value

    def _bounds(self, value: Any) -> None:
        if self.gt is not None and not value > self.gt:
            raise ValueError(f"must be greater than {self.gt:g}, not {value!r}")
        if self.ge is not None and not value >= self.ge:
            raise ValueError(f"must be at least {self.ge:g}, not {value!r}")
        if self.le is not None and not value <= self.le:
            raise ValueError(f"must be at most {self.le:g}, not {value!r}")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(f"must be at most {self.max_length} characters, not {len(value)}")


def as_int(_rule: Rule, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    raise ValueError(f"must be a whole number, not {value!r}")


def as_float(_rule: Rule, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {value!r}")
    try:
        number = float(value) if isinstance(value, int | float | str) else math.nan
    except ValueError:
        number = math.nan
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"must be a finite number, not {value!r}")
    return number


def as_bool(_rule: Rule, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"must be true or false, not {value!r}")


def as_str(_rule: Rule, value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"must be text, not {value!r}")


def as_choice(rule: Rule, value: Any) -> str:
    if isinstance(value, str) and value in rule.choices:
        return value
    words = " or ".join(repr(choice) for choice in rule.choices)
    raise ValueError(f"must be {words}, not {value!r}")


def as_any(_rule: Rule, value: Any) -> Any:
    return value


def declare(default: Any, kind: Kind, **rule: Any) -> Any:
    """A dataclass field of ``kind`` with ``default`` (``dataclasses.MISSING``: required) and the rest of its
    `Rule` (keywords as `Rule`'s).

    Typed ``Any`` so that ``rooms: int = declare(1, as_int, ge=1)`` type-checks, as pydantic's ``Field`` does.
    """
    return dataclasses.field(default=default, metadata={"rule": Rule(kind, **rule)})


def validate_fields(record: Any) -> None:
    """Applies every field's `Rule` to a frozen dataclass instance, in order, writing converted values back."""
    for field in dataclasses.fields(record):
        rule = field.metadata.get("rule")
        if rule is None:
            continue
        value = getattr(record, field.name)
        try:
            converted = rule.apply(value)
        except FieldError as exc:
            raise exc.under((field.name,)) from None
        except ValueError as exc:
            raise FieldError((field.name,), str(exc)) from None
        if converted is not value:
            object.__setattr__(record, field.name, converted)


def from_mapping(cls: type[T], data: Mapping[str, Any]) -> T:
    """``cls`` built from a scenario file's table, flags or a job's JSON: a key that is no field of it is
    refused (a typo must not pass unnoticed), as is a required field that is absent, each as a `FieldError`."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = {field.name for field in fields}
    for key in data:
        if key not in names:
            raise FieldError((key,), "not a known setting")
    for field in fields:
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if required and field.name not in data:
            raise FieldError((field.name,), "missing")
    return cls(**data)


def json_fields(record: Any) -> dict[str, Any]:
    """A dataclass instance as JSON-ready data: tuples become lists, nested records dicts."""
    return {field.name: _json_value(getattr(record, field.name)) for field in dataclasses.fields(record)}


def _json_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_fields(value)
    if isinstance(value, tuple | list):
        return [_json_value(item) for item in value]
    return value
