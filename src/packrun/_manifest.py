"""Manifests: the integration manifest, ``pack.json``, content-entry manifests and the pack index.

Every document is a tree of ``msgspec.Struct`` types that refuse unknown fields. Decoding takes the
fast path (msgspec decodes straight into the Structs); when that fails, a second pass walks the raw
JSON against the same Struct definitions (read through ``msgspec.inspect``) and collects *every*
problem, each with its ``$.path``, into one :class:`~packrun.errors.InvalidManifest`.
"""

from __future__ import annotations

import datetime
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeAlias, TypeVar

import msgspec

from packrun._args import check_flag, check_label
from packrun._auth import AuthMode
from packrun._problems import CustomCheck, collect_problems
from packrun._versions import Version
from packrun.errors import InvalidManifest, InvalidVersion, Problem

__all__ = [
    "AuthMode",
    "AuthSpec",
    "ContentKind",
    "ContentRef",
    "CredentialField",
    "DeclaredError",
    "EntryManifest",
    "Event",
    "Field",
    "FieldFormat",
    "FieldType",
    "Group",
    "IndexEntry",
    "Manifest",
    "Notice",
    "PackIndex",
    "PackInfo",
    "PackManifest",
    "Pagination",
    "Tool",
    "decode_entry_manifest",
    "decode_index",
    "decode_manifest",
    "decode_pack_manifest",
    "encode_manifest",
    "manifest_schema",
    "read_document",
]

_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"

PackId = Annotated[str, msgspec.Meta(pattern=_ID_PATTERN)]
"""A pack or integration id: lowercase letters, digits, ``_`` and ``-`` (it names files)."""
ItemId = Annotated[str, msgspec.Meta(pattern=_NAME_PATTERN)]
"""A tool, group, event or field name: ``contact.created``, ``list_contacts``."""

FieldType: TypeAlias = Literal[
    "string", "integer", "number", "boolean", "object", "array", "map", "union"
]
FieldFormat: TypeAlias = Literal[
    "date-time",
    "date",
    "time",
    "duration",
    "uuid",
    "email",
    "uri",
    "hostname",
    "ipv4",
    "ipv6",
    "byte",
]
"""What a ``string`` field's text is: checked at run time, compared by the diff."""
Number: TypeAlias = int | float
Count: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]
HttpMethod: TypeAlias = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
ActionType: TypeAlias = Literal["read", "write", "delete"]
PaginationStyle: TypeAlias = Literal["none", "cursor", "offset", "page"]
ContentKind: TypeAlias = Literal[
    "integration", "process_flow", "ontology", "kb_domain", "workflow", "data_source"
]
Channel: TypeAlias = Literal["vendor", "custom"]


