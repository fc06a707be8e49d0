"""Record the golden transcripts of the generation 1 -> 2 adapter on the legacy-crm samples.

Run ``python tests/record_transcripts.py`` (or call :func:`main`) after a deliberate change to a
legacy-crm sample or to the adapter; it rewrites ``tests/data/transcripts/legacy-crm-<version>.json``
from the fixed list of calls below, each made through a ``memory:`` runtime with ``rt.call``.

A transcript file is a JSON object::

    {"recorded_with": {"packrun": "0.1.0", "pack": "legacy-crm", "version": "1.0.0",
                       "artifact": "bundles/legacy-crm/1.0.0/dist/...", "digest": "sha256:..."},
     "calls": [{"tool": ..., "input": ..., "auth": {"mode": ..., ...credentials},
                "result": ...}                                     # a success
               | {..., "error": {"tool_code": ..., "message": ...}}  # a ToolFailed
               | {..., "packrun_error": "not_found"}]}              # a runtime error

The credentials in it are fixed, non-secret test values. ``tests/test_adapters.py`` replays every
call against the committed file (it never runs this recorder) and checks the digest: a changed
sample artifact makes that test fail until the transcripts are recorded again.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any, Final

import anyio

import packrun

ROOT: Final = Path(__file__).resolve().parent.parent
BUNDLES: Final = ROOT / "bundles"
TRANSCRIPTS: Final = Path(__file__).resolve().parent / "data" / "transcripts"
PACK: Final = "legacy-crm"
VERSIONS: Final = ("1.0.0", "1.1.0")

Call = dict[str, Any]

ADA: Final = {"mode": "basic", "username": "ada", "password": "test-pass-ada"}
GRACE: Final = {"mode": "basic", "username": "grace", "password": "test-pass-grace"}
API_KEY: Final = {"mode": "api_key", "key": "test-api-key"}
OAUTH2: Final = {"mode": "oauth2", "access_token": "test-token", "scopes": ["accounts.read"]}
NONE: Final = {"mode": "none"}
EMPTY_PASSWORD: Final = {"mode": "basic", "username": "ada", "password": ""}


def _call(tool: str, input: dict[str, Any], auth: dict[str, Any]) -> Call:
    return {"tool": tool, "input": input, "auth": dict(auth)}


_COMMON: Final[list[Call]] = [
    # list_accounts: the default limit, explicit limits, the bounds, invalid limits
    _call("list_accounts", {}, ADA),
    _call("list_accounts", {"limit": 1}, ADA),
    _call("list_accounts", {"limit": 12}, ADA),
    _call("list_accounts", {"limit": 100}, ADA),
    _call("list_accounts", {"limit": 3}, GRACE),
    _call("list_accounts", {"limit": 0}, ADA),
    _call("list_accounts", {"limit": 101}, ADA),
    _call("list_accounts", {"limit": "5"}, ADA),
    _call("list_accounts", {"limit": True}, ADA),
    _call("list_accounts", {"limit": 2.5}, ADA),
    # get_account: found, the last one, another user's data, not found, invalid ids
    _call("get_account", {"id": "a-001"}, ADA),
    _call("get_account", {"id": "a-012"}, ADA),
    _call("get_account", {"id": "a-001"}, GRACE),
    _call("get_account", {"id": "a-013"}, ADA),
    _call("get_account", {"id": "A-001"}, ADA),
    _call("get_account", {}, ADA),
    _call("get_account", {"id": ""}, ADA),
    _call("get_account", {"id": 1}, ADA),
    # the wrong kind of credentials, or empty ones
    _call("list_accounts", {}, API_KEY),
    _call("get_account", {"id": "a-001"}, API_KEY),
    _call("list_accounts", {}, OAUTH2),
    _call("list_accounts", {}, NONE),
    _call("list_accounts", {}, EMPTY_PASSWORD),
    # unknown tools are refused by the runtime before the handle sees them
    _call("delete_account", {"id": "a-001"}, ADA),
]

CALLS: Final[dict[str, list[Call]]] = {
    "1.0.0": [
        *_COMMON,
        # create_account arrived in 1.1.0: 1.0.0 does not have the tool
        _call("create_account", {"name": "Initech"}, ADA),
    ],
    "1.1.0": [
        *_COMMON,
        _call("create_account", {"name": "Initech"}, ADA),
        _call(
            "create_account",
            {"name": "Initrode", "industry": "Software", "employees": 250},
            GRACE,
        ),
        _call("create_account", {"name": "Nobody", "employees": 0}, ADA),
        _call("create_account", {}, ADA),
        _call("create_account", {"name": ""}, ADA),
        _call("create_account", {"name": "Initech", "industry": ""}, ADA),
        _call("create_account", {"name": "Initech", "industry": 7}, ADA),
        _call("create_account", {"name": "Initech", "employees": -1}, ADA),
        _call("create_account", {"name": "Initech", "employees": True}, ADA),
        _call("create_account", {"name": "Initech", "employees": "12"}, ADA),
        _call("create_account", {"name": "Initech"}, API_KEY),
        # the sample keeps no state: a created account is not listed afterwards
        _call("get_account", {"id": "a-013"}, ADA),
    ],
}


def artifact(version: str) -> Path:
    """The built sample artifact of legacy-crm ``version``."""
    return BUNDLES / PACK / version / "dist" / f"{PACK}-{version}.bundle.tar.gz"


def transcript_path(version: str) -> Path:
    """Where the transcript of legacy-crm ``version`` lives."""
    return TRANSCRIPTS / f"{PACK}-{version}.json"


def auth_of(spec: dict[str, Any]) -> packrun.Auth:
    """The :class:`packrun.Auth` a transcript's ``auth`` entry describes."""
    mode = spec["mode"]
    if mode == "basic":
        return packrun.Auth.basic(spec["username"], spec["password"])
    if mode == "api_key":
        return packrun.Auth.api_key(spec["key"])
    if mode == "oauth2":
        return packrun.Auth.oauth2(spec["access_token"], scopes=list(spec.get("scopes", [])))
    if mode == "none":
        return packrun.Auth.none()
    raise ValueError(f"unknown auth mode {mode!r} in a transcript")


