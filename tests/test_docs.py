"""Every example in the README and docs/ runs: Python blocks, ``>>>`` examples and CLI lines."""

from __future__ import annotations

import doctest
import gzip
import io
import json
import os
import re
import shlex
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import mypy.api
import pytest

import packrun
from packrun import _versions, errors
from packrun._cli import main

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for n, match in enumerate(FENCE.finditer(doc.read_text())):
            if match[1] == language and ">>>" not in match[2]:
                found.append((f"{doc.name}#{n}", match[2]))
    return found


def test_python_examples__type_check_under_mypy_strict(tmp_path: Path) -> None:
    """What a reader copies must pass their own ``mypy --strict``: each Python block of the README
    and docs/ is checked as a module of its own."""
    files = []
    for n, (where, code) in enumerate(_blocks("python")):
        path = tmp_path / f"example_{n}_{re.sub(r'[^A-Za-z0-9]', '_', where)}.py"
        path.write_text(code)
        files.append(str(path))
    out, err, status = mypy.api.run(
        [
            "--strict",
            "--warn-unreachable",
            "--python-version=3.11",
            "--config-file=",
            f"--cache-dir={ROOT / '.mypy_cache' / 'docs'}",
            "--explicit-package-bases",
            *files,
        ]
    )
    assert status == 0, out + err


@pytest.fixture
def in_repo_copy(tmp_path: Path) -> Iterator[Path]:
    """A copy of the sample tree to run examples in, so they never write into the repository."""
    shutil.copytree(ROOT / "bundles", tmp_path / "bundles")
    before = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(before)


@pytest.mark.parametrize(
    ("where", "code"), _blocks("python"), ids=[w for w, _ in _blocks("python")]
)
def test_python_example__runs(where: str, code: str, in_repo_copy: Path) -> None:
    exec(compile(code, where, "exec"), {"__name__": "__example__"})


def _cli_lines() -> list[tuple[str, str, str | None]]:
    """``packrun`` lines of ``sh`` blocks, and ``$ packrun`` lines of ``console`` transcripts with
    the output the transcript shows."""
    lines: list[tuple[str, str, str | None]] = []
    for where, block in _blocks("sh"):
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            if command.startswith("packrun "):
                lines.append((where, command, None))
    for where, block in _blocks("console"):
        command, _, shown = block.partition("\n")
        assert command.startswith("$ packrun "), where
        lines.append((where, command[2:], shown))
    return lines


