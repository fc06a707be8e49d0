"""Manifests: the DESIGN example decodes, and every problem of a document is reported with its path."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest

import packrun
from packrun import InvalidManifest, Version
from packrun._manifest import encode_manifest

# The integration manifest as DESIGN.md section 3 shows it.
DESIGN_EXAMPLE: dict[str, Any] = {
    "id": "acme", "name": "Acme CRM", "version": "1.2.0", "contract": 2,
    "description": "", "category": "crm", "secondary_category": None, "family": None, "icon": None,
    "auth": {"mode": "api_key", "scopes": [], "credential_fields": [{"name": "key", "required": True}]},
    "connection_properties": [],
    "events": [{"id": "contact.created", "name": "Contact created"}],
    "groups": [{"id": "contacts", "name": "Contacts"}],
    "tools": [{
        "id": "list_contacts", "name": "List contacts", "summary": "", "description": "",
        "group": "contacts", "method": "GET", "action_type": "read", "endpoint_api_version": "v1",
        "pagination": {"style": "cursor", "page_size": 50},
        "input": [{"name": "limit", "type": "integer", "required": False, "default": 10}],
        "filters": [],
        "output": [{
            "name": "contacts", "type": "array", "required": True,
            "items": {"name": "contact", "type": "object", "required": True,
                      "fields": [{"name": "id", "type": "string", "required": True}]},
        }],
    }],
}  # fmt: skip


def _problems(exc: pytest.ExceptionInfo[InvalidManifest]) -> dict[str, str]:
    return {p.path: p.message for p in exc.value.problems}


def test_decode__design_example__gives_typed_values() -> None:
    manifest = packrun.decode_manifest(json.dumps(DESIGN_EXAMPLE))
    assert manifest.version == Version.parse("1.2.0")
    assert manifest.contract == 2
    assert manifest.tool_ids() == ("list_contacts",)
    output = manifest.tools[0].output[0]
    assert output.items is not None
    assert output.items.fields is not None
    assert output.items.fields[0].name == "id"


def test_decode__only_id_version_and_tools__takes_defaults() -> None:
    manifest = packrun.decode_manifest({"id": "x", "version": "0.1.0", "tools": [{"id": "t"}]})
    assert (manifest.auth.mode, manifest.category, manifest.contract) == ("none", "", None)
    assert manifest.tools[0].method == "GET"


def test_encode__round_trips_and_is_canonical() -> None:
    manifest = packrun.decode_manifest(DESIGN_EXAMPLE)
    first = encode_manifest(manifest)
    assert packrun.decode_manifest(first) == manifest
    shuffled = dict(reversed(list(DESIGN_EXAMPLE.items())))
    assert encode_manifest(packrun.decode_manifest(shuffled)) == first


def test_decode__many_problems__reported_together_each_with_its_path() -> None:
    doc = copy.deepcopy(DESIGN_EXAMPLE)
    doc["id"] = "Acme CRM"
    doc["version"] = "v1.2"
    doc["surprise"] = True
    tool = doc["tools"][0]
    tool["method"] = "FETCH"
    tool["input"][0]["type"] = "int"
    tool["output"][0]["items"]["fields"][0]["colour"] = "red"
    del tool["output"][0]["items"]["fields"][0]["name"]
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_manifest(doc, source="acme/manifest.json")
    problems = _problems(exc)
    assert set(problems) == {
        "$.id",
        "$.version",
        "$.surprise",
        "$.tools[0].method",
        "$.tools[0].input[0].type",
        "$.tools[0].output[0].items.fields[0].colour",
        "$.tools[0].output[0].items.fields[0].name",
    }
    assert "unknown field 'surprise'" in problems["$.surprise"]
    assert "'v1.2'" in problems["$.version"]
    assert "'FETCH'" in problems["$.tools[0].method"]
    assert "'GET'" in problems["$.tools[0].method"]
    assert "required field is missing" in problems["$.tools[0].output[0].items.fields[0].name"]
    assert exc.value.code == "invalid_manifest"
    assert "acme/manifest.json has 7 problems" in str(exc.value)


SEMANTIC_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no tools", {"tools": []}, "$.tools", "at least one tool"),
    ("duplicate tool", {"tools": [{"id": "a"}, {"id": "a"}]}, "$.tools[1]", "duplicate tool id 'a'"),
    ("unknown group", {"tools": [{"id": "a", "group": "g"}]}, "$.tools[0].group", "unknown group 'g'"),
    (
        "duplicate field",
        {"tools": [{"id": "a", "input": [
            {"name": "x", "type": "string"}, {"name": "x", "type": "integer"}]}]},
        "$.tools[0].input[1]",
        "duplicate field name 'x'",
    ),
    (
        "array without items",
        {"tools": [{"id": "a", "output": [{"name": "x", "type": "array"}]}]},
        "$.tools[0].output[0].items",
        "needs 'items'",
    ),
    (
        "string with fields",
        {"tools": [{"id": "a", "filters": [{"name": "x", "type": "string", "fields": []}]}]},
        "$.tools[0].filters[0].fields",
        "no 'fields'",
    ),
    (
        "enum of the wrong type",
        {"tools": [{"id": "a", "input": [{"name": "x", "type": "integer", "enum": [1, "two"]}]}]},
        "$.tools[0].input[0].enum[1]",
        "'two' is not an integer",
    ),
    (
        "nested duplicate",
        {"tools": [{"id": "a", "output": [{"name": "o", "type": "object", "fields": [
            {"name": "k", "type": "string"}, {"name": "k", "type": "string"}]}]}]},
        "$.tools[0].output[0].fields[1]",
        "duplicate field name 'k'",
    ),
    (
        "credentials without auth",
        {"auth": {"mode": "none", "credential_fields": [{"name": "key"}]}},
        "$.auth.credential_fields",
        "takes no credential fields",
    ),
    ("negative contract", {"contract": -1}, "$.contract", ">= 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "path", "fragment"),
    [c[1:] for c in SEMANTIC_CASES],
    ids=[c[0] for c in SEMANTIC_CASES],
)
def test_decode__rule_broken__reported_at_its_path(
    change: dict[str, Any], path: str, fragment: str
) -> None:
    doc: dict[str, Any] = {"id": "acme", "version": "1.0.0", "tools": [{"id": "t"}]}
    doc.update(change)
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_manifest(doc)
    problems = _problems(exc)
    assert path in problems, problems
    assert fragment in problems[path]


def test_decode__built_bundle_needs_contract() -> None:
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_manifest(
            {"id": "a", "version": "1.0.0", "tools": [{"id": "t"}]}, require_contract=True
        )
    assert "$.contract" in _problems(exc)


@pytest.mark.parametrize("data", [b"", b"{", b"[1, 2]", b'"text"', b"null", b"\xff\xfe"])
def test_decode__not_a_json_object__is_invalid_manifest(data: bytes) -> None:
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_manifest(data)
    assert exc.value.problems[0].path == "$"


def test_decode__strict_versions__refuse_prereleases() -> None:
    doc = {"id": "a", "version": "1.0.0-rc.1", "tools": [{"id": "t"}]}
    assert packrun.decode_manifest(doc).version.is_prerelease
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_manifest(doc, strict_versions=True)
    assert "strict mode" in _problems(exc)["$.version"]


def test_pack_manifest__without_a_version__is_1_0_0() -> None:
    pack = packrun.decode_pack_manifest({"package": {"id": "helpdesk"}})
    assert pack.package.version == Version(1, 0, 0)
    assert pack.contents == ()


def test_pack_manifest__problems() -> None:
    doc: dict[str, Any] = {
        "package": {"id": "p", "version": "1.0"},
        "contents": [
            {"kind": "integration", "id": "a", "version": "1.0.0", "path": "a"},
            {"kind": "integration", "id": "b", "version": "1.0.0", "path": "../b"},
            {"kind": "widget", "id": "c", "version": "1.0.0", "path": "/abs"},
            {"kind": "ontology", "id": "a", "version": "1.0.0", "path": "ok"},
        ],
    }
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_pack_manifest(doc)
    problems = _problems(exc)
    assert "$.package.version" in problems
    assert "$.contents[2].kind" in problems
    # Once the structure is sound, the rules between fields are checked, all of them together.
    doc["contents"][2]["kind"] = "workflow"
    doc["package"]["version"] = "1.0.0"
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_pack_manifest(doc)
    problems = _problems(exc)
    assert "at most one integration" in problems["$.contents[1]"]
    assert "relative path" in problems["$.contents[2].path"]
    assert "duplicate entry id 'a'" in problems["$.contents[3]"]


def test_pack_manifest__integration_entry() -> None:
    pack = packrun.decode_pack_manifest(
        {
            "package": {"id": "p", "version": "2.0.0"},
            "contents": [
                {"kind": "process_flow", "id": "f", "version": "1.0.0", "path": "flows/f"},
                {"kind": "integration", "id": "p", "version": "1.1.0", "path": "integration"},
            ],
        }
    )
    ref = pack.integration()
    assert ref is not None
    assert ref.id == "p"
    assert ref.version == Version.parse("1.1.0")


def test_entry_manifest__spec_is_free_form_but_fields_are_not() -> None:
    entry = packrun.decode_entry_manifest(
        {"id": "flow", "version": "1.0.0", "spec": {"steps": [1, 2]}}
    )
    assert entry.spec == {"steps": [1, 2]}
    with pytest.raises(InvalidManifest):
        packrun.decode_entry_manifest({"id": "flow", "version": "1.0.0", "steps": []})


def test_index__duplicate_and_escaping_entries() -> None:
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_index(
            {
                "packs": [
                    {"id": "a", "version": "1.0.0", "path": "a/1.0.0"},
                    {"id": "a", "version": "1.0.0+build", "path": "a/again"},
                    {"id": "b", "version": "1.0.0", "path": "../../etc", "channel": "custom"},
                    {"id": "c", "version": "1.0.0", "path": "c", "channel": "beta"},
                ]
            }
        )
    problems = _problems(exc)
    assert "$.packs[3].channel" in problems
    index = packrun.decode_index({"packs": [{"id": "a", "version": "1.0.0", "path": "a"}]})
    assert index.packs[0].channel == "vendor"


def test_decode__shape_and_rule_problems__reported_in_one_pass() -> None:
    doc = {"id": "acme", "version": "1.0.0", "bogus": 1, "tools": [{"id": "x"}, {"id": "x"}]}
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_manifest(doc)
    assert set(_problems(exc)) == {"$.bogus", "$.tools[1]"}


@pytest.mark.parametrize("version", [1, 1.5, None, [1], {"major": 1}, True])
def test_decode__non_string_version__is_a_problem_at_its_path(version: object) -> None:
    for decode, doc, path in (
        (
            packrun.decode_manifest,
            {"id": "a", "version": version, "tools": [{"id": "t"}]},
            "$.version",
        ),
        (
            packrun.decode_pack_manifest,
            {"package": {"id": "a", "version": version}},
            "$.package.version",
        ),
        (
            packrun.decode_index,
            {"packs": [{"id": "a", "version": version, "path": "a"}]},
            "$.packs[0].version",
        ),
    ):
        with pytest.raises(InvalidManifest) as exc:
            decode(json.dumps(doc))
        assert path in _problems(exc)


@pytest.mark.parametrize("depth", [600, 5000])
def test_decode__absurdly_nested_document__is_invalid_manifest(depth: int) -> None:
    field = '{"name": "leaf", "type": "strin"}'
    for _ in range(depth):
        field = '{"name": "n", "type": "array", "items": ' + field + "}"
    text = '{"id": "a", "version": "1.0.0", "tools": [{"id": "t", "output": [' + field + "]}]}"
    with pytest.raises(InvalidManifest):
        packrun.decode_manifest(text)


@pytest.mark.parametrize("data", [None, [], 42, object()])
def test_decode__not_a_document__is_invalid_manifest(data: object) -> None:
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_manifest(data)  # type: ignore[arg-type]
    assert "expected JSON bytes or text" in exc.value.problems[0].message


def test_decode__default_must_fit_its_type_and_enum() -> None:
    doc = {
        "id": "a",
        "version": "1.0.0",
        "tools": [
            {
                "id": "t",
                "input": [
                    {"name": "n", "type": "integer", "default": "abc"},
                    {"name": "s", "type": "string", "enum": ["a", "b"], "default": "c"},
                    {"name": "ok", "type": "number", "default": 2},
                ],
            }
        ],
    }
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_manifest(doc)
    problems = _problems(exc)
    assert problems["$.tools[0].input[0].default"] == "'abc' is not an integer"
    assert "not one of its enum values" in problems["$.tools[0].input[1].default"]
    assert "$.tools[0].input[2].default" not in problems


# --- the richer schema: nullability, constraints, maps, unions, deprecation, errors --------------

RICH: dict[str, Any] = {
    "id": "shop", "network": False,
    "tools": [{
        "id": "create_order", "timeout_s": 20, "deprecated": True, "sunset": "2027-01-31",
        "errors": [{"code": "rate_limited", "retryable": True}, {"code": "out_of_stock"}],
        "input": [
            {"name": "email", "type": "string", "format": "email", "max_length": 254, "min_length": 3,
             "pattern": "@"},
            {"name": "quantity", "type": "integer", "minimum": 1, "exclusive_maximum": 101},
            {"name": "ratio", "type": "number", "exclusive_minimum": 0, "maximum": 1.5},
            {"name": "tags", "type": "array", "min_items": 1, "max_items": 10,
             "items": {"name": "tag", "type": "string"}},
            {"name": "attributes", "type": "map", "max_items": 5,
             "values": {"name": "value", "type": "string", "nullable": True}},
            {"name": "ship_to", "type": "union", "discriminator": "kind", "one_of": [
                {"name": "address", "type": "object", "fields": [{"name": "street", "type": "string"}]},
                {"name": "pickup", "type": "object"}]},
            {"name": "coupon", "type": "string", "nullable": True, "deprecated": True,
             "sunset": "2027-01-31"},
        ],
    }],
}  # fmt: skip


def test_decode__rich_manifest__gives_typed_values_and_version_1_0_0() -> None:
    import datetime

    manifest = packrun.decode_manifest(RICH)
    assert manifest.version == Version(1, 0, 0)  # a connector authored without a version
    assert manifest.network is False
    tool = manifest.tools[0]
    assert (tool.timeout_s, tool.deprecated, tool.sunset) == (20, True, datetime.date(2027, 1, 31))
    assert [(e.code, e.retryable) for e in tool.errors] == [
        ("rate_limited", True),
        ("out_of_stock", False),
    ]
    email, quantity, ratio, tags, attributes, ship_to, coupon = tool.input
    assert (email.format, email.max_length, email.min_length, email.pattern) == (
        "email",
        254,
        3,
        "@",
    )
    assert (quantity.minimum, quantity.exclusive_maximum) == (1, 101)
    assert (ratio.exclusive_minimum, ratio.maximum) == (0, 1.5)
    assert (tags.min_items, tags.max_items) == (1, 10)
    assert attributes.values is not None
    assert attributes.values.nullable
    assert ship_to.discriminator == "kind"
    assert [v.name for v in ship_to.one_of or ()] == ["address", "pickup"]
    assert coupon.nullable
    assert coupon.deprecated


def test_encode__rich_manifest__round_trips() -> None:
    manifest = packrun.decode_manifest(RICH)
    encoded = encode_manifest(manifest)
    assert packrun.decode_manifest(encoded) == manifest
    assert b'"sunset": "2027-01-31"' in encoded
    assert b'"network": false' in encoded


def test_network_and_timeout__unset_is_not_declared_and_a_declared_value_is_kept() -> None:
    manifest = packrun.decode_manifest(DESIGN_EXAMPLE)
    assert manifest.network is msgspec.UNSET
    assert manifest.tools[0].timeout_s is msgspec.UNSET
    declared = packrun.decode_manifest({**DESIGN_EXAMPLE, "network": True})
    assert declared.network is True
    assert b'"network": true' in encode_manifest(declared)  # written as declared
    assert packrun.diff(manifest, declared).findings == ()  # unset means true


def test_encode__parts_left_at_their_default__are_not_written() -> None:
    # A manifest that uses none of the newer parts encodes as it always did: rebuilt bundles keep
    # their digests.
    encoded = json.loads(encode_manifest(packrun.decode_manifest(DESIGN_EXAMPLE)))
    field = encoded["tools"][0]["input"][0]
    for part in ("nullable", "minimum", "pattern", "format", "values", "one_of", "sunset"):
        assert part not in field
    for part in ("errors", "timeout_s", "deprecated", "sunset"):
        assert part not in encoded["tools"][0]
    assert "network" not in encoded
    assert field["default"] == 10
    assert field["required"] is False


@pytest.mark.parametrize(
    ("field", "path", "message"),
    [
        ({"name": "a", "type": "string", "minimum": 1}, ".minimum", "a string field has no 'minimum'"),
        ({"name": "a", "type": "integer", "pattern": "x"}, ".pattern", "no 'pattern'"),
        ({"name": "a", "type": "boolean", "max_items": 1}, ".max_items", "no 'max_items'"),
        ({"name": "a", "type": "map"}, ".values", "a map field needs 'values'"),
        ({"name": "a", "type": "union"}, ".one_of", "a union field needs 'one_of'"),
        ({"name": "a", "type": "union", "one_of": []}, ".one_of", "at least one variant"),
        ({"name": "a", "type": "object", "values": {"name": "v", "type": "string"}}, ".values",
         "no 'values'"),
        ({"name": "a", "type": "integer", "minimum": 5, "maximum": 3}, ".maximum",
         "3 is below minimum 5"),
        ({"name": "a", "type": "string", "min_length": 5, "max_length": 3}, ".max_length",
         "3 is below min_length 5"),
        ({"name": "a", "type": "string", "pattern": "("}, ".pattern", "not a regular expression"),
        ({"name": "a", "type": "string", "sunset": "2027-01-01"}, ".sunset",
         "a sunset needs 'deprecated': true"),
        ({"name": "a", "type": "string", "format": "phone"}, ".format", "expected one of"),
        ({"name": "a", "type": "string", "sunset": "soon", "deprecated": True}, ".sunset",
         "expected a date (YYYY-MM-DD)"),
        ({"name": "a", "type": "string", "max_length": -1}, ".max_length", ">= 0"),
        ({"name": "a", "type": "union", "discriminator": "kind",
          "one_of": [{"name": "s", "type": "string"}]}, ".one_of[0].type",
         "a variant of a union with a discriminator is an object"),
        ({"name": "a", "type": "map", "values": {"name": "v", "type": "array"}}, ".values.items",
         "an array field needs 'items'"),
        ({"name": "a", "type": "string", "discriminator": "kind"}, ".discriminator",
         "a discriminator needs 'one_of'"),
        ({"name": "a", "type": "object", "one_of": [], "discriminator": "kind"}, ".one_of",
         "at least one variant"),
    ],
)  # fmt: skip
def test_decode__richer_parts__refused_where_they_do_not_fit(
    field: dict[str, Any], path: str, message: str
) -> None:
    doc = {"id": "x", "tools": [{"id": "t", "input": [field]}]}
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_manifest(doc)
    problems = _problems(exc)
    assert message in problems[f"$.tools[0].input[0]{path}"], problems


def test_decode__tool_errors_and_sunset__are_checked() -> None:
    doc = {
        "id": "x",
        "tools": [
            {
                "id": "t",
                "sunset": "2027-01-01",
                "timeout_s": 0,
                "errors": [{"code": "a"}, {"code": "a", "retryable": "yes"}],
            }
        ],
    }
    with pytest.raises(InvalidManifest) as exc:
        packrun.decode_manifest(doc)
    problems = _problems(exc)
    assert problems["$.tools[0].sunset"] == "a sunset needs 'deprecated': true"
    assert "duplicate error code 'a'" in problems["$.tools[0].errors[1]"]
    assert "expected a boolean" in problems["$.tools[0].errors[1].retryable"]
    assert "> 0" in problems["$.tools[0].timeout_s"]


# --- the JSON Schema ------------------------------------------------------------------------------

from pathlib import Path  # noqa: E402

from packrun._manifest import Field, Manifest, Tool  # noqa: E402


def test_schema__is_generated_from_the_types_and_published_in_the_docs() -> None:
    schema = packrun.manifest_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    defs = schema["$defs"]
    for name, cls in (("Manifest", Manifest), ("Field", Field), ("Tool", Tool)):
        names = [f.encode_name for f in msgspec.structs.fields(cls)]
        assert list(defs[name]["properties"]) == names
        assert defs[name]["additionalProperties"] is False
    assert defs["Manifest"]["required"] == ["id", "tools"]  # a version defaults to 1.0.0
    assert defs["Manifest"]["properties"]["version"]["default"] == "1.0.0"
    assert {"map", "union"} <= set(defs["Field"]["properties"]["type"]["enum"])
    assert "email" in defs["Field"]["properties"]["format"]["anyOf"][0]["enum"]
    published = Path(__file__).parents[1] / "docs" / "manifest.schema.json"
    assert json.loads(published.read_text()) == schema


def test_schema__cli_prints_or_writes_it(tmp_path: Path) -> None:
    import io

    from packrun._cli import main

    out = io.StringIO()
    assert main(["schema"], stdout=out, stderr=io.StringIO()) == 0
    assert json.loads(out.getvalue()) == packrun.manifest_schema()
    target = tmp_path / "manifest.schema.json"
    out = io.StringIO()
    assert main(["schema", "--out", str(target)], stdout=out, stderr=io.StringIO()) == 0
    assert json.loads(target.read_text()) == packrun.manifest_schema()
    assert str(target) in out.getvalue()


def test_decode__one_of_on_an_object__is_an_object_of_one_of_its_variants() -> None:
    manifest = packrun.decode_manifest(
        {"id": "x", "tools": [{"id": "t", "input": [{
            "name": "pay", "type": "object", "discriminator": "kind",
            "one_of": [{"name": "card", "type": "object"}, {"name": "cash", "type": "object"}],
        }]}]}
    )  # fmt: skip
    pay = manifest.tools[0].input[0]
    assert (pay.type, pay.discriminator) == ("object", "kind")
    assert [v.name for v in pay.one_of or ()] == ["card", "cash"]
