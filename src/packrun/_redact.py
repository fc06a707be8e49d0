"""Redaction: a run's credentials removed from whatever a tool may echo them into.

A tool has its run's credentials in hand, so it can put one into an exception (its message, its
arguments, its attributes, its notes, an exception it chains), into a log line (the message, its
arguments, ``extra=`` fields, an ``exc_info`` traceback), in any of the forms a credential travels
in: as is, URL-encoded, inside an ``Authorization`` header (``Basic <base64>``) or as bytes. A
:class:`Redactor` knows those forms for one :class:`~packrun.Auth` and replaces each with
``<redacted>``.

What in-process code does outside packrun is out of reach: it can write to the root logger, to
stdout, to a file or to the network. :func:`watch_logger` redacts the records logged directly on a
pack's own logger (``packrun.tools.<pack>``) with the credentials of that pack's runs in flight.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, quote_plus

from packrun._auth import Auth

__all__ = ["REDACTED", "RedactingLogger", "Redactor"]

REDACTED: Final = "<redacted>"
_MIN_LENGTH: Final = 3
"""Shorter values are never redacted: they would blank out ordinary text."""
_ANYWHERE: Final = 8
"""Values at least this long are removed wherever they appear, even inside a longer word (an
encoded URL, a base64 blob); shorter ones (a user name like ``ops``) only as whole words."""
_DEPTH: Final = 8
"""How deep containers (argument tuples, ``extra`` dicts) are searched."""


def _forms(auth: Auth) -> list[str]:
    """Every form a credential of ``auth`` may be echoed in, longest first."""
    values = [v for v in auth.credentials.values() if v]
    for header in auth.headers().values():
        values.append(header)
        values.extend(part for part in header.split(" ", 1)[1:] if part)  # "Basic <b64>"
    forms = set(values)
    for value in values:
        forms.update((quote(value, safe=""), quote(value), quote_plus(value)))
    return sorted((f for f in forms if len(f) >= _MIN_LENGTH), key=len, reverse=True)


def _pattern(forms: list[str]) -> str:
    parts = []
    for form in forms:
        escaped = re.escape(form)
        parts.append(
            escaped if len(form) >= _ANYWHERE else rf"(?<![A-Za-z0-9]){escaped}(?![A-Za-z0-9])"
        )
    return "|".join(parts)


class Redactor:
    """Removes the credentials of one :class:`~packrun.Auth` from text, bytes, values and
    exceptions. The forms are worked out on first use, so a run that never needs them pays
    nothing."""

    __slots__ = ("_auth", "_bytes", "_text")

    def __init__(self, auth: Auth) -> None:
        self._auth = auth
        self._text: re.Pattern[str] | None = None
        self._bytes: re.Pattern[bytes] | None = None

    def _compile(self) -> tuple[re.Pattern[str] | None, re.Pattern[bytes] | None]:
        if self._text is None:
            forms = _forms(self._auth)
            if not forms:
                return None, None
            pattern = _pattern(forms)
            self._text = re.compile(pattern)
            self._bytes = re.compile(pattern.encode("utf-8", "surrogateescape"))
        return self._text, self._bytes

    def text(self, value: str) -> str:
        """``value`` with every credential replaced by ``<redacted>``."""
        pattern = self._compile()[0]
        return value if pattern is None else pattern.sub(REDACTED, value)

    def holds(self, value: str) -> bool:
        """Whether ``value`` shows a credential."""
        pattern = self._compile()[0]
        return pattern is not None and pattern.search(value) is not None

    def value(self, value: Any, depth: int = 0) -> Any:
        """``value`` with credentials removed: strings and bytes in it replaced, containers
        rebuilt; any other object showing a credential in its ``repr`` becomes that ``repr``,
        redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes | bytearray):
            pattern = self._compile()[1]
            return value if pattern is None else type(value)(pattern.sub(REDACTED.encode(), value))
        if value is None or isinstance(value, bool | int | float) or depth > _DEPTH:
            return value
        try:
            if isinstance(value, tuple | list | set | frozenset):
                items = [self.value(v, depth + 1) for v in value]
                return items if isinstance(value, list) else type(value)(items)
            if isinstance(value, Mapping):
                return {
                    self.value(k, depth + 1): self.value(v, depth + 1) for k, v in value.items()
                }
        except Exception:  # a container that cannot be rebuilt (a named tuple): shown as text
            return self.text(_repr(value))
        shown = _repr(value)
        return self.text(shown) if self.holds(shown) else value

    def exception(self, exc: BaseException) -> bool:
        """Redact ``exc`` and every exception chained to it, in place: arguments, attributes,
        notes, ``OSError`` file names. ``True`` when nothing of them shows a credential any more
        (``False``: a ``__str__`` or ``__repr__`` of its own still does; do not show it)."""
        seen: set[int] = set()
        todo = [exc]
        while todo:
            current = todo.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            self._exception_fields(current)
            todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
            todo.extend(getattr(current, "exceptions", ()))  # an exception group's members
        try:
            shown = "".join(traceback.format_exception(exc))
            shown += "".join(_repr(e) for e in _chain(exc))
        except Exception:  # a __str__ that raises: nothing can be said of what it shows
            return False
        return not self.holds(shown)

    def _exception_fields(self, exc: BaseException) -> None:
        # What cannot be set (a read-only attribute) is left; the final check decides.
        with contextlib.suppress(Exception):
            exc.args = tuple(self.value(a) for a in exc.args)
        for name, value in list(getattr(exc, "__dict__", {}).items()):
            with contextlib.suppress(Exception):
                setattr(exc, name, self.value(value))
        for name in ("filename", "filename2", "strerror", "msg", "text", "object", "reason"):
            if isinstance(value := getattr(exc, name, None), str | bytes):
                with contextlib.suppress(Exception):
                    setattr(exc, name, self.value(value))


