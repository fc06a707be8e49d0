"""Collecting every problem of a JSON value against msgspec types, each with its ``$.path``.

msgspec stops at the first error, which is right for speed. When a document is refused, authors
want every problem at once: this walks the raw JSON against the same types (read through
``msgspec.inspect``) and lists them all, in the order they appear.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypeAlias

import msgspec
import msgspec.inspect as mi

from packrun.errors import Problem

__all__ = ["CustomCheck", "collect_problems"]

CustomCheck: TypeAlias = Callable[[type, Any], "str | None"]
"""Checks a value meant for a custom type: a problem message, or ``None`` when it is fine."""


def collect_problems(value: Any, cls: type, custom: CustomCheck) -> list[Problem]:
    """Every problem of ``value`` (decoded JSON) as an instance of ``cls``; empty when it fits."""
    problems: list[Problem] = []
    _walk(value, mi.type_info(cls), "$", problems, custom)
    return problems


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _describe(t: mi.Type) -> str:
    if isinstance(t, mi.StructType):
        return "an object"
    if isinstance(t, mi.ListType | mi.VarTupleType | mi.TupleType):
        return "an array"
    if isinstance(t, mi.DictType):
        return "an object"
    if isinstance(t, mi.StrType):
        return "a string"
    if isinstance(t, mi.BoolType):
        return "a boolean"
    if isinstance(t, mi.IntType):
        return "an integer"
    if isinstance(t, mi.FloatType):
        return "a number"
    if isinstance(t, mi.NoneType):
        return "null"
    if isinstance(t, _TEXT_TYPES):
        return _TEXT_NAMES[type(t)]
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(repr(v) for v in t.values)
    if isinstance(t, mi.UnionType):
        return " or ".join(_describe(x) for x in t.types)
    return "a value"


# Types that JSON carries as text in a given form: a date, a time, a UUID...
_TEXT_NAMES: dict[type, str] = {
    mi.DateTimeType: "a date-time (RFC 3339)",
    mi.DateType: "a date (YYYY-MM-DD)",
    mi.TimeType: "a time (RFC 3339)",
    mi.TimeDeltaType: "a duration (ISO 8601)",
    mi.UUIDType: "a UUID",
}
_TEXT_TYPES = tuple(_TEXT_NAMES)
_TEXT_CLASSES: dict[type, type] = {
    mi.DateTimeType: datetime.datetime,
    mi.DateType: datetime.date,
    mi.TimeType: datetime.time,
    mi.TimeDeltaType: datetime.timedelta,
    mi.UUIDType: uuid.UUID,
}


def _walk(value: Any, t: mi.Type, path: str, problems: list[Problem], custom: CustomCheck) -> None:
    """Collect every structural problem of ``value`` against the msgspec type ``t``."""
    if isinstance(t, mi.AnyType):
        return
    if isinstance(t, mi.CustomType):
        message = custom(t.cls, value)
        if message is not None:
            problems.append(Problem(path, message))
        return
    if isinstance(t, mi.UnionType):
        if value is None and any(isinstance(x, mi.NoneType) for x in t.types):
            return
        others = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if len(others) == 1:
            _walk(value, others[0], path, problems, custom)
            return
        probe: list[Problem] = []
        for option in others:
            probe.clear()
            _walk(value, option, path, probe, custom)
            if not probe:
                return
        problems.append(Problem(path, f"expected {_describe(t)}, got {_type_name(value)}"))
        return
    if isinstance(t, mi.StructType):
        if not isinstance(value, dict):
            problems.append(Problem(path, f"expected an object, got {_type_name(value)}"))
            return
        known = {f.encode_name: f for f in t.fields}
        for key in value:
            if key not in known and t.forbid_unknown_fields:
                expected = ", ".join(sorted(known))
                problems.append(
                    Problem(f"{path}.{key}", f"unknown field {key!r}; expected one of: {expected}")
                )
        for name, field in known.items():
            if name in value:
                _walk(value[name], field.type, f"{path}.{name}", problems, custom)
            elif field.required:
                problems.append(Problem(f"{path}.{name}", "required field is missing"))
        return
    if isinstance(t, mi.ListType | mi.VarTupleType):
        if not isinstance(value, list):
            problems.append(Problem(path, f"expected an array, got {_type_name(value)}"))
            return
        _count(value, t, path, problems)
        for i, item in enumerate(value):
            _walk(item, t.item_type, f"{path}[{i}]", problems, custom)
        return
    if isinstance(t, mi.DictType):
        if not isinstance(value, dict):
            problems.append(Problem(path, f"expected an object, got {_type_name(value)}"))
            return
        _count(value, t, path, problems)
        for key, item in value.items():
            _walk(item, t.value_type, f"{path}.{key}", problems, custom)
        return
    if isinstance(t, mi.LiteralType):
        if value not in t.values or isinstance(value, bool) != any(
            isinstance(v, bool) for v in t.values if v == value
        ):
            problems.append(Problem(path, f"expected {_describe(t)}, got {value!r}"))
        return
    if isinstance(t, mi.StrType):
        if not isinstance(value, str):
            problems.append(Problem(path, f"expected a string, got {_type_name(value)}"))
            return
        try:
            msgspec.convert(value, Annotated[str, _meta_of(t)])
        except msgspec.ValidationError as exc:
            problems.append(Problem(path, f"{_strip_path(exc)}, got {value!r}"))
        return
    if isinstance(t, mi.IntType | mi.FloatType):
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or (isinstance(t, mi.IntType) and not isinstance(value, int)):
            problems.append(Problem(path, f"expected {_describe(t)}, got {_type_name(value)}"))
            return
        target = int if isinstance(t, mi.IntType) else float
        try:
            msgspec.convert(value, Annotated[target, _meta_of(t)])
        except msgspec.ValidationError as exc:
            problems.append(Problem(path, f"{_strip_path(exc)}, got {value!r}"))
        return
    if isinstance(t, _TEXT_TYPES):
        if not isinstance(value, str):
            problems.append(Problem(path, f"expected {_describe(t)}, got {_type_name(value)}"))
            return
        try:
            msgspec.convert(value, _TEXT_CLASSES[type(t)])
        except msgspec.ValidationError:
            problems.append(Problem(path, f"expected {_describe(t)}, got {value!r}"))
        return
    if isinstance(t, mi.BoolType):
        if not isinstance(value, bool):
            problems.append(Problem(path, f"expected a boolean, got {_type_name(value)}"))
        return
    if isinstance(t, mi.NoneType):
        if value is not None:
            problems.append(Problem(path, f"expected null, got {_type_name(value)}"))
        return
    raise TypeError(f"manifest type {t!r} has no structural check")  # pragma: no cover


def _count(value: list[Any] | dict[str, Any], t: Any, path: str, problems: list[Problem]) -> None:
    """The bounds on how many items an array or entries an object holds."""
    low, high = getattr(t, "min_length", None), getattr(t, "max_length", None)
    what = "items" if isinstance(value, list) else "entries"
    if low is not None and len(value) < low:
        problems.append(Problem(path, f"expected at least {low} {what}, got {len(value)}"))
    if high is not None and len(value) > high:
        problems.append(Problem(path, f"expected at most {high} {what}, got {len(value)}"))


def _meta_of(t: mi.Type) -> msgspec.Meta:
    names = ("min_length", "max_length", "pattern", "ge", "gt", "le", "lt", "multiple_of")
    return msgspec.Meta(**{n: getattr(t, n) for n in names if getattr(t, n, None) is not None})


def _strip_path(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    return text.split(" - at `", 1)[0]
