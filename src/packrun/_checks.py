"""Checks at run time: a call's input and a tool's output against what the manifest declares.

Each tool's declared ``input`` (with its ``filters``) and ``output`` are compiled once per bundle
digest into ``msgspec`` types (a ``Struct`` per object, ``Annotated`` constraints, ``Literal``
enums), so checking a value is one ``msgspec.convert`` call. Only when that call refuses the value
are the problems collected, all of them, each with its ``$.path`` (:mod:`packrun._problems`).

What ``msgspec`` has no type for -- formats such as ``email``, enums of numbers or booleans,
unions -- is a small class of our own that ``msgspec`` hands to a decoding hook. The value a tool
receives is always the caller's own, never a converted copy: checking does not change it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import json
import re
import urllib.parse
import uuid
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import GenericAlias
from typing import Annotated, Any, ClassVar, Final, Literal, TypeAlias

import msgspec

from packrun._catalog import Channel
from packrun._manifest import Field, Manifest
from packrun._problems import collect_problems
from packrun.errors import InvalidInput, InvalidOutput, Problem, SandboxError, ToolTimeout

__all__ = [
    "CHECK_MODES",
    "CallChecks",
    "CheckMode",
    "Contracts",
    "HealthCounters",
    "ToolContract",
    "VersionHealth",
    "compile_contracts",
]

CheckMode: TypeAlias = Literal["off", "warn", "enforce"]
"""What a runtime does with a call that breaks the declared contract: nothing (``off``), count it
and log a warning (``warn``), or count it and refuse the call (``enforce``)."""
CHECK_MODES: Final[tuple[CheckMode, ...]] = ("off", "warn", "enforce")
_convert: Final = msgspec.convert


class _Custom:
    """A value ``msgspec`` has no type for: ``check`` returns a problem message or ``None``.

    ``msgspec`` wants the decoding hook to return an instance of the class: ``token`` is one (the
    converted copy is thrown away; the tool gets the caller's value)."""

    __slots__ = ()
    check: ClassVar[Callable[[Any], str | None]]
    token: ClassVar[_Custom]


def _dec_hook(cls: type, value: Any) -> Any:
    if isinstance(cls, type) and issubclass(cls, _Custom):
        problem = cls.check(value)
        if problem is not None:
            raise ValueError(problem)  # msgspec reports it with the value's path
        return cls.token
    raise NotImplementedError(f"no check for {cls!r}")  # pragma: no cover


def _custom_problem(cls: type, value: Any) -> str | None:
    if isinstance(cls, type) and issubclass(cls, _Custom):
        return cls.check(value)
    return f"no check for {cls!r}"  # pragma: no cover


def _custom(name: str, check: Callable[[Any], str | None]) -> type[_Custom]:
    cls: type[_Custom] = type(name, (_Custom,), {"__slots__": (), "check": staticmethod(check)})
    cls.token = cls()
    return cls


# --- formats ------------------------------------------------------------------------------------

_HOSTNAME: Final = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_EMAIL: Final = re.compile(r"^[^@\s]+@[^@\s]+$")


def _is_email(text: str) -> bool:
    if not _EMAIL.match(text):
        return False
    return bool(_HOSTNAME.match(text.rsplit("@", 1)[1]))


def _is_uri(text: str) -> bool:
    parts = urllib.parse.urlsplit(text)
    return bool(parts.scheme) and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", parts.scheme) is not None


def _is_ip(version: int) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        try:
            return ipaddress.ip_address(text).version == version
        except ValueError:
            return False

    return check


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


_TEXT_FORMATS: Final[Mapping[str, tuple[str, Callable[[str], bool]]]] = {
    "email": ("an email address", _is_email),
    "uri": ("a URI with a scheme", _is_uri),
    "hostname": ("a host name", lambda text: bool(_HOSTNAME.match(text))),
    "ipv4": ("an IPv4 address", _is_ip(4)),
    "ipv6": ("an IPv6 address", _is_ip(6)),
    "byte": ("base64 text", _is_base64),
}


def _native_formats() -> Mapping[str, object]:
    return {
        "date-time": datetime.datetime,
        "date": datetime.date,
        "time": datetime.time,
        "duration": datetime.timedelta,
        "uuid": uuid.UUID,
    }


# --- compiling fields into msgspec types --------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    # JSON equality: true is no number, 1 and 1.0 are one number.
    return isinstance(a, bool) == isinstance(b, bool) and a == b


class _Compiler:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.count = 0
        self.customs = 0  # checks of our own compiled: msgspec needs the decoding hook then
        self.native = _native_formats()

    def name(self, what: str) -> str:
        self.count += 1
        if what in ("text", "enum", "union"):
            self.customs += 1
        return f"{self.prefix}_{what}_{self.count}"

    def struct(self, fields: Sequence[Field]) -> type:
        """An object with these fields; keys it does not declare are let through."""
        spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        for i, f in enumerate(fields):
            attr = f"f{i}"
            rename[attr] = f.name
            t = self.field(f)
            spec.append((attr, t) if f.required else (attr, t, None))
        return msgspec.defstruct(self.name("object"), spec, kw_only=True, rename=rename)

    def field(self, f: Field) -> Any:
        t = self.base(f)
        return t | None if f.nullable else t

    def base(self, f: Field) -> Any:
        if f.one_of is not None:
            return self.union(f)  # the variants say what the value may be, whatever the type
        if f.enum is not None and f.type != "union":
            return self.enum(f)
        if f.type == "string":
            return self.string(f)
        if f.type in ("integer", "number"):
            meta = _meta(ge=f.minimum, le=f.maximum, gt=f.exclusive_minimum, lt=f.exclusive_maximum)
            kind = int if f.type == "integer" else float
            return Annotated[kind, meta] if meta is not None else kind
        if f.type == "boolean":
            return bool
        if f.type == "object":
            return self.struct(f.fields) if f.fields else dict[str, Any]
        if f.type in ("array", "map"):
            meta = _meta(min_length=f.min_items, max_length=f.max_items)
            part = f.items if f.type == "array" else f.values
            element = Any if part is None else self.field(part)
            args = (element,) if f.type == "array" else (str, element)
            inner: Any = GenericAlias(list if f.type == "array" else dict, args)
            return Annotated[inner, meta] if meta is not None else inner
        return self.union(f)

    def string(self, f: Field) -> Any:
        plain = f.min_length is None and f.max_length is None and f.pattern is None
        if f.format is not None and f.format in self.native and plain:
            return self.native[f.format]
        meta = _meta(min_length=f.min_length, max_length=f.max_length, pattern=f.pattern)
        text: Any = Annotated[str, meta] if meta is not None else str
        if f.format is None:
            return text
        native = self.native.get(f.format)
        described, test = _TEXT_FORMATS.get(f.format, (f"a {f.format}", lambda _: True))

        def check(value: Any) -> str | None:
            if not isinstance(value, str):
                return f"expected a string ({f.format}), got {_type_name(value)}"
            try:
                msgspec.convert(value, text)
                if native is not None:
                    msgspec.convert(value, native)
            except msgspec.ValidationError as exc:
                return str(exc).split(" - at `", 1)[0]
            if native is None and not test(value):
                return f"expected {described}, got {value!r}"
            return None

        def check_text(value: Any) -> str | None:
            problem = check(value)
            return problem if problem is None or "got" in problem else f"{problem}, got {value!r}"

        return _custom(self.name("text"), check_text)

    def enum(self, f: Field) -> Any:
        values = f.enum or ()
        if values and all(isinstance(v, str) for v in values):
            return Literal[tuple(values)]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return Literal[tuple(values)]
        shown = ", ".join(json.dumps(v) for v in values)

        def check(value: Any) -> str | None:
            if any(_same(value, v) for v in values):
                return None
            return f"expected one of {shown}, got {json.dumps(value, default=repr)}"

        return _custom(self.name("enum"), check)

    def union(self, f: Field) -> Any:
        variants = {v.name: self.field(v) for v in f.one_of or ()}
        names = ", ".join(variants)
        key = f.discriminator

        def check(value: Any) -> str | None:
            if key is not None:
                if not isinstance(value, dict):
                    return f"expected an object with {key!r} naming one of {names}, got {_type_name(value)}"
                chosen = variants.get(value.get(key))  # type: ignore[arg-type]
                if chosen is None:
                    return f"expected {key!r} to be one of {names}, got {value.get(key)!r}"
                found = collect_problems(value, chosen, _custom_problem)
                shown = "; ".join(
                    f"at {p.path.replace('$', '', 1) or '.'}: {p.message}" for p in found
                )
                return f"variant {value.get(key)!r}: {shown}" if found else None
            for variant in variants.values():
                if not collect_problems(value, variant, _custom_problem):
                    return None
            return f"expected a value of one of the variants {names}"

        return _custom(self.name("union"), check)


def _meta(**constraints: Any) -> msgspec.Meta | None:
    given = {k: v for k, v in constraints.items() if v is not None}
    return msgspec.Meta(**given) if given else None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


# --- the compiled contracts of a bundle ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolContract:
    """The compiled checks of one tool: ``None`` where the manifest declares nothing.

    ``input_hook`` and ``output_hook`` are the decoding hook when the side has checks of packrun's
    own (formats, odd enums, unions), else ``None``: the hook costs a third more per call."""

    input: Any
    output: Any
    input_hook: Callable[[type, Any], Any] | None = None
    output_hook: Callable[[type, Any], Any] | None = None

    def input_problems(self, value: Any) -> list[Problem]:
        """Every problem of ``value`` as this tool's input; empty when it fits."""
        return _problems(value, self.input, self.input_hook)

    def output_problems(self, value: Any) -> list[Problem]:
        """Every problem of ``value`` as this tool's output; empty when it fits."""
        return _problems(value, self.output, self.output_hook)


def _problems(value: Any, t: Any, hook: Callable[[type, Any], Any] | None) -> list[Problem]:
    if t is None:
        return []
    try:
        msgspec.convert(value, t, dec_hook=hook)
    except msgspec.ValidationError:
        found = collect_problems(value, t, _custom_problem)
        return found or [Problem("$", "does not match its declaration")]
    return []


Contracts: TypeAlias = Mapping[str, ToolContract]
"""The compiled contract of every tool of a bundle, by tool id."""


def compile_contracts(manifest: Manifest) -> Contracts:
    """Compile every tool's declared input (with its filters) and output, once per bundle."""
    compiled: dict[str, ToolContract] = {}
    for n, tool in enumerate(manifest.tools):
        accepted = (*tool.input, *tool.filters)
        sides = []
        for fields in (accepted, tool.output):
            compiler = _Compiler(f"_{manifest.id}_{n}".replace("-", "_"))
            t = compiler.struct(fields) if fields else None
            sides.append((t, _dec_hook if compiler.customs else None))
        (input_type, input_hook), (output_type, output_hook) = sides
        compiled[tool.id] = ToolContract(input_type, output_type, input_hook, output_hook)
    return compiled


# --- counting and enforcing, per call -----------------------------------------------------------


LATENCY_BOUNDS: Final[tuple[float, ...]] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""The upper bounds (seconds) of the latency histogram's buckets; one more bucket holds what is
slower than the last. Fixed, so the histograms of every runtime of a fleet add up."""
LATENCY_SAMPLE: Final = 15
"""Latency is measured on one call in ``LATENCY_SAMPLE + 1`` (timing every call would cost more
than the call itself on a fast in-process tool); every call's outcome is counted."""


@dataclass(frozen=True, slots=True)
class VersionHealth:
    """What the fleet saw of one ``(pack, version)``: ``calls`` made (checked or not), how many
    broke the declared contract (``invalid_input``: refused, or let through in ``warn`` mode;
    ``invalid_output``), and how many failed: ``tool_errors`` (the tool raised),
    ``timeouts`` (the sandbox stopped a call that ran past its time) and ``crashes`` (a sandbox
    worker died). ``p50``/``p99`` are latency percentiles in seconds (the upper bound of the
    histogram bucket they fall in; ``None`` before any call ended)."""

    pack_id: str
    version: str
    calls: int = 0
    invalid_input: int = 0
    invalid_output: int = 0
    channel: Channel = "vendor"
    """The channel of the row: a project's custom row may carry the number of a vendor version."""
    tool_errors: int = 0
    timeouts: int = 0
    crashes: int = 0
    p50: float | None = field(default=None, compare=False)
    p99: float | None = field(default=None, compare=False)
    project: str | None = None
    """The project whose installations' calls are counted; ``None``: every project's."""

    @property
    def errors(self) -> int:
        """The calls that count against a release: tool errors, timeouts, crashes and outputs
        that broke the contract (an invalid input is the caller's doing)."""
        return self.tool_errors + self.timeouts + self.crashes + self.invalid_output

    @property
    def error_rate(self) -> float:
        """``errors / calls`` (0.0 before any call)."""
        return self.errors / self.calls if self.calls else 0.0


class HealthCounters:
    """The live counters of one ``(pack, version, project)`` in one runtime: plain integers,
    bumped on the event loop (never from a worker thread), so the hot path takes no lock."""

    __slots__ = (
        "buckets",
        "calls",
        "crashes",
        "invalid_input",
        "invalid_output",
        "timeouts",
        "tool_errors",
    )

    def __init__(self) -> None:
        self.calls = 0
        self.invalid_input = 0
        self.invalid_output = 0
        self.tool_errors = 0
        self.timeouts = 0
        self.crashes = 0
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)

    def values(self) -> list[int]:
        """Every counter, in :data:`packrun._health.METRICS` order."""
        return [
            self.calls,
            self.tool_errors,
            self.timeouts,
            self.crashes,
            self.invalid_input,
            self.invalid_output,
            *self.buckets,
        ]


