"""The sample packs in bundles/: built artifacts load, do real work and check their credentials."""

from __future__ import annotations

import inspect
import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

import anyio
import pytest

import packrun
from packrun import Auth, LoadedBundle
from packrun.sdk import ToolContext, ToolError

BUNDLES = Path(__file__).parents[1] / "bundles"


def dist(pack: str, version: str, artifact: str | None = None) -> Path:
    return BUNDLES / pack / version / "dist" / f"{artifact or pack}-{version}.bundle.tar.gz"


@cache
def loaded(pack: str, version: str) -> LoadedBundle:
    return packrun.load_bundle(packrun.read_bundle(dist(pack, version)))


def call(pack: str, version: str, tool: str, payload: dict[str, Any], auth: Auth) -> Any:
    bundle = loaded(pack, version)
    ctx = ToolContext("run-1", "inst-1", pack, version, auth, logging.getLogger("test"))
    fn = bundle.tools[tool]

    async def invoke() -> Any:
        result = fn(ctx, payload)
        return await result if inspect.isawaitable(result) else result

    return anyio.run(invoke)


def handle(version: str, action: str, params: dict[str, Any], auth: dict[str, Any]) -> Any:
    fn = loaded("legacy-crm", version).handle
    assert fn is not None

    async def invoke() -> Any:
        result = fn(action, params, auth)
        return await result if inspect.isawaitable(result) else result

    return anyio.run(invoke)


def test_index__lists_every_sample_with_its_channel() -> None:
    index = packrun.decode_index((BUNDLES / "index.json").read_bytes())
    listed = {(p.id, str(p.version)): p.channel for p in index.packs}
    assert listed[("acme", "1.1.1")] == "custom"
    assert {v for (i, v) in listed if i == "acme"} == {
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "1.1.1",
        "1.2.0",
        "2.0.0",
    }
    assert {i for i, _ in listed} == {"acme", "legacy-crm", "ancient", "helpdesk"}


@pytest.mark.parametrize(
    ("pack", "version", "generation"),
    [
        ("acme", "1.0.0", 2),
        ("acme", "2.0.0", 2),
        ("legacy-crm", "1.0.0", 1),
        ("ancient", "1.0.0", 0),
    ],
)
def test_artifacts__carry_their_generation(pack: str, version: str, generation: int) -> None:
    assert packrun.read_bundle(dist(pack, version)).contract == generation


def test_acme_1x__lists_deterministic_contacts_per_key() -> None:
    first = call("acme", "1.0.0", "list_contacts", {}, Auth.api_key("k-123"))
    again = call("acme", "1.0.1", "list_contacts", {}, Auth.api_key("k-123"))
    other = call("acme", "1.0.0", "list_contacts", {}, Auth.api_key("k-456"))
    assert first == again != other
    assert len(first["contacts"]) == 10
    assert first["next_cursor"] == "10"
    assert set(first["contacts"][0]) == {"id", "name", "email", "company"}
    last = call("acme", "1.0.0", "list_contacts", {"cursor": "20"}, Auth.api_key("k-123"))
    assert len(last["contacts"]) == 5
    assert last["next_cursor"] is None


def test_acme_1x__refuses_bad_credentials_without_leaking_them() -> None:
    with pytest.raises(ToolError) as empty:
        call("acme", "1.0.0", "get_contact", {"id": "c-001"}, Auth.api_key(""))
    assert empty.value.code == "unauthorized"
    with pytest.raises(ToolError) as wrong_mode:
        call("acme", "1.1.0", "list_contacts", {}, Auth.oauth2("tok-secret-1"))
    assert wrong_mode.value.code == "unauthorized"
    assert "tok-secret-1" not in str(wrong_mode.value)


def test_acme_1x__tool_errors_carry_their_own_codes() -> None:
    with pytest.raises(ToolError) as missing:
        call("acme", "1.0.0", "get_contact", {"id": "c-026"}, Auth.api_key("k"))
    assert missing.value.code == "not_found"
    with pytest.raises(ToolError) as bad:
        call("acme", "1.0.0", "list_contacts", {"limit": 1000}, Auth.api_key("k"))
    assert bad.value.code == "invalid_input"


def test_acme_1_1__adds_search_and_a_company_filter() -> None:
    assert "search_contacts" not in loaded("acme", "1.0.0").tools
    found = call("acme", "1.1.0", "search_contacts", {"query": "globex"}, Auth.api_key("k-123"))
    filtered = call(
        "acme", "1.1.0", "list_contacts", {"company": "Globex", "limit": 100}, Auth.api_key("k-123")
    )
    assert found["contacts"]
    assert all(c["company"] == "Globex" for c in filtered["contacts"])


