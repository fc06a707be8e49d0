"""Checks at run time (``packrun._checks``): a call's input and a tool's output against the manifest.

The first half is a table: one declared field per row, values that fit it and values that do not,
each refused value with the path and the words its problem must carry. The second half runs real
bundles through a runtime in each check mode and reads the counters ``rt.health`` keeps.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

import packrun
import packrun._checks
import packrun._runtime
from packrun import InvalidArgument, InvalidInput, InvalidOutput, NotFound, Runtime, VersionHealth
from packrun._bundle import bundle_bytes
from packrun._checks import compile_contracts

# --- the table: one declared field, values that fit, values that do not --------------------------

Row = tuple[str, dict[str, Any], list[Any], list[tuple[Any, str, str]]]
"""(id, the declared field, values that fit, [(a value that does not, its path, words)])."""

ROWS: list[Row] = [
    ("string", {"type": "string"}, ["", "x"], [(1, "$.f", "expected a string, got integer"),
                                              (None, "$.f", "got null")]),
    ("nullable string", {"type": "string", "nullable": True}, ["x", None], [(2, "$.f", "string")]),
    ("integer", {"type": "integer"}, [0, -3], [(1.5, "$.f", "expected an integer, got number"),
                                               (True, "$.f", "got boolean"),
                                               ("1", "$.f", "got string")]),
    ("number takes integers", {"type": "number"}, [1, 1.5], [("1", "$.f", "got string"),
                                                             (False, "$.f", "got boolean")]),
    ("boolean", {"type": "boolean"}, [True, False], [(0, "$.f", "expected a boolean")]),
    ("range", {"type": "integer", "minimum": 1, "maximum": 10}, [1, 10],
     [(0, "$.f", ">= 1"), (11, "$.f", "<= 10")]),
    ("exclusive range", {"type": "number", "exclusive_minimum": 0, "exclusive_maximum": 1},
     [0.5], [(0, "$.f", "> 0"), (1, "$.f", "< 1")]),
    ("length", {"type": "string", "min_length": 2, "max_length": 3}, ["ab", "abc"],
     [("a", "$.f", "length >= 2"), ("abcd", "$.f", "length <= 3")]),
    ("pattern", {"type": "string", "pattern": "^[a-z]+$"}, ["abc"], [("aB", "$.f", "regex")]),
    ("string enum", {"type": "string", "enum": ["a", "b"]}, ["a"], [("c", "$.f", "'a', 'b'")]),
    ("integer enum", {"type": "integer", "enum": [1, 2]}, [2], [(3, "$.f", "1, 2")]),
    ("number enum: 1.0 is 1, true is not", {"type": "number", "enum": [1, 2.5]}, [1.0, 2.5],
     [(True, "$.f", "expected one of 1, 2.5, got true"), (3, "$.f", "got 3")]),
    ("date-time", {"type": "string", "format": "date-time"}, ["2026-12-03T10:00:00Z"],
     [("yesterday", "$.f", "date-time"), (5, "$.f", "got integer")]),
    ("date", {"type": "string", "format": "date"}, ["2026-12-03"], [("2026-13-03", "$.f", "date")]),
    ("uuid", {"type": "string", "format": "uuid"}, ["6f1c2a0e-2f6b-4b8e-9a51-1b1f5d3c9e10"],
     [("not-a-uuid", "$.f", "UUID")]),
    ("duration", {"type": "string", "format": "duration"}, ["PT5M"], [("5 minutes", "$.f", "")]),
    ("email", {"type": "string", "format": "email"}, ["ann@example.com"],
     [("ann", "$.f", "an email address, got 'ann'"), ("a@b@c", "$.f", "email")]),
    ("email with a length", {"type": "string", "format": "email", "max_length": 10},
     ["a@b.co"], [("ann@example.com", "$.f", "length <= 10"), ("ann", "$.f", "email")]),
    ("date with a length: both hold", {"type": "string", "format": "date", "min_length": 10},
     ["2026-12-03"], [("2026-1-3", "$.f", "")]),
    ("uri", {"type": "string", "format": "uri"}, ["https://example.com/x"],
     [("example.com", "$.f", "URI")]),
    ("hostname", {"type": "string", "format": "hostname"}, ["api.example.com"],
     [("-bad-.com", "$.f", "host name")]),
    ("ipv4", {"type": "string", "format": "ipv4"}, ["10.0.0.1"], [("::1", "$.f", "IPv4")]),
    ("ipv6", {"type": "string", "format": "ipv6"}, ["::1"], [("10.0.0.1", "$.f", "IPv6")]),
    ("byte", {"type": "string", "format": "byte"}, ["aGk="], [("h!", "$.f", "base64")]),
    ("array", {"type": "array", "min_items": 1, "max_items": 2,
               "items": {"name": "i", "type": "integer"}}, [[1], [1, 2]],
     [([], "$.f", "at least 1 items"), ([1, 2, 3], "$.f", "at most 2 items"),
      ([1, "x"], "$.f[1]", "expected an integer"), ({}, "$.f", "expected an array")]),
    ("map", {"type": "map", "max_items": 2, "values": {"name": "v", "type": "string"}},
     [{}, {"a": "x"}], [({"a": 1}, "$.f.a", "expected a string"),
                        ({"a": "x", "b": "y", "c": "z"}, "$.f", "at most 2 entries"),
                        ([], "$.f", "expected an object")]),
    ("object", {"type": "object", "fields": [{"name": "id", "type": "string", "required": True},
                                             {"name": "n", "type": "integer"}]},
     [{"id": "x"}, {"id": "x", "n": 1, "other": True}],
     [({}, "$.f.id", "required field is missing"), ({"id": "x", "n": "1"}, "$.f.n", "integer")]),
    ("object without fields", {"type": "object"}, [{}, {"a": 1}], [([], "$.f", "object")]),
    ("union with a discriminator", {"type": "union", "discriminator": "kind", "one_of": [
        {"name": "email", "type": "object",
         "fields": [{"name": "address", "type": "string", "required": True}]},
        {"name": "user", "type": "object"}]},
     [{"kind": "email", "address": "a@b"}, {"kind": "user"}],
     [({"kind": "fax"}, "$.f", "'kind' to be one of email, user, got 'fax'"),
      ({"kind": "email"}, "$.f", "variant 'email': at .address: required field is missing"),
      ("x", "$.f", "expected an object with 'kind'")]),
    ("an object that is one of its variants", {"type": "object", "discriminator": "kind",
                                               "one_of": [
        {"name": "card", "type": "object",
         "fields": [{"name": "number", "type": "string", "required": True}]},
        {"name": "cash", "type": "object"}]},
     [{"kind": "card", "number": "4111"}, {"kind": "cash"}],
     [({"kind": "card"}, "$.f", "variant 'card': at .number: required field is missing"),
      ({"kind": "iou"}, "$.f", "one of card, cash")]),
    ("union without a discriminator", {"type": "union", "one_of": [
        {"name": "n", "type": "integer"}, {"name": "s", "type": "string", "max_length": 2}]},
     [1, "ab"], [("abc", "$.f", "one of the variants n, s"), (None, "$.f", "variants")]),
]  # fmt: skip


def contract_of(field: dict[str, Any], *, required: bool = True) -> Any:
    manifest = packrun.decode_manifest(
        {
            "id": "x",
            "tools": [
                {
                    "id": "t",
                    "input": [{"name": "f", "required": required, **field}],
                    "output": [{"name": "f", "required": required, **field}],
                }
            ],
        }
    )
    return compile_contracts(manifest)["t"]


@pytest.mark.parametrize(("id", "field", "good", "bad"), ROWS, ids=[r[0] for r in ROWS])
def test_a_declared_field__takes_what_fits_and_names_what_does_not(
    id: str, field: dict[str, Any], good: list[Any], bad: list[tuple[Any, str, str]]
) -> None:
    contract = contract_of(field)
    for value in good:
        assert contract.input_problems({"f": value}) == [], value
        assert contract.output_problems({"f": value}) == [], value
    for value, path, words in bad:
        problems = contract.input_problems({"f": value})
        assert [p.path for p in problems] == [path], (value, problems)
        assert words in problems[0].message, (value, problems[0].message)
        assert contract.output_problems({"f": value}) == problems


def test_every_bad_path__is_listed_at_once() -> None:
    manifest = packrun.decode_manifest(
        {
            "id": "x",
            "tools": [
                {
                    "id": "t",
                    "input": [
                        {"name": "limit", "type": "integer", "maximum": 100},
                        {"name": "q", "type": "string", "required": True},
                        {"name": "tags", "type": "array", "items": {"name": "t", "type": "string"}},
                    ],
                    "filters": [{"name": "status", "type": "string", "enum": ["open"]}],
                }
            ],
        }
    )
    contract = compile_contracts(manifest)["t"]
    problems = contract.input_problems({"limit": 500, "tags": ["a", 2, 3], "status": "shut"})
    assert [p.path for p in problems] == ["$.limit", "$.q", "$.tags[1]", "$.tags[2]", "$.status"]


def test_optional_fields__may_be_left_out_but_not_null_unless_nullable() -> None:
    contract = contract_of({"type": "string"}, required=False)
    assert contract.input_problems({}) == []
    assert [p.path for p in contract.input_problems({"f": None})] == ["$.f"]
    assert (
        contract_of({"type": "string", "nullable": True}, required=False).input_problems(
            {"f": None}
        )
        == []
    )


def test_keys_not_declared__are_let_through() -> None:
    assert contract_of({"type": "string"}).input_problems({"f": "x", "extra": [1]}) == []


def test_a_tool_that_declares_nothing__takes_anything() -> None:
    manifest = packrun.decode_manifest({"id": "x", "tools": [{"id": "t"}]})
    contract = compile_contracts(manifest)["t"]
    assert (contract.input, contract.output) == (None, None)
    assert contract.input_problems([1, 2]) == contract.output_problems("anything") == []


def test_an_output_that_is_not_an_object__is_named() -> None:
    problems = contract_of({"type": "string"}).output_problems(["x"])
    assert [(p.path, p.message) for p in problems] == [("$", "expected an object, got array")]


def test_field_names_that_are_not_identifiers__are_checked_by_their_names() -> None:
    contract = contract_of({"type": "object", "fields": [
        {"name": "contact.id", "type": "string", "required": True},
        {"name": "first-name", "type": "string"}]})  # fmt: skip
    assert contract.input_problems({"f": {"contact.id": "c1", "first-name": "Ann"}}) == []
    problems = contract.input_problems({"f": {"first-name": 1}})
    assert [p.path for p in problems] == ["$.f.contact.id", "$.f.first-name"]


# --- in a runtime: modes, counters, the tool not running -----------------------------------------

pytestmark = pytest.mark.anyio

SHOP_CODE = """\
from packrun.sdk import Integration

