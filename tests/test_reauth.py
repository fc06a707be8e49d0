"""Re-authentication (``packrun._reauth``): a move across an auth change, and runs whose credentials
do not satisfy the auth of the version they bind to.

The ``svc`` bundles below differ only in their auth: 1.0.0 takes an API key, 1.1.0 also requires a
``region`` credential, 1.2.0 is 1.0.0 again, and 2.0.0 takes an OAuth 2 token granted ``read``. Their
tool writes a marker file when it is called, so a test can tell that it did not run.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import packrun
from packrun import Auth, NeedsReauth, Runtime
from packrun._bundle import bundle_bytes
from packrun._cli import main
from packrun._diff import Level, diff
from packrun._manifest import AuthSpec, decode_manifest
from packrun._policy import policy_target
from packrun._reauth import missing_auth

# --- what a run's credentials lack ---------------------------------------------------------------

# The tools of these tests write into the test's folder, which a sandbox worker cannot see: the
# auth check runs in the host before any dispatch, so in-process is what these tests need.
TRUSTED = frozenset({"vendor", "custom"})
KEY = {"mode": "api_key", "credential_fields": [{"name": "key"}]}
KEY_AND_REGION = {
    "mode": "api_key",
    "credential_fields": [{"name": "key"}, {"name": "region"}, {"name": "tag", "required": False}],
}
TOKEN = {
    "mode": "oauth2",
    "scopes": ["read", "write"],
    "credential_fields": [{"name": "access_token"}],
}

MISSING = [
    ({"mode": "none"}, Auth.api_key("k"), ()),
    ({"mode": "none"}, Auth.none(), ()),
    (KEY, Auth.api_key("k"), ()),
    (KEY, Auth.api_key(""), ("credential field 'key'",)),
    (KEY, Auth.none(), ("auth mode api_key (the run has none)",)),
    (KEY, Auth.oauth2("t"), ("auth mode api_key (the run has oauth2)",)),
    (KEY_AND_REGION, Auth.api_key("k"), ("credential field 'region'",)),
    (KEY_AND_REGION, Auth("api_key", {"key": "k", "region": "eu"}), ()),
    (TOKEN, Auth.oauth2("t", scopes=("read", "write", "admin")), ()),
    (TOKEN, Auth.oauth2("t", scopes=("read",)), ("scope 'write'",)),
    (TOKEN, Auth.oauth2("t"), ("scope 'read'", "scope 'write'")),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "auth", "missing"), MISSING)
def test_missing_auth__names_the_mode_the_credential_fields_and_the_scopes(
    spec: dict[str, Any], auth: Auth, missing: tuple[str, ...]
) -> None:
    assert missing_auth(AuthSpec(**_spec(spec)), auth) == missing


def _spec(raw: dict[str, Any]) -> dict[str, Any]:
    manifest = decode_manifest({"id": "x", "auth": raw, "tools": [{"id": "t"}]})
    return {
        "mode": manifest.auth.mode,
        "scopes": manifest.auth.scopes,
        "credential_fields": manifest.auth.credential_fields,
    }


# --- in a runtime ---------------------------------------------------------------------------------

pytestmark = pytest.mark.anyio

AUTHS = {"1.0.0": KEY, "1.1.0": KEY_AND_REGION, "1.2.0": KEY, "2.0.0": TOKEN}

CODE = """\
from pathlib import Path

from packrun.sdk import Integration

integration = Integration("svc")


@integration.tool("ping")
def ping(ctx, input):
    Path(__MARKER__).write_text("called")
    return {"version": ctx.version, "mode": ctx.auth.mode}
