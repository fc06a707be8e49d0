"""The CLI in projects: ``--project`` and ``$PACKRUN_PROJECT`` on every command that reads or
writes a project's state, against real SQLite stores."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from packrun._cli import main

ROOT = Path(__file__).parents[1]
ACME = ROOT / "bundles" / "acme"

PROJECT_COMMANDS = [
    "publish",
    "versions",
    "retire",
    "install",
    "resolve",
    "explain",
    "history",
    "review",
    "update",
    "rollback",
    "pin",
    "policy",
    "installations",
    "settings",
    "call",
    "status",
    "diff",
]


def bundle(version: str) -> Path:
    return ACME / version / "dist" / f"acme-{version}.bundle.tar.gz"


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
    """A SQLite store with vendor acme 1.0.0 and 1.1.0, and acme-corp's custom 1.1.1."""
    monkeypatch.delenv("PACKRUN_STORE", raising=False)
    monkeypatch.delenv("PACKRUN_PROJECT", raising=False)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    for version in ("1.0.0", "1.1.0"):
        assert run("publish", str(bundle(version)), "--store", url)[0] == 0
    code, out, err = run(
        "publish", str(bundle("1.1.1")), "--channel", "custom", "--project", "acme-corp",
        "--store", url,
    )  # fmt: skip
    assert (code, err) == (0, ""), out
    return url


@pytest.mark.parametrize("name", PROJECT_COMMANDS)
def test_every_command_on_project_state__takes_project(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(name, "--help")[0] == 0
    assert "--project ID" in capsys.readouterr().out


def test_versions__per_project(store: str) -> None:
    mine = run_json("versions", "acme", "--project", "acme-corp", "--store", store)
    assert [(v["version"], v["channel"], v["project"]) for v in mine] == [
        ("1.0.0", "vendor", None),
        ("1.1.0", "vendor", None),
        ("1.1.1", "custom", "acme-corp"),
    ]
    theirs = run_json("versions", "acme", "--store", store)
    assert [v["version"] for v in theirs] == ["1.0.0", "1.1.0"]


def test_install_and_read__inside_a_project__and_not_from_another(store: str) -> None:
    installed = run_json("install", "conn-1", "acme", "--project", "acme-corp", "--store", store)
    assert installed["installation"]["project"] == "acme-corp"
    assert installed["resolution"]["channel"] == "custom"
    for argv in (["resolve", "conn-1"], ["explain", "conn-1"], ["history", "conn-1"]):
        code, out, err = run(*argv, "--store", store)  # project default
        assert (code, out) == (2, ""), argv
        assert "[not_found]" in err
        assert "acme-corp" not in err
        assert run(*argv, "--project", "acme-corp", "--store", store)[0] == 0
    assert run_json("installations", "--store", store) == []
    listed = run_json("installations", "--project", "acme-corp", "--store", store)
    assert [i["id"] for i in listed] == ["conn-1"]


def test_packrun_project__is_the_default__and_project_wins(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACKRUN_PROJECT", "acme-corp")
    assert run("install", "conn-1", "acme", "--store", store)[0] == 0
    assert run_json("resolve", "conn-1", "--store", store)["resolution"]["version"] == "1.1.1"
    code, _, err = run("resolve", "conn-1", "--project", "globex", "--store", store)
    assert code == 2
    assert "[not_found]" in err


def test_settings__per_project__and_store_wide_without_one(store: str) -> None:
    assert run_json(
        "settings", "--immutable-versions", "off", "--project", "acme-corp", "--store", store
    ) == {"immutable_versions": False, "strict_versions": False}
    assert run_json("settings", "--store", store)["immutable_versions"] is True
    assert run_json("settings", "--project", "globex", "--store", store)["immutable_versions"]
    code, out, err = run(
        "publish", str(bundle("1.1.1")), "--channel", "custom", "--project", "acme-corp",
        "--force", "--store", store,
    )  # fmt: skip
    assert (code, err) == (0, ""), out


def test_status__counts_the_projects_installations_and_versions(store: str) -> None:
    assert run("install", "conn-1", "acme", "--project", "acme-corp", "--store", store)[0] == 0
    assert run("install", "other", "acme", "--store", store)[0] == 0
    status = run_json("status", "--project", "acme-corp", "--store", store)
    assert status["project"] == "acme-corp"
    assert [i["id"] for i in status["installations"]] == ["conn-1"]
    assert [(v["version"], v["channel"]) for v in status["versions"]][-1] == ("1.1.1", "custom")
    assert status["totals"]["installations"] == 1
    assert status["totals"]["versions"] == 3
    _, out, _ = run("status", "--project", "acme-corp", "--store", store)
    assert "project acme-corp: 1 installation(s); 3 version(s) of 1 pack(s)" in out
    default = run_json("status", "--store", store)
    assert [i["id"] for i in default["installations"]] == ["other"]
    assert default["totals"]["versions"] == 2


def test_diff__pack_at_version__is_read_as_the_project_sees_it(store: str) -> None:
    code, _, _ = run("diff", "acme@1.1.0", "acme@1.1.1", "--project", "acme-corp", "--store", store)
    assert code in (0, 1)
    code, _, err = run("diff", "acme@1.1.0", "acme@1.1.1", "--store", store)
    assert code == 2
    assert "[not_found]" in err
    assert "custom" not in err