integration = Integration("shop")
CALLS = []


@integration.tool("create_order")
async def create_order(ctx, input):
    CALLS.append(dict(input))
    return input.get("reply", {"order_id": "o-1", "total": 12.5})


@integration.tool("count")
def count(ctx, input):
    CALLS.append(dict(input))
    return input.get("reply", {"n": 1})
"""

SHOP = {
    "id": "shop",
    "version": "1.0.0",
    "contract": 2,
    "tools": [
        {
            "id": "create_order",
            "input": [
                {"name": "quantity", "type": "integer", "required": True, "minimum": 1},
                {"name": "email", "type": "string", "format": "email"},
            ],
            "output": [
                {"name": "order_id", "type": "string", "required": True},
                {"name": "total", "type": "number", "required": True, "minimum": 0},
            ],
        },
        {
            "id": "count",
            "input": [{"name": "since", "type": "string", "format": "date"}],
            "output": [
                {"name": "n", "type": "integer", "required": True},
                {"name": "since", "type": "string", "format": "date"},
            ],
        },
    ],
}


def shop(version: str = "1.0.0") -> bytes:
    manifest = packrun.decode_manifest({**SHOP, "version": version})
    return bundle_bytes(manifest, {"__init__.py": SHOP_CODE.encode()})


async def open_shop(**modes: Any) -> AsyncIterator[Runtime]:
    # In-process, so that the tests can read what the tools were called with; the checks are the
    # host's either way (test_checks__through_the_sandbox__hold_the_same).
    modes.setdefault("in_process", {"vendor", "custom"})
    async with packrun.open_runtime("memory:", **modes) as rt:
        await rt.publish(shop())
        await rt.install("shop-prod", "shop")
        yield rt


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def rt() -> AsyncIterator[Runtime]:
    async for runtime in open_shop():
        yield runtime


def calls_of(rt: Runtime) -> list[dict[str, Any]]:
    """What the shop's tools were called with (in this process: a loaded module is shared)."""
    dispatcher = next(iter(rt._dispatchers.values()))
    assert dispatcher.loaded is not None
    return dispatcher.loaded.module.CALLS  # type: ignore[no-any-return]


