"""The runtime commands of the CLI: publish, versions, install, resolve, explain, pin, history,
policy, installations, retire and settings, against real SQLite stores, with and without ``--json``.
"""

from __future__ import annotations

import doctest
import io
import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest

import packrun
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
]


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


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite store (an absolute path: four slashes), and no $PACKRUN_STORE to fall back on."""
    monkeypatch.delenv("PACKRUN_STORE", raising=False)
    return f"sqlite:///{tmp_path / 'state.db'}"


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
def test_argument_choices__validated_by_argparse__exit_2(
    argv: list[str], store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(*argv, "--store", store)
    assert (code, out) == (2, "")
    assert "invalid choice" in capsys.readouterr().err


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
    assert "update available: 1.1.1 (patch, custom)" in out


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
    ]
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


def test_installations__none__says_so(store: str) -> None:
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
    code, out, _ = run("retire", "acme", "2.0.0", "--store", published)
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


def test_settings__shows_the_defaults(store: str) -> None:
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


# --- the examples in docs/cli.md, as one session --------------------------------------------------

FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _doc_session() -> list[tuple[str, str | None]]:
    """Every ``packrun`` line of docs/cli.md in order: ``sh`` lines (output not shown) and the
    ``$ packrun`` transcripts of ``console`` and ``text`` blocks, each with the output shown."""
    steps: list[tuple[str, str | None]] = []
    for match in FENCE.finditer((ROOT / "docs" / "cli.md").read_text()):
        language, block = match[1], match[2]
        if language == "sh":
            for line in block.splitlines():
                command = line.split("#", 1)[0].strip()
                if command.startswith("packrun "):
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
    assert any(command.startswith("packrun install ") for command, _ in steps)
    checker = doctest.OutputChecker()
    for command, shown in steps:
        code, out, err = run(*shlex.split(command)[1:])
        printed = out + err
        if shown is None:
            assert code == 0, (command, printed)
            continue
        failed = "packrun: error:" in shown or '"error": {' in shown
        assert code == (2 if failed else 0), (command, printed)
        assert checker.check_output(shown, printed, doctest.ELLIPSIS), (command, shown, printed)
