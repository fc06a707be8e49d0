"""The CLI: a thin layer with exit codes 0 (ok), 1 (a check failed) and 2 (an error), and ``--json``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import packrun
from packrun._cli import main
from test_source import write_integration


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_build__writes_the_bundle_and_reports_its_digest(tmp_path: Path) -> None:
    src = write_integration(tmp_path / "acme")
    code, out, _ = run("build", str(src), "--json")
    assert code == 0
    built = json.loads(out)["built"]
    assert built[0]["id"] == "acme"
    assert built[0]["contract"] == packrun.CURRENT_GENERATION
    path = Path(built[0]["path"])
    assert path == src / "dist" / "acme-1.0.0.bundle.tar.gz"
    assert built[0]["digest"] == packrun.read_bundle(path).digest


def test_build__contract_and_output_folder(tmp_path: Path) -> None:
    src = write_integration(tmp_path / "acme")
    code, out, _ = run("build", str(src), "-o", str(tmp_path / "out"), "--contract", "1")
    assert code == 0
    assert "(contract 1)" in out
    assert packrun.read_bundle(tmp_path / "out" / "acme-1.0.0.bundle.tar.gz").contract == 1


def test_build__nothing_to_build__is_an_error(tmp_path: Path) -> None:
    code, _, err = run("build", str(tmp_path))
    assert code == 2
    assert "[not_found]" in err


def test_build__invalid_manifest__exit_2_with_every_problem(tmp_path: Path) -> None:
    src = write_integration(tmp_path / "acme")
    (src / "manifest.json").write_text('{"id": "acme", "version": "1", "tools": [{"id": 1}]}')
    code, out, _ = run("build", str(src), "--json")
    assert code == 2
    error = json.loads(out)["error"]
    assert error["code"] == "invalid_manifest"
    assert "$.version" in error["message"]
    assert "$.tools[0].id" in error["message"]


def test_check__findings_exit_1__clean_exit_0(tmp_path: Path) -> None:
    src = write_integration(tmp_path / "acme")
    code, out, _ = run("check", str(src))
    assert code == 1
    assert "FAIL [dist_missing]" in out
    assert run("build", str(src))[0] == 0
    code, out, _ = run("check", str(src), "--json")
    assert code == 0
    assert json.loads(out)["ok"] is True


def test_verify__stale_dist__exit_1_naming_the_file(tmp_path: Path) -> None:
    src = write_integration(tmp_path / "acme")
    run("build", str(src))
    write_integration(src, answer="changed")
    code, out, _ = run("verify", str(src), "--json")
    assert code == 1
    finding = json.loads(out)["findings"][0]
    assert finding["code"] == "dist_stale"
    assert finding["subject"].endswith("acme-1.0.0.bundle.tar.gz")


def test_usage_error__exit_2() -> None:
    assert run("frobnicate")[0] == 2
    assert run("build")[0] == 2


def test_python_dash_m__runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "packrun", "--version"], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout) == (0, f"packrun {packrun.__version__}\n")


def test_unexpected_failure__exit_2_with_a_traceback_not_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import packrun._cli

    def broken(root: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(packrun._cli, "check", broken)
    code, _, err = run("check", str(tmp_path))
    assert code == 2
    assert "internal error" in err
    assert "RuntimeError: boom" in err
