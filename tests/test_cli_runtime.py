"""The runtime commands of the CLI: publish, versions, install, resolve, explain, pin, history,
policy, installations, retire, settings, call, status, review, update and rollback, against real
SQLite stores, with and without ``--json``; and ``diff``, on files and on versions in a store.
"""

from __future__ import annotations

import dataclasses
import doctest
import io
import json
import re
import shlex
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest

import packrun
from packrun import _cli, _cli_fleet
from packrun._cli import main

ROOT = Path(__file__).parents[1]
ACME = ROOT / "bundles" / "acme"
# The order the samples can be published in: 1.2.0 is a backport on 1.x after 2.0.0.
SAMPLES = [
    ("1.0.0", "vendor"),
    ("1.0.1", "vendor"),
    ("1.1.0", "vendor"),
    ("1.1.1", "custom"),
    ("2.0.0", "vendor"),
    ("1.2.0", "vendor"),
]
RUNTIME_COMMANDS = [
    ["publish", str(ACME / "1.0.0")],
    ["versions", "acme"],
    ["install", "acme-prod", "acme"],
    ["resolve", "acme-prod"],
    ["explain", "acme-prod"],
    ["history", "acme-prod"],
    ["pin", "acme-prod", "latest"],
    ["policy", "acme-prod", "auto_patch"],
    ["retire", "acme", "1.0.0"],
    ["installations"],
    ["settings"],
    ["call", "acme-prod", "list_contacts"],
    ["status"],
    ["review", "acme-prod"],
    ["update", "acme-prod", "--to", "1.1.0"],
    ["rollback", "acme-prod", "1.0.0"],
    ["diff", "acme@1.0.0", "acme@1.1.0"],
]
AUTH_ENV = (
    "PACKRUN_AUTH_KEY",
    "PACKRUN_AUTH_TOKEN",
    "PACKRUN_AUTH_USERNAME",
    "PACKRUN_AUTH_PASSWORD",
)


def bundle(version: str) -> Path:
    return ACME / version / "dist" / f"acme-{version}.bundle.tar.gz"


def digest(version: str) -> str:
    return packrun.read_bundle(bundle(version)).digest


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def run_json(*argv: str) -> Any:
    code, out, err = run(*argv, "--json")
    assert (code, err) == (0, ""), out
    return json.loads(out)


@pytest.fixture(autouse=True)
def no_auth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials from the environment ``call`` reads, unless a test sets them."""
    for name in AUTH_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite store (an absolute path: four slashes), and no $PACKRUN_STORE to fall back on."""
    monkeypatch.delenv("PACKRUN_STORE", raising=False)
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def empty_store(store: str) -> str:
    """The store, made (empty) by the library: the CLI's reading commands never create one."""

    async def make() -> None:
        async with packrun.open_runtime(store, refresh_interval=0):
            pass

    anyio.run(make)
    return store


@pytest.fixture
def published(store: str) -> str:
    """The store with every acme sample published, in an order the publish rules accept."""
    for version, channel in SAMPLES:
        code, _, err = run("publish", str(bundle(version)), "--channel", channel, "--store", store)
        assert code == 0, err
    return store


def library_explanation(store: str, installation_id: str) -> str:
    async def explain() -> str:
        async with packrun.open_runtime(store, refresh_interval=0) as rt:
            return str(rt.explain(installation_id))

    return anyio.run(explain)


# --- publish ------------------------------------------------------------------------------------


def test_publish__prints_pack_version_channel_contract_and_digest(store: str) -> None:
    code, out, err = run("publish", str(bundle("1.1.0")), "--store", store)
    assert (code, err) == (0, "")
    assert out == f"published acme 1.1.0 (vendor, contract 2, {digest('1.1.0')})\n"


def test_publish__json__is_the_catalog_entry(store: str) -> None:
    entry = run_json("publish", str(bundle("1.1.1")), "--channel", "custom", "--store", store)
    assert entry["pack_id"] == "acme"
    assert entry["version"] == "1.1.1"
    assert entry["channel"] == "custom"
    assert entry["state"] == "live"
    assert entry["contract"] == 2
    assert entry["digest"] == digest("1.1.1")
    assert entry["entries"] == [
        {
            "kind": "integration",
            "id": "acme",
            "version": "1.1.1",
            "name": "Acme CRM (Contoso build)",
        }
    ]


def test_publish__source_folder__publishes_its_dist_artifact(store: str) -> None:
    code, out, _ = run("publish", str(ACME / "1.0.1"), "--store", store)
    assert code == 0
    assert digest("1.0.1") in out


def test_publish__again_with_immutable_versions__exit_2_version_exists(published: str) -> None:
    code, out, err = run("publish", str(bundle("1.0.0")), "--force", "--store", published)
    assert (code, out) == (2, "")
    assert err.startswith("packrun: error: [version_exists] acme 1.0.0")
    assert "immutable" in err
    code, out, err = run("publish", str(bundle("1.0.0")), "--store", published, "--json")
    assert (code, err) == (2, "")
    assert json.loads(out)["error"]["code"] == "version_exists"


def test_publish__immutable_versions_off__force_overwrites_and_plain_republish_is_refused(
    published: str,
) -> None:
    code, out, _ = run("settings", "--immutable-versions", "off", "--store", published)
    assert code == 0
    assert "immutable-versions: off" in out
    code, _, err = run("publish", str(bundle("1.0.0")), "--store", published)
    assert code == 2
    assert "[version_exists]" in err
    code, out, err = run("publish", str(bundle("1.0.0")), "--force", "--store", published)
    assert (code, err) == (0, "")
    assert out == f"published acme 1.0.0 (vendor, contract 2, {digest('1.0.0')})\n"


def test_publish__below_its_release_line__exit_2_downgrade_not_allowed(store: str) -> None:
    assert run("publish", str(bundle("1.1.0")), "--store", store)[0] == 0
    code, _, err = run("publish", str(bundle("1.0.1")), "--store", store)
    assert code == 2
    assert "[downgrade_not_allowed]" in err


def test_publish__generation_0_bundle__exit_2_contract_incompatible(store: str) -> None:
    ancient = ROOT / "bundles" / "ancient" / "1.0.0" / "dist" / "ancient-1.0.0.bundle.tar.gz"
    code, out, _ = run("publish", str(ancient), "--store", store, "--json")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "integration_contract_incompatible"


