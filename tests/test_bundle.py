"""Bundles: reproducible builds, defensive reads of hostile archives, isolated loading of their code."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import traceback
import tracemalloc
import types
import uuid
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import packrun
from packrun import (
    ArtifactMismatch,
    Bundle,
    BundleContractIncompatible,
    BundleLimits,
    IntegrationContractIncompatible,
    InvalidBundle,
    InvalidManifest,
    Manifest,
    PackrunError,
)
from packrun._bundle import bundle_bytes
from packrun._manifest import encode_manifest

MiB = 1024 * 1024

# --- fixtures -----------------------------------------------------------------------------------


def make_manifest(
    integration_id: str = "acme",
    version: str = "1.0.0",
    *,
    contract: int | None = 2,
    tools: Sequence[str] = ("ask",),
) -> Manifest:
    """A minimal valid integration manifest."""
    return packrun.decode_manifest(
        {
            "id": integration_id,
            "version": version,
            "contract": contract,
            "tools": [{"id": tool} for tool in tools],
        }
    )


def integration_code(
    integration_id: str = "acme", tools: Sequence[str] = ("ask",), *, extra: str = ""
) -> bytes:
    """A generation-2 ``code/__init__.py`` defining one Integration whose tools return their id."""
    lines = [
        "from packrun.sdk import Integration",
        "",
        f"integration = Integration({integration_id!r})",
        "",
    ]
    for tool in tools:
        lines += [
            f"@integration.tool({tool!r})",
            f"def tool_{tool}(ctx, input):",
            f"    return {tool!r}",
            "",
        ]
    lines.append(extra)
    lines.append(f"# {uuid.uuid4().hex}")  # fresh bytes, so a fresh digest and package
    return "\n".join(lines).encode()


def simple_bundle(
    integration_id: str = "acme",
    version: str = "1.0.0",
    *,
    contract: int | None = 2,
    files: Mapping[str, bytes] | None = None,
) -> bytes:
    """A valid bundle of ``integration_id`` with one tool ``ask``."""
    code = dict(files) if files is not None else {"__init__.py": integration_code(integration_id)}
    return bundle_bytes(make_manifest(integration_id, version, contract=contract), code)


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    """A regular-file tar member."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    """A non-regular tar member (link, device, FIFO, directory)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def base_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    """A valid manifest.json and code/__init__.py: what a hostile member is added to."""
    return [
        regular("manifest.json", encode_manifest(make_manifest())),
        regular("code/__init__.py", integration_code()),
    ]


def tar_bytes(
    members: Sequence[tuple[tarfile.TarInfo, bytes]], *, fmt: int = tarfile.GNU_FORMAT
) -> bytes:
    """An uncompressed tar holding ``members`` exactly as given (no name cleaning)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return raw.getvalue()


def tar_gz(
    members: Sequence[tuple[tarfile.TarInfo, bytes]], *, fmt: int = tarfile.GNU_FORMAT
) -> bytes:
    """A gzip'd tar holding ``members`` exactly as given."""
    return gzip.compress(tar_bytes(members, fmt=fmt), mtime=0)


def zeros_bomb(size: int, name: str = "code/__init__.py") -> bytes:
    """A .tar.gz whose one member is ``size`` zero bytes, compressed by streaming (small in memory)."""
    info = tarfile.TarInfo(name)
    info.size = size
    deflate = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [deflate.compress(info.tobuf(format=tarfile.USTAR_FORMAT))]
    chunk = bytes(MiB)
    left = size
    while left > 0:
        step = min(left, MiB)
        parts.append(deflate.compress(chunk[:step]))
        left -= step
    parts.append(deflate.compress(bytes(-size % 512 + 1024)))  # padding and the end blocks
    parts.append(deflate.flush())
    return b"".join(parts)


def invalid_bundle(data: bytes | str | Path, **kwargs: Any) -> InvalidBundle:
    """The InvalidBundle that reading ``data`` raises (any other outcome fails the test)."""
    with pytest.raises(InvalidBundle) as exc:
        packrun.read_bundle(data, **kwargs)
    assert type(exc.value) is InvalidBundle
    assert exc.value.code == "invalid_bundle"
    return exc.value


