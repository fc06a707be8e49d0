"""Manifests: the integration manifest, ``pack.json``, content-entry manifests and the pack index.

Every document is a tree of ``msgspec.Struct`` types that refuse unknown fields. Decoding takes the
fast path (msgspec decodes straight into the Structs); when that fails, a second pass walks the raw
JSON against the same Struct definitions (read through ``msgspec.inspect``) and collects *every*
problem, each with its ``$.path``, into one :class:`~packrun.errors.InvalidManifest`.
"""

from __future__ import annotations

import os
import posixpath
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
    "EntryManifest",
    "Event",
    "Field",
    "FieldType",
    "Group",
    "IndexEntry",
    "Manifest",
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
    "read_document",
]

_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"

PackId = Annotated[str, msgspec.Meta(pattern=_ID_PATTERN)]
"""A pack or integration id: lowercase letters, digits, ``_`` and ``-`` (it names files)."""
ItemId = Annotated[str, msgspec.Meta(pattern=_NAME_PATTERN)]
"""A tool, group, event or field name: ``contact.created``, ``list_contacts``."""

FieldType: TypeAlias = Literal["string", "integer", "number", "boolean", "object", "array"]
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

    ``object`` fields carry ``fields``; ``array`` fields carry ``items``; nesting has no fixed depth.
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


class Pagination(_Doc, kw_only=True, frozen=True):
    """How a tool pages through results."""

    style: PaginationStyle = "none"
    page_size: Annotated[int, msgspec.Meta(ge=1)] | None = None


class Tool(_Doc, kw_only=True, frozen=True):
    """One callable tool of an integration."""

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
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | msgspec.UnsetType = msgspec.UNSET
    """Deadline of one call in the sandbox (the runtime's ``call_timeout`` when unset). Unset
    fields are left out of the canonical JSON, so older manifests keep their bytes."""


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


class Manifest(_Doc, kw_only=True, frozen=True):
    """The integration manifest (``manifest.json``). Inside a built bundle ``contract`` is required."""

    id: PackId
    name: str = ""
    version: Version
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
    """``false``: the code runs without any network (``sandbox="bwrap"``); unset means true."""

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


_FIELD_TYPES: Final = ("string", "integer", "number", "boolean", "object", "array")
_ARTICLE: Final = {"integer": "an integer", "object": "an object", "array": "an array"}


def _a(field_type: str) -> str:
    return _ARTICLE.get(field_type, f"a {field_type}")


def _matches(value: object, field_type: object) -> bool:
    if isinstance(value, bool):
        return field_type == "boolean"
    return {
        "string": isinstance(value, str),
        "integer": isinstance(value, int),
        "number": isinstance(value, int | float),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }.get(str(field_type), False)


def _check_fields(fields: Any, path: str, problems: list[Problem]) -> None:
    _check_unique(fields, "name", path, "field name", problems)
    for i, field in _dicts(fields):
        here = f"{path}[{i}]"
        kind = field.get("type")
        has_fields, has_items = field.get("fields") is not None, field.get("items") is not None
        if kind == "object":
            if has_items:
                problems.append(Problem(f"{here}.items", "only an array field has 'items'"))
            _check_fields(field.get("fields"), f"{here}.fields", problems)
        elif kind == "array":
            if not has_items:
                problems.append(Problem(f"{here}.items", "an array field needs 'items'"))
            elif isinstance(field["items"], dict):
                _check_fields([field["items"]], f"{here}.items", problems)
            if has_fields:
                problems.append(Problem(f"{here}.fields", "only an object field has 'fields'"))
        elif kind in ("string", "integer", "number", "boolean"):
            for extra, present in (("fields", has_fields), ("items", has_items)):
                if present:
                    problems.append(Problem(f"{here}.{extra}", f"a {kind} field has no {extra!r}"))
        if kind not in _FIELD_TYPES:
            continue  # a wrong type is reported by the shape pass
        enum = field.get("enum")
        if isinstance(enum, list):
            for j, value in enumerate(enum):
                if not _matches(value, kind):
                    problems.append(Problem(f"{here}.enum[{j}]", f"{value!r} is not {_a(kind)}"))
        default = field.get("default")
        if default is not None and not _matches(default, kind):
            problems.append(Problem(f"{here}.default", f"{default!r} is not {_a(kind)}"))
        elif isinstance(enum, list) and default is not None and default not in enum:
            problems.append(
                Problem(f"{here}.default", f"{default!r} is not one of its enum values")
            )


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


def encode_manifest(manifest: Manifest) -> bytes:
    """The canonical JSON of a manifest: fields in schema order, two-space indent, final newline.

    Canonical bytes are what makes a build reproducible: the same manifest always encodes the same.
    """
    return msgspec.json.format(msgspec.json.encode(manifest, enc_hook=_enc_hook), indent=2) + b"\n"