async def test_defaults__a_bad_input_is_refused_before_the_tool_runs(rt: Runtime) -> None:
    assert (rt.check_input, rt.check_output) == ("enforce", "warn")
    async with rt.run("shop-prod") as run:
        assert await run.call("create_order", {"quantity": 2, "mark": "ran"}) == {
            "order_id": "o-1",
            "total": 12.5,
        }
        with pytest.raises(InvalidInput) as exc:
            await run.call("create_order", {"quantity": 0, "email": "ann", "mark": "refused"})
        with pytest.raises(InvalidInput):
            await run.call("count", {"since": "2026-13-01"})  # a sync tool: refused the same way
    error = exc.value
    assert (error.code, error.pack, error.version, error.tool) == (
        "invalid_input", "shop", "1.0.0", "create_order"
    )  # fmt: skip
    assert [p.path for p in error.problems] == ["$.quantity", "$.email"]
    assert "at $.quantity" in str(error)
    assert "the tool did not run" in str(error)
    marks = [c.get("mark") for c in calls_of(rt)]
    assert "ran" in marks
    assert "refused" not in marks
    assert rt.health("shop", "1.0.0") == VersionHealth("shop", "1.0.0", 3, 2, 0)


async def test_checks__through_the_sandbox__hold_the_same() -> None:
    async for rt in open_shop(in_process=frozenset()):
        assert not rt.in_process
        async with rt.run("shop-prod") as run:
            assert await run.call("create_order", {"quantity": 2}) == {
                "order_id": "o-1",
                "total": 12.5,
            }
            with pytest.raises(InvalidInput) as exc:
                await run.call("create_order", {"quantity": 0, "email": "ann"})
        assert [p.path for p in exc.value.problems] == ["$.quantity", "$.email"]
        assert not rt._dispatchers  # nothing of the bundle was imported here
        assert rt.health("shop", "1.0.0") == VersionHealth("shop", "1.0.0", 2, 1, 0)