def _repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop()
        if any(current is e for e in out):
            continue
        out.append(current)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        todo.extend(getattr(current, "exceptions", ()))
    return out


class _LiveCredentials(logging.Filter):
    """Redacts records logged directly on a pack's logger with the credentials of that pack's
    runs in flight (records made by a :class:`RedactingLogger` are redacted already)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._by_logger: dict[str, dict[Redactor, int]] = {}

    def add(self, name: str, redactor: Redactor) -> None:
        with self._lock:
            live = self._by_logger.setdefault(name, {})
            live[redactor] = live.get(redactor, 0) + 1

    def remove(self, name: str, redactor: Redactor) -> None:
        with self._lock:
            live = self._by_logger.get(name, {})
            if live.get(redactor, 0) > 1:
                live[redactor] -= 1
            else:
                live.pop(redactor, None)
                if not live:
                    self._by_logger.pop(name, None)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_packrun_redacted", False):
            return True
        with self._lock:
            redactors = list(self._by_logger.get(record.name, ()))
        if redactors:
            _redact_record(record, redactors)
        return True


_LIVE: Final = _LiveCredentials()


_STANDARD_FIELDS: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _redact_record(record: logging.LogRecord, redactors: list[Redactor]) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a format that does not fit its arguments: keep both, as text
        message = f"{record.msg!s} {record.args!r}"
    exc_text = record.exc_text
    if record.exc_info and record.exc_info[1] is not None:
        exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    standard = _STANDARD_FIELDS
    for redactor in redactors:
        message = redactor.text(message)
        exc_text = None if exc_text is None else redactor.text(exc_text)
        if record.stack_info:
            record.stack_info = redactor.text(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in standard:
                record.__dict__[key] = redactor.value(value)
    record.msg, record.args = message, None
    record.exc_info, record.exc_text = None, exc_text
    record._packrun_redacted = True


def watch_logger(logger: logging.Logger) -> None:
    """Redact what is logged directly on ``logger`` with the credentials of its runs in flight."""
    if _LIVE not in logger.filters:
        logger.addFilter(_LIVE)


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """A tool's logger: every record it makes, message, arguments, ``extra`` fields, the
    ``exc_info`` traceback (kept as text) and the stack, has the run's credentials removed before
    it is handed to the ``packrun.tools.<pack>`` logger and its handlers."""

    def __init__(self, logger: logging.Logger, auth: Auth) -> None:
        super().__init__(logger, {})
        self._redactor = Redactor(auth)
        watch_logger(logger)
        _LIVE.add(logger.name, self._redactor)
        self._open = True

    def close(self) -> None:
        """The run ended: its credentials no longer redact records of others."""
        if self._open:
            self._open = False
            _LIVE.remove(self.logger.name, self._redactor)

    def log(  # type: ignore[override]  # the keywords of Logger.log, spelled out
        self,
        level: int,
        msg: object,
        *args: object,
        exc_info: Any = None,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        logger = self.logger
        if not logger.isEnabledFor(level):
            return
        info: tuple[type[BaseException], BaseException, TracebackType | None] | None = None
        if isinstance(exc_info, BaseException):
            info = (type(exc_info), exc_info, exc_info.__traceback__)
        elif isinstance(exc_info, tuple):
            info = exc_info
        elif exc_info:
            current = sys.exc_info()
            if current[0] is not None and current[1] is not None:
                info = (current[0], current[1], current[2])
        fn, lno, func, sinfo = logger.findCaller(stack_info, stacklevel + 1)
        record = logger.makeRecord(logger.name, level, fn, lno, msg, args, info, func, extra, sinfo)
        _redact_record(record, [self._redactor])
        logger.handle(record)