@pytest.mark.parametrize(
    ("where", "command", "shown"), _cli_lines(), ids=[c for _, c, _ in _cli_lines()]
)
def test_cli_example__exits_zero_and_prints_what_the_docs_show(
    where: str,
    command: str,
    shown: str | None,
    in_repo_copy: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(shlex.split(command)[1:]) == 0, capsys.readouterr()
    if shown is not None:
        assert capsys.readouterr().out == shown


def test_doctest_examples__in_docs_pass() -> None:
    for doc in DOCS:
        result = doctest.testfile(str(doc), module_relative=False, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, doc


@pytest.mark.parametrize(
    "module",
    [packrun, _versions, errors, packrun._auth, packrun.blocking],
    ids=lambda m: m.__name__,
)
def test_doctest_examples__in_docstrings_pass(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0


def _evil_bundle() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("../evil.py")
        tar.addfile(info, io.BytesIO(b""))
    return gzip.compress(raw.getvalue())


def _raised(fn: Callable[[], object]) -> str:
    try:
        fn()
    except errors.PackrunError as exc:
        return str(exc)
    raise AssertionError("no error raised")


def test_error_examples__in_docs_are_what_packrun_prints(tmp_path: Path) -> None:
    acme = ROOT / "bundles" / "acme" / "1.0.0" / "dist" / "acme-1.0.0.bundle.tar.gz"
    renamed = tmp_path / "acme-9.9.9.bundle.tar.gz"
    renamed.write_bytes(acme.read_bytes())
    fields = [{"name": "a", "type": "string"}, {"name": "b", "type": "strin"}]
    bad_manifest = {
        "id": "acme",
        "version": "1.0.0",
        "tools": [{"id": "t", "method": "FETCH", "input": fields}],
    }
    legacy = ROOT / "bundles" / "legacy-crm" / "1.0.0" / "dist" / "legacy-crm-1.0.0.bundle.tar.gz"
    ancient = ROOT / "bundles" / "ancient" / "1.0.0" / "dist" / "ancient-1.0.0.bundle.tar.gz"
    messages = [
        _raised(lambda: packrun.Version.parse("v1.2.3")),
        _raised(lambda: packrun.check_publish_order("acme", ["1.3.0", "2.0.0"], "1.2.0")),
        _raised(
            lambda: packrun.decode_manifest(bad_manifest, source="bundles/acme/1.0.0/manifest.json")
        ),
        _raised(lambda: packrun.read_bundle(_evil_bundle(), source="acme-1.0.0.bundle.tar.gz")),
        _raised(lambda: packrun.read_bundle(renamed, source=renamed.name)),
        str(errors.VersionExists("acme", "1.0.0", "versions are immutable")),
        str(errors.InstallationExists("acme-prod", "acme", "1.1.0")),
        _raised(lambda: packrun._resolver.normalize_pin("lastest")),
        _raised(lambda: packrun.open_runtime("memory:", lease_ttl=float("nan"))),
        _raised(lambda: packrun.open_runtime("memory:").resolve(["acme-prod"])),  # type: ignore[arg-type]
        str(errors.NotFound("installation", "acme-prod", ["acme-dev", "acme-staging"])),
        _raised(lambda: packrun.load_bundle(packrun.read_bundle(ancient), stage="publish")),
        _raised(lambda: packrun.load_bundle(packrun.read_bundle(legacy), generations={2})),
        str(errors.BreakingDiff("acme-prod", "1.1.0", "2.0.0", "a major")),
        str(errors.DrainTimeout("acme", "1.0.0", 2.5, ["r-1", "r-2"])),
        str(errors.RolloutInProgress("acme", "default", "3f2a9c1d0b7e", "1.2.0")),
        str(errors.ToolFailed("get_contact", "not_found", "no contact c-9")),
        _raised(lambda: packrun.open_runtime("mysql://db")),
        str(errors.ToolTimeout("acme", "1.2.0", "sync_all", 30)),
        str(errors.SandboxCrashed("acme", "1.2.0", "export", "memory limit reached (1024 MiB)")),
        str(
            errors.SandboxUnavailable(
                "bwrap", "bubblewrap (bwrap) is not installed; install it, or use sandbox='process'"
            )
        ),
    ]
    text = (ROOT / "docs" / "errors.md").read_text()
    for message in messages:
        assert message in text, message


def test_json_examples__in_docs_decode() -> None:
    decoders = {"packs": packrun.decode_index, "package": packrun.decode_pack_manifest}
    blocks = _blocks("json")
    assert blocks
    for where, block in blocks:
        doc = json.loads(block)
        decode = next((d for key, d in decoders.items() if key in doc), packrun.decode_manifest)
        decode(block, source=where)


def test_python_examples__run_again_after_every_other_in_the_same_folder(
    in_repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No Python example leaves anything behind (a store file, a built artifact) that breaks
    another, or itself, when a reader runs them all in one folder, twice."""
    for _ in range(2):
        for where, code in _blocks("python"):
            exec(compile(code, where, "exec"), {"__name__": "__example__"})
    capsys.readouterr()


def test_explain_sample__in_runtime_docs__is_what_the_example_above_it_prints(
    in_repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = ROOT / "docs" / "runtime.md"
    blocks = [m[2] for m in FENCE.finditer(doc.read_text())]
    example = next(b for b in blocks if "rt.explain(" in b and "anyio.run" in b)
    sample = next(b for b in blocks if b.startswith("installation acme-prod:"))
    exec(compile(example, "runtime.md", "exec"), {"__name__": "__example__"})
    printed = capsys.readouterr().out
    at = re.compile(r" at \S+$", re.M)  # the time of the last move differs from run to run
    assert at.sub(" at <time>", sample) in at.sub(" at <time>", printed)


def test_pip_install_lines__quote_every_extra() -> None:
    """``pip install 'packrun[postgres]'``: unquoted, zsh reads the brackets as a pattern."""
    checked = 0
    for doc in [*DOCS, ROOT / "CHANGELOG.md"]:
        for line in doc.read_text().splitlines():
            for command in re.findall(r"pip install [^`#\n]*", line):
                for word in command.split()[2:]:
                    if "[" in word:
                        assert word[0] == word[-1] == "'", (doc.name, line)
                        checked += 1
    assert checked >= 3