def write_source(
    root: Path,
    *,
    integration_id: str = "acme",
    version: str = "1.0.0",
    contract: int | None = None,
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """An integration source folder: manifest.json (without contract unless given) and code/."""
    src = root / "src"
    (src / "code").mkdir(parents=True)
    document: dict[str, Any] = {"id": integration_id, "version": version, "tools": [{"id": "ask"}]}
    if contract is not None:
        document["contract"] = contract
    (src / "manifest.json").write_text(json.dumps(document))
    code = files if files is not None else {"__init__.py": integration_code(integration_id)}
    for name, data in code.items():
        path = src / "code" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return src


def tar_members(data: bytes) -> list[tarfile.TarInfo]:
    """The members of a built bundle, read with the standard library."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data)), mode="r:") as tar:
        return tar.getmembers()


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[str]]:
    """A module bundle code can record side effects in: ``(module name, its events list)``."""
    name = f"_packrun_test_probe_{uuid.uuid4().hex}"
    module = types.ModuleType(name)
    events: list[str] = []
    module.events = events  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)
    return name, events


def call_tool(loaded: packrun.LoadedBundle, tool: str) -> Any:
    """Call a (sync) tool of a loaded bundle; these test tools ignore their context."""
    return loaded.tools[tool](cast(Any, None), {})


VALID_BUNDLE: bytes = bundle_bytes(
    make_manifest(), {"__init__.py": b"X = 1\n", "sub/helper.py": b"def f():\n    return 1\n"}
)
VALID_TAR: bytes = gzip.decompress(VALID_BUNDLE)

# --- building -----------------------------------------------------------------------------------


def test_build__same_sources_twice__gives_identical_bytes_and_digest(tmp_path: Path) -> None:
    src = write_source(tmp_path)
    first = packrun.build_bundle(src, tmp_path / "out")
    first_bytes = first.path.read_bytes()
    second = packrun.build_bundle(src, tmp_path / "out")
    assert second.path.read_bytes() == first_bytes
    assert second.digest == first.digest == "sha256:" + hashlib.sha256(first_bytes).hexdigest()


def test_build__into_two_folders__gives_identical_bytes(tmp_path: Path) -> None:
    src = write_source(tmp_path)
    first = packrun.build_bundle(src, tmp_path / "one")
    second = packrun.build_bundle(src, tmp_path / "two" / "deeper")
    assert first.path != second.path
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.digest == second.digest


def test_build__after_touching_mtimes__gives_identical_bytes(tmp_path: Path) -> None:
    src = write_source(
        tmp_path, files={"__init__.py": integration_code(), "sub/helper.py": b"X = 1\n"}
    )
    before = packrun.build_bundle(src, tmp_path / "before")
    for path in [src, *src.rglob("*")]:
        os.utime(path, (1_234_567_890, 1_234_567_890))
    after = packrun.build_bundle(src, tmp_path / "after")
    assert after.path.read_bytes() == before.path.read_bytes()
    assert after.digest == before.digest


def test_build__file__is_named_id_version_bundle_tar_gz(tmp_path: Path) -> None:
    src = write_source(tmp_path, integration_id="legacy-crm", version="1.2.3")
    result = packrun.build_bundle(src, tmp_path / "out")
    assert result.path == tmp_path / "out" / "legacy-crm-1.2.3.bundle.tar.gz"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "legacy-crm-1.2.3.bundle.tar.gz"
    ]
    assert packrun.read_bundle(result.path).filename == "legacy-crm-1.2.3.bundle.tar.gz"


def test_build__a_source_without_a_version__is_built_as_1_0_0(tmp_path: Path) -> None:
    src = write_source(tmp_path, integration_id="newbie")
    document = json.loads((src / "manifest.json").read_text())
    del document["version"]
    (src / "manifest.json").write_text(json.dumps(document))
    result = packrun.build_bundle(src, tmp_path / "out")
    assert result.path.name == "newbie-1.0.0.bundle.tar.gz"
    assert str(packrun.read_bundle(result.path).manifest.version) == "1.0.0"


def test_build__without_out_dir__writes_into_src_dist(tmp_path: Path) -> None:
    src = write_source(tmp_path)
    result = packrun.build_bundle(src)
    assert result.path == src / "dist" / "acme-1.0.0.bundle.tar.gz"
    assert result.path.is_file()


def test_build__by_default__stamps_contract_2(tmp_path: Path) -> None:
    result = packrun.build_bundle(write_source(tmp_path), tmp_path / "out")
    assert result.manifest.contract == 2
    assert packrun.read_bundle(result.path).manifest.contract == 2


@pytest.mark.parametrize("contract", [0, 1, 2, 3])
def test_build__with_contract_n__stamps_n(tmp_path: Path, contract: int) -> None:
    result = packrun.build_bundle(write_source(tmp_path), tmp_path / "out", contract=contract)
    assert packrun.read_bundle(result.path).contract == contract


def test_build__source_manifest_with_contract__keeps_it_when_none_is_given(tmp_path: Path) -> None:
    result = packrun.build_bundle(write_source(tmp_path, contract=1), tmp_path / "out")
    assert packrun.read_bundle(result.path).contract == 1


def test_build__explicit_contract__overrides_the_source_manifest(tmp_path: Path) -> None:
    src = write_source(tmp_path, contract=1)
    result = packrun.build_bundle(src, tmp_path / "out", contract=2)
    assert packrun.read_bundle(result.path).contract == 2


def test_build__caches_pyc_and_dotfiles__are_not_packed(tmp_path: Path) -> None:
    src = write_source(
        tmp_path,
        files={
            "__init__.py": integration_code(),
            "sub/helper.py": b"X = 1\n",
            "__pycache__/__init__.cpython-311.pyc": b"\x00junk",
            "sub/__pycache__/helper.cpython-311.pyc": b"\x00junk",
            "stray.pyc": b"\x00junk",
            "stray.pyo": b"\x00junk",
            ".hidden.py": b"SECRET = 1\n",
            ".git/config": b"[core]\n",
            "sub/.env": b"TOKEN=x\n",
        },
    )
    result = packrun.build_bundle(src, tmp_path / "out")
    assert sorted(packrun.read_bundle(result.path).files) == ["__init__.py", "sub/helper.py"]
    names = [m.name for m in tar_members(result.path.read_bytes())]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/." in n]


def test_build__tar__holds_only_manifest_and_code_with_zeroed_times_and_owners(
    tmp_path: Path,
) -> None:
    src = write_source(
        tmp_path, files={"__init__.py": integration_code(), "sub/helper.py": b"X = 1\n"}
    )
    os.utime(src / "code" / "__init__.py", (1_700_000_000, 1_700_000_000))
    data = packrun.build_bundle(src, tmp_path / "out").path.read_bytes()
    assert data[4:8] == b"\x00\x00\x00\x00"  # no time in the gzip header either
    members = tar_members(data)
    assert [m.name for m in members] == ["code/__init__.py", "code/sub/helper.py", "manifest.json"]
    for member in members:
        assert member.isreg()
        assert (member.mtime, member.uid, member.gid) == (0, 0, 0)
        assert (member.uname, member.gname) == ("", "")


def test_build__source_without_code_init__is_invalid_bundle(tmp_path: Path) -> None:
    src = write_source(tmp_path, files={"helper.py": b"X = 1\n"})
    with pytest.raises(InvalidBundle, match=r"code/__init__\.py") as exc:
        packrun.build_bundle(src, tmp_path / "out")
    assert exc.value.code == "invalid_bundle"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_build__source_without_manifest__is_invalid_bundle(tmp_path: Path) -> None:
    src = write_source(tmp_path)
    (src / "manifest.json").unlink()
    with pytest.raises(InvalidBundle, match=r"manifest\.json") as exc:
        packrun.build_bundle(src, tmp_path / "out")
    assert exc.value.code == "invalid_bundle"


@pytest.mark.parametrize("target_kind", ["file", "directory", "dangling"])
def test_build__symlink_inside_code__is_invalid_bundle(tmp_path: Path, target_kind: str) -> None:
    src = write_source(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("SECRET = 1\n")
    target = {
        "file": outside / "secret.py",
        "directory": outside,
        "dangling": outside / "missing.py",
    }[target_kind]
    os.symlink(target, src / "code" / "linked")
    with pytest.raises(InvalidBundle, match="link") as exc:
        packrun.build_bundle(src, tmp_path / "out")
    assert exc.value.code == "invalid_bundle"


# --- reading: members -----------------------------------------------------------------------------


def test_read__valid_bundle__gives_manifest_files_and_digest() -> None:
    init = integration_code()
    data = simple_bundle(files={"__init__.py": init, "sub/helper.py": b"X = 1\n"})
    bundle = packrun.read_bundle(data)
    assert (bundle.id, bundle.version, bundle.contract) == ("acme", "1.0.0", 2)
    assert dict(bundle.files) == {"__init__.py": init, "sub/helper.py": b"X = 1\n"}
    assert bundle.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert bundle.data == data


@pytest.mark.parametrize("name", ["/etc/passwd", "/code/__init__.py", "//code/x.py"])
def test_read__absolute_member_path__is_refused(name: str) -> None:
    error = invalid_bundle(tar_gz([*base_members(), regular(name, b"x")]))
    assert "absolute path" in error.reason
    assert repr(name) in error.reason


@pytest.mark.parametrize("name", ["code/../../etc/x", "../x", "code/sub/../../../x", "code/.."])
def test_read__dotdot_member__is_refused(name: str) -> None:
    error = invalid_bundle(tar_gz([*base_members(), regular(name, b"x")]))
    assert "escapes" in error.reason
    assert repr(name) in error.reason


def test_read__leading_dot_slash__is_stripped_and_accepted() -> None:
    members = [
        regular("./manifest.json", encode_manifest(make_manifest())),
        regular("./code/__init__.py", b"X = 1\n"),
        regular("./code/helper.py", b"Y = 2\n"),
    ]
    bundle = packrun.read_bundle(tar_gz(members))
    assert dict(bundle.files) == {"__init__.py": b"X = 1\n", "helper.py": b"Y = 2\n"}


@pytest.mark.parametrize("name", ["code/./x.py", "code//x.py", "./././code/x.py"])
def test_read__dot_or_empty_segment_inside_path__is_refused(name: str) -> None:
    error = invalid_bundle(tar_gz([*base_members(), regular(name, b"x")]))
    assert "escapes" in error.reason
    assert repr(name) in error.reason


def test_read__symlink_member__is_refused() -> None:
    members = [*base_members(), special("code/passwd.py", tarfile.SYMTYPE, "/etc/passwd")]
    error = invalid_bundle(tar_gz(members))
    assert "symbolic link" in error.reason
    assert "code/passwd.py" in error.reason


def test_read__hard_link_member__is_refused() -> None:
    members = [*base_members(), special("code/copy.py", tarfile.LNKTYPE, "code/__init__.py")]
    error = invalid_bundle(tar_gz(members))
    assert "hard link" in error.reason
    assert "code/copy.py" in error.reason


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_read__device_member__is_refused(kind: bytes) -> None:
    error = invalid_bundle(tar_gz([*base_members(), special("code/null", kind)]))
    assert "device" in error.reason
    assert "code/null" in error.reason


def test_read__fifo_member__is_refused() -> None:
    error = invalid_bundle(tar_gz([*base_members(), special("code/pipe", tarfile.FIFOTYPE)]))
    assert "FIFO" in error.reason
    assert "code/pipe" in error.reason


@pytest.mark.parametrize("name", ["evil.py", "codex/x.py", "manifest.json.bak", "Code/x.py"])
def test_read__member_outside_manifest_and_code__is_refused(name: str) -> None:
    error = invalid_bundle(tar_gz([*base_members(), regular(name, b"x")]))
    assert "unexpected member" in error.reason
    assert repr(name) in error.reason


def test_read__code_as_a_file__is_refused() -> None:
    error = invalid_bundle(tar_gz([*base_members(), regular("code", b"x")]))
    assert "code must be a folder" in error.reason


def test_read__directory_members__are_accepted() -> None:
    members = [
        special("code/", tarfile.DIRTYPE),
        special("code/sub/", tarfile.DIRTYPE),
        *base_members(),
        regular("code/sub/helper.py", b"X = 1\n"),
    ]
    assert sorted(packrun.read_bundle(tar_gz(members)).files) == ["__init__.py", "sub/helper.py"]


@pytest.mark.parametrize(
    ("duplicate", "names"),
    [
        ("code/__init__.py", ["code/__init__.py"]),
        ("./code/__init__.py", ["code/__init__.py"]),
        ("manifest.json", ["manifest.json"]),
    ],
)
def test_read__duplicate_member__is_refused(duplicate: str, names: list[str]) -> None:
    data = b"X = 1\n" if duplicate.endswith(".py") else encode_manifest(make_manifest())
    error = invalid_bundle(tar_gz([*base_members(), regular(duplicate, data)]))
    assert "appears twice" in error.reason
    assert names[0] in error.reason


def test_read__manifest_missing__is_refused() -> None:
    error = invalid_bundle(tar_gz([regular("code/__init__.py", b"X = 1\n")]))
    assert "manifest.json is missing" in error.reason


def test_read__code_init_missing__is_refused() -> None:
    members = [
        regular("manifest.json", encode_manifest(make_manifest())),
        regular("code/helper.py", b"X = 1\n"),
    ]
    error = invalid_bundle(tar_gz(members))
    assert "code/__init__.py is missing" in error.reason


def test_read__empty_archive__is_refused() -> None:
    assert "empty" in invalid_bundle(tar_gz([])).reason


def test_read__empty_gzip__is_refused() -> None:
    error = invalid_bundle(gzip.compress(b"", mtime=0))
    assert "tar" in error.reason


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, I am not a bundle",
        hashlib.sha256(b"random").digest() * 40,
        b"PK\x03\x04" + bytes(100),  # a zip
    ],
    ids=["empty", "text", "random", "zip"],
)
def test_read__not_gzip__is_refused(data: bytes) -> None:
    assert "not a gzip file" in invalid_bundle(data).reason


def test_read__plain_uncompressed_tar__is_refused() -> None:
    assert "not a gzip file" in invalid_bundle(tar_bytes(base_members())).reason


def test_read__gzip_of_non_tar__is_refused() -> None:
    error = invalid_bundle(gzip.compress(b"just some text, no tar headers here" * 30, mtime=0))
    assert "tar" in error.reason


def test_read__truncated_gzip__is_refused_at_every_cut_point() -> None:
    data = VALID_BUNDLE
    assert len(data) > 100
    for cut in range(len(data)):
        error = invalid_bundle(data[:cut])
        expected = "not a gzip file" if cut < 2 else "truncated"
        assert expected in error.reason, (cut, error.reason)


def helper_tar() -> tuple[bytes, int]:
    """A tar of manifest, code/__init__.py and code/helper.py, and the offset of helper's header."""
    members = [*base_members(), regular("code/helper.py", b"X = 1\n" * 200)]
    raw = tar_bytes(members)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        offset = tar.getmember("code/helper.py").offset
    return raw, offset


def test_read__tar_cut_inside_member_data__is_refused_as_truncated() -> None:
    raw, offset = helper_tar()
    for cut in range(offset + 512 + 1, offset + 512 + 1200, 97):
        error = invalid_bundle(gzip.compress(raw[:cut], mtime=0))
        assert "truncated" in error.reason, (cut, error.reason)


@pytest.mark.parametrize("into_header", [1, 257])
def test_read__tar_cut_inside_a_member_header__is_refused(into_header: int) -> None:
    # The gzip stream is whole; the tar inside it stops in the middle of code/helper.py's header.
    raw, offset = helper_tar()
    error = invalid_bundle(gzip.compress(raw[: offset + into_header], mtime=0))
    assert "truncated" in error.reason or "corrupt" in error.reason


def test_read__corrupt_member_header_mid_archive__is_refused() -> None:
    raw, offset = helper_tar()
    corrupt = bytearray(raw)
    corrupt[offset + 148 : offset + 156] = b"0000000\x00"  # a wrong header checksum
    error = invalid_bundle(gzip.compress(bytes(corrupt), mtime=0))
    assert "corrupt" in error.reason


def test_read__tar_without_end_of_archive_blocks__keeps_every_member() -> None:
    raw, offset = helper_tar()
    end = offset + 512 + 1536  # helper's header and its 1200 bytes of data (3 blocks)
    bundle = packrun.read_bundle(gzip.compress(raw[:end], mtime=0))
    assert sorted(bundle.files) == ["__init__.py", "helper.py"]


@pytest.mark.parametrize("garbage", [b"\x00", b"garbage", bytes(1000), b"\x1f\x8b"])
def test_read__trailing_garbage_after_gzip_stream__is_refused(garbage: bytes) -> None:
    assert "trailing data" in invalid_bundle(simple_bundle() + garbage).reason


def test_read__second_gzip_member_appended__is_refused() -> None:
    data = simple_bundle() + gzip.compress(b"more", mtime=0)
    assert "trailing data" in invalid_bundle(data).reason


def read_or_invalid(data: bytes) -> Bundle | InvalidBundle:
    """The Bundle read from ``data``, or the InvalidBundle raised (any other error escapes)."""
    try:
        return packrun.read_bundle(data)
    except InvalidBundle as exc:
        return exc


def test_read__corrupt_bytes_in_the_middle__are_refused_or_change_nothing() -> None:
    original = packrun.read_bundle(VALID_BUNDLE)
    accepted = 0
    for position in range(10, len(VALID_BUNDLE)):  # past the gzip header, through the trailer
        for flip in (0x01, 0x80, 0xFF):
            mutated = bytearray(VALID_BUNDLE)
            mutated[position] ^= flip
            outcome = read_or_invalid(bytes(mutated))
            if isinstance(outcome, InvalidBundle):
                assert outcome.code == "invalid_bundle"
                assert any(
                    word in outcome.reason
                    for word in ("corrupt", "truncated", "trailing", "unpacks")
                ), (position, flip, outcome.reason)
                continue
            bundle = outcome
            # Deflate has a few don't-care bits (final padding, unused code lengths): a flip
            # there inflates to the very same tar, which the gzip CRC-32 then rightly accepts.
            accepted += 1
            assert bundle.manifest == original.manifest, (position, flip)
            assert dict(bundle.files) == dict(original.files), (position, flip)
            assert bundle.digest != original.digest
    assert accepted < 20  # nearly every flip is caught


# --- reading: limits ----------------------------------------------------------------------------


def test_read__gzip_bomb_against_small_limit__is_refused() -> None:
    limits = BundleLimits(max_unpacked_bytes=10_000, max_members=4)
    error = invalid_bundle(zeros_bomb(4 * MiB), limits=limits)
    assert "unpacks to more than 10000 bytes" in error.reason


def test_read__files_over_small_unpacked_limit__are_refused() -> None:
    data = simple_bundle(files={"__init__.py": b"X = 1\n", "data.py": b"#" * 20_000})
    error = invalid_bundle(data, limits=BundleLimits(max_unpacked_bytes=10_000))
    assert "unpacks to more than 10000 bytes" in error.reason


def test_read__files_totalling_exactly_the_unpacked_limit__are_accepted() -> None:
    manifest = encode_manifest(make_manifest())
    init = b"X = 1\n"
    data = simple_bundle(files={"__init__.py": init, "pad.py": b"#" * 3000})
    limit = len(manifest) + len(init) + 3000
    assert packrun.read_bundle(data, limits=BundleLimits(max_unpacked_bytes=limit)).id == "acme"
    error = invalid_bundle(data, limits=BundleLimits(max_unpacked_bytes=limit - 1))
    assert f"unpacks to more than {limit - 1} bytes" in error.reason


def test_read__small_limits__tar_block_padding_does_not_count_as_unpacked_bytes() -> None:
    # Two small files, well within 4096 bytes; the tar stream itself is 10240 bytes (an archive
    # is padded to a 20-block record), which is framing, not unpacked content.
    data = simple_bundle(files={"__init__.py": b"X = 1\n"})
    assert len(encode_manifest(make_manifest())) + len(b"X = 1\n") < 1024
    assert len(gzip.decompress(data)) == 10240
    bundle = packrun.read_bundle(data, limits=BundleLimits(max_unpacked_bytes=4096, max_members=4))
    assert bundle.id == "acme"


def test_read__80_mib_of_zeros__is_refused_by_default_limits() -> None:
    bomb = zeros_bomb(80 * MiB)
    # Small enough to pass the compressed-size limit: only the unpacked limit stops it.
    assert len(bomb) < 1 * MiB
    error = invalid_bundle(bomb)
    assert "unpacks to more than 67108864 bytes" in error.reason


def test_read__200_mib_gzip_bomb__is_refused_without_inflating_it_all() -> None:
    bomb = zeros_bomb(200 * MiB)
    tracemalloc.start()
    try:
        error = invalid_bundle(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "unpacks to more than" in error.reason
    assert peak < 160 * MiB, f"reading the bomb peaked at {peak / MiB:.0f} MiB"


def test_read__too_many_members__is_refused() -> None:
    files = {"__init__.py": b"X = 1\n", **{f"m{i}.py": b"" for i in range(5)}}  # 7 members
    error = invalid_bundle(simple_bundle(files=files), limits=BundleLimits(max_members=5))
    assert "more than 5 members" in error.reason


def test_read__exactly_max_members__is_accepted() -> None:
    files = {"__init__.py": b"X = 1\n", **{f"m{i}.py": b"" for i in range(3)}}  # 5 members
    bundle = packrun.read_bundle(simple_bundle(files=files), limits=BundleLimits(max_members=5))
    assert len(bundle.files) == 4


def test_read__member_over_max_file_bytes__is_refused() -> None:
    data = simple_bundle(files={"__init__.py": b"X = 1\n", "big.py": b"#" * 2000})
    error = invalid_bundle(data, limits=BundleLimits(max_file_bytes=1999))
    assert "'code/big.py' is 2000 bytes; at most 1999" in error.reason
    assert packrun.read_bundle(data, limits=BundleLimits(max_file_bytes=2000)).id == "acme"


def test_read__path_too_deep__is_refused() -> None:
    deep = "code/" + "d/" * 15 + "x.py"  # 17 levels
    error = invalid_bundle(tar_gz([*base_members(), regular(deep, b"")]))
    assert "nested too deep" in error.reason
    ok = "code/" + "d/" * 14 + "x.py"  # 16 levels
    assert packrun.read_bundle(tar_gz([*base_members(), regular(ok, b"")])).id == "acme"


def test_read__path_too_long__is_refused() -> None:
    long_name = "code/" + "a" * 233 + ".py"  # 241 characters
    error = invalid_bundle(tar_gz([*base_members(), regular(long_name, b"")]))
    assert "named too long" in error.reason
    ok = "code/" + "a" * 232 + ".py"  # 240 characters
    assert packrun.read_bundle(tar_gz([*base_members(), regular(ok, b"")])).id == "acme"


def test_read__compressed_size_over_limit__is_refused_for_bytes_and_paths(tmp_path: Path) -> None:
    data = simple_bundle()
    limits = BundleLimits(max_compressed_bytes=len(data) - 1)
    expected = f"at most {len(data) - 1} are accepted"
    assert expected in invalid_bundle(data, limits=limits).reason
    path = tmp_path / "x.tgz"
    path.write_bytes(data)
    assert expected in invalid_bundle(path, limits=limits).reason
    ok = BundleLimits(max_compressed_bytes=len(data))
    assert packrun.read_bundle(path, limits=ok).id == "acme"


# --- reading: files and manifests --------------------------------------------------------------------


@pytest.mark.parametrize("as_str", [False, True])
def test_read__missing_file__is_invalid_bundle(tmp_path: Path, as_str: bool) -> None:
    path = tmp_path / "nowhere" / "acme-1.0.0.bundle.tar.gz"
    error = invalid_bundle(str(path) if as_str else path)
    assert "cannot be read" in error.reason
    assert error.source == str(path)


def test_read__directory_path__is_invalid_bundle(tmp_path: Path) -> None:
    assert "cannot be read" in invalid_bundle(tmp_path).reason


def test_read__source_label__names_the_bundle_in_errors() -> None:
    error = invalid_bundle(b"nope", source="catalog:acme@1.0.0")
    assert error.source == "catalog:acme@1.0.0"
    assert str(error).startswith("[invalid_bundle] catalog:acme@1.0.0:")


def test_read__malformed_manifest__is_invalid_manifest_with_paths() -> None:
    document = {"id": "Not An Id!", "version": "one", "contract": -1, "tools": [{}], "bogus": 1}
    members = [
        regular("manifest.json", json.dumps(document).encode()),
        regular("code/__init__.py", b"X = 1\n"),
    ]
    with pytest.raises(InvalidManifest) as exc:
        packrun.read_bundle(tar_gz(members))
    assert exc.value.code == "invalid_manifest"
    paths = {problem.path for problem in exc.value.problems}
    assert all(path.startswith("$.") for path in paths), paths
    assert {"$.id", "$.version", "$.contract", "$.bogus", "$.tools[0].id"} <= paths
    assert "manifest.json" in exc.value.source


def test_read__manifest_not_json__is_invalid_manifest() -> None:
    members = [regular("manifest.json", b"{not json"), regular("code/__init__.py", b"X = 1\n")]
    with pytest.raises(InvalidManifest) as exc:
        packrun.read_bundle(tar_gz(members))
    assert exc.value.code == "invalid_manifest"


def test_read__manifest_with_invalid_utf8__is_invalid_manifest() -> None:
    raw = b'{"id": "acme", "name": "Acme \xff\xfe", "version": "1.0.0", "contract": 2, ' + (
        b'"tools": [{"id": "ask"}]}'
    )
    members = [regular("manifest.json", raw), regular("code/__init__.py", b"X = 1\n")]
    with pytest.raises(InvalidManifest) as exc:
        packrun.read_bundle(tar_gz(members))
    assert exc.value.code == "invalid_manifest"


def test_read__manifest_without_contract__is_invalid_manifest() -> None:
    data = simple_bundle(contract=None)
    with pytest.raises(InvalidManifest, match=r"\$\.contract") as exc:
        packrun.read_bundle(data)
    assert exc.value.code == "invalid_manifest"
    assert "$.contract" in {problem.path for problem in exc.value.problems}


def test_read__file_named_for_another_version__is_artifact_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "acme-9.9.9.bundle.tar.gz"
    path.write_bytes(simple_bundle("acme", "1.0.0"))
    with pytest.raises(ArtifactMismatch) as exc:
        packrun.read_bundle(path)
    assert exc.value.code == "artifact_mismatch"
    message = str(exc.value)
    assert "9.9.9" in message
    assert "1.0.0" in message
    assert {layer.value for layer in exc.value.layers} == {"acme 9.9.9", "acme 1.0.0"}


def test_read__file_named_for_another_id__is_artifact_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "globex-1.0.0.bundle.tar.gz"
    path.write_bytes(simple_bundle("acme", "1.0.0"))
    with pytest.raises(ArtifactMismatch) as exc:
        packrun.read_bundle(path)
    assert "globex" in str(exc.value)
    assert "acme" in str(exc.value)


@pytest.mark.parametrize("name", ["x.tgz", "acme-1.0.0.bundle.tar.gz", "download", "acme.tar.gz"])
def test_read__file_with_matching_or_unrelated_name__is_read(tmp_path: Path, name: str) -> None:
    data = simple_bundle("acme", "1.0.0")
    path = tmp_path / name
    path.write_bytes(data)
    bundle = packrun.read_bundle(path)
    assert (bundle.id, bundle.version, bundle.data) == ("acme", "1.0.0", data)
    assert bundle.source == str(path)
    assert packrun.read_bundle(str(path)).digest == bundle.digest


def test_read__hyphenated_id_named_correctly__is_read(tmp_path: Path) -> None:
    path = tmp_path / "legacy-crm-2.0.0-rc.1.bundle.tar.gz"
    path.write_bytes(simple_bundle("legacy-crm", "2.0.0-rc.1"))
    assert packrun.read_bundle(path).version == "2.0.0-rc.1"


# --- reading: fuzz ------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_gives_bundle_or_packrun_error(data: bytes) -> None:
    """Reading ``data`` returns a Bundle or raises a PackrunError; anything else escapes the test."""
    try:
        result = packrun.read_bundle(data)
    except PackrunError:
        return
    assert isinstance(result, Bundle)


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz__arbitrary_bytes__give_bundle_or_packrun_error(data: bytes) -> None:
    read_gives_bundle_or_packrun_error(data)


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz__arbitrary_bytes_after_gzip_magic__give_bundle_or_packrun_error(data: bytes) -> None:
    read_gives_bundle_or_packrun_error(b"\x1f\x8b\x08" + data)


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID_BUNDLE) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz__mutated_bundle_bytes__give_bundle_or_packrun_error(
    mutations: list[tuple[int, int]],
) -> None:
    data = bytearray(VALID_BUNDLE)
    for position, value in mutations:
        data[position] = value
    read_gives_bundle_or_packrun_error(bytes(data))


@FUZZ
@given(st.integers(0, len(VALID_BUNDLE)))
def test_fuzz__truncated_bundle_bytes__give_bundle_or_packrun_error(cut: int) -> None:
    read_gives_bundle_or_packrun_error(VALID_BUNDLE[:cut])


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID_TAR) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, len(VALID_TAR)),
)
def test_fuzz__mutated_tar_in_valid_gzip__gives_bundle_or_packrun_error(
    mutations: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(VALID_TAR)
    for position, value in mutations:
        data[position] = value
    read_gives_bundle_or_packrun_error(gzip.compress(bytes(data[:cut]), mtime=0))


@FUZZ
@given(st.binary(max_size=64).filter(lambda b: b'"' not in b and b"\\" not in b))
def test_fuzz__arbitrary_bytes_in_a_manifest_string__give_bundle_or_packrun_error(
    junk: bytes,
) -> None:
    head = b'{"id": "acme", "name": "'
    tail = b'", "version": "1.0.0", "contract": 2, "tools": [{"id": "ask"}]}'
    raw = head + junk + tail
    members = [regular("manifest.json", raw), regular("code/__init__.py", b"X = 1\n")]
    read_gives_bundle_or_packrun_error(tar_gz(members))


# --- loading ------------------------------------------------------------------------------------


def versioned_bundle(version: str, answer: str) -> bytes:
    """acme ``version`` whose tool ``ask`` returns ``answer`` from a helper module ``_impl``."""
    init = (
        b"from packrun.sdk import Integration\n"
        b"from ._impl import answer\n"
        b"\n"
        b"integration = Integration('acme')\n"
        b"\n"
        b"@integration.tool('ask')\n"
        b"def ask(ctx, input):\n"
        b"    return answer()\n"
    )
    impl = f"def answer():\n    return {answer!r}\n".encode()
    return simple_bundle("acme", version, files={"__init__.py": init, "_impl.py": impl})


def bundle_modules(package: str) -> dict[str, types.ModuleType]:
    """The modules in ``sys.modules`` that belong to the loaded package ``package``."""
    return {
        name: module
        for name, module in sys.modules.items()
        if name == package or name.startswith(package + ".")
    }


def test_load__two_versions_of_one_id__live_side_by_side() -> None:
    v1 = packrun.load_bundle(versioned_bundle("1.0.0", "v1"))
    v2 = packrun.load_bundle(versioned_bundle("1.0.1", "v2"))
    assert (v1.generation, v2.generation) == (2, 2)
    assert call_tool(v1, "ask") == "v1"
    assert call_tool(v2, "ask") == "v2"
    assert v1.module.__name__ != v2.module.__name__
    first, second = bundle_modules(v1.module.__name__), bundle_modules(v2.module.__name__)
    assert f"{v1.module.__name__}._impl" in first
    assert f"{v2.module.__name__}._impl" in second
    assert not set(first) & set(second)
    assert not {id(m) for m in first.values()} & {id(m) for m in second.values()}
    assert call_tool(v1, "ask") == "v1"  # loading v2 did not disturb v1


def test_load__same_bytes_twice__returns_the_cached_module() -> None:
    data = versioned_bundle("1.0.0", f"cached-{uuid.uuid4().hex}")
    first = packrun.load_bundle(data)
    second = packrun.load_bundle(data)
    assert second.module is first.module
    assert second.digest == first.digest
    assert packrun.load_bundle(packrun.read_bundle(data)).module is first.module


def test_load__bundle_object__loads_too() -> None:
    bundle = packrun.read_bundle(simple_bundle())
    loaded = packrun.load_bundle(bundle)
    assert loaded.bundle == bundle
    assert set(loaded.tools) == {"ask"}
    assert call_tool(loaded, "ask") == "ask"


def test_load__matching_expected_digest__loads() -> None:
    data = simple_bundle()
    loaded = packrun.load_bundle(data, expected_digest=packrun.read_bundle(data).digest)
    assert loaded.digest == "sha256:" + hashlib.sha256(data).hexdigest()


def test_load__expected_digest_mismatch__is_refused_before_import(
    probe: tuple[str, list[str]],
) -> None:
    probe_name, events = probe
    side_effect = f"import sys\nsys.modules[{probe_name!r}].events.append('imported')\n"
    data = simple_bundle(files={"__init__.py": integration_code(extra=side_effect)})
    wrong = "sha256:" + "0" * 64
    before = set(sys.modules)
    with pytest.raises(InvalidBundle) as exc:
        packrun.load_bundle(data, expected_digest=wrong)
    assert type(exc.value) is InvalidBundle
    assert "digest mismatch" in exc.value.reason
    assert wrong in exc.value.reason
    assert events == []
    assert set(sys.modules) - before == set()
    # The same bytes with the right digest do import (so the probe works).
    packrun.load_bundle(data, expected_digest="sha256:" + hashlib.sha256(data).hexdigest())
    assert events == ["imported"]


def test_load__expected_digest_mismatch__is_refused_even_when_cached() -> None:
    data = simple_bundle()
    packrun.load_bundle(data)
    with pytest.raises(InvalidBundle, match="digest mismatch"):
        packrun.load_bundle(data, expected_digest="sha256:" + "f" * 64)


def test_load__manifest_tool_missing_from_code__is_refused() -> None:
    data = bundle_bytes(
        make_manifest(tools=("ask", "list_contacts")),
        {"__init__.py": integration_code(tools=("ask",))},
    )
    with pytest.raises(InvalidBundle) as exc:
        packrun.load_bundle(data)
    assert "list_contacts" in exc.value.reason
    assert "disagree on tools" in exc.value.reason


def test_load__code_tool_missing_from_manifest__is_refused() -> None:
    data = bundle_bytes(
        make_manifest(tools=("ask",)),
        {"__init__.py": integration_code(tools=("ask", "delete_everything"))},
    )
    with pytest.raises(InvalidBundle) as exc:
        packrun.load_bundle(data)
    assert "delete_everything" in exc.value.reason
    assert "disagree on tools" in exc.value.reason


def test_load__two_integrations__is_refused() -> None:
    extra = "other = Integration('acme')\n"
    data = simple_bundle(files={"__init__.py": integration_code(extra=extra)})
    with pytest.raises(InvalidBundle) as exc:
        packrun.load_bundle(data)
    assert "exactly one" in exc.value.reason
    assert "found 2" in exc.value.reason


def test_load__no_integration__is_refused() -> None:
    data = simple_bundle(files={"__init__.py": f"X = 1  # {uuid.uuid4().hex}\n".encode()})
    with pytest.raises(InvalidBundle) as exc:
        packrun.load_bundle(data)
    assert "exactly one" in exc.value.reason
    assert "found 0" in exc.value.reason


def test_load__integration_id_differs_from_manifest__is_refused() -> None:
    data = simple_bundle("acme", files={"__init__.py": integration_code("globex")})
    with pytest.raises(InvalidBundle) as exc:
        packrun.load_bundle(data)
    assert "'globex'" in exc.value.reason
    assert "'acme'" in exc.value.reason


def test_load__code_raising_on_import__is_invalid_bundle_naming_the_exception() -> None:
    init = f"raise RuntimeError('database unreachable')  # {uuid.uuid4().hex}\n".encode()
    with pytest.raises(InvalidBundle) as exc:
        packrun.load_bundle(simple_bundle(files={"__init__.py": init}))
    assert type(exc.value) is InvalidBundle
    assert "RuntimeError" in exc.value.reason
    assert "database unreachable" in exc.value.reason


def test_load__code_with_syntax_error__is_invalid_bundle() -> None:
    init = f"def broken(:\n  # {uuid.uuid4().hex}\n".encode()
    with pytest.raises(InvalidBundle, match="SyntaxError"):
        packrun.load_bundle(simple_bundle(files={"__init__.py": init}))


def test_load__code_importing_a_missing_sibling__is_invalid_bundle() -> None:
    init = f"from ._nowhere import x  # {uuid.uuid4().hex}\n".encode()
    with pytest.raises(InvalidBundle, match="_nowhere"):
        packrun.load_bundle(simple_bundle(files={"__init__.py": init}))


GENERATION_1_CODE = (
    "def handle(action, params, auth):\n"
    "    return {'action': action, 'params': params, 'generation': 1}\n"
)


def test_load__generation_1_bundle__exposes_handle() -> None:
    init = f"{GENERATION_1_CODE}# {uuid.uuid4().hex}\n".encode()
    loaded = packrun.load_bundle(simple_bundle(contract=1, files={"__init__.py": init}))
    assert loaded.generation == 1
    assert loaded.handle is not None
    assert loaded.handle("list", {"limit": 1}, None) == {
        "action": "list",
        "params": {"limit": 1},
        "generation": 1,
    }
    assert dict(loaded.tools) == {}


def test_load__generation_1_bundle_without_handle__is_refused() -> None:
    init = f"def serve(action, params, auth):\n    return 1\n# {uuid.uuid4().hex}\n".encode()
    with pytest.raises(InvalidBundle) as exc:
        packrun.load_bundle(simple_bundle(contract=1, files={"__init__.py": init}))
    assert "handle(action, params, auth)" in exc.value.reason


def test_load__generation_1_bundle_with_non_callable_handle__is_refused() -> None:
    init = f"handle = 'not a function'\n# {uuid.uuid4().hex}\n".encode()
    with pytest.raises(InvalidBundle, match="handle"):
        packrun.load_bundle(simple_bundle(contract=1, files={"__init__.py": init}))


def generation_0_bundle(probe_name: str) -> bytes:
    init = f"import sys\nsys.modules[{probe_name!r}].events.append('imported')\n"
    return simple_bundle(
        "acme", "1.4.2", contract=0, files={"__init__.py": (init + GENERATION_1_CODE).encode()}
    )


@pytest.mark.parametrize(
    ("stage", "error_type", "code"),
    [
        ("run", BundleContractIncompatible, "BUNDLE_CONTRACT_INCOMPATIBLE"),
        ("publish", IntegrationContractIncompatible, "integration_contract_incompatible"),
    ],
)
def test_load__generation_0__is_refused_before_import_with_the_stage_code(
    probe: tuple[str, list[str]],
    stage: Literal["run", "publish"],
    error_type: type[packrun.PackrunError],
    code: str,
) -> None:
    probe_name, events = probe
    with pytest.raises(error_type) as exc:
        packrun.load_bundle(generation_0_bundle(probe_name), stage=stage)
    error = exc.value
    assert error.code == code
    message = str(error)
    assert "acme 1.4.2" in message
    assert "generation 0" in message
    assert "1, 2" in message
    assert "older than this runtime supports" in message
    assert "rebuild it with a current SDK" in message
    assert isinstance(error, packrun.errors.ContractError)
    assert (error.generation, error.supported, error.direction) == (0, (1, 2), "too_old")
    assert events == []


@pytest.mark.parametrize("stage", ["run", "publish"])
def test_load__generation_3__says_newer(stage: str) -> None:
    data = simple_bundle("acme", "3.0.0", contract=3)
    expected = BundleContractIncompatible if stage == "run" else IntegrationContractIncompatible
    with pytest.raises(expected) as exc:
        packrun.load_bundle(data, stage="run" if stage == "run" else "publish")
    message = str(exc.value)
    assert "acme 3.0.0" in message
    assert "generation 3" in message
    assert "newer than this runtime supports" in message
    assert "1, 2" in message
    assert exc.value.direction == "too_new"


def test_load__window_of_only_2__refuses_generation_1_at_run() -> None:
    init = f"{GENERATION_1_CODE}# {uuid.uuid4().hex}\n".encode()
    data = simple_bundle(contract=1, files={"__init__.py": init})
    with pytest.raises(BundleContractIncompatible) as exc:
        packrun.load_bundle(data, generations={2}, stage="run")
    message = str(exc.value)
    assert "generation 1" in message
    assert "supports 2" in message
    assert "older than this runtime supports" in message


def test_load__tool_traceback__names_the_bundle_file_and_code_init() -> None:
    extra = "@integration.tool('boom')\ndef boom(ctx, input):\n    raise ValueError('kaboom')\n"
    manifest = make_manifest("acme", "1.3.0", tools=("ask", "boom"))
    data = bundle_bytes(manifest, {"__init__.py": integration_code(extra=extra)})
    loaded = packrun.load_bundle(data)
    with pytest.raises(ValueError, match="kaboom") as exc:
        call_tool(loaded, "boom")
    frame = traceback.extract_tb(exc.value.__traceback__)[-1]
    assert "acme-1.3.0.bundle.tar.gz" in frame.filename
    assert frame.filename.endswith("code/__init__.py")
    assert frame.name == "boom"
    assert frame.line == "raise ValueError('kaboom')"


def test_load__helper_module_traceback__names_its_own_file() -> None:
    init = (
        "from packrun.sdk import Integration\n"
        "from .sub.helper import explode\n"
        "integration = Integration('acme')\n"
        "@integration.tool('ask')\n"
        "def ask(ctx, input):\n"
        "    return explode()\n"
        f"# {uuid.uuid4().hex}\n"
    ).encode()
    helper = b"def explode():\n    raise KeyError('inner')\n"
    data = simple_bundle(
        "acme",
        "1.3.1",
        files={"__init__.py": init, "sub/__init__.py": b"", "sub/helper.py": helper},
    )
    loaded = packrun.load_bundle(data)
    with pytest.raises(KeyError) as exc:
        call_tool(loaded, "ask")
    frames = traceback.extract_tb(exc.value.__traceback__)
    assert frames[-1].filename.endswith("acme-1.3.1.bundle.tar.gz/code/sub/helper.py")
    assert frames[-2].filename.endswith("acme-1.3.1.bundle.tar.gz/code/__init__.py")


def test_load__hand_built_bundle_with_foreign_code__cannot_poison_the_cache() -> None:
    dist = Path(__file__).parents[1] / "bundles" / "acme"
    one = packrun.read_bundle(dist / "1.0.0" / "dist" / "acme-1.0.0.bundle.tar.gz")
    two = packrun.read_bundle(dist / "2.0.0" / "dist" / "acme-2.0.0.bundle.tar.gz")
    forged = dataclasses.replace(one, files=two.files, data=two.data)
    # The digest is computed from the bytes, so the forgery does not pass for 1.0.0 ...
    with pytest.raises(InvalidBundle, match="digest mismatch"):
        packrun.load_bundle(forged, expected_digest=one.digest)
    # ... and without an expected digest it loads as what its bytes are: 2.0.0.
    assert packrun.load_bundle(forged).bundle.version == "2.0.0"
    genuine = packrun.load_bundle(one, expected_digest=one.digest)
    assert genuine.bundle.version == "1.0.0"
    assert "search_contacts" not in genuine.tools


def test_read__special_files__are_refused_without_reading_them(tmp_path: Path) -> None:
    with pytest.raises(InvalidBundle, match="not a regular file"):
        packrun.read_bundle("/dev/zero")
    fifo = tmp_path / "pipe.bundle.tar.gz"
    os.mkfifo(fifo)
    with pytest.raises(InvalidBundle, match="not a regular file"):
        packrun.read_bundle(fifo)
    with pytest.raises(InvalidBundle, match="cannot be read"):
        packrun.read_bundle(tmp_path)
    with pytest.raises(InvalidBundle, match="expected the bundle's bytes or path"):
        packrun.read_bundle(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("contract", "big_file", "error"),
    [(-5, 0, packrun.InvalidManifest), (2, 17 * 1024 * 1024, InvalidBundle)],
    ids=["negative-generation", "over-the-file-limit"],
)
def test_build__never_writes_a_bundle_that_reading_refuses(
    tmp_path: Path, contract: int, big_file: int, error: type[packrun.PackrunError]
) -> None:
    src = tmp_path / "src"
    (src / "code").mkdir(parents=True)
    (src / "code" / "__init__.py").write_text("X = 1\n")
    (src / "code" / "data.txt").write_bytes(b"x" * big_file)
    manifest = {"id": "acme", "version": "1.0.0", "tools": [{"id": "t"}]}
    (src / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(error):
        packrun.build_bundle(src, tmp_path / "out", contract=contract)
    assert not (tmp_path / "out").exists()


def test_read_document__refuses_oversized_and_special_files(tmp_path: Path) -> None:
    from packrun._manifest import read_document

    big = tmp_path / "manifest.json"
    big.write_bytes(b" " * (16 * 1024 * 1024 + 1))
    with pytest.raises(packrun.InvalidManifest, match="the most accepted"):
        read_document(big)
    with pytest.raises(packrun.InvalidManifest, match="not a regular file"):
        read_document(Path("/dev/zero"))