class _Doc(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Base of every manifest Struct: keyword-only, unknown fields refused, immutable."""


class CredentialField(_Doc, kw_only=True, frozen=True):
    """A credential the installation must supply (``key``, ``client_secret``)."""

    name: ItemId
    required: bool = True
    display_name: str | None = None
    description: str = ""


class AuthSpec(_Doc, kw_only=True, frozen=True):
    """How the integration authenticates: its mode, the scopes it needs and its credential fields."""

    mode: AuthMode = "none"
    scopes: tuple[str, ...] = ()
    credential_fields: tuple[CredentialField, ...] = ()


class Field(_Doc, kw_only=True, frozen=True):
    """A field of a tool's input, filters or output, of an event, or a connection property.

    ``object`` fields carry ``fields``; ``array`` fields carry ``items``; ``map`` fields (string
    keys) carry ``values``; ``union`` fields carry their variants in ``one_of`` (each variant a
    field whose ``name`` is the value of ``discriminator`` when there is one), and a field of
    another type with ``one_of`` is one of those variants too; nesting has no fixed depth.
    ``required`` says whether the field may be absent, ``nullable`` whether it may be null.
    Value constraints (``minimum`` ... ``max_items``, ``pattern``, ``format``) are checked at run
    time and compared by the diff; ``deprecated`` and ``sunset`` announce a planned removal.
    """

    name: ItemId
    type: FieldType
    required: bool = False
    default: Any = None
    enum: tuple[Any, ...] | None = None
    display_name: str | None = None
    description: str = ""
    fields: tuple[Field, ...] | None = None
    items: Field | None = None
    nullable: bool = False
    minimum: Number | None = None
    maximum: Number | None = None
    exclusive_minimum: Number | None = None
    exclusive_maximum: Number | None = None
    min_length: Count | None = None
    max_length: Count | None = None
    pattern: str | None = None
    format: FieldFormat | None = None
    min_items: Count | None = None
    max_items: Count | None = None
    values: Field | None = None
    one_of: tuple[Field, ...] | None = None
    discriminator: ItemId | None = None
    deprecated: bool = False
    sunset: datetime.date | None = None


class Pagination(_Doc, kw_only=True, frozen=True):
    """How a tool pages through results."""

    style: PaginationStyle = "none"
    page_size: Annotated[int, msgspec.Meta(ge=1)] | None = None


class DeclaredError(_Doc, kw_only=True, frozen=True):
    """An error a tool declares it may fail with (its ``ToolError`` code)."""

    code: ItemId
    retryable: bool = False
    description: str = ""


class Tool(_Doc, kw_only=True, frozen=True):
    """One callable tool of an integration.

    ``errors`` declares the error codes the tool may fail with; ``timeout_s`` bounds one call;
    ``deprecated`` and ``sunset`` (a date) announce its planned removal.
    """

    id: ItemId
    name: str = ""
    summary: str = ""
    description: str = ""
    group: str | None = None
    method: HttpMethod = "GET"
    action_type: ActionType = "read"
    endpoint_api_version: str | None = None
    pagination: Pagination | None = None
    input: tuple[Field, ...] = ()
    filters: tuple[Field, ...] = ()
    output: tuple[Field, ...] = ()
    errors: tuple[DeclaredError, ...] = ()
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | msgspec.UnsetType = msgspec.UNSET
    """Seconds one call may take (the runtime's default when unset). Unset fields are left out of
    the canonical JSON, so older manifests keep their bytes."""
    deprecated: bool = False
    sunset: datetime.date | None = None


class Event(_Doc, kw_only=True, frozen=True):
    """An event the integration can emit."""

    id: ItemId
    name: str = ""
    description: str = ""
    payload: tuple[Field, ...] = ()


class Group(_Doc, kw_only=True, frozen=True):
    """A group of tools, for display."""

    id: ItemId
    name: str = ""
    description: str = ""


class Notice(_Doc, kw_only=True, frozen=True):
    """A release's notice to the installations below it (a breaking change, a migration):
    ``message``, an ``upgrade_deadline`` (a date) by which to move, and a ``migration_url``
    explaining how. Shown by ``explain``, ``review_update`` and ``packrun status`` for every
    installation the release is an update for."""

    message: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    upgrade_deadline: datetime.date | None = None
    migration_url: (
        Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$", max_length=2000)] | None
    ) = None


class Manifest(_Doc, kw_only=True, frozen=True):
    """The integration manifest (``manifest.json``). Inside a built bundle ``contract`` is required.

    A manifest written without ``version`` is ``1.0.0``. ``network: false`` declares that the tools
    need no network at all (a sandbox may then cut it off); unset, it means true.
    """

    id: PackId
    name: str = ""
    version: Version = Version(1, 0, 0)
    contract: Annotated[int, msgspec.Meta(ge=0)] | None = None
    description: str = ""
    category: str = ""
    secondary_category: str | None = None
    family: str | None = None
    icon: str | None = None
    auth: AuthSpec = AuthSpec()
    connection_properties: tuple[Field, ...] = ()
    events: tuple[Event, ...] = ()
    groups: tuple[Group, ...] = ()
    tools: tuple[Tool, ...]
    network: bool | msgspec.UnsetType = msgspec.UNSET
    """``false``: the tools need no network at all (``sandbox="bwrap"`` then runs them without
    any); unset means true."""
    notice: Notice | msgspec.UnsetType = msgspec.UNSET
    """The release's notice (a breaking change, an upgrade deadline, a migration guide); unset
    when it has none."""

    def tool_ids(self) -> tuple[str, ...]:
        """The ids of the tools, in manifest order."""
        return tuple(tool.id for tool in self.tools)


class EntryManifest(_Doc, kw_only=True, frozen=True):
    """The ``manifest.json`` of a non-integration content entry (process flow, ontology, ...).

    ``spec`` holds the kind's own payload (the steps of a flow, the terms of an ontology).
    """

    id: PackId
    version: Version
    name: str = ""
    description: str = ""
    spec: dict[str, Any] = {}


class PackInfo(_Doc, kw_only=True, frozen=True):
    """``pack.json`` → ``package``. A pack authored without a version is ``1.0.0``."""

    id: PackId
    name: str = ""
    version: Version = Version(1, 0, 0)
    description: str = ""


class ContentRef(_Doc, kw_only=True, frozen=True):
    """``pack.json`` → ``contents[]``: one entry of the pack, its kind, id, version and folder."""

    kind: ContentKind
    id: PackId
    version: Version
    path: str


class PackManifest(_Doc, kw_only=True, frozen=True):
    """``pack.json``: the pack's own version and its content entries."""

    package: PackInfo
    contents: tuple[ContentRef, ...] = ()

    def integration(self) -> ContentRef | None:
        """The pack's integration entry (a pack has at most one), if any."""
        return next((c for c in self.contents if c.kind == "integration"), None)


class IndexEntry(_Doc, kw_only=True, frozen=True):
    """One line of a pack-source index: which pack, which version, where, and on which channel."""

    id: PackId
    version: Version
    path: str
    channel: Channel = "vendor"


class PackIndex(_Doc, kw_only=True, frozen=True):
    """``index.json`` of a pack-source tree: the packs and versions it holds."""

    packs: tuple[IndexEntry, ...] = ()


# --- decoding -----------------------------------------------------------------------------------

_T = TypeVar("_T", bound=_Doc)
_Check: TypeAlias = Callable[[Any, list[Problem]], None]


def _version_hook(strict: bool) -> Callable[[type, Any], Any]:
    def hook(cls: type, value: Any) -> Any:
        if cls is not Version:
            raise TypeError(f"no decoder for {cls.__name__}")
        # msgspec reports a TypeError or ValueError raised here as a validation error.
        try:
            return Version.parse(value, strict=strict)
        except InvalidVersion as exc:
            raise ValueError(exc.detail) from None

    return hook


def _version_check(strict: bool) -> CustomCheck:
    def check(cls: type, value: Any) -> str | None:
        try:
            Version.parse(value, strict=strict)
        except InvalidVersion as exc:
            return f"{value!r} is not a valid version: expected {exc.expected}"
        return None

    return check


def _enc_hook(value: Any) -> Any:
    if isinstance(value, Version):
        return str(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def _decode(
    data: bytes | str | dict[str, Any],
    cls: type[_T],
    source: str,
    checks: Iterable[_Check],
    strict_versions: bool,
) -> _T:
    check_label("source", source)
    check_flag("strict_versions", strict_versions)
    raw: Any
    if isinstance(data, dict):
        raw = data
    elif isinstance(data, bytes | bytearray | memoryview | str):
        try:
            raw = msgspec.json.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            # msgspec raises UnicodeDecodeError for bytes that are not UTF-8 inside a string.
            raise InvalidManifest(source, [Problem("$", f"not valid JSON: {exc}")]) from None
        except RecursionError:
            raise InvalidManifest(source, [Problem("$", "nested too deeply to read")]) from None
    else:
        raise InvalidManifest(
            source,
            [Problem("$", f"expected JSON bytes or text, or a dict; got {type(data).__name__}")],
        )
    problems: list[Problem] = []
    doc: _T | None = None
    try:
        try:
            doc = msgspec.convert(raw, cls, dec_hook=_version_hook(strict_versions))
        except msgspec.ValidationError:
            problems.extend(collect_problems(raw, cls, _version_check(strict_versions)))
            if not problems:  # the walker and msgspec must agree; never let a bad document through
                problems.append(Problem("$", f"does not match the {cls.__name__} schema"))
        # The rules between fields read the raw document, so they are reported together with the
        # problems of shape: one pass shows the author everything.
        for check in checks:
            check(raw, problems)
    except RecursionError:
        raise InvalidManifest(source, [Problem("$", "nested too deeply to check")]) from None
    if problems:
        raise InvalidManifest(source, _dedupe(problems))
    assert doc is not None
    return doc


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


# --- rules between fields; they read the raw JSON and skip whatever has the wrong shape ---------


def _dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    return (
        [(i, v) for i, v in enumerate(value) if isinstance(v, dict)]
        if isinstance(value, list)
        else []
    )


def _check_unique(items: Any, key: str, path: str, what: str, problems: list[Problem]) -> None:
    seen: set[Any] = set()
    for i, item in _dicts(items):
        name = item.get(key)
        if not isinstance(name, str):
            continue
        if name in seen:
            problems.append(Problem(f"{path}[{i}]", f"duplicate {what} {name!r}"))
        seen.add(name)


_FIELD_TYPES: Final = ("string", "integer", "number", "boolean", "object", "array", "map", "union")
_ARTICLE: Final = {"integer": "an integer", "object": "an object", "array": "an array"}
# Which part of a field each type takes; every other part is refused on it.
_PARTS: Final = {
    "object": ("fields",),
    "array": ("items", "min_items", "max_items"),
    "map": ("values", "min_items", "max_items"),
    "union": ("one_of", "discriminator"),
    "string": ("min_length", "max_length", "pattern", "format"),
    "integer": ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum"),
    "number": ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum"),
    "boolean": (),
}
# Variants may narrow any type (an object that is one of several shapes); "union" says only that.
_ANY_TYPE_PARTS: Final = ("one_of", "discriminator")
_TYPED_PARTS: Final = tuple(
    dict.fromkeys(p for parts in _PARTS.values() for p in parts if p not in _ANY_TYPE_PARTS)
)
_NEEDED: Final = {"array": "items", "map": "values", "union": "one_of"}
_BOUNDS: Final = (
    ("minimum", "maximum"),
    ("minimum", "exclusive_maximum"),
    ("exclusive_minimum", "maximum"),
    ("exclusive_minimum", "exclusive_maximum"),
    ("min_length", "max_length"),
    ("min_items", "max_items"),
)


def _a(field_type: str) -> str:
    return _ARTICLE.get(field_type, f"a {field_type}")


def _matches(value: object, field_type: object) -> bool:
    if field_type == "union":
        return True  # a variant decides; the run-time check reads it
    if isinstance(value, bool):
        return field_type == "boolean"
    return {
        "string": isinstance(value, str),
        "integer": isinstance(value, int),
        "number": isinstance(value, int | float),
        "object": isinstance(value, dict),
        "map": isinstance(value, dict),
        "array": isinstance(value, list),
    }.get(str(field_type), False)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_parts(field: dict[str, Any], kind: str, here: str, problems: list[Problem]) -> None:
    """The parts a type takes, the part it needs, bounds in order and a pattern that compiles."""
    allowed = _PARTS[kind]
    for part in _TYPED_PARTS:
        if part not in allowed and field.get(part) is not None:
            problems.append(Problem(f"{here}.{part}", f"{_a(kind)} field has no {part!r}"))
    needed = _NEEDED.get(kind)
    if needed is not None and field.get(needed) is None:
        problems.append(Problem(f"{here}.{needed}", f"{_a(kind)} field needs {needed!r}"))
    for low, high in _BOUNDS:
        a, b = field.get(low), field.get(high)
        if isinstance(a, int | float) and isinstance(b, int | float) and a > b:
            problems.append(Problem(f"{here}.{high}", f"{b!r} is below {low} {a!r}"))
    pattern = field.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append(
                Problem(f"{here}.pattern", f"{pattern!r} is not a regular expression: {exc}")
            )
    if field.get("sunset") is not None and field.get("deprecated") is not True:
        problems.append(Problem(f"{here}.sunset", "a sunset needs 'deprecated': true"))


def _check_union(field: dict[str, Any], here: str, problems: list[Problem]) -> None:
    variants = field.get("one_of")
    if isinstance(variants, list) and not variants:
        problems.append(Problem(f"{here}.one_of", "a union needs at least one variant"))
    _check_fields(variants, f"{here}.one_of", problems)
    discriminator = field.get("discriminator")
    if not isinstance(discriminator, str):
        return
    for j, variant in _dicts(variants):
        if variant.get("type") != "object":
            problems.append(
                Problem(
                    f"{here}.one_of[{j}].type",
                    f"a variant of a union with a discriminator is an object, "
                    f"got {variant.get('type')!r}",
                )
            )


def _check_fields(fields: Any, path: str, problems: list[Problem]) -> None:
    _check_unique(fields, "name", path, "field name", problems)
    for i, field in _dicts(fields):
        _check_field(field, f"{path}[{i}]", problems)


def _check_field(field: dict[str, Any], here: str, problems: list[Problem]) -> None:
    kind = field.get("type")
    if kind not in _FIELD_TYPES:
        return  # a wrong type is reported by the shape pass
    _check_parts(field, kind, here, problems)
    if kind == "object":
        _check_fields(field.get("fields"), f"{here}.fields", problems)
    elif kind in ("array", "map"):
        part = "items" if kind == "array" else "values"
        if isinstance(field.get(part), dict):
            _check_field(field[part], f"{here}.{part}", problems)
    if field.get("one_of") is not None or kind == "union":
        _check_union(field, here, problems)
    elif field.get("discriminator") is not None:
        problems.append(Problem(f"{here}.discriminator", "a discriminator needs 'one_of'"))
    enum = field.get("enum")
    if isinstance(enum, list):
        for j, value in enumerate(enum):
            if not _matches(value, kind):
                problems.append(Problem(f"{here}.enum[{j}]", f"{value!r} is not {_a(kind)}"))
    default = field.get("default")
    if default is not None and not _matches(default, kind):
        problems.append(Problem(f"{here}.default", f"{default!r} is not {_a(kind)}"))
    elif isinstance(enum, list) and default is not None and default not in enum:
        problems.append(Problem(f"{here}.default", f"{default!r} is not one of its enum values"))


def _manifest_checks(require_contract: bool) -> list[_Check]:
    def check(raw: Any, problems: list[Problem]) -> None:
        if not isinstance(raw, dict):
            return
        if require_contract and raw.get("contract") is None:
            problems.append(
                Problem("$.contract", "required in a built bundle: the build stamps it")
            )
        tools = raw.get("tools")
        if isinstance(tools, list) and not tools:
            problems.append(Problem("$.tools", "an integration needs at least one tool"))
        _check_unique(tools, "id", "$.tools", "tool id", problems)
        _check_unique(raw.get("groups"), "id", "$.groups", "group id", problems)
        _check_unique(raw.get("events"), "id", "$.events", "event id", problems)
        auth = raw.get("auth")
        if isinstance(auth, dict):
            creds = auth.get("credential_fields")
            _check_unique(creds, "name", "$.auth.credential_fields", "credential field", problems)
            if auth.get("mode", "none") == "none" and creds:
                problems.append(
                    Problem(
                        "$.auth.credential_fields", "auth mode 'none' takes no credential fields"
                    )
                )
        groups = {g.get("id") for _, g in _dicts(raw.get("groups"))}
        for i, tool in _dicts(tools):
            here = f"$.tools[{i}]"
            group = tool.get("group")
            if isinstance(group, str) and group not in groups:
                known = (
                    ", ".join(sorted(g for g in groups if isinstance(g, str))) or "none declared"
                )
                problems.append(
                    Problem(f"{here}.group", f"unknown group {group!r}; groups: {known}")
                )
            for part in ("input", "filters", "output"):
                _check_fields(tool.get(part), f"{here}.{part}", problems)
            _check_unique(tool.get("errors"), "code", f"{here}.errors", "error code", problems)
            if tool.get("sunset") is not None and tool.get("deprecated") is not True:
                problems.append(Problem(f"{here}.sunset", "a sunset needs 'deprecated': true"))
        for i, event in _dicts(raw.get("events")):
            _check_fields(event.get("payload"), f"$.events[{i}].payload", problems)
        _check_fields(raw.get("connection_properties"), "$.connection_properties", problems)

    return [check]


def _check_relative_path(value: Any, path: str, problems: list[Problem]) -> None:
    if not isinstance(value, str):
        return
    normal = posixpath.normpath(value) if value else ""
    if (
        not value
        or "\\" in value
        or value.startswith("/")
        or normal == ".."
        or normal.startswith("../")
    ):
        problems.append(Problem(path, f"{value!r} must be a relative path inside the pack source"))


def _check_pack(raw: Any, problems: list[Problem]) -> None:
    if not isinstance(raw, dict):
        return
    contents = raw.get("contents")
    _check_unique(contents, "id", "$.contents", "entry id", problems)
    integrations = [i for i, c in _dicts(contents) if c.get("kind") == "integration"]
    for i in integrations[1:]:
        problems.append(Problem(f"$.contents[{i}]", "a pack has at most one integration entry"))
    for i, ref in _dicts(contents):
        _check_relative_path(ref.get("path"), f"$.contents[{i}].path", problems)


def _check_index(raw: Any, problems: list[Problem]) -> None:
    if not isinstance(raw, dict):
        return
    seen: set[tuple[Any, Any]] = set()
    for i, entry in _dicts(raw.get("packs")):
        _check_relative_path(entry.get("path"), f"$.packs[{i}].path", problems)
        try:
            key = (entry.get("id"), Version.parse(entry.get("version")))  # type: ignore[arg-type]
        except InvalidVersion:
            continue  # reported by the shape pass
        if key in seen:
            problems.append(Problem(f"$.packs[{i}]", f"{key[0]} {key[1]} is listed twice"))
        seen.add(key)


def decode_manifest(
    data: bytes | str | dict[str, Any],
    *,
    source: str = "manifest.json",
    require_contract: bool = False,
    strict_versions: bool = False,
) -> Manifest:
    """Decode and validate an integration manifest; every problem is reported at once.

    Raises :class:`~packrun.errors.InvalidManifest` (``invalid_manifest``) naming ``source``.
    """
    check_flag("require_contract", require_contract)
    return _decode(data, Manifest, source, _manifest_checks(require_contract), strict_versions)


def decode_pack_manifest(
    data: bytes | str | dict[str, Any], *, source: str = "pack.json", strict_versions: bool = False
) -> PackManifest:
    """Decode and validate a ``pack.json``."""
    return _decode(data, PackManifest, source, [_check_pack], strict_versions)


def decode_entry_manifest(
    data: bytes | str | dict[str, Any],
    *,
    source: str = "manifest.json",
    strict_versions: bool = False,
) -> EntryManifest:
    """Decode and validate the manifest of a non-integration content entry."""
    return _decode(data, EntryManifest, source, [], strict_versions)


def decode_index(
    data: bytes | str | dict[str, Any], *, source: str = "index.json", strict_versions: bool = False
) -> PackIndex:
    """Decode and validate a pack-source index."""
    return _decode(data, PackIndex, source, [_check_index], strict_versions)


MAX_DOCUMENT_BYTES: Final = 16 * 1024 * 1024


def read_document(path: Path) -> bytes:
    """The bytes of a JSON document on disk, refused as ``invalid_manifest`` when it is not a
    regular file, cannot be read, or is over 16 MiB."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidManifest(str(path), [Problem("$", "not a regular file")])
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise InvalidManifest(
            str(path), [Problem("$", f"cannot be read: {exc.strerror or exc}")]
        ) from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InvalidManifest(
            str(path), [Problem("$", f"over {MAX_DOCUMENT_BYTES} bytes, the most accepted")]
        )
    return data


# Parts added to the schema after manifests were first built: left out of the canonical JSON while
# they hold their default, so a manifest that does not use them encodes to the same bytes as before
# (and a bundle rebuilt from an unchanged source keeps its digest).
_NEW_FIELD_PARTS: Final[dict[str, Any]] = {
    "nullable": False,
    "minimum": None,
    "maximum": None,
    "exclusive_minimum": None,
    "exclusive_maximum": None,
    "min_length": None,
    "max_length": None,
    "pattern": None,
    "format": None,
    "min_items": None,
    "max_items": None,
    "values": None,
    "one_of": None,
    "discriminator": None,
    "deprecated": False,
    "sunset": None,
}
_NEW_TOOL_PARTS: Final[dict[str, Any]] = {
    "errors": [],
    "deprecated": False,
    "sunset": None,
}


def _strip(doc: dict[str, Any], defaults: dict[str, Any]) -> None:
    for key, default in defaults.items():
        if key in doc and doc[key] == default and type(doc[key]) is type(default):
            del doc[key]


def _strip_fields(fields: Any) -> None:
    stack = list(fields or ())
    while stack:
        field = stack.pop()
        _strip(field, _NEW_FIELD_PARTS)
        stack.extend(field.get("fields") or ())
        stack.extend(field.get("one_of") or ())
        stack.extend(f for f in (field.get("items"), field.get("values")) if f is not None)


def encode_manifest(manifest: Manifest) -> bytes:
    """The canonical JSON of a manifest: fields in schema order, two-space indent, final newline.

    Canonical bytes are what makes a build reproducible: the same manifest always encodes the same.
    Optional parts that hold their default and that older manifests did not have are left out.
    """
    doc = msgspec.json.decode(msgspec.json.encode(manifest, enc_hook=_enc_hook))
    _strip_fields(doc["connection_properties"])
    for event in doc["events"]:
        _strip_fields(event["payload"])
    for tool in doc["tools"]:
        _strip(tool, _NEW_TOOL_PARTS)
        for part in ("input", "filters", "output"):
            _strip_fields(tool[part])
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of ``manifest.json``, generated from the msgspec types.

    Point an editor at it for completion and checks while writing a manifest (``packrun schema``
    writes it to a file). It says what the types say; the rules between fields (unique ids, known
    groups, bounds in order...) are checked by :func:`decode_manifest`.
    """
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in msgspec.structs.fields(Manifest):
        if f.name == "version":  # a Version is written as its text
            version = Annotated[str, msgspec.Meta(description="A Semantic Versioning 2.0 version")]
            fields.append((f.encode_name, version, "1.0.0"))
        elif f.required:
            fields.append((f.encode_name, f.type))
        else:
            default = f.default if f.default is not msgspec.NODEFAULT else f.default_factory()
            fields.append((f.encode_name, f.type, default))
    shadow = msgspec.defstruct(
        "Manifest",
        fields,
        kw_only=True,
        forbid_unknown_fields=True,
        frozen=True,
        namespace={"__doc__": Manifest.__doc__},
    )
    schema: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(msgspec.json.schema(shadow)))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "packrun integration manifest"
    return schema
