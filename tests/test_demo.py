"""``packrun demo``: the story on the sample packs, told in a throw-away store."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import anyio
import pytest

import packrun
from packrun import _demo
from packrun._cli import main
from packrun._demo import SAMPLES, WIDTH, packaged_samples, run_demo

ROOT = Path(__file__).parents[1]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder, as the current folder."""
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


def test_demo__from_an_empty_folder__tells_the_story_on_the_installed_samples(
    empty_folder: Path,
) -> None:
    code, out, err = run("demo")
    assert (code, err) == (0, "")
    assert out.startswith("1. Publish and install: a manual pin stays put")
    assert " ".join(out.split()).endswith(
        "done: 8 steps; 7 versions published, 1 refused; 4 installations; 6 runs, each on the "
        "version it started with; the temporary store was deleted"
    )
    assert list(empty_folder.iterdir()) == []  # nothing left behind


def test_demo__fits_an_80_column_terminal_in_at_most_60_lines(
    told: tuple[int, str, str],
) -> None:
    lines = told[1].splitlines()
    assert max(len(line) for line in lines) <= WIDTH == 80
    assert len(lines) <= 60


def test_demo__long_lines_wrap_under_themselves() -> None:
    text = _demo.DemoResult(
        (_demo.Section("A step", ("word " * 30, "  indented " + "word " * 20)),), "done", None
    ).text()
    assert text.splitlines() == [
        "1. A step",
        "   " + "word " * 14 + "word",  # 77 columns: one more word would pass 80
        "     " + "word " * 14 + "word",
        "     indented " + "word " * 12 + "word",
        "       " + "word " * 6 + "word",
        "",
        "done",
    ]


def test_demo__headings_say_what_happens(told: tuple[int, str, str]) -> None:
    code, out, err = told
    assert (code, err) == (0, "")
    headings = [line for line in out.splitlines() if line[:1].isdigit()]
    assert headings == [
        "1. Publish and install: a manual pin stays put, auto_minor takes a patch",
        "2. A run keeps its version while an update lands",
        "3. Automatic updates: auto_minor takes 1.1.0, auto_patch waits for a patch",
        "4. A major waits for a review; an acknowledged update takes it",
        "5. A dishonest minor is published and never auto-applied",
        "6. A generation-1 bundle runs through the 1->2 adapter",
        "7. A generation-0 bundle is refused at publish",
        "8. A rollback: new runs get 1.1.0 at once, the run in flight drains",
    ]


def test_demo__1_pins(told: tuple[int, str, str]) -> None:
    text = section(told[1], 1)
    assert "published acme 1.0.0 (vendor, contract 2); installed acme-prod, acme-auto" in text
    assert "acme-prod -> acme 1.0.0 (pin 1.0.0, manual)" in text
    assert "acme-auto -> acme 1.0.1 (pin 1.0.1, auto_minor)" in text
    assert "acme-patch -> acme 1.0.1 (pin 1.0.1, auto_patch)" in text


def test_demo__2_a_run_keeps_its_version(told: tuple[int, str, str]) -> None:
    text = section(told[1], 2)
    assert "run r-1 on acme-prod starts on acme 1.0.0" in text
    assert "update acme-prod 1.0.0 -> 1.1.0 (minor, verdict ok) while r-1 is open" in text
    assert "r-1 calls get_contact: still 1.0.0; a new run r-2 gets 1.1.0" in text
    assert text.index("acme 1.0.0: draining; run(s) in flight: r-1") < text.index(
        "r-1 ends; acme 1.0.0: drained"
    )


def test_demo__3_automatic_updates(told: tuple[int, str, str]) -> None:
    text = section(told[1], 3)
    assert "history: acme-auto: 1.0.1 -> 1.1.0 by policy:auto_minor (policy)" in text
    assert "acme-patch stays on 1.0.1: auto_patch does not take the minor 1.1.0" in text
    assert "acme-auto stays on 1.1.0: vendor installations never follow a custom build" in text


def test_demo__4_a_major_waits_for_review__summarized_with_a_pointer(
    told: tuple[int, str, str],
) -> None:
    text = section(told[1], 4)
    assert (
        "acme-auto stays on 1.1.0:\n     blocked: 2.0.0: a major update, which auto_minor" in text
    )
    assert "review acme-prod -> 2.0.0: major, amber; 10 breaking, 1 compatible, 2 patch" in text
    assert "affects wf-contact-card (observed): get_contact" in text
    assert "affects wf-weekly-export (declared): list_contacts" in text
    assert "full review: packrun review acme-prod --to 2.0.0" in text
    assert "[auth.mode_changed]" not in text  # the findings themselves are for `packrun review`
    assert "update refused [breaking_diff]; with --acknowledge-breaking: 1.1.0 -> 2.0.0" in text
    assert "run r-4 on acme 2.0.0 (OAuth 2): contacts have company, id, name" in text


def test_demo__5_a_dishonest_minor(told: tuple[int, str, str]) -> None:
    text = section(told[1], 5)
    assert "diff 1.1.0 -> 1.2.0: verdict red, 1 breaking change(s) in a minor release" in text
    assert 'breaking: input field "account_id" (string, required) added' in text
    assert "blocked: 1.2.0: breaking findings (input.required_field_added)" in text


