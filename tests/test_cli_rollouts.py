"""``packrun rollout``, ``packrun events`` and the health columns of ``packrun status``."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from _fleet_packs import shop
from packrun import ToolFailed, blocking
from packrun._cli import main

FLEET = [f"inst-{n}" for n in range(4)]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def run_json(*argv: str) -> Any:
    code, out, err = run(*argv, "--json")
    assert (code, err) == (0, ""), out
    return json.loads(out)


def fleet(tmp_path: Path, *, fail: bool = False) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with blocking.open_runtime(url, in_process={"vendor"}) as rt:
        rt.publish(shop(tmp_path, "1.0.0"))
        for iid in FLEET:
            rt.install(iid, "shop", "latest")
        rt.call(FLEET[0], "ping")
        rt.publish(shop(tmp_path, "1.1.0", fail=fail))
    return url


def test_rollout_start_status_promote__json_and_text(tmp_path: Path) -> None:
    url = fleet(tmp_path)
    started = run_json(
        "rollout", "start", "shop", "1.1.0", "--steps", "25,100", "--step-interval", "3600",
        "--store", url,
    )  # fmt: skip
    assert (started["state"], started["step"], started["installations"]) == ("running", 25, 4)
    assert started["ramped"] == 1
    code, out, _ = run("rollout", "status", "shop", "--store", url)
    assert code == 0
    assert "running, step 25% (1 of 4 installation(s))" in out
    promoted = run_json("rollout", "promote", "shop", "--actor", "ops", "--store", url)
    assert (promoted["state"], promoted["step"]) == ("completed", 100)
    code, out, _ = run("events", "--store", url)
    assert code == 0
    assert "rollout_promoted shop" in out
    lines = run("events", "--since", "3", "--json", "--store", url)[1].splitlines()
    events = [json.loads(line) for line in lines]
    assert events[0]["cursor"] == 4
    assert events[-1]["kind"] == "rollout_completed"


def test_rollout_abort__moves_everyone_back(tmp_path: Path) -> None:
    url = fleet(tmp_path)
    run_json("rollout", "start", "shop", "1.1.0", "--steps", "50,100", "--store", url)
    aborted = run_json("rollout", "abort", "shop", "--drain-timeout", "1", "--store", url)
    assert (aborted["state"], aborted["reason"], aborted["draining"]) == (
        "aborted", "aborted by system", 0
    )  # fmt: skip
    resolved = {run_json("resolve", i, "--store", url)["resolution"]["version"] for i in FLEET}
    assert resolved == {"1.0.0"}


def test_rollout__errors_are_reported_with_their_code(tmp_path: Path) -> None:
    url = fleet(tmp_path)
    code, _, err = run("rollout", "status", "shop", "--store", url)
    assert code == 2
    assert "[not_found]" in err
    code, _, err = run("rollout", "start", "shop", "--store", url)
    assert code == 2
    assert "[invalid_argument]" in err
    code, _, err = run("rollout", "start", "shop", "1.1.0", "--steps", "10,x", "--store", url)
    assert code == 2
    assert "1,10,50,100" in err


def test_status__shows_health_figures(tmp_path: Path) -> None:
    url = fleet(tmp_path, fail=True)
    with blocking.open_runtime(url, in_process={"vendor"}) as rt:
        for _ in range(2):
            with pytest.raises(ToolFailed, match="broken"):
                rt.call(FLEET[0], "ping")
    shown = run_json("status", "shop", "--store", url)
    health = {v["version"]: v["health"] for v in shown["versions"]}
    assert (health["1.0.0"]["calls"], health["1.0.0"]["error_rate"]) == (1, 0.0)
    assert (health["1.1.0"]["calls"], health["1.1.0"]["tool_errors"]) == (2, 2)
    assert health["1.1.0"]["p50"] is not None
    code, out, _ = run("status", "shop", "--store", url)
    assert code == 0
    assert "p99 ms" in out


def test_rollout_start__selector_picks_installations__select_and_selector_exclude(
    tmp_path: Path,
) -> None:
    url = fleet(tmp_path)
    with blocking.open_runtime(url, in_process={"vendor"}) as rt:
        rt.set_pin("inst-0", "1.0.0")
        rt.set_pin("inst-1", "1.0.0")
    code, out, err = run(
        "rollout", "start", "shop", "1.1.0", "--selector", "pack=shop,pin=1.0.0",
        "--select", "inst-0", "--store", url,
    )  # fmt: skip
    assert code == 2
    assert "[usage_error]" in out + err
    started = run_json(
        "rollout", "start", "shop", "1.1.0", "--steps", "50,100", "--step-interval", "3600",
        "--selector", "pack=shop,pin=1.0.0", "--store", url,
    )  # fmt: skip
    assert (started["installations"], started["ramped"]) == (2, 1)