def test_publish__missing_file__exit_2(store: str, tmp_path: Path) -> None:
    code, _, err = run("publish", str(tmp_path / "nothing.bundle.tar.gz"), "--store", store)
    assert code == 2
    assert "[invalid_bundle]" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["publish", "x.bundle.tar.gz", "--channel", "beta"],
        ["install", "acme-prod", "acme", "--policy", "always"],
        ["policy", "acme-prod", "always"],
        ["settings", "--immutable-versions", "yes"],
        ["settings", "--strict-versions", "true"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_argument_choices__validated_by_argparse__exit_2(argv: list[str], store: str) -> None:
    code, out, err = run(*argv, "--store", store)
    assert (code, out) == (2, "")
    assert "packrun: error: [usage_error] argument " in err
    assert "invalid choice" in err


# --- versions -----------------------------------------------------------------------------------


def test_versions__table_ascending_with_short_digests(published: str) -> None:
    code, out, _ = run("versions", "acme", "--store", published)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["version", "channel", "state", "contract", "digest", "published_at"]
    assert [r.split()[:5] for r in rows] == [
        [v, channel, "live", "2", digest(v)[: len("sha256:") + 12]]
        for v, channel in sorted(SAMPLES, key=lambda s: packrun.Version.parse(s[0]))
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", r.split()[5]) for r in rows)


def test_versions__json__a_list_with_full_digests(published: str) -> None:
    entries = run_json("versions", "acme", "--store", published)
    assert [e["version"] for e in entries] == ["1.0.0", "1.0.1", "1.1.0", "1.1.1", "1.2.0", "2.0.0"]
    assert entries[3]["channel"] == "custom"
    assert entries[0]["digest"] == digest("1.0.0")


def test_versions__unknown_pack__exit_2_not_found_naming_the_known(published: str) -> None:
    code, _, err = run("versions", "acne", "--store", published)
    assert code == 2
    assert "[not_found]" in err
    assert "known: acme" in err


# --- install, resolve, explain ------------------------------------------------------------------


def test_install__without_pin__pins_the_exact_version_latest_picks(published: str) -> None:
    code, out, _ = run("install", "acme-dev", "acme", "--store", published)
    assert code == 0
    assert out == (
        f"installed acme-dev -> acme 1.1.1 (custom, contract 2, {digest('1.1.1')}, pin 1.1.1), "
        "policy manual\n"
    )


def test_install__json__installation_and_resolution(published: str) -> None:
    result = run_json(
        "install",
        "acme-edge",
        "acme",
        "--pin",
        "latest-vendor",
        "--policy",
        "auto_minor",
        "--allow-prerelease",
        "--actor",
        "ops",
        "--store",
        published,
    )
    inst = result["installation"]
    assert inst["id"] == "acme-edge"
    assert (inst["pin"], inst["policy"], inst["allow_prerelease"]) == (
        "latest-vendor",
        "auto_minor",
        True,
    )
    assert result["resolution"]["version"] == "2.0.0"
    assert result["resolution"]["digest"] == digest("2.0.0")
    history = run_json("history", "acme-edge", "--store", published)
    assert [(e["actor"], e["origin"]) for e in history] == [("ops", "install")]


def test_install__taken_id__exit_2_installation_exists(published: str) -> None:
    assert run("install", "acme-prod", "acme", "--store", published)[0] == 0
    code, _, err = run("install", "acme-prod", "acme", "--store", published)
    assert code == 2
    assert "[installation_exists]" in err


def test_install__unknown_pin__exit_2_invalid_argument(published: str) -> None:
    code, _, err = run("install", "acme-prod", "acme", "--pin", "lastest", "--store", published)
    assert code == 2
    assert "[invalid_argument]" in err


def test_resolve__prints_the_artifact_and_the_pin(published: str) -> None:
    run("install", "acme-prod", "acme", "--pin", "1.1.0", "--store", published)
    code, out, _ = run("resolve", "acme-prod", "--store", published)
    assert code == 0
    assert out == f"acme-prod -> acme 1.1.0 (vendor, contract 2, {digest('1.1.0')}, pin 1.1.0)\n"
    assert run_json("resolve", "acme-prod", "--store", published) == {
        "installation_id": "acme-prod",
        "resolution": {
            "pack_id": "acme",
            "version": "1.1.0",
            "channel": "vendor",
            "contract": 2,
            "digest": digest("1.1.0"),
            "pin": "1.1.0",
        },
    }


def test_resolve__unknown_installation__exit_2_not_found(published: str) -> None:
    code, out, err = run("resolve", "acme-test", "--store", published)
    assert (code, out) == (2, "")
    assert err == "packrun: error: [not_found] no installation 'acme-test'\n"
    code, out, err = run("resolve", "acme-test", "--store", published, "--json")
    assert (code, err) == (2, "")
    assert json.loads(out) == {
        "error": {"code": "not_found", "message": "no installation 'acme-test'"}
    }


@pytest.mark.parametrize("command", ["explain", "history", "pin", "policy"])
def test_installation_commands__unknown_installation__exit_2_not_found(
    command: str, published: str
) -> None:
    extra = {"pin": ["latest"], "policy": ["manual"]}.get(command, [])
    code, _, err = run(command, "acme-test", *extra, "--store", published)
    assert code == 2
    assert "[not_found]" in err


def test_explain__prints_what_the_library_explains(published: str) -> None:
    run("install", "acme-prod", "acme", "--pin", "1.1.0", "--store", published)
    code, out, _ = run("explain", "acme-prod", "--store", published)
    assert code == 0
    assert out == library_explanation(published, "acme-prod") + "\n"
    assert "update available: 2.0.0 (major, vendor)" in out


def test_explain__json__structured(published: str) -> None:
    run("install", "acme-prod", "acme", "--pin", "latest-vendor", "--store", published)
    run("retire", "acme", "1.0.1", "--store", published)
    why = run_json("explain", "acme-prod", "--store", published)
    assert list(why) == [
        "installation",
        "resolution",
        "candidates",
        "skipped",
        "update",
        "notes",
        "last_event",
        "update_blocked",
        "holding",
        "needs_reauth",
        "update_available",
        "other_live_versions",
        "contents",
        "soaking",
    ]
    assert why["needs_reauth"] == []
    assert why["installation"]["pin"] == "latest-vendor"
    assert why["resolution"]["version"] == "2.0.0"
    assert [c["version"] for c in why["candidates"]] == ["1.0.0", "1.1.0", "1.2.0", "2.0.0"]
    assert why["skipped"] == [
        {"version": "1.0.1", "reason": "retired"},
        {"version": "1.1.1", "reason": "custom channel, not chosen by pin latest-vendor"},
    ]
    assert why["update"] is None
    assert why["notes"] == []
    assert why["last_event"]["origin"] == "install"
    assert why["last_event"]["to_version"] == "2.0.0"
    assert why["update_blocked"] == []  # a dynamic pin follows its versions: nothing to block


def test_a_held_policy__is_explained_in_the_command_lines_words_and_policy_takes_an_actor(
    published: str, caplog: pytest.LogCaptureFixture
) -> None:
    run("install", "crm", "acme", "--pin", "1.0.0", "--policy", "auto_minor", "--store", published)
    moved_to = run_json("resolve", "crm", "--store", published)["resolution"]["version"]
    assert run("rollback", "crm", "1.0.0", "--store", published)[0] == 0
    code, out, _ = run("explain", "crm", "--store", published)
    assert code == 0
    assert f"only to a version above {moved_to}, or after packrun policy" in out
    assert "set_policy" not in out
    holding = run_json("explain", "crm", "--store", published)["holding"]
    assert holding.endswith("or after packrun policy")
    status = run_json("status", "--store", published)
    assert [i["holding"] for i in status["installations"]] == [holding]
    assert "set_policy" not in run("status", "--store", published)[1]

    caplog.set_level("INFO", logger="packrun")
    code, out, _ = run("policy", "crm", "auto_minor", "--actor", "ops", "--store", published)
    assert (code, out) == (0, "crm: policy auto_minor\n")
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "policy_set"]
    assert (getattr(record, "actor", None), getattr(record, "installation", None)) == ("ops", "crm")
    assert record.getMessage() == "packrun set the update policy of crm to auto_minor by ops"
    assert run_json("explain", "crm", "--store", published)["holding"] is None


def test_explain__json__update_blocked_of_a_policy_installation(published: str) -> None:
    run("install", "acme-auto", "acme", "--pin", "1.1.0", "--policy", "auto_minor",
        "--store", published)  # fmt: skip
    why = run_json("explain", "acme-auto", "--store", published)
    assert why["update_blocked"] == [
        "2.0.0: a major update, which auto_minor does not take",
        "1.2.0: breaking findings (input.required_field_added)",
    ]


# --- pin, history, policy, installations --------------------------------------------------------


def test_pin__moves_the_pin_and_history_records_it(published: str) -> None:
    run("install", "acme-prod", "acme", "--pin", "1.1.0", "--store", published)
    code, out, _ = run("pin", "acme-prod", "latest-vendor", "--actor", "ops", "--store", published)
    assert code == 0
    assert out == (
        f"pinned acme-prod -> acme 2.0.0 (vendor, contract 2, {digest('2.0.0')}, "
        "pin latest-vendor)\n"
    )
    code, out, _ = run("history", "acme-prod", "--store", published)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("  - -> 1.1.0 (- -> 1.1.0) by system (install)")
    assert lines[1].endswith("  1.1.0 -> latest-vendor (1.1.0 -> 2.0.0) by ops (user)")
    events = run_json("history", "acme-prod", "--store", published)
    assert [(e["from_pin"], e["to_pin"], e["actor"], e["origin"]) for e in events] == [
        (None, "1.1.0", "system", "install"),
        ("1.1.0", "latest-vendor", "ops", "user"),
    ]
    assert all(packrun.Version.parse(e["to_version"]) for e in events)


def test_pin__invalid_pin__exit_2_invalid_argument(published: str) -> None:
    run("install", "acme-prod", "acme", "--store", published)
    code, out, _ = run("pin", "acme-prod", "newest", "--store", published, "--json")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "invalid_argument"


def test_policy__changes_the_policy(published: str) -> None:
    run("install", "acme-prod", "acme", "--store", published)
    code, out, _ = run("policy", "acme-prod", "auto_minor", "--store", published)
    assert (code, out) == (0, "acme-prod: policy auto_minor\n")
    result = run_json("policy", "acme-prod", "auto_patch", "--store", published)
    assert result["installation"]["policy"] == "auto_patch"
    assert run_json("installations", "--store", published)[0]["policy"] == "auto_patch"


def test_installations__none__says_so(empty_store: str) -> None:
    store = empty_store
    assert run("installations", "--store", store) == (0, "no installations\n", "")
    assert run_json("installations", "--store", store) == []


def test_installations__table_by_id_with_what_each_resolves_to(published: str) -> None:
    run("install", "acme-prod", "acme", "--pin", "latest-vendor", "--store", published)
    run("install", "acme-dev", "acme", "--policy", "auto_patch", "--store", published)
    code, out, _ = run("installations", "--store", published)
    assert code == 0
    assert [line.split() for line in out.splitlines()] == [
        ["id", "pack", "pin", "policy", "pre-releases", "resolves", "to"],
        ["acme-dev", "acme", "1.1.1", "auto_patch", "no", "1.1.1", "(custom)"],
        ["acme-prod", "acme", "latest-vendor", "manual", "no", "2.0.0", "(vendor)"],
    ]
    listed = run_json("installations", "--store", published)
    assert [i["id"] for i in listed] == ["acme-dev", "acme-prod"]
    assert listed[1]["resolution"]["digest"] == digest("2.0.0")


# --- retire -------------------------------------------------------------------------------------


def test_retire__moves_latest_pins__exact_pins_keep_the_version(published: str) -> None:
    run("install", "acme-prod", "acme", "--pin", "latest-vendor", "--store", published)
    run("install", "acme-old", "acme", "--pin", "2.0.0", "--store", published)
    code, out, _ = run("retire", "acme", "2.0.0", "--acknowledge-breaking", "--store", published)
    assert code == 0
    assert out.startswith("retired acme 2.0.0")
    assert (
        run_json("resolve", "acme-prod", "--store", published)["resolution"]["version"] == "1.2.0"
    )
    assert run_json("resolve", "acme-old", "--store", published)["resolution"]["version"] == "2.0.0"
    why = run_json("explain", "acme-old", "--store", published)
    assert why["notes"] == ["pinned to 2.0.0, which is retired; it keeps working"]
    states = {e["version"]: e["state"] for e in run_json("versions", "acme", "--store", published)}
    assert states["2.0.0"] == "retired"
    assert run_json("retire", "acme", "1.0.0", "--store", published)["state"] == "retired"


@pytest.mark.parametrize(("pack", "version"), [("acme", "9.9.9"), ("nope", "1.0.0")])
def test_retire__unknown_pack_or_version__exit_2_not_found(
    pack: str, version: str, published: str
) -> None:
    code, _, err = run("retire", pack, version, "--store", published)
    assert code == 2
    assert "[not_found]" in err


# --- settings -----------------------------------------------------------------------------------


def test_settings__shows_the_defaults(empty_store: str) -> None:
    store = empty_store
    code, out, _ = run("settings", "--store", store)
    assert (code, out) == (0, "immutable-versions: on\nstrict-versions: off\n")
    assert run_json("settings", "--store", store) == {
        "immutable_versions": True,
        "strict_versions": False,
    }


def test_settings__changes_those_given_and_they_persist(store: str) -> None:
    changed = run_json(
        "settings", "--immutable-versions", "off", "--strict-versions", "on", "--store", store
    )
    assert changed == {"immutable_versions": False, "strict_versions": True}
    assert run_json("settings", "--strict-versions", "off", "--store", store) == {
        "immutable_versions": False,
        "strict_versions": False,
    }


# --- stores -------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", RUNTIME_COMMANDS, ids=lambda argv: argv[0])
def test_runtime_commands__unknown_store_scheme__exit_2_store_error(argv: list[str]) -> None:
    code, out, err = run(*argv, "--store", "mysql://x")
    assert (code, out) == (2, "")
    assert err.startswith("packrun: error: [store_error] cannot open store 'mysql://x'")
    code, out, err = run(*argv, "--store", "mysql://x", "--json")
    assert (code, err) == (2, "")
    assert json.loads(out)["error"]["code"] == "store_error"


def test_store__packrun_store_env__is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    monkeypatch.setenv("PACKRUN_STORE", url)
    assert run("publish", str(bundle("1.0.0")))[0] == 0
    monkeypatch.delenv("PACKRUN_STORE")
    assert [e["version"] for e in run_json("versions", "acme", "--store", url)] == ["1.0.0"]


def test_store__store_option__wins_over_the_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACKRUN_STORE", "mysql://never-used")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    assert run("publish", str(bundle("1.0.0")), "--store", url)[0] == 0
    assert run("installations", "--store", url)[0] == 0


def test_store__without_env__is_dot_packrun_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PACKRUN_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert run("publish", str(bundle("1.0.0")))[0] == 0
    assert (tmp_path / ".packrun" / "state.db").is_file()
    assert run("resolve", "acme-prod")[0] == 2
    assert run("install", "acme-prod", "acme")[0] == 0
    assert run_json("resolve", "acme-prod")["resolution"]["version"] == "1.0.0"


def test_store__memory__lasts_one_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PACKRUN_STORE", raising=False)
    assert run("publish", str(bundle("1.0.0")), "--store", "memory:")[0] == 0
    code, _, err = run("versions", "acme", "--store", "memory:")
    assert code == 2
    assert "[not_found]" in err


@pytest.mark.parametrize("argv", RUNTIME_COMMANDS, ids=lambda argv: argv[0])
def test_runtime_commands__all_take_json_and_store(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv[0], "--help")[0] == 0
    usage = capsys.readouterr().out
    assert "--json" in usage
    assert "--store URL" in usage


# --- call ---------------------------------------------------------------------------------------

LEGACY = ROOT / "bundles" / "legacy-crm"
SECRETS = ("k-opt-secret-1", "k-env-secret-2", "t-secret-3", "u-secret-4", "p-secret-5")


def legacy_bundle(version: str) -> Path:
    return LEGACY / version / "dist" / f"legacy-crm-{version}.bundle.tar.gz"


def library_call(
    store: str, installation_id: str, tool: str, input: Any, auth: packrun.Auth
) -> Any:
    """What the library itself returns for the call (in a run of its own, like the CLI's)."""

    async def call() -> Any:
        async with packrun.open_runtime(store, refresh_interval=0) as rt:
            return await rt.call(installation_id, tool, input, auth=auth)

    return anyio.run(call)


@pytest.fixture
def installed(published: str) -> str:
    """acme-prod pinned to 1.1.0 (API key), acme-dev on the custom 1.1.1, and the generation-1
    legacy-crm 1.0.0 (sync handle) and 1.1.0 (async handle) as crm-old and crm-prod (basic auth)."""
    for version in ("1.0.0", "1.1.0"):
        assert run("publish", str(legacy_bundle(version)), "--store", published)[0] == 0
    for argv in (
        ["acme-prod", "acme", "--pin", "1.1.0"],
        ["acme-dev", "acme"],
        ["crm-old", "legacy-crm", "--pin", "1.0.0"],
        ["crm-prod", "legacy-crm", "--pin", "1.1.0"],
    ):
        code, _, err = run("install", *argv, "--store", published)
        assert code == 0, err
    return published


def test_call__prints_the_tools_output_as_pretty_json(installed: str) -> None:
    code, out, err = run(
        "call", "acme-prod", "list_contacts", "--input", '{"limit": 2}', "--key", "k1",
        "--store", installed,
    )  # fmt: skip
    assert (code, err) == (0, "")
    expected = library_call(
        installed, "acme-prod", "list_contacts", {"limit": 2}, packrun.Auth.api_key("k1")
    )
    assert out == json.dumps(expected, indent=2) + "\n"
    assert len(json.loads(out)["contacts"]) == 2


def test_call__json__the_runs_binding_and_the_output(installed: str) -> None:
    result = run_json(
        "call", "acme-dev", "get_contact", "--input", '{"id": "c-003"}', "--key", "k1",
        "--run-id", "r-7", "--workflow-id", "wf-1", "--store", installed,
    )  # fmt: skip
    assert list(result) == ["run", "output"]
    bound = result["run"]
    assert {k: bound[k] for k in bound if k != "started_at"} == {
        "run_id": "r-7",
        "installation_id": "acme-dev",
        "workflow_id": "wf-1",
        "pack_id": "acme",
        "version": "1.1.1",
        "channel": "custom",
        "contract": 2,
        "digest": digest("1.1.1"),
        "generation": 2,
        "adapter": None,
        "resumed": False,
        "chosen": False,
    }
    assert result["output"]["contact"]["id"] == "c-003"


def test_call__version__runs_on_that_version_and_leaves_the_pin(installed: str) -> None:
    result = run_json(
        "call", "acme-prod", "list_contacts", "--key", "k1", "--version", "1.0.0",
        "--store", installed,
    )  # fmt: skip
    assert (result["run"]["version"], result["run"]["chosen"]) == ("1.0.0", True)
    assert (
        run_json("resolve", "acme-prod", "--store", installed)["resolution"]["version"] == "1.1.0"
    )
    code, _, err = run(
        "call", "acme-prod", "list_contacts", "--key", "k1", "--version", "latest",
        "--store", installed,
    )  # fmt: skip
    assert code == 2
    assert "[invalid_version]" in err


def test_call__no_input__the_tool_gets_an_empty_one(installed: str) -> None:
    result = run_json("call", "acme-dev", "list_contacts", "--key", "k1", "--store", installed)
    assert len(result["output"]["contacts"]) == 20  # the custom build's default limit


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_call__generation_1__through_the_1_to_2_adapter(version: str, installed: str) -> None:
    installation = {"1.0.0": "crm-old", "1.1.0": "crm-prod"}[version]
    result = run_json(
        "call", installation, "get_account", "--input", '{"id": "a-002"}',
        "--username", "ada", "--password", "pw", "--store", installed,
    )  # fmt: skip
    bound = result["run"]
    assert (bound["pack_id"], bound["version"], bound["contract"]) == ("legacy-crm", version, 1)
    assert (bound["generation"], bound["adapter"]) == (1, "1->2")
    assert result["output"] == library_call(
        installed, installation, "get_account", {"id": "a-002"}, packrun.Auth.basic("ada", "pw")
    )
    assert result["output"]["account"]["id"] == "a-002"


def test_call__generation_1_error__exit_2_with_the_handles_own_code(installed: str) -> None:
    code, out, err = run(
        "call", "crm-prod", "get_account", "--input", '{"id": "a-999"}',
        "--username", "ada", "--password", "pw", "--store", installed, "--json",
    )  # fmt: skip
    assert (code, err) == (2, "")
    error = json.loads(out)["error"]
    assert (error["code"], error["tool"], error["tool_code"]) == (
        "tool_error",
        "get_account",
        "not_found",
    )


def test_call__run_id_seen_before__keeps_its_binding_after_a_pin_move(installed: str) -> None:
    argv = ["call", "acme-prod", "list_contacts", "--key", "k1", "--run-id", "r-1"]
    first = run_json(*argv, "--store", installed)["run"]
    assert (first["version"], first["resumed"]) == ("1.1.0", False)
    assert run("pin", "acme-prod", "2.0.0", "--store", installed)[0] == 0
    again = run_json(*argv, "--store", installed)["run"]
    assert (again["version"], again["digest"], again["resumed"]) == ("1.1.0", digest("1.1.0"), True)
    assert again["started_at"] == first["started_at"]
    fresh = run_json("call", "acme-prod", "list_contacts", "--token", "t", "--scope",
                     "contacts.read", "--store", installed)["run"]  # fmt: skip
    assert fresh["version"] == "2.0.0"


def test_call__tool_error__exit_2_tool_error_with_the_tools_code(installed: str) -> None:
    argv = ["call", "acme-prod", "get_contact", "--input", '{"id": "c-999"}', "--key", "k1"]
    code, out, err = run(*argv, "--store", installed)
    assert (code, out) == (2, "")
    assert err == (
        "packrun: error: [tool_error] tool 'get_contact' failed with 'not_found': "
        "no contact 'c-999'\n"
    )
    code, out, err = run(*argv, "--store", installed, "--json")
    assert (code, err) == (2, "")
    assert json.loads(out) == {
        "error": {
            "code": "tool_error",
            "message": "tool 'get_contact' failed with 'not_found': no contact 'c-999'",
            "tool": "get_contact",
            "tool_code": "not_found",
        }
    }


def test_call__unknown_tool__exit_2_not_found_naming_the_tools(installed: str) -> None:
    code, out, err = run("call", "acme-prod", "delete_contact", "--store", installed)
    assert (code, out) == (2, "")
    assert err == (
        "packrun: error: [not_found] no tool of acme 1.1.0 named 'delete_contact'; "
        "known: get_contact, list_contacts, search_contacts\n"
    )


def test_call__unknown_installation__exit_2_not_found(installed: str) -> None:
    code, out, _ = run("call", "acme-test", "list_contacts", "--store", installed, "--json")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("{limit: 2}", "not valid JSON: Expecting property name enclosed in double quotes at "
         "line 1, column 2"),
        ('{"limit": 2', "not valid JSON: Expecting ',' delimiter at line 1, column 12"),
        ("", "not valid JSON: Expecting value at line 1, column 1"),
        ("[1, 2]", "an array, not an object"),
        ('"x"', "a string, not an object"),
        ("2", "a number, not an object"),
        ("null", "null, not an object"),
    ],
)  # fmt: skip
def test_call__input_not_a_json_object__exit_2_invalid_argument_naming_the_problem(
    given: str, problem: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'never.db'}"
    code, out, err = run("call", "acme-prod", "list_contacts", "--input", given, "--store", url)
    assert (code, out) == (2, "")
    assert err == (
        f"packrun: error: [invalid_argument] --input: {problem}; "
        'expected a JSON object, such as {"limit": 2}\n'
    )
    assert not (tmp_path / "never.db").exists()  # refused before the store is opened
    code, out, _ = run(
        "call", "acme-prod", "list_contacts", "--input", given, "--store", url, "--json"
    )
    assert code == 2
    assert json.loads(out)["error"]["code"] == "invalid_argument"