def test_acme_custom_1_1_1__has_its_own_default_page() -> None:
    page = call("acme", "1.1.1", "list_contacts", {}, Auth.api_key("k-123"))
    assert len(page["contacts"]) == 20


def test_acme_1_2__requires_account_id_the_dishonest_change() -> None:
    with pytest.raises(ToolError) as exc:
        call("acme", "1.2.0", "list_contacts", {}, Auth.api_key("k-123"))
    assert exc.value.code == "invalid_input"
    assert "account_id" in str(exc.value)


def test_acme_2__needs_oauth2_with_its_scope_and_drops_email() -> None:
    auth = Auth.oauth2("k-123", scopes=("contacts.read",))
    page = call("acme", "2.0.0", "list_contacts", {}, auth)
    assert set(page["contacts"][0]) == {"id", "name", "company"}
    with pytest.raises(ToolError) as forbidden:
        call("acme", "2.0.0", "list_contacts", {}, Auth.oauth2("k-123"))
    assert forbidden.value.code == "forbidden"
    with pytest.raises(ToolError) as unauthorized:
        call("acme", "2.0.0", "list_contacts", {}, Auth.api_key("k-123"))
    assert unauthorized.value.code == "unauthorized"


def test_acme_1_and_2__live_side_by_side_in_one_process() -> None:
    one, two = loaded("acme", "1.1.0"), loaded("acme", "2.0.0")
    assert one.module.__name__ != two.module.__name__
    v1 = call("acme", "1.1.0", "get_contact", {"id": "c-001"}, Auth.api_key("k-123"))
    v2 = call(
        "acme",
        "2.0.0",
        "get_contact",
        {"id": "c-001"},
        Auth.oauth2("k-123", scopes=["contacts.read"]),
    )
    assert "email" in v1["contact"]
    assert "email" not in v2["contact"]
    assert v1["contact"]["name"] == v2["contact"]["name"]


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_legacy_crm__handle_speaks_generation_1(version: str) -> None:
    assert loaded("legacy-crm", version).generation == 1
    basic = {"type": "basic", "username": "ops", "password": "pw"}
    listed = handle(version, "list_accounts", {"limit": 3}, basic)
    assert len(listed["data"]["accounts"]) == 3
    assert handle(version, "get_account", {"id": "a-999"}, basic)["error"]["code"] == "not_found"
    assert (
        handle(version, "list_accounts", {}, {"type": "api_key", "key": "k"})["error"]["code"]
        == "unauthorized"
    )
    assert handle(version, "nope", {}, basic)["error"]["code"] == "unknown_action"


def test_legacy_crm_1_1__handle_is_async_and_creates_accounts() -> None:
    assert inspect.iscoroutinefunction(loaded("legacy-crm", "1.1.0").handle)
    assert not inspect.iscoroutinefunction(loaded("legacy-crm", "1.0.0").handle)
    created = handle(
        "1.1.0",
        "create_account",
        {"name": "Initech"},
        {"type": "basic", "username": "u", "password": "p"},
    )
    assert created["data"]["account"]["name"] == "Initech"


def test_ancient__is_refused_naming_its_generation() -> None:
    with pytest.raises(packrun.IntegrationContractIncompatible) as exc:
        packrun.load_bundle(packrun.read_bundle(dist("ancient", "1.0.0")), stage="publish")
    assert "ancient 1.0.0 was built against contract generation 0" in str(exc.value)
    assert "this runtime supports 1, 2" in str(exc.value)


def test_helpdesk__a_pack_with_a_process_flow_and_three_layers() -> None:
    pack = packrun.decode_pack_manifest((BUNDLES / "helpdesk" / "1.1.0" / "pack.json").read_bytes())
    kinds = {c.kind: (c.id, str(c.version)) for c in pack.contents}
    assert kinds["process_flow"] == ("ticket-triage", "1.1.0")
    assert kinds["integration"] == ("helpdesk", "1.0.0")
    assert str(pack.package.version) == "1.1.0"
    flow = json.loads(
        (BUNDLES / "helpdesk" / "1.1.0" / "flows" / "ticket-triage" / "manifest.json").read_text()
    )
    assert flow["version"] == "1.1.0"
    tickets = call("helpdesk", "1.0.0", "list_tickets", {"status": "open"}, Auth.api_key("k"))
    assert all(t["status"] == "open" for t in tickets["tickets"])
