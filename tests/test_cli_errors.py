"""The CLI's error contract: stores that reading commands never create, usage errors with their
code (and as JSON with ``--json``, given before or after the command), a tool's own exception
reported as its failure, every error line with its ``[code]``, messages in the command line's
words, ``--log-level``, and Ctrl-C (a real ``packrun`` process sent SIGINT).
"""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import packrun
from _store_sql import split
from packrun._bundle import bundle_bytes
from packrun._cli import main

ROOT = Path(__file__).parents[1]
ACME = ROOT / "bundles" / "acme"

SLOW_CODE = '''\
"""Tools that wait, and tools that raise something other than a ToolError."""

import anyio

from packrun.sdk import Integration

integration = Integration("slow")


@integration.tool("sleep")
async def sleep(ctx, input):
    await anyio.sleep(input["s"])
    return {"slept": input["s"]}


@integration.tool("crash")
async def crash(ctx, input):
    raise ValueError("cannot use key " + ctx.auth.credentials.get("key", "") + " here")


@integration.tool("crash_sync")
def crash_sync(ctx, input):
    raise KeyError("missing")
'''


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def acme(version: str) -> str:
    return str(ACME / version / "dist" / f"acme-{version}.bundle.tar.gz")


def slow_bundle(folder: Path, version: str) -> str:
    manifest = packrun.decode_manifest(
        {
            "id": "slow",
            "version": version,
            "contract": 2,
            "auth": {"mode": "api_key"},
            "tools": [{"id": "sleep"}, {"id": "crash"}, {"id": "crash_sync"}],
        }
    )
    path = folder / f"slow-{version}.bundle.tar.gz"
    path.write_bytes(bundle_bytes(manifest, {"__init__.py": SLOW_CODE.encode()}))
    return str(path)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PACKRUN_STORE", "PACKRUN_AUTH_KEY", "PACKRUN_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name in ("PACKRUN_AUTH_USERNAME", "PACKRUN_AUTH_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def slow(tmp_path: Path) -> str:
    """A store with slow 1.0.0 and 1.1.0 published and ``inst`` pinned to 1.1.0."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    for version in ("1.0.0", "1.1.0"):
        code, _, err = run("publish", slow_bundle(tmp_path, version), "--store", url)
        assert code == 0, err
    code, _, err = run("install", "inst", "slow", "--pin", "1.1.0", "--store", url)
    assert code == 0, err
    return url


# --- stores are never created by reading ---------------------------------------------------------

NEVER_CREATE = [
    ["resolve", "acme-prod"],
    ["explain", "acme-prod"],
    ["status"],
    ["versions", "acme"],
    ["history", "acme-prod"],
    ["installations"],
    ["review", "acme-prod"],
    ["settings"],
    ["install", "acme-prod", "acme"],
    ["pin", "acme-prod", "latest"],
    ["policy", "acme-prod", "manual"],
    ["retire", "acme", "1.0.0"],
    ["update", "acme-prod"],
    ["rollback", "acme-prod", "1.0.0"],
    ["call", "acme-prod", "list_contacts"],
    ["diff", "acme@1.0.0", "acme@1.1.0"],
]


@pytest.mark.parametrize("argv", NEVER_CREATE, ids=lambda argv: argv[0])
def test_a_missing_sqlite_store__is_an_error_and_nothing_is_created(
    argv: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "nonexistent" / "dir" / "state.db"
    code, out, err = run(*argv, "--store", f"sqlite:///{path}")
    assert (code, out) == (2, "")
    assert err.startswith(f"packrun: error: [store_error] no store at {path} ")
    assert "this command does not create one: check --store and $PACKRUN_STORE" in err
    assert "create=False" not in err  # the command line's words, not the library's
    assert not (tmp_path / "nonexistent").exists()
    code, out, err = run(*argv, "--store", f"sqlite:///{path}", "--json")
    assert (code, err) == (2, "")
    assert json.loads(out)["error"]["code"] == "store_error"
    assert not (tmp_path / "nonexistent").exists()


def test_a_missing_default_store__is_an_error_and_nothing_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run("status")[0] == 2
    monkeypatch.setenv("PACKRUN_STORE", f"sqlite:///{tmp_path / 'typo.db'}")
    assert run("versions", "acme")[0] == 2
    assert list(tmp_path.iterdir()) == []


def test_publish_and_a_settings_change__create_the_store(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "state.db", tmp_path / "b" / "state.db"
    assert run("publish", acme("1.0.0"), "--store", f"sqlite:///{first}")[0] == 0
    assert first.is_file()
    code, _, _ = run("settings", "--strict-versions", "on", "--store", f"sqlite:///{second}")
    assert code == 0
    assert second.is_file()
    assert run("status", "--store", f"sqlite:///{first}")[0] == 0


@pytest.mark.parametrize("argv", [["status"], ["installations"], ["versions", "acme"]])
def test_a_postgresql_schema_without_a_store__is_an_error_and_nothing_is_created(
    argv: list[str], postgres_url: str
) -> None:
    import psycopg

    code, out, err = run(*argv, "--store", postgres_url)
    base, schema = split(postgres_url)
    assert (code, out) == (2, "")
    assert f"[store_error] no store in schema {schema!r}" in err
    with psycopg.connect(base, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        assert found.fetchone() is None
    assert run("publish", acme("1.0.0"), "--store", postgres_url)[0] == 0
    assert run(*argv, "--store", postgres_url)[0] == 0


# --- usage errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        ([], "the following arguments are required: COMMAND (see packrun --help)"),
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
        (
            ["install", "x"],
            "the following arguments are required: PACK (see packrun install --help)",
        ),
        (["status", "--frob"], "unrecognized arguments: --frob"),
        (["--log-level", "loud", "status"], "argument --log-level: invalid choice: 'loud'"),
    ],
)
def test_usage_errors__a_coded_line_exit_2(argv: list[str], said: str) -> None:
    code, out, err = run(*argv)
    assert (code, out) == (2, "")
    assert err.startswith("usage: packrun")
    assert f"packrun: error: [usage_error] {said}" in err


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize(
    "argv",
    [["install", "x"], ["install", "x", "acme", "--policy", "always"], ["frobnicate"]],
    ids=["missing", "choice", "command"],
)
def test_usage_errors__with_json_before_or_after_the_command__a_json_error(
    argv: list[str], where: str
) -> None:
    given = ["--json", *argv] if where == "before" else [*argv, "--json"]
    code, out, err = run(*given)
    assert (code, err) == (2, "")
    error = json.loads(out)["error"]
    assert error["code"] == "usage_error"
    assert error["message"]
    assert error["usage"].startswith("usage: packrun")


def test_json__before_the_command__is_honoured(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'state.db'}"
    code, out, _ = run("--json", "publish", acme("1.0.0"), "--store", store)
    assert code == 0
    assert json.loads(out)["version"] == "1.0.0"
    code, out, err = run("--json", "resolve", "nope", "--store", store)
    assert (code, err) == (2, "")
    assert json.loads(out)["error"]["code"] == "not_found"


def test_help__still_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--help")[0] == 0
    assert "--log-level" in capsys.readouterr().out
    assert run("status", "--help")[0] == 0
    assert "postgresql://" in capsys.readouterr().out


# --- every error line carries its code ------------------------------------------------------------


def test_io_error__carries_its_code(slow: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-input.json"
    argv = ["call", "inst", "sleep", "--input-file", str(missing), "--store", slow]
    code, out, err = run(*argv)
    assert (code, out) == (2, "")
    assert err == f"packrun: error: [io_error] {missing}: No such file or directory\n"
    code, out, err = run(*argv, "--json")
    assert (code, err) == (2, "")
    assert json.loads(out)["error"] == {
        "code": "io_error",
        "message": f"{missing}: No such file or directory",
    }


@pytest.mark.parametrize("command", ["check", "verify"])
def test_check_and_verify__of_a_missing_path__exit_2_not_1(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    code, out, err = run(command, str(missing))
    assert (code, out) == (2, "")
    assert err == f"packrun: error: [not_found] no file or folder '{missing}'\n"
    code, out, _ = run(command, str(missing), "--json")
    assert code == 2
    assert json.loads(out)["error"]["code"] == "not_found"


# --- a tool's own exception ----------------------------------------------------------------------


def test_call__a_tool_raising_another_exception__is_its_failure_redacted(slow: str) -> None:
    argv = ["call", "inst", "crash", "--key", "k-secret-9", "--store", slow]
    code, out, err = run(*argv)
    assert (code, out) == (2, "")
    # The CLI runs bundle code in the sandbox: the exception comes back as its text, redacted.
    assert err == (
        "packrun: error: [tool_error] tool 'crash' failed with 'unhandled_exception': "
        "ValueError: cannot use key <redacted> here\n"
    )
    code, out, err = run(*argv, "--json")
    assert (code, err) == (2, "")
    assert json.loads(out) == {
        "error": {
            "code": "tool_error",
            "message": "tool 'crash' failed with 'unhandled_exception': "
            "ValueError: cannot use key <redacted> here",
            "tool": "crash",
            "tool_code": "unhandled_exception",
        }
    }
    code, _, err = run("call", "inst", "crash_sync", "--key", "k", "--store", slow)
    assert code == 2
    assert err == (
        "packrun: error: [tool_error] tool 'crash_sync' failed with 'unhandled_exception': "
        "KeyError: 'missing'\n"
    )
    assert "internal error" not in err


# --- messages in the command line's words ---------------------------------------------------------


def test_messages__name_options_not_keyword_arguments(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'state.db'}"
    assert run("publish", acme("1.0.0"), "--store", store)[0] == 0
    assert run("settings", "--immutable-versions", "off", "--store", store)[0] == 0
    code, _, err = run("publish", acme("1.0.0"), "--store", store)
    assert code == 2
    assert err.endswith("is already published: publish it again with --force to overwrite it\n")
    # A custom 1.0.0 is another stream's row (projects): it publishes beside the vendor 1.0.0.
    code, _, err = run("publish", acme("1.0.0"), "--channel", "custom", "--store", store)
    assert code == 0
    assert run("settings", "--immutable-versions", "on", "--store", store)[0] == 0
    code, _, err = run("publish", acme("1.0.0"), "--force", "--store", store)
    assert code == 2
    assert "so --force changes nothing" in err
    assert run("install", "acme-prod", "acme", "--store", store)[0] == 0
    code, _, err = run("install", "acme-prod", "acme", "--store", store)
    assert "change it with packrun pin or packrun policy, or pick another id" in err
    code, _, err = run("install", "acme-x", "acme", "--pin", "9.9.9", "--store", store)
    assert code == 2
    assert "[not_found] no version of acme satisfying pin '9.9.9'; known: 1.0.0" in err
    code, _, err = run("rollback", "acme-prod", "1.0.0", "--store", store)
    assert code == 2
    assert err == (
        "packrun: error: [invalid_argument] '1.0.0' is not a valid rollback target: expected a "
        "version below the current 1.0.0\n"
    )


# --- --log-level ---------------------------------------------------------------------------------


@pytest.fixture
def quiet_packrun_logger() -> Any:
    logger = logging.getLogger("packrun")
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    logger.setLevel(level)
    logger.handlers[:] = handlers


def test_log_level__sets_the_packrun_logger_with_a_stderr_handler(
    slow: str, quiet_packrun_logger: logging.Logger
) -> None:
    before = list(quiet_packrun_logger.handlers)
    # Retiring a version installations are pinned to logs a warning.
    code, _, err = run("--log-level", "warning", "retire", "slow", "1.1.0", "--store", slow)
    assert code == 0
    assert "packrun: WARNING: packrun: packrun retired slow 1.1.0; 1 installation(s)" in err
    assert quiet_packrun_logger.handlers == before  # removed when the command ends
    code, _, err = run("retire", "slow", "1.0.0", "--log-level", "ERROR", "--store", slow)
    assert code == 0
    assert "WARNING" not in err


# --- Ctrl-C ---------------------------------------------------------------------------------------


def packrun_process(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "packrun", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def until(condition: Callable[[], Any], proc: subprocess.Popen[str]) -> None:
    """Wait for ``condition`` while ``proc`` runs (a step of the test, not a timing claim)."""
    with anyio.fail_after(60):
        while not await condition():
            assert proc.poll() is None, proc.communicate()
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_ctrl_c__interrupted_call__ends_its_run_so_its_id_is_free_at_once(slow: str) -> None:
    proc = packrun_process(
        "call", "inst", "sleep", "--input", '{"s": 600}', "--run-id", "r-int", "--key", "k",
        "--store", slow,
    )  # fmt: skip
    async with packrun.open_runtime(slow, lease_ttl=600) as rt:

        async def started() -> bool:
            await rt.refresh()
            return rt.runs_in_flight("slow", "1.1.0") == ["r-int"]

        await until(started, proc)
        proc.send_signal(signal.SIGINT)
        out, err = await anyio.to_thread.run_sync(proc.communicate)
        assert proc.returncode == 130, err
        assert err == (
            "packrun: error: [interrupted] interrupted; done before that: run r-int of inst "
            "ended; its id is free\n"
        )
        assert out == ""
        await rt.refresh()
        assert rt.runs_in_flight("slow", "1.1.0") == []  # ended, not waiting for a lease
        async with rt.run("inst", run_id="r-int") as again:  # the id is free at once
            assert again.resumed is True


@pytest.mark.anyio
async def test_ctrl_c__rollback_interrupted_while_waiting_for_the_drain__says_it_stands(
    slow: str,
) -> None:
    async with (
        packrun.open_runtime(slow) as rt,
        rt.run("inst", run_id="r-open"),  # in flight on 1.1.0: the drain waits for it
    ):
        proc = packrun_process(
            "rollback", "inst", "1.0.0", "--drain-timeout", "600", "--json", "--store", slow
        )

        async def moved() -> bool:
            await rt.refresh()
            return rt.resolve("inst").version == "1.0.0"

        await until(moved, proc)
        proc.send_signal(signal.SIGINT)
        out, err = await anyio.to_thread.run_sync(proc.communicate)
        assert proc.returncode == 130, err
        assert err == ""
        error = json.loads(out)["error"]
        assert error["code"] == "interrupted"
        assert error["committed"] == [
            "rolled back inst: 1.1.0 -> 1.0.0; the rollback stands (the wait for 1.1.0 to drain "
            "was interrupted, and its runs in flight finish on it)"
        ]
        assert "the rollback stands" in error["message"]
        await rt.refresh()
        assert rt.resolve("inst").version == "1.0.0"
        assert [e.origin for e in (await rt.history("inst"))] == ["install", "rollback"]


# --- JSON through msgspec -------------------------------------------------------------------------


def test_json__is_msgspec_encoding_of_the_public_types(slow: str) -> None:
    async def library() -> tuple[Any, ...]:
        async with packrun.open_runtime(slow, create=False, refresh_interval=0) as rt:
            return rt.versions("slow"), rt.installation("inst"), list(await rt.history("inst"))

    entries, inst, history = anyio.run(library)
    _, out, _ = run("versions", "slow", "--json", "--store", slow)
    versions = json.loads(out)
    assert [v["published_at"] for v in versions] == [
        msgspec.to_builtins(e.published_at) for e in entries
    ]
    assert versions[0]["published_at"].endswith("Z")  # RFC 3339, UTC
    assert versions[0]["entries"] == [
        {"kind": "integration", "id": "slow", "version": "1.0.0", "name": ""}
    ]
    _, out, _ = run("history", "inst", "--json", "--store", slow)
    assert json.loads(out) == msgspec.to_builtins(history)
    _, out, _ = run("installations", "--json", "--store", slow)
    shown = json.loads(out)[0]
    assert {k: v for k, v in shown.items() if k != "resolution"} == msgspec.to_builtins(inst)
