"""``packrun source add | list | sync | status | remove`` on real SQLite stores and Git repos."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from _sources_util import GitRepo, allowed_signers, make_key, set_pack
from packrun._cli import main


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def cli_json(*argv: str) -> tuple[int, Any]:
    code, out, _ = cli(*argv, "--json")
    return code, json.loads(out)


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "packs")
    set_pack(repo.path, "alpha", "1.0.0")
    repo.commit("alpha 1.0.0")
    return repo


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


def test_source_add_sync_status_list__over_one_store(repo: GitRepo, store: str) -> None:
    code, added = cli_json("source", "add", "packs", repo.url, "--ref", "main", "--store", store)
    assert code == 0
    assert (added["name"], added["ref"], added["trust"], added["report"]) == (
        "packs",
        "main",
        "none",
        None,
    )
    code, report = cli_json("source", "sync", "packs", "--store", store)
    assert code == 0
    assert report["ok"] is True
    assert [(i["pack_id"], i["version"]) for i in report["published"]] == [("alpha", "1.0.0")]
    assert report["revision"] == repo.head()
    code, status = cli_json("source", "status", "packs", "--store", store)
    assert (code, status["revision"], status["report"]["published"][0]["pack_id"]) == (
        0,
        repo.head(),
        "alpha",
    )
    code, listed = cli_json("source", "list", "--store", store)
    assert [s["name"] for s in listed] == ["packs"]
    code, text, _ = cli("source", "list", "--store", store)
    assert text.splitlines()[0].split() == [
        "name",
        "url",
        "channel",
        "trust",
        "last_sync",
        "revision",
        "last_report",
    ]
    assert "packs" in text
    assert "ok" in text
    code, text, _ = cli("source", "sync", "packs", "--store", store)
    assert code == 0
    assert "0 published, 0 skipped, 1 unchanged" in text
    code, versions = cli_json("versions", "alpha", "--store", store)
    assert [v["version"] for v in versions] == ["1.0.0"]


def test_source_sync__a_skipped_pack__exits_1_and_names_it(repo: GitRepo, store: str) -> None:
    set_pack(repo.path, "alpha", "1.1.0", index=False)
    repo.commit("index not bumped")
    cli("source", "add", "packs", repo.url, "--store", store)
    code, text, _ = cli("source", "sync", "packs", "--store", store)
    assert code == 1
    assert "skipped alpha 1.0.0 [index_stale]" in text


def test_source_add__with_allowed_signers__refuses_an_unsigned_commit(
    repo: GitRepo, store: str, tmp_path: Path
) -> None:
    key = make_key(tmp_path / "keys", "alice")
    signers = allowed_signers(tmp_path / "allowed", ("alice@example.com", key))
    code, added = cli_json(
        "source", "add", "packs", repo.url, "--allowed-signers", str(signers), "--rebuild",
        "--store", store,
    )  # fmt: skip
    assert (code, added["trust"], added["allowed_signers"]) == (0, "signed+rebuild", 1)
    code, report = cli_json("source", "sync", "packs", "--store", store)
    assert code == 1
    assert [e["code"] for e in report["errors"]] == ["untrusted_source"]
    assert report["published"] == []


def test_source__errors_honour_json(repo: GitRepo, store: str) -> None:
    code, out = cli_json("source", "add", "bad", "https://host/x.git", "--store", store)
    assert code == 2
    assert out["error"]["code"] == "source_error"
    code, out = cli_json("source", "status", "nothing", "--store", store)
    assert (code, out["error"]["code"]) == (2, "store_error")  # status never creates a store
    cli("source", "add", "packs", repo.url, "--store", store)
    code, out = cli_json("source", "sync", "other", "--store", store)
    assert (code, out["error"]["code"]) == (2, "not_found")
    assert "packs" in out["error"]["message"]
    code, out = cli_json("source", "add", "packs", repo.url, "--interval", "0", "--store", store)
    assert (code, out["error"]["code"]) == (2, "usage_error")


def test_source_remove__forgets_the_source_and_keeps_what_it_published(
    repo: GitRepo, store: str
) -> None:
    cli("source", "add", "packs", repo.url, "--store", store)
    cli("source", "sync", "packs", "--store", store)
    code, text, _ = cli("source", "remove", "packs", "--store", store)
    assert code == 0
    assert "removed source packs" in text
    assert cli_json("source", "list", "--store", store) == (0, [])
    assert cli_json("versions", "alpha", "--store", store)[1][0]["version"] == "1.0.0"
