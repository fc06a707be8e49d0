"""Checks at run time: a call's input checked against its declaration, against msgspec itself.

A tool's declared input is compiled once into msgspec types; checking a call is one
``msgspec.convert``. The baseline is ``msgspec.convert`` of the same value into a hand-written
``Struct`` that says the same thing: the goal is to cost no more than 1.5 times that.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from _harness import Row, best_of, main

import packrun
from packrun._checks import CallChecks, HealthCounters, compile_contracts

FIELDS: list[dict[str, Any]] = [
    {"name": "account_id", "type": "string", "required": True, "min_length": 1, "max_length": 64},
    {"name": "limit", "type": "integer", "minimum": 1, "maximum": 500},
    {"name": "cursor", "type": "string", "nullable": True},
    {"name": "status", "type": "string", "enum": ["open", "won", "lost"]},
    {"name": "min_amount", "type": "number", "minimum": 0},
    {"name": "include_archived", "type": "boolean"},
    {"name": "tags", "type": "array", "max_items": 20, "items": {"name": "tag", "type": "string"}},
    {"name": "labels", "type": "map", "values": {"name": "label", "type": "string"}},
    {
        "name": "sort",
        "type": "object",
        "fields": [
            {"name": "key", "type": "string", "required": True, "pattern": "^[a-z_]+$"},
            {"name": "descending", "type": "boolean"},
        ],
    },
    {"name": "owner", "type": "string"},
]
VALUE: dict[str, Any] = {
    "account_id": "acc-123",
    "limit": 50,
    "cursor": None,
    "status": "open",
    "min_amount": 100.5,
    "include_archived": False,
    "tags": ["vip", "emea", "renewal"],
    "labels": {"team": "north", "tier": "gold"},
    "sort": {"key": "created_at", "descending": True},
    "owner": "ann",
}


class Sort(msgspec.Struct):
    key: Annotated[str, msgspec.Meta(pattern="^[a-z_]+$")]
    descending: bool | None = None


class Input(msgspec.Struct, kw_only=True):
    account_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] | None = None
    cursor: str | None = None
    status: Literal["open", "won", "lost"] | None = None
    min_amount: Annotated[float, msgspec.Meta(ge=0)] | None = None
    include_archived: bool | None = None
    tags: Annotated[list[str], msgspec.Meta(max_length=20)] | None = None
    labels: dict[str, str] | None = None
    sort: Sort | None = None
    owner: str | None = None


def rows() -> list[Row]:
    manifest = packrun.decode_manifest({"id": "crm", "tools": [{"id": "t", "input": FIELDS}]})
    contracts = compile_contracts(manifest)
    contract = contracts["t"]
    checks = CallChecks(contracts, HealthCounters(), "enforce", "warn", "crm", "1.0.0", print)
    assert contract.input_problems(VALUE) == []
    msgspec.convert(VALUE, Input)

    email = packrun.decode_manifest(
        {"id": "crm", "tools": [{"id": "t", "input": [
            {"name": "email", "type": "string", "format": "email"}]}]}
    )  # fmt: skip
    email_contract = compile_contracts(email)["t"]

    class Email(msgspec.Struct):
        email: str | None = None

    return [
        Row(
            "checking a call's input (10 fields, nested, constraints)",
            "msgspec.convert into an equivalent Struct",
            best_of(lambda: contract.input_problems(VALUE)),
            best_of(lambda: msgspec.convert(VALUE, Input)),
            goal="<= 1.5",
        ),
        Row(
            "the same through CallChecks.before (counting, mode)",
            "msgspec.convert into an equivalent Struct",
            best_of(lambda: checks.before("t", VALUE)),
            best_of(lambda: msgspec.convert(VALUE, Input)),
            goal="<= 1.5",
        ),
        Row(
            "an `email` field (a format msgspec has no type for)",
            "msgspec.convert of a plain string field",
            best_of(lambda: email_contract.input_problems({"email": "ann@example.com"})),
            best_of(lambda: msgspec.convert({"email": "ann@example.com"}, Email)),
        ),
    ]


if __name__ == "__main__":
    main(rows)