"""


def svc(version: str, marker: Path) -> bytes:
    manifest = decode_manifest(
        {
            "id": "svc",
            "version": version,
            "contract": 2,
            "auth": AUTHS[version],
            "tools": [{"id": "ping"}],
        }
    )
    code = CODE.replace("__MARKER__", repr(str(marker / version)))
    return bundle_bytes(manifest, {"__init__.py": code.encode()})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with packrun.open_runtime(
        f"sqlite:///{tmp_path / 'state.db'}", in_process=TRUSTED
    ) as runtime:
        for version in AUTHS:
            await runtime.publish(svc(version, tmp_path))
        await runtime.install("svc-prod", "svc", "1.0.0")
        yield runtime


KEY_AUTH = Auth.api_key("k")


async def test_a_run_that_satisfies_its_versions_auth__runs(rt: Runtime) -> None:
    out = await rt.call("svc-prod", "ping", auth=KEY_AUTH)
    assert out == {"version": "1.0.0", "mode": "api_key"}
    assert rt.explain("svc-prod").needs_reauth == ()


async def test_an_update_across_an_auth_change__needs_reauth_and_runs_are_refused_before_code_runs(
    rt: Runtime, tmp_path: Path
) -> None:
    review = rt.review_update("svc-prod", to="2.0.0")
    assert review.needs_reauth == (
        'required credential field "access_token" added',
        'auth mode changed from "api_key" to "oauth2"',
        'scope "read" now needed',
        'scope "write" now needed',
    )
    assert "needs re-authentication after the update: required credential" in str(review)
    await rt.update("svc-prod", to="2.0.0", acknowledge_breaking=True)

    why = rt.explain("svc-prod")
    assert why.needs_reauth == review.needs_reauth
    assert "needs re-authentication: required credential field" in str(why)
    with pytest.raises(NeedsReauth) as refused:
        async with rt.run("svc-prod", auth=KEY_AUTH):
            pass
    error = refused.value
    assert (error.code, error.installation, error.pack, error.version) == (
        "needs_reauth", "svc-prod", "svc", "2.0.0"
    )  # fmt: skip
    assert error.missing == ("auth mode oauth2 (the run has api_key)",)
    assert "k" not in error.missing[0].split("(")[0]
    assert not (tmp_path / "2.0.0").exists()  # the 2.0.0 tool never ran
    assert rt.in_flight("svc", "2.0.0") == 0
    with pytest.raises(NeedsReauth) as scopes:
        await rt.call("svc-prod", "ping", auth=Auth.oauth2("t", scopes=("read",)))
    assert scopes.value.missing == ("scope 'write'",)

    token = Auth.oauth2("t", scopes=("read", "write"))
    assert await rt.call("svc-prod", "ping", auth=token) == {"version": "2.0.0", "mode": "oauth2"}
    assert (tmp_path / "2.0.0").exists()


async def test_a_rollback_across_an_auth_change__needs_reauth(rt: Runtime) -> None:
    await rt.update("svc-prod", to="1.1.0", acknowledge_breaking=True)
    assert rt.explain("svc-prod").needs_reauth == ('required credential field "region" added',)
    await rt.rollback("svc-prod", to="1.0.0")
    assert rt.explain("svc-prod").needs_reauth == ()  # 1.0.0 asks for less: nothing to redo
    await rt.set_pin("svc-prod", "1.1.0")
    assert rt.explain("svc-prod").needs_reauth == ('required credential field "region" added',)
    await rt.set_pin("svc-prod", "1.2.0")
    assert rt.explain("svc-prod").needs_reauth == ()


async def test_an_auto_policy__never_moves_into_needs_reauth(tmp_path: Path) -> None:
    async with packrun.open_runtime("memory:", in_process=TRUSTED) as rt:
        await rt.publish(svc("1.0.0", tmp_path))
        await rt.install("svc-prod", "svc", "1.0.0", policy="auto_minor")
        await rt.publish(svc("1.1.0", tmp_path))  # needs a region credential too
        assert rt.resolve("svc-prod").version == "1.0.0"
        assert rt.explain("svc-prod").update_blocked == (
            '1.1.0: needs re-authentication (required credential field "region" added)',
        )
        assert [e.origin for e in (await rt.history("svc-prod"))] == ["install"]
        await rt.publish(svc("1.2.0", tmp_path))  # 1.0.0's auth again: taken
        assert rt.resolve("svc-prod").version == "1.2.0"


def test_policy_target__blocks_a_reauth_move_whatever_a_profile_made_of_it(tmp_path: Path) -> None:
    rows = []
    for version in ("1.0.0", "1.1.0"):
        entry = packrun.read_bundle(svc(version, tmp_path))
        rows.append(_row(entry))
    lenient: dict[str, Level] = {"auth.required_credential_added": "compatible"}

    def diff_of(a: Any, b: Any) -> Any:
        return diff(a.manifest, b.manifest, profile=lenient)

    target, blocked = policy_target("auto_minor", rows[0], rows, False, diff_of)
    assert target is None
    assert [(b.version, b.kind) for b in blocked] == [("1.1.0", "needs_reauth")]
    assert blocked[0].waits_for_review


def _row(bundle: packrun.Bundle) -> packrun.CatalogEntry:
    from datetime import UTC, datetime

    manifest = bundle.manifest
    return packrun.CatalogEntry(
        pack_id=manifest.id,
        version=manifest.version,
        channel="vendor",
        entries=(),
        manifest=manifest,
        digest=bundle.digest,
        contract=2,
        published_at=datetime.now(UTC),
    )


@pytest.mark.parametrize("mode", ["warn", "off"])
async def test_check_auth_warn_or_off__lets_the_run_through(
    tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with packrun.open_runtime("memory:", check_auth=mode, in_process=TRUSTED) as rt:  # type: ignore[arg-type]
        await rt.publish(svc("2.0.0", tmp_path))
        await rt.install("svc-prod", "svc")
        with caplog.at_level(logging.WARNING, logger="packrun"):
            assert await rt.call("svc-prod", "ping", auth=KEY_AUTH) == {
                "version": "2.0.0",
                "mode": "api_key",
            }
    logged = any("[needs_reauth]" in r.getMessage() for r in caplog.records)
    assert logged == (mode == "warn")


async def test_a_run_given_no_credentials__is_not_checked(rt: Runtime) -> None:
    assert await rt.call("svc-prod", "ping") == {"version": "1.0.0", "mode": "none"}
    with pytest.raises(NeedsReauth):  # credentials of mode none, given on purpose, are checked
        await rt.call("svc-prod", "ping", auth=Auth.none())


def test_status__says_which_installations_need_reauth(tmp_path: Path) -> None:
    import anyio

    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def setup() -> None:
        async with packrun.open_runtime(url, in_process=TRUSTED) as rt:
            for version in ("1.0.0", "2.0.0"):
                await rt.publish(svc(version, tmp_path))
            await rt.install("svc-prod", "svc", "1.0.0")
            await rt.update("svc-prod", to="2.0.0", acknowledge_breaking=True)

    anyio.run(setup)
    out, err = io.StringIO(), io.StringIO()
    assert main(["status", "--store", url], stdout=out, stderr=err) == 0, err.getvalue()
    assert "svc-prod: needs re-authentication (required credential" in out.getvalue()
    out = io.StringIO()
    assert main(["status", "--store", url, "--json"], stdout=out, stderr=io.StringIO()) == 0
    installation = json.loads(out.getvalue())["installations"][0]
    assert installation["needs_reauth"][1] == 'auth mode changed from "api_key" to "oauth2"'


def test_explain_and_review_json__carry_needs_reauth(tmp_path: Path) -> None:
    import anyio

    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def setup() -> None:
        async with packrun.open_runtime(url, in_process=TRUSTED) as rt:
            for version in ("1.0.0", "2.0.0"):
                await rt.publish(svc(version, tmp_path))
            await rt.install("svc-prod", "svc", "1.0.0")
            await rt.install("svc-next", "svc", "1.0.0")
            await rt.update("svc-prod", to="2.0.0", acknowledge_breaking=True)

    anyio.run(setup)
    out = io.StringIO()
    assert main(["explain", "svc-prod", "--store", url, "--json"], stdout=out) == 0
    assert (
        'auth mode changed from "api_key" to "oauth2"' in json.loads(out.getvalue())["needs_reauth"]
    )
    out = io.StringIO()
    command = ["review", "svc-next", "--to", "2.0.0", "--store", url, "--json"]
    assert main(command, stdout=out) == 0
    assert (
        'auth mode changed from "api_key" to "oauth2"' in json.loads(out.getvalue())["needs_reauth"]
    )