class CallChecks:
    """What a run does around each tool call: count it, check its input before the tool runs and
    its output after, and refuse (``enforce``) or log (``warn``) what breaks the contract."""

    __slots__ = (
        "clean",
        "contracts",
        "count",
        "counters",
        "input_mode",
        "inputs",
        "output_mode",
        "outputs",
        "pack_id",
        "version",
        "warn",
    )

    def __init__(
        self,
        contracts: Contracts,
        counters: HealthCounters,
        input_mode: CheckMode,
        output_mode: CheckMode,
        pack_id: str,
        version: str,
        warn: Callable[[str, str], None],
        clean: Callable[[str], str] = str,
        count: bool = True,
    ) -> None:
        self.count = count
        """Whether calls are counted (health); contract checks happen either way."""
        self.clean = clean
        """Applied to every problem message: a value echoed from a call may hold a credential."""
        self.contracts = contracts
        self.counters = counters
        self.input_mode = input_mode
        self.output_mode = output_mode
        self.pack_id = pack_id
        self.version = version
        self.warn = warn
        self.inputs = frozenset(
            () if input_mode == "off" else (t for t, c in contracts.items() if c.input is not None)
        )
        """The tools whose input is checked (a call of another skips :meth:`check_input`)."""
        self.outputs = frozenset(
            ()
            if output_mode == "off"
            else (t for t, c in contracts.items() if c.output is not None)
        )
        """The tools whose output is checked (a call of another skips :meth:`after`)."""

    def before(self, tool: str, value: Mapping[str, Any]) -> None:
        """Count the call and check its input; raises :class:`~packrun.InvalidInput` in
        ``enforce`` mode."""
        if self.count:
            self.counters.calls += 1
        self.check_input(tool, value)

    def check_input(self, tool: str, value: Mapping[str, Any]) -> None:
        """Check a call's input; raises :class:`~packrun.InvalidInput` in ``enforce`` mode."""
        if self.input_mode == "off":
            return
        contract = self.contracts.get(tool)
        if contract is None or contract.input is None:
            return
        try:  # the hot path: one conversion, the problems only when it fails
            _convert(value, contract.input, dec_hook=contract.input_hook)
            return
        except msgspec.ValidationError:
            pass
        problems = contract.input_problems(value if isinstance(value, dict) else dict(value))
        if not problems:  # a mapping that is not a dict, and fits
            return
        if self.count:
            self.counters.invalid_input += 1
        error = InvalidInput(self.pack_id, self.version, tool, self._cleaned(problems))
        if self.input_mode == "enforce":
            raise error
        self.warn(f"{self.pack_id}:{self.version}:{tool}:input", str(error))

    def _cleaned(self, problems: list[Problem]) -> list[Problem]:
        return [Problem(self.clean(p.path), self.clean(p.message)) for p in problems]

    def after(self, tool: str, value: Any) -> None:
        """Check a tool's output; raises :class:`~packrun.InvalidOutput` in ``enforce`` mode."""
        if self.output_mode == "off":
            return
        contract = self.contracts.get(tool)
        if contract is None or contract.output is None:
            return
        problems = contract.output_problems(value)
        if not problems:
            return
        if self.count:
            self.counters.invalid_output += 1
        error = InvalidOutput(self.pack_id, self.version, tool, self._cleaned(problems))
        if self.output_mode == "enforce":
            raise error
        self.warn(f"{self.pack_id}:{self.version}:{tool}:output", str(error))

    def ended(self, elapsed: float) -> None:
        """Count a call's latency (seconds), however it ended."""
        self.counters.buckets[bisect_right(LATENCY_BOUNDS, elapsed)] += 1

    def failed(self, exc: BaseException, elapsed: float | None) -> None:
        """Count a call the tool did not answer: a timeout, a crashed sandbox worker, or an error
        (a cancellation of the caller is none of them); and its latency when it was measured."""
        counters = self.counters
        if elapsed is not None:
            counters.buckets[bisect_right(LATENCY_BOUNDS, elapsed)] += 1
        if isinstance(exc, ToolTimeout):
            counters.timeouts += 1
        elif isinstance(exc, SandboxError):
            counters.crashes += 1
        elif isinstance(exc, Exception):
            counters.tool_errors += 1
