"""OCI pack sources: trees pushed with ORAS to a real registry on loopback, synced and verified."""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Iterator
from pathlib import Path

import oras.client
import pytest

import packrun
from _registry import Registry
from _sources_util import allowed_signers, make_key, set_pack
from packrun import Trust
from packrun._sources._oci import SIGNATURE_MEDIA_TYPE, SIGNATURE_NAMESPACE, signature_tag

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    running = Registry(tmp_path_factory.mktemp("registry")).start()
    yield running
    running.stop()


def push(registry: Registry, tree: Path, target: str) -> str:
    """Push ``tree`` (a folder holding index.json) as ``repository:tag``; its manifest digest."""
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    response = client.push(
        target=f"{registry.host}/{target}", files=[str(tree)], disable_path_validation=True
    )
    digest: str = response.headers["Docker-Content-Digest"]
    return digest


def sign(registry: Registry, repository: str, digest: str, key: Path, folder: Path) -> None:
    """Push an SSH signature of ``digest`` (``ssh-keygen -Y sign``) as ``sha256-<hex>.sig``."""
    message = folder / "digest.txt"
    message.write_text(digest)
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", SIGNATURE_NAMESPACE, "-f", str(key), str(message)],
        check=True,
        capture_output=True,
    )
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    client.push(
        target=f"{registry.host}/{repository}:{signature_tag(digest)}",
        files=[f"{message}.sig:{SIGNATURE_MEDIA_TYPE}"],
        disable_path_validation=True,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "packs"
    set_pack(root, "alpha", "1.0.0")
    set_pack(root, "beta", "1.0.0")
    return root


def published(report: packrun.SyncReport) -> list[tuple[str, str]]:
    return [(i.pack_id, i.version) for i in report.published]


async def test_oci__a_pushed_tree__is_published_and_its_digest_recorded(
    registry: Registry, tree: Path
) -> None:
    digest = push(registry, tree, "packs/plain:v1")
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("oci", f"oci://{registry.host}/packs/plain:v1")
        report = await rt.sync("oci")
        assert published(report) == [("alpha", "1.0.0"), ("beta", "1.0.0")]
        assert report.revision == digest == rt.source("oci").revision
        set_pack(tree, "alpha", "1.1.0")
        push(registry, tree, "packs/plain:v1")  # the tag moves
        again = await rt.sync("oci")
        assert published(again) == [("alpha", "1.1.0")]
        assert again.unchanged == 1
        assert again.fetches == 3  # the manifest, the manifest by digest, one layer


async def test_oci__index_not_bumped__is_reported(registry: Registry, tree: Path) -> None:
    set_pack(tree, "alpha", "1.1.0", index=False)
    push(registry, tree, "packs/stale:v1")
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("oci", f"oci://{registry.host}/packs/stale:v1")
        report = await rt.sync("oci")
        assert [(i.pack_id, i.code) for i in report.skipped] == [("alpha", "index_stale")]
        assert published(report) == [("beta", "1.0.0")]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    alice = make_key(tmp_path / "keys", "alice")
    mallory = make_key(tmp_path / "keys", "mallory")
    return alice, mallory, allowed_signers(tmp_path / "allowed", ("alice@example.com", alice))


async def test_oci_signed__a_digest_signed_by_an_allowed_signer__is_published(
    registry: Registry, tree: Path, keys: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    alice, _, signers = keys
    digest = push(registry, tree, "packs/signed:v1")
    sign(registry, "packs/signed", digest, alice, tmp_path)
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source(
            "oci", f"oci://{registry.host}/packs/signed:v1", trust=Trust.signed(signers)
        )
        report = await rt.sync("oci")
        assert published(report) == [("alpha", "1.0.0"), ("beta", "1.0.0")]


async def test_oci_signed__no_signature_or_an_unknown_signer__is_untrusted(
    registry: Registry, tree: Path, keys: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, mallory, signers = keys
    unsigned = push(registry, tree, "packs/unsigned:v1")
    other = push(registry, tree, "packs/other:v1")
    sign(registry, "packs/other", other, mallory, tmp_path)
    async with packrun.open_runtime("memory:") as rt:
        for name in ("unsigned", "other"):
            await rt.add_source(
                name, f"oci://{registry.host}/packs/{name}:v1", trust=Trust.signed(signers)
            )
        first = await rt.sync("unsigned")
        assert [e.code for e in first.errors] == ["untrusted_source"]
        assert first.revision == unsigned
        assert "no signature" in first.errors[0].message
        second = await rt.sync("other")
        assert [e.code for e in second.errors] == ["untrusted_source"]
        assert "not by an allowed signer" in second.errors[0].message
        assert rt.packs() == []


async def test_oci__registry_down__records_the_error_and_keeps_the_previous_state(
    tree: Path, tmp_path: Path
) -> None:
    own = Registry(tmp_path / "own-registry").start()
    try:
        digest = push(own, tree, "packs/demo:v1")
        async with packrun.open_runtime("memory:") as rt:
            await rt.add_source("oci", f"oci://{own.host}/packs/demo:v1")
            await rt.sync("oci")
            own.stop()
            report = await rt.sync("oci")
            assert [e.code for e in report.errors] == ["source_error"]
            assert "cannot reach the registry" in report.errors[0].message
            status = rt.source("oci")
            assert (status.revision, status.report) == (digest, report)
            assert [str(e.version) for e in rt.versions("alpha")] == ["1.0.0"]
    finally:
        own.stop()


async def test_oci_rebuild__an_artifact_not_byte_identical_to_a_rebuild__is_refused(
    registry: Registry, tree: Path
) -> None:
    dist = tree / "alpha" / "dist" / "alpha-1.0.0.bundle.tar.gz"
    dist.write_bytes(gzip.compress(gzip.decompress(dist.read_bytes()), compresslevel=1, mtime=7))
    digest = push(registry, tree, "packs/recompressed:v1")
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source(
            "oci", f"oci://{registry.host}/packs/recompressed@{digest}", trust=Trust.rebuild()
        )
        report = await rt.sync("oci")
        assert [(i.pack_id, i.code) for i in report.skipped] == [("alpha", "untrusted_source")]
        assert published(report) == [("beta", "1.0.0")]
        assert report.revision == digest


async def test_oci__a_missing_tag__is_a_source_error(registry: Registry) -> None:
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("oci", f"oci://{registry.host}/packs/nothing:v9")
        report = await rt.sync("oci")
        assert [e.code for e in report.errors] == ["source_error"]
        assert "no artifact" in report.errors[0].message