def test_demo__6_the_adapter(told: tuple[int, str, str]) -> None:
    text = section(told[1], 6)
    assert "run.adapter == '1->2', counted: 1 run(s)" in text
    assert "warning: packrun runs legacy-crm 1.0.0 (contract generation 1) through" in text


def test_demo__7_generation_0_refused(told: tuple[int, str, str]) -> None:
    text = section(told[1], 7)
    assert "[integration_contract_incompatible] ancient 1.0.0 was built against" in text


def test_demo__8_a_rollback_that_drains(told: tuple[int, str, str]) -> None:
    text = section(told[1], 8)
    assert "rollback acme-prod 2.0.0 -> 1.1.0: still in flight after 0.2s: r-6" in text
    assert "history: acme-prod: 2.0.0 -> 1.1.0 by ops (rollback)" in text
    assert "new runs get 1.1.0; r-6 calls again: still 2.0.0" in text
    assert "r-6 ends; wait_drained: acme 2.0.0: drained" in text


def test_demo__output_is_stable(told: tuple[int, str, str]) -> None:
    """No times, paths or random ids: telling it again prints the same."""
    assert run("demo", "--bundles", str(ROOT / "bundles")) == told


def test_demo__json__the_same_steps_for_programs(empty_folder: Path) -> None:
    code, out, err = run("demo", "--json")
    assert (code, err) == (0, "")
    steps = json.loads(out)
    assert [list(step) for step in steps] == [["section", "lines"]] * 9
    assert steps[1]["section"] == "A run keeps its version while an update lands"
    assert "r-1 calls get_contact: still 1.0.0; a new run r-2 gets 1.1.0" in steps[1]["lines"]
    assert steps[-1]["section"] == "summary"
    result = run_demo()
    assert steps == result.to_list()


def test_demo__keep__leaves_a_usable_store(empty_folder: Path) -> None:
    code, out, _ = run("demo", "--keep", "kept")
    assert code == 0
    db = empty_folder / "kept" / "state.db"
    said = " ".join(out.split())  # the summary wraps at 80 columns
    assert f"the store is kept in kept (packrun status --store sqlite:///{db})" in said

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
    # The full review the demo points to, on the kept store.
    code, out, _ = run("review", "acme-prod", "--to", "2.0.0", "--store", f"sqlite:///{db}")
    assert code == 0
    assert "breaking (10):" in out
    assert "[auth.mode_changed]" in out
    # A folder that holds a store already is refused: the demo publishes from scratch.
    code, out, err = run("demo", "--keep", "kept")
    assert (code, out) == (2, "")
    assert err.startswith("packrun: error: [invalid_argument] --keep kept: the folder already")


def test_demo__bundles_dir__tells_the_story_on_those_samples(empty_folder: Path) -> None:
    shutil.copytree(ROOT / "bundles", empty_folder / "mine")
    code, out, err = run("demo", "--bundles", "mine")
    assert (code, err) == (0, "")
    assert "published legacy-crm 1.0.0 (vendor, contract 1)" in out
    (empty_folder / "mine" / "acme" / "2.0.0" / "dist" / "acme-2.0.0.bundle.tar.gz").unlink()
    code, _, err = run("demo", "--bundles", "mine")
    assert code == 2
    assert err == "packrun: error: [not_found] no sample bundle(s) acme/2.0.0 under 'mine'\n"


def test_demo__without_samples__exit_2_not_found(
    empty_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run("demo", "--bundles", str(empty_folder / "elsewhere"), "--json")
    assert code == 2
    assert json.loads(out)["error"] == {
        "code": "not_found",
        "message": f"no sample bundles folder '{empty_folder / 'elsewhere'}'",
    }
    (empty_folder / "bundles" / "acme").mkdir(parents=True)
    code, _, err = run("demo", "--bundles", "bundles")
    assert code == 2
    assert err.startswith("packrun: error: [not_found] no sample bundle(s) acme/1.0.0, acme/1.0.1")
    # An installation that lost its samples says so, and how to go on.
    monkeypatch.setattr(_demo, "packaged_samples", lambda: None)
    code, out, err = run("demo")
    assert (code, out) == (2, "")
    assert err == (
        "packrun: error: [not_found] no sample bundles folder "
        "'installed with packrun (reinstall it, or pass --bundles DIR)'\n"
    )


def test_packaged_samples__are_the_repository_samples_byte_for_byte() -> None:
    """From a checkout (or an editable install) they are ``bundles/`` itself; from a wheel, the
    copies the wheel carries, which must not drift from ``bundles/``."""
    shipped = packaged_samples()
    assert shipped is not None
    for pack, version in SAMPLES:
        name = f"{pack}/{version}/dist/{pack}-{version}.bundle.tar.gz"
        assert (shipped / name).read_bytes() == (ROOT / "bundles" / name).read_bytes(), name


def test_the_wheel__carries_exactly_the_samples_the_demo_needs() -> None:
    """pyproject.toml copies SAMPLES from bundles/ into packrun/_samples of the wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    forced = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    expected = {}
    for pack, version in SAMPLES:
        name = f"{pack}/{version}/dist/{pack}-{version}.bundle.tar.gz"
        expected[f"bundles/{name}"] = f"packrun/_samples/{name}"
    assert forced == expected


def test_python_dash_m_packrun_demo__from_an_empty_folder(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "packrun", "demo"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("1. Publish and install")
    assert list(tmp_path.iterdir()) == []


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
