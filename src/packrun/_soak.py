"""Soak and update windows: when an update policy may take a version.

An ``auto_patch``/``auto_minor`` policy takes a version only once it is ``min_release_age``
seconds old (counted from the catalog row's ``published_at``), and only inside its update window,
when one is set. Both are set per installation (:meth:`~packrun.Runtime.set_policy`) or per
project (:meth:`~packrun.Runtime.set_project_soak`); an installation's own value wins, field by
field. A version that is still soaking is reported with the time it stops soaking; the runtime
applies its policies again at that time (its refresh loop checks the earliest such time), so
nothing else has to happen for the version to be taken.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from packrun.errors import InvalidArgument

__all__ = ["Soak", "UpdateWindow", "check_age", "parse_age"]

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW: Final = re.compile(
    r"(?:(?P<days>[a-z]{3}(?:-[a-z]{3})?(?:,[a-z]{3}(?:-[a-z]{3})?)*) )?"
    r"(?P<start>\d\d):(?P<start_m>\d\d)-(?P<end>\d\d):(?P<end_m>\d\d)"
)
_WINDOW_RULE: Final = (
    "a window such as 'mon-fri 02:00-06:00', 'sat,sun 00:00-24:00' or '22:00-04:00' "
    "(UTC; days mon..sun, optional; an end at or before the start runs past midnight)"
)
_AGE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_AGE: Final = 366 * 86400.0


def check_age(what: str, value: object) -> float | None:
    """A release age in seconds (``None``: none), from 0 to a year."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= MAX_AGE
    ):
        raise InvalidArgument(what, value, ["None or a number of seconds from 0 to 31,622,400"])
    return float(value)


def parse_age(text: str) -> float:
    """``"3d"``, ``"12h"``, ``"90m"``, ``"3600"`` (seconds) as seconds."""
    match = _AGE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidArgument(
            "min_release_age", text, ["a duration such as 3d, 12h, 90m or 3600 (seconds)"]
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    checked = check_age("min_release_age", seconds)
    assert checked is not None
    return checked


def _days(text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        a, b = DAYS.index(first), DAYS.index(last or first)  # ValueError for an unknown day
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(b + 1)])
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class UpdateWindow:
    """When update policies may move installations: days of the week and a time span in UTC.

    ``str()`` gives the text :meth:`parse` reads:

    >>> str(UpdateWindow.parse("mon-fri 02:00-06:00"))
    'mon-fri 02:00-06:00'
    """

    text: str
    days: frozenset[int]
    """Week days the window opens on (0 is Monday)."""
    start: int
    """Minutes after midnight UTC."""
    end: int
    """Minutes after midnight UTC; at or before ``start``, the window runs past midnight."""

    @classmethod
    def parse(cls, text: str) -> UpdateWindow:
        """A window from its text, such as ``mon-fri 02:00-06:00`` or ``22:00-04:00``."""
        match = _WINDOW.fullmatch(text.strip().lower()) if isinstance(text, str) else None
        if match is None:
            raise InvalidArgument("update window", text, [_WINDOW_RULE])
        try:
            days = _days(match["days"]) if match["days"] else frozenset(range(7))
        except ValueError:
            raise InvalidArgument("update window", text, [_WINDOW_RULE]) from None
        start = int(match["start"]) * 60 + int(match["start_m"])
        end = int(match["end"]) * 60 + int(match["end_m"])
        if (
            start >= 24 * 60
            or end > 24 * 60
            or int(match["start_m"]) > 59
            or int(match["end_m"]) > 59
        ):
            raise InvalidArgument("update window", text, [_WINDOW_RULE])
        return cls(text.strip().lower(), days, start, end)

    def _spans(self, day: datetime) -> tuple[datetime, datetime]:
        opens = day + timedelta(minutes=self.start)
        length = self.end - self.start if self.end > self.start else self.end + 1440 - self.start
        return opens, opens + timedelta(minutes=length)

    def _contains(self, at: datetime) -> bool:
        """Whether ``at`` is inside the window."""
        midnight = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        for back in (0, 1):  # a window opened yesterday may run past midnight
            day = midnight - timedelta(days=back)
            if day.weekday() in self.days:
                opens, closes = self._spans(day)
                if opens <= at < closes:
                    return True
        return False

    def _next_open(self, at: datetime) -> datetime:
        """When the window is next open at or after ``at``."""
        if self._contains(at):
            return at
        midnight = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        for ahead in range(8):
            day = midnight + timedelta(days=ahead)
            opens, _ = self._spans(day)
            if day.weekday() in self.days and opens > at:
                return opens
        raise AssertionError("a window opens every week")  # pragma: no cover

    def __str__(self) -> str:
        return self.text


class _Stored(msgspec.Struct, forbid_unknown_fields=True):
    min_release_age: float | None = None
    window: str | None = None


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(_Stored)


@dataclass(frozen=True, slots=True)
class Soak:
    """How long a version soaks before an update policy takes it, and when policies may move."""

    min_release_age: float | None = None
    """Seconds from a row's ``published_at`` before an auto policy takes it; ``None``: none."""
    window: UpdateWindow | None = None
    """When auto policies may move; ``None``: any time."""

    def _over(self, base: Soak) -> Soak:
        """This soak, with what it leaves unset taken from ``base``."""
        return Soak(
            self.min_release_age if self.min_release_age is not None else base.min_release_age,
            self.window if self.window is not None else base.window,
        )

    @property
    def is_set(self) -> bool:
        """Whether anything is set."""
        return self.min_release_age is not None or self.window is not None

    def _encode(self) -> str:
        """As stored."""
        window = None if self.window is None else str(self.window)
        return _ENCODER.encode(_Stored(self.min_release_age, window)).decode()

    @classmethod
    def _decode(cls, text: str) -> Soak:
        """From its stored form."""
        stored = _DECODER.decode(text)
        window = None if stored.window is None else UpdateWindow.parse(stored.window)
        return cls(stored.min_release_age, window)

    def _soaks_until(self, published_at: datetime) -> datetime | None:
        """When a row published at ``published_at`` stops soaking (``None`` without an age)."""
        if self.min_release_age is None:
            return None
        return published_at + timedelta(seconds=self.min_release_age)

    def describe(self) -> str:
        """``min_release_age 1d 0h, window mon-fri 02:00-06:00``."""
        parts = []
        if self.min_release_age is not None:
            parts.append(f"min_release_age {_age_text(self.min_release_age)}")
        if self.window is not None:
            parts.append(f"update window {self.window} (UTC)")
        return ", ".join(parts) or "none"


def _age_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