async def test_defaults__a_bad_output_is_returned_counted_and_logged(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    bad = {"order_id": 7, "total": -1}
    with caplog.at_level(logging.WARNING, logger="packrun"):
        for _ in range(3):
            out = await rt.call("shop-prod", "create_order", {"quantity": 1, "reply": bad})
            assert out == bad
    assert rt.health("shop", "1.0.0").invalid_output == 3
    warnings = [r.getMessage() for r in caplog.records if "[invalid_output]" in r.getMessage()]
    assert len(warnings) == 1  # at most once a minute per version, tool and side
    assert "$.order_id" in warnings[0]
    assert "$.total" in warnings[0]


async def test_enforce_outputs__a_bad_output_is_invalid_output() -> None:
    async for rt in open_shop(check_output="enforce"):
        with pytest.raises(InvalidOutput) as exc:
            await rt.call("shop-prod", "count", {"reply": {"n": "many"}})
        assert [p.path for p in exc.value.problems] == ["$.n"]
        assert await rt.call("shop-prod", "count", {}) == {"n": 1}
        assert rt.health("shop", "1.0.0") == VersionHealth("shop", "1.0.0", 2, 0, 1)


async def test_warn_inputs__the_tool_runs_and_the_violation_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async for rt in open_shop(check_input="warn"):
        with caplog.at_level(logging.WARNING, logger="packrun"):
            assert await rt.call("shop-prod", "create_order", {"quantity": "two"})
        assert {"quantity": "two"} in calls_of(rt)
        assert rt.health("shop", "1.0.0").invalid_input == 1
        assert any("[invalid_input]" in r.getMessage() for r in caplog.records)


async def test_off__nothing_is_checked_but_calls_are_counted() -> None:
    async for rt in open_shop(check_input="off", check_output="off"):
        await rt.call("shop-prod", "create_order", {"reply": {"nothing": True}})
        assert rt.health("shop", "1.0.0") == VersionHealth("shop", "1.0.0", 1, 0, 0)


async def test_a_mode_changed_on_the_runtime__holds_for_the_runs_started_after(
    rt: Runtime,
) -> None:
    bad = {"since": "2026-13-01"}
    with pytest.raises(InvalidInput):
        await rt.call("shop-prod", "count", bad)
    rt.check_input = "off"
    assert await rt.call("shop-prod", "count", bad) == {"n": 1}
    rt.check_input = "enforce"
    with pytest.raises(InvalidInput):
        await rt.call("shop-prod", "count", bad)
    assert rt.health("shop", "1.0.0") == VersionHealth("shop", "1.0.0", 3, 2, 0)


async def test_health__is_per_version(rt: Runtime) -> None:
    await rt.publish(shop("1.1.0"))
    await rt.install("shop-next", "shop", "1.1.0")
    await rt.call("shop-next", "count", {})
    with pytest.raises(InvalidInput):
        await rt.call("shop-prod", "count", {"since": 1})
    assert rt.health("shop", "1.1.0") == VersionHealth("shop", "1.1.0", 1, 0, 0)
    assert rt.health("shop", "1.0.0") == VersionHealth("shop", "1.0.0", 1, 1, 0)
    with pytest.raises(NotFound):
        rt.health("shop", "9.9.9")


async def test_health__is_per_catalog_row_when_a_custom_row_carries_a_vendor_number(
    rt: Runtime,
) -> None:
    await rt.publish(shop("1.0.0"), channel="custom", project="acme-corp")
    await rt.install("corp-shop", "shop", "1.0.0", project="acme-corp")
    assert rt.resolve("corp-shop").channel == "custom"
    await rt.call("shop-prod", "count", {})
    with pytest.raises(InvalidInput):
        await rt.call("corp-shop", "count", {"since": 1})
    assert rt.health("shop", "1.0.0") == VersionHealth("shop", "1.0.0", 1, 0, 0)
    custom = VersionHealth("shop", "1.0.0", 1, 1, 0, "custom")
    assert rt.health("shop", "1.0.0", project="acme-corp") == custom  # its own row first
    assert rt.health("shop", "custom:1.0.0", project="acme-corp") == custom
    assert rt.health("shop", "vendor:1.0.0", project="acme-corp").calls == 1
    with pytest.raises(NotFound):
        rt.health("shop", "custom:1.0.0")  # the default project has no custom row


async def test_validators__are_compiled_once_per_digest(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled: list[str] = []
    real = packrun._checks.compile_contracts

    def counting(manifest: packrun.Manifest) -> Any:
        compiled.append(manifest.id)
        return real(manifest)

    monkeypatch.setattr(packrun._runtime, "compile_contracts", counting)
    for n in range(5):
        async with rt.run("shop-prod", run_id=f"r-{n}") as run:
            await run.call("count", {})
            await run.call("count", {})
    assert compiled == ["shop"]


@pytest.mark.parametrize("option", ["check_input", "check_output"])
async def test_an_unknown_mode__is_invalid_argument(option: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        packrun.open_runtime("memory:", **{option: "strict"})  # type: ignore[arg-type]
    assert option in str(exc.value)
    assert "off, warn, enforce" in str(exc.value)


async def test_health__counts_exactly_under_concurrent_calls_of_sync_and_async_tools(
    rt: Runtime,
) -> None:
    import anyio

    async def caller(n: int) -> None:
        async with rt.run("shop-prod") as run:
            for i in range(10):
                tool = "count" if (n + i) % 2 else "create_order"
                bad = i % 3 == 0
                value: dict[str, Any] = (
                    ({"since": 5} if tool == "count" else {"quantity": 0})
                    if bad
                    else ({} if tool == "count" else {"quantity": 1})
                )
                try:
                    await run.call(tool, value)
                except InvalidInput:
                    assert bad

    async with anyio.create_task_group() as tg:
        for n in range(40):
            tg.start_soon(caller, n)
    # 40 runs x 10 calls; calls 0, 3, 6 and 9 of each run are refused.
    assert rt.health("shop", "1.0.0") == VersionHealth("shop", "1.0.0", 400, 160, 0)


async def test_a_credential_echoed_into_a_bad_value__is_redacted_in_errors_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cr3t-token-value"
    auth = packrun.Auth.api_key(secret)
    async for rt in open_shop(check_output="warn"):
        with pytest.raises(InvalidInput) as refused:
            await rt.call("shop-prod", "count", {"since": secret}, auth=auth)
        assert secret not in str(refused.value)
        assert secret not in repr(refused.value.problems)
        assert "<redacted>" in str(refused.value)
        with caplog.at_level(logging.WARNING, logger="packrun"):
            reply = {"n": 1, "since": secret}
            assert await rt.call("shop-prod", "count", {"reply": reply}, auth=auth) == reply
        assert rt.health("shop", "1.0.0").invalid_output == 1
    assert any("[invalid_output]" in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text


async def test_an_input_that_is_a_mapping_but_not_a_dict__is_checked_as_one(rt: Runtime) -> None:
    from types import MappingProxyType

    async with rt.run("shop-prod") as run:
        await run.call("count", MappingProxyType({"since": "2026-12-01"}))
        with pytest.raises(InvalidInput):
            await run.call("count", MappingProxyType({"since": "someday"}))
    assert rt.health("shop", "1.0.0") == VersionHealth("shop", "1.0.0", 2, 1, 0)
