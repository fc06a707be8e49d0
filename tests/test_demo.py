"""``packrun demo``: the story on the sample packs, told in a throw-away store."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import packrun
from packrun._cli import main
from packrun._demo import run_demo

ROOT = Path(__file__).parents[1]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def samples_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding a copy of ``bundles/``, as the current folder."""
    shutil.copytree(ROOT / "bundles", tmp_path / "bundles")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def told() -> tuple[int, str, str]:
    """The demo, told once for the tests that read its text (from the repository's samples)."""
    return run("demo", "--bundles", str(ROOT / "bundles"))


def section(text: str, n: int) -> str:
    """Section ``n`` of the demo's text: from its heading to the next one."""
    start = text.index(f"\n{n}. " if n > 1 else "1. ")
    end = text.find(f"\n{n + 1}. ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_demo__from_the_samples_in_the_current_folder__exit_0(samples_here: Path) -> None:
    code, out, err = run("demo")
    assert (code, err) == (0, "")
    assert out.startswith("1. Publish, install, pin\n")
    assert (
        out.rstrip().splitlines()[-1].startswith("done: 8 steps; 7 versions published, 1 refused")
    )
    assert "the temporary store was deleted" in out
    assert sorted(p.name for p in samples_here.iterdir()) == ["bundles"]  # nothing left behind


def test_demo__headings_in_order(told: tuple[int, str, str]) -> None:
    code, out, err = told
    assert (code, err) == (0, "")
    headings = [line for line in out.splitlines() if line[:1].isdigit()]
    assert headings == [
        "1. Publish, install, pin",
        "2. A run keeps its version while an update lands",
        "3. Automatic updates",
        "4. A major waits for a review",
        "5. A dishonest minor is refused",
        "6. A generation-1 bundle runs through the adapter",
        "7. A generation-0 bundle is refused",
        "8. A rollback that drains",
    ]


def test_demo__1_pins(told: tuple[int, str, str]) -> None:
    text = section(told[1], 1)
    assert "acme-prod -> acme 1.0.0 (pin 1.0.0, manual)" in text
    assert "acme-patch -> acme 1.0.1 (pin 1.0.1, auto_patch)" in text
    assert "acme-prod stays on 1.0.0: a manual pin is inert until an update" in text


def test_demo__2_a_run_keeps_its_version(told: tuple[int, str, str]) -> None:
    text = section(told[1], 2)
    assert "run r-1 on acme-prod starts on acme 1.0.0" in text
    assert "update acme-prod 1.0.0 -> 1.1.0 (minor, verdict ok) while r-1 is open" in text
    assert "r-1 calls get_contact: still 1.0.0" in text
    assert "a new run r-2 on acme-prod gets 1.1.0" in text
    assert text.index("acme 1.0.0: draining; run(s) in flight: r-1") < text.index(
        "acme 1.0.0: drained"
    )


def test_demo__3_automatic_updates(told: tuple[int, str, str]) -> None:
    text = section(told[1], 3)
    assert "history: acme-auto: 1.0.1 -> 1.1.0 by policy:auto_minor (policy)" in text
    assert "acme-patch -> acme 1.0.1 (pin 1.0.1, auto_patch)" in text
    assert "1.1.0: a minor update, which auto_patch does not take" in text


def test_demo__4_a_major_waits_for_review(told: tuple[int, str, str]) -> None:
    text = section(told[1], 4)
    assert "acme-auto stays on 1.1.0" in text
    assert (
        "update blocked: breaking_diff (2.0.0: a major update, which auto_minor does not take)"
        in text
    )
    assert (
        "update acme-prod: 1.1.0 -> 2.0.0 (major; the changes need a major); verdict amber" in text
    )
    assert "wf-contact-card (observed): get_contact" in text
    assert "wf-weekly-export (declared): list_contacts" in text
    assert "refused: [breaking_diff] updating acme-prod from 1.1.0 to 2.0.0" in text
    assert "with acknowledge_breaking=True: moved 1.1.0 -> 2.0.0" in text
    assert "run r-4 on acme 2.0.0 with OAuth 2" in text


def test_demo__5_a_dishonest_minor(told: tuple[int, str, str]) -> None:
    text = section(told[1], 5)
    assert "diff acme 1.1.0 -> 1.2.0: verdict red" in text
    assert "[input.required_field_added]" in text
    assert "1.2.0: breaking findings (input.required_field_added)" in text


def test_demo__6_the_adapter(told: tuple[int, str, str]) -> None:
    text = section(told[1], 6)
    assert "run.adapter == '1->2'" in text
    assert "adapter counter: legacy-crm 1.0.0 through 1->2: 1 run(s)" in text
    assert "warning: packrun runs legacy-crm 1.0.0 (contract generation 1) through" in text


def test_demo__7_generation_0_refused(told: tuple[int, str, str]) -> None:
    text = section(told[1], 7)
    assert "publish ancient 1.0.0 refused: [integration_contract_incompatible]" in text


def test_demo__8_a_rollback_that_drains(told: tuple[int, str, str]) -> None:
    text = section(told[1], 8)
    assert "rollback acme-prod 2.0.0 -> 1.1.0" in text
    assert "2.0.0: still in flight: r-6" in text
    assert "acme-prod: 2.0.0 -> 1.1.0 by ops (rollback)" in text
    assert "r-6 calls again: still 2.0.0" in text
    assert "wait_drained: acme 2.0.0: drained" in text


def test_demo__output_is_stable(told: tuple[int, str, str]) -> None:
    """No times, paths or random ids: telling it again prints the same."""
    assert run("demo", "--bundles", str(ROOT / "bundles")) == told


def test_demo__json__the_same_steps_for_programs(samples_here: Path) -> None:
    code, out, err = run("demo", "--json")
    assert (code, err) == (0, "")
    steps = json.loads(out)
    assert [list(step) for step in steps] == [["section", "lines"]] * 9
    assert steps[1]["section"] == "A run keeps its version while an update lands"
    assert (
        "r-1 calls get_contact: still 1.0.0 (the run keeps the version it started with)"
        in (steps[1]["lines"])
    )
    assert steps[-1]["section"] == "summary"
    result = run_demo()
    assert steps == result.to_list()


def test_demo__keep__leaves_a_usable_store(samples_here: Path) -> None:
    code, out, _ = run("demo", "--keep", "kept")
    assert code == 0
    db = samples_here / "kept" / "state.db"
    assert f"the store is kept in kept (packrun status --store sqlite:///{db})" in out

    async def look() -> tuple[list[str], str, str]:
        async with packrun.open_runtime(f"sqlite:///{db}", refresh_interval=0) as rt:
            versions = [str(e.version) for e in rt.versions("acme")]
            return versions, rt.resolve("acme-prod").version, rt.version_status("acme", "2.0.0")

    versions, prod, status = anyio.run(look)
    assert versions == ["1.0.0", "1.0.1", "1.1.0", "1.1.1", "1.2.0", "2.0.0"]
    assert (prod, status) == ("1.1.0", "drained")
    code, out, _ = run("status", "--store", f"sqlite:///{db}")
    assert code == 0
    assert "acme-auto: update blocked: breaking_diff (2.0.0: a major update" in out
    # A folder that holds a store already is refused: the demo publishes from scratch.
    code, out, err = run("demo", "--keep", "kept")
    assert (code, out) == (2, "")
    assert err.startswith("packrun: error: [invalid_argument] --keep kept: the folder already")


def test_demo__without_samples__exit_2_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run("demo")
    assert (code, out) == (2, "")
    assert err == (
        "packrun: error: [not_found] no sample bundles folder "
        "'bundles (in the current folder; or pass --bundles DIR)'\n"
    )
    code, out, _ = run("demo", "--bundles", str(tmp_path / "elsewhere"), "--json")
    assert code == 2
    assert json.loads(out)["error"] == {
        "code": "not_found",
        "message": f"no sample bundles folder '{tmp_path / 'elsewhere'}'",
    }
    (tmp_path / "bundles" / "acme").mkdir(parents=True)
    code, _, err = run("demo")
    assert code == 2
    assert err.startswith("packrun: error: [not_found] no sample bundle(s) acme/1.0.0, acme/1.0.1")


def test_demo__reader_goes_away__quiet_exit(tmp_path: Path) -> None:
    """``packrun demo | head -1``: a closed pipe ends the command quietly (exit 141, as a shell
    reports SIGPIPE), without a traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "packrun", "demo", "--bundles", str(ROOT / "bundles")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # before the demo has printed anything
    with proc.stderr:
        err = proc.stderr.read()
    assert (proc.wait(timeout=60), err) == (141, b"")
