"""Checks of the arguments of public calls, shared by every module that takes them.

Each check returns quietly or raises :class:`~packrun.errors.InvalidArgument` naming the argument,
showing the value (cut short when long) and saying what was expected. They are for the entries of
public calls, never for the hot path: :meth:`Runtime.resolve` checks its argument only after a
failed lookup.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Final

from packrun.errors import InvalidArgument

__all__ = [
    "check_choice",
    "check_flag",
    "check_generations",
    "check_id",
    "check_label",
    "check_mapping",
    "check_path",
    "check_seconds",
    "check_whole",
]

ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}")
_ID_RULE: Final = (
    "1 to 200 characters: letters, digits and . _ : @ / -, starting with a letter or digit"
)
MAX_PATH: Final = 4096


def check_id(what: str, value: object) -> None:
    """An id: an installation, a pack, a run, a workflow."""
    if not isinstance(value, str) or not ID.fullmatch(value):
        raise InvalidArgument(what, value, [_ID_RULE])


def check_flag(what: str, value: object) -> None:
    """``True`` or ``False`` (not a truthy value: ``"no"`` is true in Python)."""
    if not isinstance(value, bool):
        raise InvalidArgument(what, value, ["True or False"])


def check_choice(what: str, value: object, choices: Collection[str]) -> None:
    """One of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgument(what, value, list(choices))


def check_seconds(what: str, value: object, *, optional: bool = False, zero: bool = True) -> None:
    """A finite number of seconds, 0 or more (above 0 unless ``zero``); ``None`` if ``optional``.

    NaN, infinities and negative numbers are refused: a NaN never compares, an infinite lease
    never expires, and a negative wait means nothing.
    """
    if value is None and optional:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        rule = "a finite number of seconds " + ("of 0 or more" if zero else "above 0")
        raise InvalidArgument(what, value, [f"None (no limit) or {rule}" if optional else rule])


def check_whole(what: str, value: object, low: int, high: int) -> None:
    """A whole number from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(what, value, [f"a whole number from {low:,} to {high:,}"])


def check_label(what: str, value: object, *, optional: bool = False) -> None:
    """A short text shown in messages (a source name): 1 to 4,096 printable characters."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not 1 <= len(value) <= 4096 or not value.isprintable():
        raise InvalidArgument(what, value, ["1 to 4,096 printable characters"])


def check_path(what: str, value: object, *, data: tuple[type, ...] = ()) -> None:
    """A file or folder path (``str`` or ``os.PathLike``), or a value of one of the ``data`` types.

    A path must be non-empty, without NUL bytes and at most 4,096 characters (what the operating
    system would refuse with a less helpful error)."""
    if data and isinstance(value, data):
        return
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    kinds = "a path (str or pathlib.Path)"
    if data:
        kinds += " or " + " or ".join(t.__name__ for t in data)
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > MAX_PATH:
        raise InvalidArgument(what, value, [f"{kinds}; a path is 1 to 4,096 characters, no NUL"])
    if any(len(part) > 255 for part in Path(value).parts):
        raise InvalidArgument(what, value, [f"{kinds}; no part of a path over 255 characters"])


def check_generations(what: str, value: object) -> None:
    """A set (or list) of contract generations: whole numbers."""
    if not isinstance(value, set | frozenset | list | tuple) or not all(
        type(g) is int for g in value
    ):
        raise InvalidArgument(what, value, ["a set of contract generations, such as {1, 2}"])


def check_mapping(what: str, value: object, *, optional: bool = False) -> None:
    """A mapping (a ``dict``), or ``None`` if ``optional``."""
    if value is None and optional:
        return
    if not isinstance(value, Mapping):
        raise InvalidArgument(what, value, ["a mapping such as {'limit': 10}"])
