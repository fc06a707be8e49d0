"""OpenAPI import (``packrun._openapi``): real public documents, a 3.1 document that uses what the
manifest can say, and the diff of two revisions of one API.

``tests/data/openapi`` holds the OpenAPI Initiative's Petstore examples, with their licence.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import packrun
from packrun import InvalidManifest, diff, import_openapi
from packrun._cli import main

DATA = Path(__file__).parent / "data" / "openapi"
PETSTORE = DATA / "petstore.yaml"


def shape(fields: Any) -> list[tuple[str, str, bool]]:
    return [(f.name, f.type, f.required) for f in fields]


def test_petstore__one_tool_per_operation_with_its_input_output_and_group() -> None:
    manifest = import_openapi(PETSTORE)
    assert (manifest.id, manifest.name, str(manifest.version)) == (
        "swagger-petstore",
        "Swagger Petstore",
        "1.0.0",
    )
    assert manifest.tool_ids() == ("listPets", "createPets", "showPetById")
    assert [(g.id, g.name) for g in manifest.groups] == [("pets", "pets")]
    list_pets, create, show = manifest.tools
    assert (list_pets.method, list_pets.action_type, list_pets.group) == ("GET", "read", "pets")
    [limit] = list_pets.input
    assert (limit.name, limit.type, limit.required, limit.maximum) == (
        "limit",
        "integer",
        False,
        100,
    )
    [result] = list_pets.output  # the response is an array: one field holds it
    assert (result.name, result.type, result.max_items) == ("result", "array", 100)
    assert result.items is not None
    assert shape(result.items.fields) == [
        ("id", "integer", True),
        ("name", "string", True),
        ("tag", "string", False),
    ]
    assert (create.method, create.action_type) == ("POST", "write")
    assert shape(create.input) == shape(result.items.fields)  # the body's properties
    assert create.output == ()  # 201 without content
    assert shape(show.input) == [("petId", "string", True)]
    assert shape(show.output) == shape(result.items.fields)
    assert manifest.auth.mode == "none"


def test_petstore_expanded__all_of_is_merged_and_odd_operation_ids_are_cleaned() -> None:
    manifest = import_openapi(DATA / "petstore-expanded.yaml")
    assert manifest.tool_ids() == ("findPets", "addPet", "find_pet_by_id", "deletePet")
    find, add, by_id, delete = manifest.tools
    assert shape(find.input) == [("tags", "array", False), ("limit", "integer", False)]
    assert shape(add.input) == [("name", "string", True), ("tag", "string", False)]
    pet = [("name", "string", True), ("tag", "string", False), ("id", "integer", True)]
    assert shape(add.output) == pet  # Pet = allOf(NewPet, {id})
    assert shape(by_id.output) == pet
    assert (delete.method, delete.action_type, delete.output) == ("DELETE", "delete", ())


def test_a_revision_of_one_spec__diffs_into_sensible_findings(tmp_path: Path) -> None:
    doc = yaml.safe_load(PETSTORE.read_text())
    revised = copy.deepcopy(doc)
    revised["info"]["version"] = "1.1.0"
    list_pets = revised["paths"]["/pets"]["get"]
    list_pets["parameters"][0]["schema"]["maximum"] = 50
    list_pets["parameters"].append(
        {"name": "owner", "in": "query", "required": True, "schema": {"type": "string"}}
    )
    revised["components"]["schemas"]["Pet"]["properties"]["tag"]["nullable"] = True
    revised["paths"]["/pets/{petId}"]["delete"] = {
        "operationId": "deletePet",
        "tags": ["pets"],
        "parameters": [
            {"name": "petId", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {"204": {"description": "deleted"}, "404": {"description": "no such pet"}},
    }
    report = diff(import_openapi(doc), import_openapi(revised))
    found = {(f.rule_id, f.path) for f in report.findings}
    assert ("input.range_tightened", "$.tools[listPets].input[limit].maximum") in found
    assert ("input.required_field_added", "$.tools[listPets].input[owner]") in found
    assert ("output.became_nullable", "$.tools[showPetById].output[tag].nullable") in found
    assert ("tool.added", "$.tools[deletePet]") in found
    assert report.verdict == "red"  # breaking changes in a minor
    assert {f.level for f in report.findings if f.rule_id == "input.became_nullable"} <= {
        "compatible"
    }


INVOICE = {"$ref": "#/components/schemas/Invoice"}
OPENAPI_31: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Billing API", "version": "2.4"},
    "security": [{"oauth": ["invoices:read"]}],
    "tags": [{"name": "Invoices", "description": "Money owed"}],
    "paths": {
        "/invoices/{id}": {
            "parameters": [{"$ref": "#/components/parameters/Id"}],
            "get": {
                "operationId": "getInvoice",
                "tags": ["Invoices"],
                "deprecated": True,
                "responses": {
                    "200": {"content": {"application/json": {"schema": INVOICE}}},
                    "404": {"description": "No such invoice"},
                    "429": {"description": "Slow down"},
                },
            },
        }
    },
    "components": {
        "parameters": {"Id": {"name": "id", "in": "path", "required": True,
                              "schema": {"type": "string", "format": "uuid"}}},
        "securitySchemes": {
            "oauth": {"type": "oauth2", "flows": {"clientCredentials": {
                "tokenUrl": "https://example.com/token", "scopes": {"invoices:read": "read"}}}}
        },
        "schemas": {
            "Invoice": {
                "type": "object",
                "required": ["id", "total", "payer"],
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "total": {"type": "number", "exclusiveMinimum": 0},
                    "note": {"type": ["string", "null"], "maxLength": 500},
                    "status": {"enum": ["open", "paid", None]},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "payer": {
                        "oneOf": [{"$ref": "#/components/schemas/Person"},
                                  {"$ref": "#/components/schemas/Company"}],
                        "discriminator": {"propertyName": "kind", "mapping": {
                            "person": "#/components/schemas/Person",
                            "company": "#/components/schemas/Company"}},
                    },
                    "parent": {"$ref": "#/components/schemas/Invoice"},
                },
            },
            "Person": {"type": "object", "properties": {"name": {"type": "string"}}},
            "Company": {"type": "object", "properties": {"vat": {"type": "string", "pattern": "^[A-Z]{2}"}}},
        },
    },
}  # fmt: skip


def test_openapi_3_1__constraints_maps_unions_auth_errors_and_recursion() -> None:
    manifest = import_openapi(OPENAPI_31, id="billing")
    assert (manifest.id, str(manifest.version)) == ("billing", "2.4.0")
    assert (manifest.auth.mode, manifest.auth.scopes) == ("oauth2", ("invoices:read",))
    assert [(g.id, g.name, g.description) for g in manifest.groups] == [
        ("Invoices", "Invoices", "Money owed")
    ]
    [tool] = manifest.tools
    assert (tool.id, tool.deprecated, tool.group) == ("getInvoice", True, "Invoices")
    [param] = tool.input
    assert (param.name, param.format, param.required) == ("id", "uuid", True)
    assert [(e.code, e.retryable, e.description) for e in tool.errors] == [
        ("http_404", False, "No such invoice"),
        ("http_429", True, "Slow down"),
    ]
    out = {f.name: f for f in tool.output}
    assert out["total"].exclusive_minimum == 0
    assert (out["note"].nullable, out["note"].max_length) == (True, 500)
    assert (out["status"].enum, out["status"].nullable) == (("open", "paid"), True)
    assert out["labels"].type == "map"
    assert out["labels"].values is not None
    payer = out["payer"]
    assert (payer.type, payer.discriminator) == ("union", "kind")
    assert [v.name for v in payer.one_of or ()] == ["person", "company"]
    # A recursive reference stops: the nested invoice is an object whose fields are not listed.
    assert (out["parent"].type, out["parent"].fields) == ("object", None)


def test_a_file_with_a_relative_reference_to_another_file(tmp_path: Path) -> None:
    (tmp_path / "schemas.json").write_text(
        json.dumps({"Thing": {"type": "object", "properties": {"n": {"type": "integer"}}}})
    )
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "Things", "version": "1.0.0"},
        "paths": {"/t": {"get": {"operationId": "getThing", "responses": {"200": {
            "content": {"application/json": {"schema": {"$ref": "schemas.json#/Thing"}}}}}}}},
    }  # fmt: skip
    path = tmp_path / "api.json"
    path.write_text(json.dumps(spec))
    [tool] = import_openapi(path).tools
    assert shape(tool.output) == [("n", "integer", False)]


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"swagger": "2.0", "info": {"title": "x", "version": "1"}}, "got '2.0'"),
        (
            {"openapi": "3.0.0", "info": {"title": "x", "version": "1"}, "paths": {}},
            "at least one tool",
        ),
    ],
)
def test_what_cannot_be_a_manifest__is_invalid_manifest(doc: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidManifest) as exc:
        import_openapi(doc)
    assert words in str(exc.value)


def test_cli__prints_or_writes_the_manifest(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["import-openapi", str(PETSTORE)], stdout=out, stderr=err) == 0, err.getvalue()
    assert packrun.decode_manifest(out.getvalue()) == import_openapi(PETSTORE)
    out = io.StringIO()
    argv = ["import-openapi", str(PETSTORE), "--out", str(tmp_path / "src"), "--id", "pets"]
    assert main(argv, stdout=out, stderr=io.StringIO()) == 0
    written = packrun.decode_manifest((tmp_path / "src" / "manifest.json").read_bytes())
    assert written.id == "pets"
    assert "3 tool(s)" in out.getvalue()


def test_the_documents__ship_with_their_licence() -> None:
    assert "Apache License" in (DATA / "LICENSE-petstore.txt").read_text()
    readme = (DATA / "README.md").read_text()
    for document in DATA.glob("*.yaml"):
        assert f"`{document.name}`" in readme
