"""OpenAPI 3.0 and 3.1 documents as integration manifests, so API-generated connectors get the diff.

One tool per operation (its ``operationId`` as the tool id), its parameters and request body as
the tool's input, its success response as the output, its 4xx/5xx responses as declared errors,
the security schemes as the auth, tags as groups. ``$ref``\\s are resolved by the ``referencing``
package (the JSON Schema organisation's resolver: JSON pointers, relative files), installed with
``pip install 'packrun[openapi]'`` together with PyYAML for YAML documents.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from packrun._args import check_id, check_path
from packrun._manifest import Manifest, decode_manifest, read_document
from packrun._versions import Version
from packrun.errors import InvalidManifest, InvalidVersion, Problem

__all__ = ["import_openapi"]

_METHODS: Final = ("get", "post", "put", "patch", "delete")
_FORMATS: Final = frozenset(
    {"date-time", "date", "time", "duration", "uuid", "email", "uri", "hostname", "ipv4", "ipv6"}
)
_RETRYABLE: Final = frozenset({"408", "429", "502", "503", "504"})
_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
_BASE_URI: Final = "urn:packrun:openapi"


def _item_id(text: str) -> str:
    """``text`` as a tool, group or field name: other characters become ``_``."""
    if _NAME.match(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:127] or "_"
    return cleaned if re.match(r"[A-Za-z_]", cleaned) else f"_{cleaned}"[:128]


def _pack_id(text: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:64]
    return cleaned or "api"


def _needs_extra(exc: ModuleNotFoundError) -> ModuleNotFoundError:
    return ModuleNotFoundError(
        f"packrun.import_openapi needs {exc.name!r}: pip install 'packrun[openapi]'", name=exc.name
    )


def _load(spec: Any) -> tuple[dict[str, Any], Path | None]:
    if isinstance(spec, Mapping):
        return dict(spec), None
    path = Path(spec)
    data = read_document(path)
    text = data.decode("utf-8", errors="replace")
    if path.suffix.lower() in (".yaml", ".yml") or not text.lstrip().startswith("{"):
        try:
            import yaml  # packrun[openapi]
        except ModuleNotFoundError as exc:
            raise _needs_extra(exc) from None

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidManifest(str(path), [Problem("$", f"not valid YAML: {exc}")]) from None
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidManifest(str(path), [Problem("$", f"not valid JSON: {exc}")]) from None
    if not isinstance(doc, dict):
        raise InvalidManifest(str(path), [Problem("$", "expected an OpenAPI document (an object)")])
    return doc, path


class _Converter:
    """Turns the schemas of one document into manifest fields, ``$ref``\\s resolved on the way."""

    def __init__(self, doc: dict[str, Any], path: Path | None) -> None:
        try:
            from referencing import Registry, Resource
            from referencing.jsonschema import DRAFT202012
        except ModuleNotFoundError as exc:  # packrun[openapi]
            raise _needs_extra(exc) from None

        def retrieve(uri: str) -> Resource[Any]:
            if path is None or not uri.startswith("file:"):
                raise LookupError(uri)
            other, _ = _load(Path(uri.removeprefix("file://")))
            return Resource.from_contents(other, default_specification=DRAFT202012)

        base = path.resolve().as_uri() if path is not None else _BASE_URI
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        registry: Registry[Any] = Registry(retrieve=retrieve).with_resource(base, resource)  # type: ignore[call-arg]
        self.resolver = registry.resolver(base_uri=base)
        self.doc = doc

    def deref(
        self, node: Any, seen: tuple[str, ...] = ()
    ) -> tuple[Any, tuple[str, ...], str | None]:
        """``node`` with its ``$ref`` chain followed: the target, the refs followed, its name."""
        name = None
        resolver = self.resolver
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if ref in seen:
                return {"type": "object"}, seen, name  # a recursive schema stops here
            seen = (*seen, ref)
            resolved = resolver.lookup(ref)
            node, resolver = resolved.contents, resolved.resolver
            name = ref.rsplit("/", 1)[-1]
        return node, seen, name

    def field(
        self, name: str, schema: Any, required: bool, seen: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        schema, seen, _ = self.deref(schema, seen)
        if not isinstance(schema, dict):
            schema = {}
        out: dict[str, Any] = {"name": _item_id(name), "required": required}
        schema = self.merge_all_of(schema, seen)
        kind = schema.get("type")
        nullable = bool(schema.get("nullable"))
        if isinstance(kind, list):  # 3.1: ["string", "null"]
            nullable = nullable or "null" in kind
            kinds = [k for k in kind if k != "null"]
            kind = kinds[0] if len(kinds) == 1 else None
        variants = schema.get("oneOf") or schema.get("anyOf")
        if isinstance(variants, list) and variants:
            out.update(self.union(schema, variants, seen))
        elif kind == "array" or "items" in schema:
            out["type"] = "array"
            out["items"] = self.field("item", schema.get("items", {}), True, seen)
            out.update(_pick(schema, {"minItems": "min_items", "maxItems": "max_items"}))
        elif kind == "object" or "properties" in schema or "additionalProperties" in schema:
            props = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            if not props and isinstance(extra, dict):
                out["type"] = "map"
                out["values"] = self.field("value", extra, True, seen)
                out.update(
                    _pick(schema, {"minProperties": "min_items", "maxProperties": "max_items"})
                )
            else:
                out["type"] = "object"
                needed = set(schema.get("required") or ())
                if props:
                    out["fields"] = self.fields(props, needed, seen)
        elif kind in ("integer", "number"):
            out["type"] = kind
            out.update(_bounds(schema))
        elif kind == "boolean":
            out["type"] = "boolean"
        else:
            out["type"] = "string"
            out.update(_pick(schema, {"minLength": "min_length", "maxLength": "max_length"}))
            if isinstance(schema.get("pattern"), str):
                out["pattern"] = schema["pattern"]
            if schema.get("format") in _FORMATS:
                out["format"] = schema["format"]
            elif schema.get("format") == "byte":
                out["format"] = "byte"
        if nullable:
            out["nullable"] = True
        enum = schema.get("enum")
        if (
            isinstance(enum, list)
            and enum
            and out["type"] not in ("object", "array", "map", "union")
        ):
            values = [v for v in enum if v is not None]
            if len(values) < len(enum):
                out["nullable"] = True
            if values:
                out["enum"] = values
        if isinstance(schema.get("description"), str):
            out["description"] = schema["description"]
        if schema.get("deprecated") is True:
            out["deprecated"] = True
        default = schema.get("default")
        if default is not None and out["type"] not in ("object", "map", "union"):
            out["default"] = default
        return out

    def merge_all_of(self, schema: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
        parts = schema.get("allOf")
        if not isinstance(parts, list):
            return schema
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        props: dict[str, Any] = dict(merged.get("properties") or {})
        required: list[Any] = list(merged.get("required") or ())
        for part in parts:
            part, _, _ = self.deref(part, seen)
            if not isinstance(part, dict):
                continue
            part = self.merge_all_of(part, seen)
            props.update(part.get("properties") or {})
            required += list(part.get("required") or ())
            for key, value in part.items():
                merged.setdefault(key, value)
        if props:
            merged["properties"] = props
            merged.setdefault("type", "object")
        merged["required"] = required
        return merged

    def fields(
        self, props: Mapping[str, Any], needed: set[str], seen: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, schema in props.items():
            field = self.field(name, schema, name in needed, seen)
            out.setdefault(field["name"], field)  # two names cleaned into one: the first wins
        return list(out.values())

    def union(
        self, schema: dict[str, Any], variants: list[Any], seen: tuple[str, ...]
    ) -> dict[str, Any]:
        disc = schema.get("discriminator") if isinstance(schema.get("discriminator"), dict) else {}
        by_ref = {v: k for k, v in (disc.get("mapping") or {}).items()} if disc else {}
        out_variants: list[dict[str, Any]] = []
        names: set[str] = set()
        for n, variant in enumerate(variants):
            ref = variant.get("$ref") if isinstance(variant, dict) else None
            _, _, ref_name = self.deref(variant, seen)
            name = by_ref.get(ref) or ref_name or f"variant{n + 1}"
            field = self.field(name, variant, True, seen)
            if field["name"] in names:
                field["name"] = f"{field['name']}_{n + 1}"
            names.add(field["name"])
            out_variants.append(field)
        out: dict[str, Any] = {"type": "union", "one_of": out_variants}
        key = disc.get("propertyName") if disc else None
        if (
            isinstance(key, str)
            and _NAME.match(key)
            and all(v["type"] == "object" for v in out_variants)
        ):
            out["discriminator"] = key
        return out


def _pick(schema: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    return {
        ours: schema[theirs]
        for theirs, ours in names.items()
        if isinstance(schema.get(theirs), int)
        and not isinstance(schema.get(theirs), bool)
        and schema[theirs] >= 0
    }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bounds(schema: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side, ours in (("minimum", "minimum"), ("maximum", "maximum")):
        value = schema.get(side)
        exclusive = schema.get(f"exclusive{side.capitalize()}")
        if _number(exclusive):  # 3.1: the exclusive bound itself
            out[f"exclusive_{ours}"] = exclusive
        if _number(value):
            out[f"exclusive_{ours}" if exclusive is True else ours] = value  # 3.0: a flag
    return out


def _auth(doc: Mapping[str, Any]) -> dict[str, Any]:
    schemes = (doc.get("components") or {}).get("securitySchemes") or {}
    if not isinstance(schemes, dict) or not schemes:
        return {"mode": "none"}
    required: dict[str, list[str]] = {}
    for requirement in doc.get("security") or []:
        if isinstance(requirement, dict):
            for name, scopes in requirement.items():
                required.setdefault(name, []).extend(s for s in scopes or [] if isinstance(s, str))
    name = next((n for n in required if n in schemes), next(iter(schemes)))
    scheme = schemes[name] if isinstance(schemes[name], dict) else {}
    kind, how = scheme.get("type"), str(scheme.get("scheme", "")).lower()
    if kind == "apiKey":
        return {
            "mode": "api_key",
            "credential_fields": [{"name": "key", "display_name": scheme.get("name")}],
        }
    if kind == "http" and how == "basic":
        return {"mode": "basic", "credential_fields": [{"name": "username"}, {"name": "password"}]}
    if kind in ("oauth2", "openIdConnect") or (kind == "http" and how == "bearer"):
        scopes = list(dict.fromkeys(required.get(name, [])))
        return {"mode": "oauth2", "scopes": scopes, "credential_fields": [{"name": "access_token"}]}
    return {"mode": "none"}


def _json_schema(content: Any) -> Any:
    """The schema of a request body or response: its JSON media type's, else the first one's."""
    if not isinstance(content, dict) or not content:
        return None
    media = next((m for t, m in content.items() if "json" in t), next(iter(content.values())))
    return media.get("schema") if isinstance(media, dict) else None


def _version(doc: Mapping[str, Any]) -> str:
    text = str((doc.get("info") or {}).get("version", ""))
    try:
        return str(Version.parse(text))
    except InvalidVersion:
        parts = re.findall(r"\d+", text)[:3]
        return (
            ".".join([*(str(int(p)) for p in parts), *["0"] * (3 - len(parts))])
            if parts
            else "1.0.0"
        )


def import_openapi(spec: str | Path | Mapping[str, Any], *, id: str | None = None) -> Manifest:
    """An integration manifest made from an OpenAPI 3.0 or 3.1 document (a path to its JSON or
    YAML file, or the decoded document): one tool per operation.

    The tool id is the ``operationId`` (else ``method_path``); path, query and header parameters
    and the request body's properties are the input (a body that is not an object is one
    ``body`` field); the lowest 2xx response is the output (one ``result`` field when it is not
    an object); 4xx and 5xx responses are declared errors (``http_404``; 408, 429, 502, 503 and
    504 retryable); the first security scheme the document requires is the auth; the first tag is
    the tool's group. ``id`` defaults to the document's title. The manifest's version is
    ``info.version`` (padded to ``MAJOR.MINOR.PATCH`` when it is not one).

    Needs ``pip install 'packrun[openapi]'``. A document that is not OpenAPI 3 is
    :class:`~packrun.errors.InvalidManifest`, as is a manifest the document cannot make.
    """
    check_path("spec", spec, data=(Mapping,))
    if id is not None:
        check_id("id", id)
    doc, path = _load(spec)
    source = str(path) if path is not None else "<openapi>"
    openapi = str(doc.get("openapi", ""))
    if not openapi.startswith("3."):
        given = doc.get("openapi", doc.get("swagger"))
        raise InvalidManifest(
            source,
            [Problem("$.openapi", f"expected an OpenAPI 3.0 or 3.1 document, got {given!r}")],
        )
    convert = _Converter(doc, path)
    tools: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for tag in doc.get("tags") or []:
        if isinstance(tag, dict) and isinstance(tag.get("name"), str):
            groups[_item_id(tag["name"])] = {
                "id": _item_id(tag["name"]),
                "name": tag["name"],
                "description": tag.get("description") or "",
            }
    seen_ids: set[str] = set()
    for route, item in (doc.get("paths") or {}).items():
        item, _, _ = convert.deref(item)
        if not isinstance(item, dict):
            continue
        shared = item.get("parameters") or []
        for method in _METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            tool_id = _item_id(op.get("operationId") or f"{method}_{route.strip('/')}")
            while tool_id in seen_ids:
                tool_id += "_"
            seen_ids.add(tool_id)
            tool: dict[str, Any] = {
                "id": tool_id,
                "name": op.get("summary") or tool_id,
                "description": op.get("description") or "",
                "method": method.upper(),
                "action_type": {"get": "read", "delete": "delete"}.get(method, "write"),
            }
            tags = [t for t in op.get("tags") or [] if isinstance(t, str)]
            if tags:
                group = _item_id(tags[0])
                groups.setdefault(group, {"id": group, "name": tags[0]})
                tool["group"] = group
            if op.get("deprecated") is True:
                tool["deprecated"] = True
            inputs: dict[str, dict[str, Any]] = {}
            params = {}
            for raw in [*shared, *(op.get("parameters") or [])]:
                param, _, _ = convert.deref(raw)
                if isinstance(param, dict) and param.get("in") in ("path", "query", "header"):
                    params[(param.get("in"), param.get("name"))] = param  # the operation's win
            for param in params.values():
                field = convert.field(
                    str(param.get("name")),
                    param.get("schema") or {},
                    bool(param.get("required")) or param.get("in") == "path",
                )
                if isinstance(param.get("description"), str):
                    field["description"] = param["description"]
                if param.get("deprecated") is True:
                    field["deprecated"] = True
                inputs.setdefault(field["name"], field)
            body, _, _ = convert.deref(op.get("requestBody"))
            if isinstance(body, dict):
                schema = _json_schema(body.get("content"))
                if schema is not None:
                    field = convert.field("body", schema, bool(body.get("required")))
                    for f in field.get("fields") or [] if field["type"] == "object" else [field]:
                        inputs.setdefault(f["name"], f)
            tool["input"] = list(inputs.values())
            # YAML reads an unquoted 200 as a number: every status code as text.
            responses = {str(code): r for code, r in (op.get("responses") or {}).items()}
            success = sorted(code for code in responses if code.startswith("2"))
            if success:
                response, _, _ = convert.deref(responses[success[0]])
                schema = (
                    _json_schema(response.get("content")) if isinstance(response, dict) else None
                )
                if schema is not None:
                    out = convert.field("result", schema, True)
                    tool["output"] = out.get("fields") or [] if out["type"] == "object" else [out]
            errors = []
            for code in sorted(responses):
                if code[:1] in ("4", "5") and code[1:].isdigit():
                    response, _, _ = convert.deref(responses[code])
                    description = (
                        response.get("description", "") if isinstance(response, dict) else ""
                    )
                    errors.append(
                        {
                            "code": f"http_{code}",
                            "retryable": code in _RETRYABLE,
                            "description": description or "",
                        }
                    )
            if errors:
                tool["errors"] = errors
            tools.append(tool)
    info = doc.get("info") or {}
    manifest = {
        "id": id or _pack_id(str(info.get("title", "api"))),
        "name": str(info.get("title", "")),
        "version": _version(doc),
        "description": str(info.get("description", "") or ""),
        "auth": _auth(doc),
        "groups": list(groups.values()),
        "tools": tools,
    }
    return decode_manifest(manifest, source=f"{source} (as a manifest)")