def test_call__input_file_and_standard_input(
    installed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "input.json"
    path.write_text('{"limit": 3}\n')
    argv = ["call", "acme-prod", "list_contacts", "--key", "k1", "--store", installed]
    assert len(run_json(*argv, "--input-file", str(path))["output"]["contacts"]) == 3
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b'{"limit": 4}')))
    assert len(run_json(*argv, "--input-file", "-")["output"]["contacts"]) == 4
    path.write_text("[]")
    code, _, err = run(*argv, "--input-file", str(path))
    assert code == 2
    assert f"[invalid_argument] --input-file {path}: an array, not an object" in err
    path.write_bytes(b'{"name": "\xff"}')
    code, _, err = run(*argv, "--input-file", str(path))
    assert code == 2
    assert "not UTF-8 text" in err
    code, _, err = run(*argv, "--input-file", str(tmp_path / "missing.json"))
    assert code == 2
    assert "missing.json" in err


def test_call__input_and_input_file__exit_2_usage(installed: str) -> None:
    code, _, err = run(
        "call", "acme-prod", "t", "--input", "{}", "--input-file", "x", "--store", installed
    )
    assert code == 2
    assert "[usage_error]" in err
    assert "not allowed with argument" in err


def test_call__without_credentials__the_tools_own_unauthorized(installed: str) -> None:
    code, out, _ = run("call", "acme-prod", "list_contacts", "--store", installed, "--json")
    assert code == 2
    error = json.loads(out)["error"]
    assert (error["code"], error["tool_code"]) == ("tool_error", "unauthorized")
    code, _, err = run("call", "crm-prod", "list_accounts", "--store", installed)
    assert code == 2
    assert "[tool_error] tool 'list_accounts' failed with 'unauthorized'" in err