async def outcome(rt: packrun.Runtime, installation: str, call: Call) -> dict[str, Any]:
    """What one call gives through ``rt.call``: ``result``, ``error`` or ``packrun_error``."""
    try:
        result = await rt.call(
            installation, call["tool"], dict(call["input"]), auth=auth_of(call["auth"])
        )
    except packrun.ToolFailed as exc:
        return {"error": {"tool_code": exc.tool_code, "message": exc.tool_message}}
    except packrun.PackrunError as exc:
        return {"packrun_error": exc.code}
    return {"result": result}


async def record(version: str) -> dict[str, Any]:
    """The transcript of legacy-crm ``version``: every call of :data:`CALLS` and its outcome."""
    path = artifact(version)
    digest = packrun.read_bundle(path).digest
    checks = {"check_input": "off", "check_output": "off", "check_auth": "off"}
    async with packrun.open_runtime("memory:", **checks) as rt:  # type: ignore[arg-type]
        await rt.publish(path)
        installation = f"record-{version}"
        await rt.install(installation, PACK, version)
        calls = [{**call, **await outcome(rt, installation, call)} for call in CALLS[version]]
    return {
        "recorded_with": {
            "packrun": importlib.metadata.version("packrun"),
            "pack": PACK,
            "version": version,
            "artifact": path.relative_to(ROOT).as_posix(),
            "digest": digest,
        },
        "calls": calls,
    }


def encode(document: object) -> str:
    """The JSON text of a transcript file: keys sorted, two-space indent, UTF-8 kept as is."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    """Rewrite every transcript file from the current samples."""
    TRANSCRIPTS.mkdir(parents=True, exist_ok=True)
    for version in VERSIONS:
        document = anyio.run(record, version)
        target = transcript_path(version)
        target.write_text(encode(document), encoding="utf-8")
        print(f"wrote {target.relative_to(ROOT)} ({len(document['calls'])} calls)")


if __name__ == "__main__":
    main()
