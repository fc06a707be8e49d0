"""``packrun bulk``, ``packrun alias``, ``packrun soak`` and the soak options of ``packrun policy``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import anyio
import pytest

import packrun
from packrun._cli import main

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def dist(version: str) -> Path:
    return BUNDLES / "acme" / version / "dist" / f"acme-{version}.bundle.tar.gz"


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue() + err.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def prepare() -> None:
        async with packrun.open_runtime(url) as rt:
            for version in ("1.0.0", "1.0.1", "1.1.0"):
                await rt.publish(dist(version))
            await rt.install("a", "acme", pin="1.0.0")
            await rt.install("b", "acme", pin="1.0.0", policy="auto_patch")
            await rt.install("c", "acme", pin="1.1.0")

    anyio.run(prepare)
    return url


def resolved(url: str, iid: str) -> str:
    code, text = run_cli("resolve", iid, "--store", url, "--json")
    assert code == 0, text
    version: str = json.loads(text)["resolution"]["version"]
    return version


def test_bulk_update__dry_run_prints_the_plan__the_real_run_moves(store: str) -> None:
    code, text = run_cli(
        "bulk", "update", "--selector", "pack=acme,version=1.0.1", "--to", "1.1.0",
        "--dry-run", "--store", store,
    )  # fmt: skip
    assert code == 0, text
    assert "would move: 1; blocked: 0" in text
    assert "move b (acme): 1.0.1 -> 1.1.0" in text
    assert resolved(store, "b") == "1.0.1"
    code, text = run_cli(
        "bulk", "update", "--selector", "pack=acme,version=1.0.1", "--to", "1.1.0",
        "--store", store, "--json", "--actor", "ops",
    )  # fmt: skip
    assert code == 0, text
    plan = json.loads(text)
    assert plan["dry_run"] is False
    assert plan["selector"]["version"] == "1.0.1"
    assert [m["installation_id"] for m in plan["moves"]] == ["b"]
    assert resolved(store, "b") == "1.1.0"


def test_bulk_rollback__needs_to_and_moves_down(store: str) -> None:
    code, text = run_cli("bulk", "rollback", "--selector", "pin=1.1.0", "--store", store)
    assert code == 2
    assert "--to" in text
    code, text = run_cli(
        "bulk", "rollback", "--selector", "pin=1.1.0", "--to", "1.0.0", "--store", store
    )
    assert code == 0, text
    assert "moved: 1" in text
    assert resolved(store, "c") == "1.0.0"


def test_bulk__a_bad_selector__is_an_error_naming_it(store: str) -> None:
    code, text = run_cli("bulk", "update", "--selector", "colour=red", "--store", store, "--json")
    assert code == 2
    error = json.loads(text)["error"]
    assert error["code"] == "invalid_argument"
    assert "selector" in error["message"]


def test_alias_set_and_list(store: str) -> None:
    code, text = run_cli("alias", "set", "acme", "stable", "1.0.0", "--store", store)
    assert code == 0, text
    code, text = run_cli("pin", "a", "@stable", "--store", store)
    assert code == 0, text
    code, text = run_cli("alias", "set", "acme", "stable", "1.1.0", "--store", store, "--json")
    assert code == 0, text
    change = json.loads(text)
    assert (change["from_version"], change["to_version"], change["installations"]) == (
        "1.0.0",
        "1.1.0",
        ["a"],
    )
    assert resolved(store, "a") == "1.1.0"
    code, text = run_cli("alias", "list", "--store", store)
    assert "acme @stable -> 1.1.0" in text
    assert "1 installation(s)" in text


def test_policy_and_soak__set_release_age_and_window(store: str) -> None:
    code, text = run_cli(
        "policy", "a", "auto_patch", "--min-release-age", "3d", "--window", "mon-fri 02:00-06:00",
        "--store", store, "--json",
    )  # fmt: skip
    assert code == 0, text
    assert json.loads(text)["soak"] == {
        "min_release_age": 259200.0,
        "window": "mon-fri 02:00-06:00",
    }
    code, text = run_cli("policy", "a", "auto_patch", "--min-release-age", "soon", "--store", store)
    assert code == 2
    assert "duration" in text
    code, text = run_cli("soak", "--min-release-age", "12h", "--store", store)
    assert code == 0, text
    assert "soak min_release_age 12h" in text
    code, text = run_cli("soak", "--window", "sat,sun 00:00-24:00", "--store", store, "--json")
    assert json.loads(text) == {
        "project": "default",
        "min_release_age": 43200.0,
        "window": "sat,sun 00:00-24:00",
    }
    code, text = run_cli("soak", "--clear", "--store", store)
    assert "soak none" in text