def test_call__credentials_from_the_environment(
    installed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACKRUN_AUTH_KEY", "k1")
    by_env = run_json("call", "acme-prod", "list_contacts", "--store", installed)["output"]
    by_option = run_json("call", "acme-prod", "list_contacts", "--key", "k1", "--store", installed)[
        "output"
    ]
    assert by_env == by_option
    monkeypatch.delenv("PACKRUN_AUTH_KEY")
    monkeypatch.setenv("PACKRUN_AUTH_USERNAME", "ada")
    monkeypatch.setenv("PACKRUN_AUTH_PASSWORD", "pw")
    result = run_json("call", "crm-prod", "list_accounts", "--store", installed)
    assert result["output"] == library_call(
        installed, "crm-prod", "list_accounts", None, packrun.Auth.basic("ada", "pw")
    )
    monkeypatch.setenv("PACKRUN_AUTH_USERNAME", "bob")  # an option wins over its variable
    argv = ["call", "crm-prod", "list_accounts", "--store", installed]
    assert run_json(*argv, "--username", "ada")["output"] == result["output"]
    assert run_json(*argv)["output"] != result["output"]


def test_call__oauth2_token_from_the_environment_with_scopes(
    installed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("pin", "acme-prod", "2.0.0", "--store", installed)
    monkeypatch.setenv("PACKRUN_AUTH_TOKEN", "t1")
    argv = ["call", "acme-prod", "list_contacts", "--store", installed]
    result = run_json(*argv, "--scope", "contacts.read")
    assert result["output"] == library_call(
        installed,
        "acme-prod",
        "list_contacts",
        None,
        packrun.Auth.oauth2("t1", scopes=("contacts.read",)),
    )
    code, out, _ = run(*argv, "--json")  # a token without the scope 2.0.0 needs
    assert code == 2
    assert json.loads(out)["error"]["code"] == "needs_reauth"
    assert "scope 'contacts.read'" in json.loads(out)["error"]["message"]


def test_call__explicit_auth_mode_picks_among_the_environments_credentials(
    installed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in zip(AUTH_ENV, ("k1", "t1", "ada", "pw"), strict=True):
        monkeypatch.setenv(name, value)
    code, _, err = run("call", "crm-prod", "list_accounts", "--store", installed)
    assert code == 2
    assert err == (
        "packrun: error: [invalid_argument] credentials: the environment has credentials for "
        "more than one auth mode ($PACKRUN_AUTH_KEY, $PACKRUN_AUTH_TOKEN, $PACKRUN_AUTH_USERNAME, "
        "$PACKRUN_AUTH_PASSWORD); expected --auth to choose one of none, api_key, oauth2, basic\n"
    )
    basic = run_json("call", "crm-prod", "list_accounts", "--auth", "basic", "--store", installed)
    assert len(basic["output"]["accounts"]) == 5
    key = run_json("call", "acme-prod", "list_contacts", "--auth", "api_key", "--store", installed)
    assert len(key["output"]["contacts"]) == 10
    # options decide the mode before the environment is looked at
    assert run_json("call", "acme-prod", "list_contacts", "--key", "k2", "--store", installed)
    code, out, _ = run(
        "call", "acme-prod", "list_contacts", "--auth", "none", "--store", installed, "--json"
    )
    assert json.loads(out)["error"]["code"] == "needs_reauth"  # acme needs an API key


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--auth", "api_key"], "--auth api_key: missing --key (or $PACKRUN_AUTH_KEY); expected --key"),
        (["--auth", "basic", "--username", "u"], "--auth basic: missing --password (or "
         "$PACKRUN_AUTH_PASSWORD); expected --username and --password"),
        (["--auth", "basic", "--key", "k"], "--auth basic: --key does not go with it; expected "
         "--username and --password"),
        (["--auth", "none", "--token", "t", "--scope", "s"], "--auth none: --token, --scope do "
         "not go with it; expected no credentials"),
        (["--key", "k", "--scope", "s"], "--auth api_key: --scope does not go with it; expected "
         "--key"),
        (["--key", "k", "--username", "u"], "credentials: the command line has credentials for "
         "more than one auth mode (--key, --username); expected --auth to choose one of none, "
         "api_key, oauth2, basic"),
    ],
)  # fmt: skip
def test_call__credentials_that_do_not_fit__exit_2_invalid_argument(
    argv: list[str], message: str, installed: str
) -> None:
    code, out, err = run("call", "acme-prod", "list_contacts", *argv, "--store", installed)
    assert (code, out) == (2, "")
    assert err == f"packrun: error: [invalid_argument] {message}\n"


def test_call__unknown_auth_mode__exit_2_usage(installed: str) -> None:
    code, _, err = run("call", "acme-prod", "t", "--auth", "bearer", "--store", installed)
    assert code == 2
    assert "[usage_error] argument --auth: invalid choice" in err


def test_call__never_prints_credentials(
    installed: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    key_opt, key_env, token, user, password = SECRETS
    monkeypatch.setenv("PACKRUN_AUTH_KEY", key_env)
    printed = []
    for argv in (
        ["acme-prod", "list_contacts"],
        ["acme-prod", "list_contacts", "--key", key_opt],
        ["acme-prod", "get_contact", "--input", '{"id": "c-999"}', "--key", key_opt],
        ["acme-prod", "list_contacts", "--auth", "oauth2", "--token", token],
        ["acme-prod", "list_contacts", "--auth", "basic", "--username", user],
        ["acme-prod", "list_contacts", "--key", key_opt, "--password", password],
        [
            "crm-prod",
            "list_accounts",
            "--auth",
            "basic",
            "--username",
            user,
            "--password",
            password,
        ],
        ["crm-prod", "list_accounts", "--username", user, "--password", password, "--run-id", "r"],
        ["crm-prod", "list_accounts", "--username", user, "--password", password, "--input", "{"],
    ):
        for as_json in ((), ("--json",)):
            _, out, err = run("call", *argv, *as_json, "--store", installed)
            printed.append(out + err)
    captured = capfd.readouterr()
    everything = "".join(printed) + captured.out + captured.err
    assert "tool_error" in everything
    assert "invalid_argument" in everything
    for secret in SECRETS:
        assert secret not in everything


# --- status -------------------------------------------------------------------------------------


def test_status__empty_store(empty_store: str) -> None:
    store = empty_store
    code, out, _ = run("status", "--store", store)
    assert (code, out) == (
        0,
        "no installations\n\nno packs published\n\n"
        "0 installation(s); 0 version(s) of 0 pack(s): 0 active, 0 draining, 0 drained; "
        "0 run(s) in flight\n",
    )
    assert run_json("status", "--store", store) == {
        "project": "default",
        "installations": [],
        "packs": [],
        "versions": [],
        "totals": {
            "packs": 0,
            "installations": 0,
            "versions": 0,
            "active": 0,
            "draining": 0,
            "drained": 0,
            "runs_in_flight": 0,
        },
    }


def test_status__installations_versions_and_totals(installed: str) -> None:
    code, out, _ = run("status", "--store", installed)
    assert code == 0
    installations, versions, totals = out.split("\n\n")
    assert [line.split() for line in installations.splitlines()] == [
        ["id", "pack", "pin", "resolves", "to", "policy", "in", "flight"],
        ["acme-dev", "acme", "1.1.1", "1.1.1", "(custom)", "manual", "0"],
        ["acme-prod", "acme", "1.1.0", "1.1.0", "(vendor)", "manual", "0"],
        ["crm-old", "legacy-crm", "1.0.0", "1.0.0", "(vendor)", "manual", "0"],
        ["crm-prod", "legacy-crm", "1.1.0", "1.1.0", "(vendor)", "manual", "0"],
    ]
    assert [line.split() for line in versions.splitlines()] == [
        [
            "pack",
            "version",
            "channel",
            "state",
            "installations",
            "in",
            "flight",
            "status",
            "calls",
            "errors",
            "invalid",
            "in",
            "invalid",
            "out",
            "p50",
            "ms",
            "p99",
            "ms",
        ],
        ["acme", "1.0.0", "vendor", "live", "0", "0", "drained", "0", "0", "0", "0", "-", "-"],
        ["acme", "1.0.1", "vendor", "live", "0", "0", "drained", "0", "0", "0", "0", "-", "-"],
        ["acme", "1.1.0", "vendor", "live", "1", "0", "active", "0", "0", "0", "0", "-", "-"],
        ["acme", "1.1.1", "custom", "live", "1", "0", "active", "0", "0", "0", "0", "-", "-"],
        ["acme", "1.2.0", "vendor", "live", "0", "0", "drained", "0", "0", "0", "0", "-", "-"],
        ["acme", "2.0.0", "vendor", "live", "0", "0", "drained", "0", "0", "0", "0", "-", "-"],
        ["legacy-crm", "1.0.0", "vendor", "live", "1", "0", "active", "0", "0", "0", "0", "-", "-"],
        ["legacy-crm", "1.1.0", "vendor", "live", "1", "0", "active", "0", "0", "0", "0", "-", "-"],
    ]
    assert totals == (
        "4 installation(s); 8 version(s) of 2 pack(s): 4 active, 0 draining, 4 drained; "
        "0 run(s) in flight\n"
        "acme: 1 of 2 installation(s) have an update available\n"
        "legacy-crm: 1 of 2 installation(s) have an update available\n"
    )


def test_status__json__structured(installed: str) -> None:
    run("retire", "acme", "1.1.0", "--store", installed)  # exact pins keep it: still active
    status = run_json("status", "--store", installed)
    assert list(status) == ["project", "installations", "packs", "versions", "totals"]
    prod = status["installations"][1]
    assert (prod["id"], prod["pin"], prod["policy"], prod["in_flight"]) == (
        "acme-prod",
        "1.1.0",
        "manual",
        0,
    )
    assert prod["resolution"]["digest"] == digest("1.1.0")
    row = status["versions"][2]
    assert row == {
        "pack_id": "acme",
        "version": "1.1.0",
        "channel": "vendor",
        "state": "retired",
        "contract": 2,
        "digest": digest("1.1.0"),
        "installations": ["acme-prod"],
        "in_flight": 0,
        "status": "active",
        "health": {
            "calls": 0,
            "invalid_input": 0,
            "invalid_output": 0,
            "tool_errors": 0,
            "timeouts": 0,
            "crashes": 0,
            "error_rate": 0.0,
            "p50": None,
            "p99": None,
        },
    }
    assert [v["contract"] for v in status["versions"] if v["pack_id"] == "legacy-crm"] == [1, 1]
    assert status["totals"] == {
        "packs": 2,
        "installations": 4,
        "versions": 8,
        "active": 4,
        "draining": 0,
        "drained": 4,
        "runs_in_flight": 0,
    }


def test_status__pack__only_that_packs_installations_and_versions(installed: str) -> None:
    status = run_json("status", "legacy-crm", "--store", installed)
    assert [i["id"] for i in status["installations"]] == ["crm-old", "crm-prod"]
    assert [v["version"] for v in status["versions"]] == ["1.0.0", "1.1.0"]
    assert status["totals"]["packs"] == 1
    code, out, _ = run("status", "legacy-crm", "--store", installed)
    assert code == 0
    assert "acme" not in out


def test_status__pack_without_installations(published: str) -> None:
    code, out, _ = run("status", "acme", "--store", published)
    assert code == 0
    assert out.startswith("no installations of acme\n\npack ")


def test_status__unknown_pack__exit_2_not_found(installed: str) -> None:
    code, out, err = run("status", "acme-crm", "--store", installed)
    assert (code, out) == (2, "")
    assert err == "packrun: error: [not_found] no pack 'acme-crm'; known: acme, legacy-crm\n"


def test_status__runs_another_process_holds__in_flight_then_draining(installed: str) -> None:
    """A run held open by another runtime on the store (in a thread of its own here) counts,
    through its lease; when the pin moves away its version is draining, and drained once it ends."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(packrun.open_runtime(installed)) as rt,
        portal.wrap_async_context_manager(rt.run("acme-prod", run_id="held")),
    ):
        status = run_json("status", "acme", "--store", installed)
        assert status["installations"][1]["in_flight"] == 1
        assert status["versions"][2]["in_flight"] == 1
        assert status["versions"][2]["status"] == "active"
        assert status["totals"]["runs_in_flight"] == 1
        run("pin", "acme-prod", "1.2.0", "--store", installed)
        code, out, _ = run("status", "acme", "--store", installed)
        assert code == 0
        assert "acme  1.1.0    vendor   live   0              1          draining" in out
        assert "2 active, 1 draining, 3 drained; 1 run(s) in flight\n" in out
    status = run_json("status", "acme", "--store", installed)
    assert status["versions"][2]["status"] == "drained"
    assert status["totals"]["runs_in_flight"] == 0


# --- diff: a release gate -----------------------------------------------------------------------


def library_diff(old: Path | str, new: Path | str) -> Any:
    from packrun._diff import diff

    return diff(old, new)


def test_diff__red__exit_1_and_the_report_grouped_by_level() -> None:
    code, out, err = run("diff", str(bundle("1.1.0")), str(bundle("1.2.0")))
    assert (code, err) == (1, "")
    assert out == str(library_diff(bundle("1.1.0"), bundle("1.2.0"))) + "\n"
    assert out.startswith("acme 1.1.0 -> 1.2.0\nverdict: red (1 breaking change shipped as a minor")
    assert "breaking (1):\n  $.tools[list_contacts].input[account_id]" in out
    assert "compatible (1):\n  $.tools[count_contacts]  [tool.added]" in out


def test_diff__json__the_report_and_still_exit_1_on_red() -> None:
    code, out, err = run("diff", str(bundle("1.1.0")), str(bundle("1.2.0")), "--json")
    assert (code, err) == (1, "")
    report = json.loads(out)
    assert report == library_diff(bundle("1.1.0"), bundle("1.2.0")).to_dict()
    assert (report["verdict"], report["required_bump"], report["declared_bump"]) == (
        "red",
        "major",
        "minor",
    )
    assert report["counts"] == {"breaking": 1, "dangerous": 0, "compatible": 1, "patch": 1}
    assert (report["old_digest"], report["new_digest"]) == (digest("1.1.0"), digest("1.2.0"))
    assert [f["rule_id"] for f in report["findings"] if f["level"] == "breaking"] == [
        "input.required_field_added"
    ]


@pytest.mark.parametrize(
    ("old", "new", "verdict"),
    [
        (ACME / "1.0.0", ACME / "1.0.1", "ok"),  # integration source folders
        (ACME / "1.0.1" / "manifest.json", ACME / "1.1.0" / "manifest.json", "ok"),
        (bundle("1.1.0"), bundle("2.0.0"), "amber"),  # breaking, declared as a major
        (bundle("1.2.0"), bundle("1.2.0"), "ok"),  # the same bytes
    ],
    ids=["sources-patch", "manifests-minor", "bundles-major", "same-bundle"],
)
def test_diff__ok_and_amber__exit_0(old: Path, new: Path, verdict: str) -> None:
    code, out, err = run("diff", str(old), str(new), "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["verdict"] == verdict


def test_diff__pack_source_folder__compares_its_integration_entry() -> None:
    helpdesk = ROOT / "bundles" / "helpdesk"
    report = run_json("diff", str(helpdesk / "1.0.0"), str(helpdesk / "1.1.0"))
    # The pack moved to 1.1.0 for its process flow; its integration stayed at 1.0.0.
    assert (report["pack_id"], report["old_version"], report["new_version"]) == (
        "helpdesk",
        "1.0.0",
        "1.0.0",
    )
    assert (report["verdict"], report["findings"]) == ("ok", [])


def test_diff__bad_paths__exit_2(tmp_path: Path) -> None:
    code, out, err = run("diff", str(tmp_path / "nope.bundle.tar.gz"), str(bundle("1.0.0")))
    assert (code, out) == (2, "")
    assert err.startswith("packrun: error: [not_found] no bundle, manifest or source folder")
    code, out, err = run("diff", str(ROOT / "bundles"), str(bundle("1.0.0")))  # neither kind
    assert (code, out) == (2, "")
    assert err.startswith("packrun: error: [not_found] no manifest.json (an integration source)")
    (tmp_path / "manifest.json").write_text("{")
    code, out, err = run("diff", str(tmp_path / "manifest.json"), str(bundle("1.0.0")), "--json")
    assert (code, err) == (2, "")
    assert json.loads(out)["error"]["code"] == "invalid_manifest"


def test_diff__profile__reclassifies_rules_before_the_verdict(tmp_path: Path) -> None:
    profile = tmp_path / "lenient.profile"
    profile.write_text("# this platform's callers never send account_id\n"
                       "input.required_field_added = compatible\n")  # fmt: skip
    code, out, _ = run(
        "diff", str(bundle("1.1.0")), str(bundle("1.2.0")), "--profile", str(profile), "--json"
    )
    assert code == 0
    report = json.loads(out)
    assert (report["verdict"], report["required_bump"]) == ("ok", "minor")
    profile.write_text("input.required_field_added = harmless\n")
    code, _, err = run(
        "diff", str(bundle("1.1.0")), str(bundle("1.2.0")), "--profile", str(profile)
    )
    assert code == 2
    assert err.startswith("packrun: error: [invalid_manifest]")


def test_diff__pack_at_version__read_from_the_store(published: str) -> None:
    code, out, err = run("diff", "acme@1.1.0", "acme@1.2.0", "--store", published)
    assert (code, err) == (1, "")
    assert out == str(library_diff(bundle("1.1.0"), bundle("1.2.0"))) + "\n"
    report = run_json("diff", "acme@1.0.1", "acme@2.0.0", "--store", published)
    assert (report["verdict"], report["new_digest"]) == ("amber", digest("2.0.0"))
    # The published artifact against a file: the same bytes, the same version.
    report = run_json("diff", "acme@1.1.0", str(bundle("1.1.0")), "--store", published)
    assert (report["verdict"], report["findings"]) == ("ok", [])


def test_diff__pack_at_version__other_bytes_under_the_same_version__red(
    published: str, tmp_path: Path
) -> None:
    """The release gate's other use: is the local build of 1.2.0 what the store published?"""
    src = tmp_path / "acme"
    shutil.copytree(ACME / "1.2.0", src, ignore=shutil.ignore_patterns("dist"))
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["description"] += " Rebuilt."
    (src / "manifest.json").write_text(json.dumps(manifest))
    assert run("build", str(src))[0] == 0
    rebuilt = src / "dist" / "acme-1.2.0.bundle.tar.gz"
    code, out, _ = run("diff", "acme@1.2.0", str(rebuilt), "--store", published, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["verdict"] == "red"
    assert {f["rule_id"] for f in report["findings"]} == {
        "artifact.content_changed",
        "text.changed",
    }


def test_diff__pack_at_version__unknown__exit_2_not_found(published: str) -> None:
    code, _, err = run("diff", "acme@1.5.0", "acme@1.2.0", "--store", published)
    assert code == 2
    assert err == (
        "packrun: error: [not_found] no version of acme '1.5.0'; known: "
        "1.0.0, 1.0.1, 1.1.0, 1.1.1, 1.2.0, 2.0.0\n"
    )
    code, _, err = run("diff", "crm@1.0.0", "acme@1.2.0", "--store", published)
    assert code == 2
    assert err == "packrun: error: [not_found] no pack 'crm'; known: acme\n"
    code, _, err = run("diff", "acme@1.x", "acme@1.2.0", "--store", published)
    assert code == 2
    assert err.startswith("packrun: error: [invalid_version] '1.x'")


def test_diff__a_path_that_exists_wins_over_pack_at_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copy(bundle("1.0.0"), tmp_path / "acme@1.0.0")  # a bundle under an odd name
    report = run_json("diff", "acme@1.0.0", str(bundle("1.0.1")), "--store", "mysql://unused")
    assert (report["old_version"], report["verdict"]) == ("1.0.0", "ok")


# --- review, update, rollback ---------------------------------------------------------------------


@contextmanager
def hold_run(store: str, installation_id: str, run_id: str, auth: packrun.Auth) -> Iterator[None]:
    """A run held open by another runtime on the store (in a thread of its own)."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(packrun.open_runtime(store)) as rt,
        portal.wrap_async_context_manager(rt.run(installation_id, run_id=run_id, auth=auth)),
    ):
        yield


@pytest.fixture
def prod(published: str) -> str:
    """acme-prod pinned to 1.1.0 (manual), with a declared workflow and an observed one."""
    assert run("install", "acme-prod", "acme", "--pin", "1.1.0", "--store", published)[0] == 0

    async def declare() -> None:
        async with packrun.open_runtime(published, refresh_interval=0) as rt:
            await rt.declare_workflow("acme-prod", "wf-export", ["list_contacts"])

    anyio.run(declare)
    code, _, err = run(
        "call", "acme-prod", "get_contact", "--input", '{"id": "c-001"}', "--key", "k",
        "--workflow-id", "wf-card", "--store", published,
    )  # fmt: skip
    assert code == 0, err
    return published


def library_review(store: str, installation_id: str, to: str | None) -> str:
    async def review() -> str:
        async with packrun.open_runtime(store, refresh_interval=0) as rt:
            return str(rt.review_update(installation_id, to=to))

    return anyio.run(review)


def test_review__prints_what_the_library_reviews(prod: str) -> None:
    code, out, err = run("review", "acme-prod", "--to", "2.0.0", "--store", prod)
    assert (code, err) == (0, "")
    library = library_review(prod, "acme-prod", "2.0.0")
    assert "needs acknowledge_breaking=True: " in library  # the library's words
    assert out == library.replace("acknowledge_breaking=True", "--acknowledge-breaking") + "\n"
    assert out.startswith(
        "update acme-prod: 1.1.0 -> 2.0.0 (major; the changes need a major); verdict amber\n"
    )
    assert "affected workflows:\n  wf-card (observed): get_contact\n" in out
    assert "  wf-export (declared): list_contacts\n" in out
    assert "needs --acknowledge-breaking: 2.0.0 is a major update from 1.1.0" in out


def test_review__json__structured(prod: str) -> None:
    review = run_json("review", "acme-prod", "--to", "1.2.0", "--store", prod)
    assert list(review) == [
        "installation_id",
        "from_version",
        "to_version",
        "bump",
        "required_bump",
        "verdict",
        "reason",
        "notes",
        "findings",
        "affected_workflows",
        "runs_in_flight",
        "needs_acknowledgement",
        "acknowledge",
        "needs_reauth",
        "notices",
        "soaking_until",
    ]
    assert review["needs_reauth"] == []
    assert (review["from_version"], review["to_version"], review["bump"]) == (
        "1.1.0",
        "1.2.0",
        "minor",
    )
    assert (review["required_bump"], review["verdict"]) == ("major", "red")
    assert review["findings"] == [
        f.to_dict() for f in library_diff(bundle("1.1.0"), bundle("1.2.0")).findings
    ]
    assert review["affected_workflows"] == [
        {"workflow_id": "wf-export", "source": "declared", "tools": ["list_contacts"]}
    ]
    assert review["runs_in_flight"] == []
    assert review["needs_acknowledgement"] is True
    assert review["acknowledge"] == [
        "1 breaking finding(s): input.required_field_added",
        "the verdict is red (semver dishonesty)",
    ]


def test_review__default_target_is_the_newest_on_the_channel(prod: str) -> None:
    review = run_json("review", "acme-prod", "--store", prod)
    assert (review["to_version"], review["verdict"]) == ("2.0.0", "amber")
    run("update", "acme-prod", "--acknowledge-breaking", "--store", prod)
    code, _, err = run("review", "acme-prod", "--store", prod)
    assert code == 2
    assert err.startswith("packrun: error: [not_found] no newer version of acme")


def test_review__runs_another_process_holds_are_in_flight(prod: str) -> None:
    with hold_run(prod, "acme-prod", "held-1", packrun.Auth.api_key("k")):
        review = run_json("review", "acme-prod", "--to", "2.0.0", "--store", prod)
        assert review["runs_in_flight"] == ["held-1"]
        code, out, _ = run("review", "acme-prod", "--to", "2.0.0", "--store", prod)
        assert code == 0
        assert "runs in flight on 1.1.0: 1 (held-1)" in out


def test_review__unknown_installation_or_version__exit_2_not_found(prod: str) -> None:
    code, _, err = run("review", "acme-test", "--store", prod)
    assert (code, err.startswith("packrun: error: [not_found] no installation")) == (2, True)
    code, _, err = run("review", "acme-prod", "--to", "3.0.0", "--store", prod)
    assert (code, err.startswith("packrun: error: [not_found] no version of acme '3.0.0'")) == (
        2,
        True,
    )


def test_update__a_major_without_acknowledgement__exit_2_breaking_diff(prod: str) -> None:
    code, out, err = run("update", "acme-prod", "--to", "2.0.0", "--store", prod)
    assert (code, out) == (2, "")
    assert err.startswith(
        "packrun: error: [breaking_diff] updating acme-prod from 1.1.0 to 2.0.0 needs "
        "--acknowledge-breaking: 2.0.0 is a major update from 1.1.0; 10 breaking finding(s)"
    )
    code, out, _ = run("update", "acme-prod", "--to", "2.0.0", "--store", prod, "--json")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "breaking_diff"
    assert run_json("resolve", "acme-prod", "--store", prod)["resolution"]["version"] == "1.1.0"


def test_update__a_red_minor_needs_acknowledgement_too(prod: str) -> None:
    code, _, err = run("update", "acme-prod", "--to", "1.2.0", "--store", prod)
    assert code == 2
    assert "the verdict is red (semver dishonesty)" in err


def test_update__acknowledged__moves_the_pin_and_says_so(prod: str) -> None:
    code, out, err = run(
        "update", "acme-prod", "--to", "2.0.0", "--acknowledge-breaking", "--actor", "ops",
        "--store", prod,
    )  # fmt: skip
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "updated acme-prod: 1.1.0 -> 2.0.0 (major; verdict amber) by ops"
    assert lines[1].startswith("acknowledged: 2.0.0 is a major update from 1.1.0; 10 breaking")
    assert lines[2] == "runs in flight on 1.1.0: 0; new runs use 2.0.0"
    assert lines[3] == (
        f"acme-prod -> acme 2.0.0 (vendor, contract 2, {digest('2.0.0')}, pin 2.0.0)"
    )
    last = run_json("history", "acme-prod", "--store", prod)[-1]
    assert (last["actor"], last["origin"], last["from_version"], last["to_version"]) == (
        "ops",
        "user",
        "1.1.0",
        "2.0.0",
    )


def test_update__a_compatible_minor_needs_no_acknowledgement(published: str) -> None:
    run("install", "acme-prod", "acme", "--pin", "1.0.0", "--store", published)
    update = run_json("update", "acme-prod", "--to", "1.1.0", "--store", published)
    assert (update["from_version"], update["to_version"], update["verdict"]) == (
        "1.0.0",
        "1.1.0",
        "ok",
    )
    assert (update["needs_acknowledgement"], update["acknowledge"]) == (False, [])
    assert update["resolution"]["version"] == "1.1.0"


def test_update__runs_in_flight_finish_on_their_version(prod: str) -> None:
    with hold_run(prod, "acme-prod", "held-2", packrun.Auth.api_key("k")):
        code, out, _ = run(
            "update", "acme-prod", "--to", "2.0.0", "--acknowledge-breaking", "--store", prod
        )
        assert code == 0
        assert "runs in flight on 1.1.0: 1 (held-2); they finish on it; new runs use 2.0.0" in out
        status = run_json("status", "acme", "--store", prod)
        row = next(v for v in status["versions"] if v["version"] == "1.1.0")
        assert (row["status"], row["in_flight"]) == ("draining", 1)


@pytest.fixture
def on_2(prod: str) -> str:
    """acme-prod updated to 2.0.0 (acknowledged)."""
    code, _, err = run(
        "update", "acme-prod", "--to", "2.0.0", "--acknowledge-breaking", "--store", prod
    )
    assert code == 0, err
    return prod


def test_rollback__moves_back__history_says_rollback(on_2: str) -> None:
    code, out, err = run("rollback", "acme-prod", "1.1.0", "--actor", "ops", "--store", on_2)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "rolled back acme-prod: 2.0.0 -> 1.1.0 by ops",
        "2.0.0: not waited for (--drain-timeout SECONDS waits); "
        "runs of acme-prod in flight on it finish on it",
        f"acme-prod -> acme 1.1.0 (vendor, contract 2, {digest('1.1.0')}, pin 1.1.0)",
    ]
    last = run_json("history", "acme-prod", "--store", on_2)[-1]
    assert (last["actor"], last["origin"], last["from_version"], last["to_version"]) == (
        "ops",
        "rollback",
        "2.0.0",
        "1.1.0",
    )


def test_rollback__drain_timeout__drained_when_no_run_is_in_flight(on_2: str) -> None:
    code, out, _ = run("rollback", "acme-prod", "1.0.0", "--drain-timeout", "5", "--store", on_2)
    assert code == 0
    assert "2.0.0: drained (no run of acme-prod in flight on it)" in out


def test_rollback__drain_timeout__reports_the_runs_still_in_flight(on_2: str) -> None:
    with hold_run(on_2, "acme-prod", "held-3", packrun.Auth.oauth2("t", scopes=("contacts.read",))):
        code, out, err = run(
            "rollback", "acme-prod", "1.1.0", "--drain-timeout", "0.1", "--store", on_2, "--json"
        )
        assert (code, err) == (0, "")  # the rollback is done; the drain outcome is reported
        back = json.loads(out)
        assert {k: back[k] for k in list(back)[:6]} == {
            "installation_id": "acme-prod",
            "from_version": "2.0.0",
            "to_version": "1.1.0",
            "drain_timeout": 0.1,
            "drained": False,
            "still_in_flight": ["held-3"],
        }
        assert back["resolution"]["version"] == "1.1.0"
        code, out, _ = run(
            "rollback", "acme-prod", "1.0.0", "--drain-timeout", "0", "--store", on_2
        )
        assert code == 0
        assert "1.1.0: drained" in out  # held-3 is on 2.0.0, not on the version left now


def test_rollback__text__still_in_flight(on_2: str) -> None:
    with hold_run(on_2, "acme-prod", "held-4", packrun.Auth.oauth2("t", scopes=("contacts.read",))):
        code, out, _ = run(
            "rollback", "acme-prod", "1.1.0", "--drain-timeout", "0.05", "--store", on_2
        )
        assert code == 0
        assert "2.0.0: still in flight after 0.05s: held-4; they finish on it\n" in out


def test_rollback__not_an_earlier_version__exit_2(on_2: str) -> None:
    code, _, err = run("rollback", "acme-prod", "2.0.0", "--store", on_2)
    assert code == 2
    assert err.startswith("packrun: error: [invalid_argument] '2.0.0' is not a valid rollback")
    code, _, err = run("rollback", "acme-prod", "0.9.0", "--store", on_2)
    assert code == 2
    assert "[not_found]" in err


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf"])
def test_rollback__bad_drain_timeout__exit_2_usage(value: str, on_2: str) -> None:
    code, out, usage = run(
        "rollback", "acme-prod", "1.1.0", f"--drain-timeout={value}", "--store", on_2
    )
    assert (code, out) == (2, "")
    assert "packrun: error: [usage_error] argument --drain-timeout: " in usage
    assert "expected a number of seconds, 0 or more" in usage
    assert run_json("resolve", "acme-prod", "--store", on_2)["resolution"]["version"] == "2.0.0"


# --- status: blocked updates ----------------------------------------------------------------------


def test_status__policy_installations_show_their_blocked_updates(published: str) -> None:
    run("install", "acme-auto", "acme", "--pin", "1.1.0", "--policy", "auto_minor",
        "--store", published)  # fmt: skip
    run("install", "acme-prod", "acme", "--pin", "1.1.0", "--store", published)
    code, out, _ = run("status", "--store", published)
    assert code == 0
    installations = out.split("\n\n")[0].splitlines()
    assert installations[-1] == (
        "acme-auto: update blocked: breaking_diff (2.0.0: a major update, which auto_minor does "
        "not take; 1.2.0: breaking findings (input.required_field_added))"
    )
    assert len(installations) == 4  # header, two rows, one blocked line: none for manual acme-prod
    status = run_json("status", "--store", published)
    blocked = {i["id"]: i["update_blocked"] for i in status["installations"]}
    assert blocked == {
        "acme-auto": [
            "2.0.0: a major update, which auto_minor does not take",
            "1.2.0: breaking findings (input.required_field_added)",
        ],
        "acme-prod": [],
    }


# --- the examples in docs/cli.md, as one session --------------------------------------------------

FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _doc_session() -> list[tuple[str, str | None]]:
    """Every ``packrun`` line of docs/cli.md in order: ``sh`` lines (output not shown) and the
    ``$ packrun`` transcripts of ``console`` and ``text`` blocks, each with the output shown.
    ``export NAME=value`` and ``unset NAME`` lines of ``sh`` blocks are steps too, and so is a
    transcript's ``$ echo $?``, which shows the exit code of the command before it."""
    steps: list[tuple[str, str | None]] = []
    for match in FENCE.finditer((ROOT / "docs" / "cli.md").read_text()):
        language, block = match[1], match[2]
        if language == "sh":
            for line in block.splitlines():
                command = line.split("#", 1)[0].strip()
                if command.startswith(("packrun ", "export ", "unset ")):
                    steps.append((command, None))
        elif language in ("console", "text") and block.startswith("$ packrun "):
            for part in re.split(r"^\$ ", block, flags=re.M)[1:]:
                command, _, shown = part.partition("\n")
                steps.append((command, shown))
    return steps


def test_docs_cli_examples__run_in_order_in_one_folder__print_what_the_docs_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """test_docs.py runs each ``console`` block in a folder of its own; the runtime examples build
    on each other (a publish, then an install, ...), so they are run here as the session they are.
    Times are shown as ``...`` and match anything."""
    monkeypatch.delenv("PACKRUN_STORE", raising=False)
    shutil.copytree(ROOT / "bundles", tmp_path / "bundles")
    monkeypatch.chdir(tmp_path)
    steps = _doc_session()
    for start in ("packrun install ", "packrun call ", "packrun status", "export "):
        assert any(command.startswith(start) for command, _ in steps), start
    checker = doctest.OutputChecker()
    for n, (command, shown) in enumerate(steps):
        if command == "echo $?":  # checked with the command before it
            continue
        verb, *words = shlex.split(command)
        if verb == "export":
            for word in words:
                name, _, value = word.partition("=")
                monkeypatch.setenv(name, value)
            continue
        if verb == "unset":
            for name in words:
                monkeypatch.delenv(name, raising=False)
            continue
        code, out, err = run(*words)
        printed = out + err
        if shown is None:
            assert code == 0, (command, printed)
            continue
        failed = "packrun: error:" in shown or '"error": {' in shown
        after = steps[n + 1] if n + 1 < len(steps) else ("", None)
        if after[0] == "echo $?" and after[1] is not None:
            assert code == int(after[1]), (command, printed)
        else:
            assert code == (2 if failed else 0), (command, printed)
        assert checker.check_output(shown, printed, doctest.ELLIPSIS), (command, shown, printed)


def test_readme_text_transcripts__print_what_the_readme_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's ``text`` transcripts (which test_docs.py leaves alone: a red ``diff`` exits 1)
    print what they show, with the exit code their ``$ echo $?`` shows."""
    shutil.copytree(ROOT / "bundles", tmp_path / "bundles")
    monkeypatch.chdir(tmp_path)
    checker = doctest.OutputChecker()
    checked = 0
    for match in FENCE.finditer((ROOT / "README.md").read_text()):
        if match[1] != "text" or not match[2].startswith("$ packrun "):
            continue
        parts = [p.partition("\n") for p in re.split(r"^\$ ", match[2], flags=re.M)[1:]]
        for n, (command, _, shown) in enumerate(parts):
            if command == "echo $?":
                continue
            code, out, err = run(*shlex.split(command)[1:])
            following = parts[n + 1] if n + 1 < len(parts) else ("", "", "")
            assert code == (int(following[2]) if following[0] == "echo $?" else 0), command
            assert checker.check_output(shown, out + err, doctest.ELLIPSIS), (command, out, err)
            checked += 1
    assert checked >= 1


# --- the JSON views keep up with the public types ------------------------------------------------


def test_json_views__show_every_field_of_their_public_type_but_those_left_out_on_purpose() -> None:
    left_out = {  # for programs of the library, or shown by the command another way
        "CatalogEntry": {"manifest"},
        "ContentEntry": {"spec"},
        "Resolution": {"entry"},  # its row: version, channel, contract and digest are shown
        "UpdateReview": {"findings", "report"},  # shown as findings, reason and notes
    }
    views = {
        "CatalogEntry": _cli._EntryView,
        "ContentEntry": _cli._ContentView,
        "Resolution": _cli._ResolutionView,
        "Installation": _cli._InstallationView,
        "PinEvent": _cli._EventView,
        "Explanation": _cli._ExplanationView,
        "Settings": _cli._SettingsView,
        "AffectedWorkflow": _cli._WorkflowView,
        "UpdateReview": _cli._ReviewView,
        "RetirementMove": _cli._RetirementMoveView,
        "Rollback": _cli._RollbackView,
        "UpdateAvailable": _cli._UpdateAvailableView,
        "ReleaseNotice": _cli._NoticeView,
        "LiveVersion": _cli._LiveVersionView,
        "ContentState": _cli._ContentStateView,
        "PackUpdates": _cli._PackUpdatesView,
        "BulkPlan": _cli_fleet._BulkPlanView,
        "BulkMove": _cli_fleet._BulkMoveView,
        "BulkBlocked": _cli_fleet._BulkBlockedView,
        "Alias": _cli_fleet._AliasView,
        "AliasChange": _cli_fleet._AliasChangeView,
    }
    for name, view in views.items():
        public = {f.name for f in dataclasses.fields(getattr(packrun, name))}
        missing = public - set(view.__struct_fields__) - left_out.get(name, set())
        assert not missing, f"--json leaves out {name}.{', '.join(sorted(missing))}"
