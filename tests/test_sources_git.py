"""Git pack sources: real repositories made with the git binary, synced by the reconciler."""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import packrun
from _sources_util import GitHttpServer, GitRepo, allowed_signers, make_key, set_pack
from _store_sql import execute, undo_projects
from packrun import Trust
from packrun.errors import InvalidArgument, NotFound, SourceError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    """A repository holding two packs, alpha 1.0.0 and beta 1.0.0, committed."""
    repo = GitRepo(tmp_path / "packs")
    set_pack(repo.path, "alpha", "1.0.0")
    set_pack(repo.path, "beta", "1.0.0")
    repo.commit("two packs")
    return repo


def published(report: packrun.SyncReport) -> list[tuple[str, str]]:
    return [(i.pack_id, i.version) for i in report.published]


def skipped(report: packrun.SyncReport) -> list[tuple[str, str, str]]:
    return [(i.pack_id, i.version, i.code) for i in report.skipped]


def versions(rt: packrun.Runtime, pack_id: str) -> list[str]:
    return [str(e.version) for e in rt.versions(pack_id)] if pack_id in rt.packs() else []


# --- the reconciler ---------------------------------------------------------------------------


async def test_sync__publishes_every_index_entry_not_in_the_catalog(
    repo: GitRepo, store_url: str
) -> None:
    async with packrun.open_runtime(store_url) as rt:
        await rt.add_source("packs", repo.url, ref="main")
        report = await rt.sync("packs")
        assert published(report) == [("alpha", "1.0.0"), ("beta", "1.0.0")]
        assert report.revision == repo.head()
        assert report.ok
        assert report.errors == ()
        assert report.skipped == ()
        assert versions(rt, "alpha") == ["1.0.0"]
        assert rt.versions("beta")[0].channel == "vendor"

        set_pack(repo.path, "alpha", "1.1.0")
        repo.commit("alpha 1.1.0")
        again = await rt.sync("packs")
        assert published(again) == [("alpha", "1.1.0")]
        assert again.unchanged == 1  # beta 1.0.0 is in the catalog already
        assert versions(rt, "alpha") == ["1.0.0", "1.1.0"]
        status = rt.source("packs")
        assert (status.revision, status.report, status.last_sync) == (
            repo.head(),
            again,
            again.finished_at,
        )
        assert status.next_sync is not None
        assert status.next_sync > again.finished_at


async def test_sync__of_an_unchanged_source__fetches_once_and_publishes_nothing(
    repo: GitRepo,
) -> None:
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("packs", repo.url)
        await rt.sync("packs")
        report = await rt.sync("packs")
        assert (report.published, report.skipped, report.unchanged, report.fetches) == (
            (),
            (),
            2,
            1,
        )


async def test_sync__logs_an_info_record_with_its_figures(
    repo: GitRepo, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="packrun"):
        async with packrun.open_runtime("memory:") as rt:
            await rt.add_source("packs", repo.url)
            await rt.sync("packs")
    synced = [r for r in caplog.records if getattr(r, "event", None) == "source_synced"]
    assert len(synced) == 1
    record = synced[0]
    assert record.levelno == logging.INFO
    assert (record.source, record.revision, record.skipped, record.errors) == (  # type: ignore[attr-defined]
        "packs",
        repo.head(),
        0,
        0,
    )
    assert record.published == ["alpha 1.0.0", "beta 1.0.0"]  # type: ignore[attr-defined]


async def test_sync__publishes_to_the_sources_channel(repo: GitRepo) -> None:
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("mine", repo.url, channel="custom", project="acme-corp")
        await rt.sync("mine")
        assert rt.versions("alpha", project="acme-corp")[0].channel == "custom"
        assert rt.source("mine").spec.project == "acme-corp"


async def test_sync__of_a_custom_source__publishes_to_its_projects_stream_only(
    repo: GitRepo,
) -> None:
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("mine", repo.url, channel="custom", project="acme-corp")
        report = await rt.sync("mine")
        assert published(report) != []
        rows = rt.versions("alpha", project="acme-corp")
        assert [(r.channel, r.project) for r in rows] == [("custom", "acme-corp")]
        with pytest.raises(packrun.NotFound):
            rt.versions("alpha")  # project default sees no row of acme-corp's
        with pytest.raises(packrun.NotFound):
            rt.versions("alpha", project="globex")
        # The same versions from a vendor source are not in the vendor stream yet: it publishes
        # them; and a second sync of the custom source finds its stream has them.
        await rt.add_source("vendor", repo.url)
        assert published(await rt.sync("vendor")) == published(report)
        again = await rt.sync("mine")
        assert (again.published, again.skipped) == ((), ())


async def test_sync__a_pack_json_moved_behind_an_unchanged_index__is_reported_index_stale(
    repo: GitRepo,
) -> None:
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("packs", repo.url)
        await rt.sync("packs")
        set_pack(repo.path, "alpha", "1.1.0", index=False)  # the index still says 1.0.0
        repo.commit("alpha 1.1.0, index not bumped")
        report = await rt.sync("packs")
        assert published(report) == []
        assert skipped(report) == [("alpha", "1.0.0", "index_stale")]
        assert "1.1.0" in report.skipped[0].message
        assert "bump the index" in report.skipped[0].message
        assert versions(rt, "alpha") == ["1.0.0"]


async def test_sync__a_stale_dist__is_refused_and_the_other_packs_still_publish(
    repo: GitRepo,
) -> None:
    set_pack(repo.path, "alpha", "1.0.0", answer="changed", build=False)  # sources moved on
    repo.commit("alpha's code changed, dist/ not rebuilt")
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("packs", repo.url)
        report = await rt.sync("packs")
        assert skipped(report) == [("alpha", "1.0.0", "dist_stale")]
        assert published(report) == [("beta", "1.0.0")]
        assert "alpha" not in rt.packs()
        assert not report.ok


async def test_sync__refusing_a_pack__never_imports_its_code(repo: GitRepo, tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    folder = set_pack(repo.path, "alpha", "1.0.0")
    code = folder / "code" / "__init__.py"
    code.write_text(f"open({str(marker)!r}, 'w').close()\n" + code.read_text())
    repo.commit("alpha writes a file when imported, dist/ not rebuilt")
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("packs", repo.url)
        report = await rt.sync("packs")
    assert skipped(report) == [("alpha", "1.0.0", "dist_stale")]
    assert not marker.exists()


async def test_sync__a_force_pushed_branch__is_read_at_its_new_tip(repo: GitRepo) -> None:
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("packs", repo.url, ref="main")
        await rt.sync("packs")
        first = repo.head()
        set_pack(repo.path, "alpha", "1.1.0")
        repo.commit("alpha 1.1.0")
        await rt.sync("packs")
        # History rewritten: alpha 1.1.0 dropped, beta 1.0.1 committed on the old base instead.
        repo.git("reset", "-q", "--hard", first)
        set_pack(repo.path, "beta", "1.0.1")
        rewritten = repo.commit("beta 1.0.1 instead")
        report = await rt.sync("packs")
        assert report.revision == rewritten == rt.source("packs").revision
        assert published(report) == [("beta", "1.0.1")]
        assert report.unchanged == 1  # alpha 1.0.0; what was published from the old tip stays
        assert versions(rt, "alpha") == ["1.0.0", "1.1.0"]


async def test_sync__a_tag_or_a_commit__is_read_as_the_ref_names(repo: GitRepo) -> None:
    first = repo.head()
    repo.tag("v1")
    set_pack(repo.path, "alpha", "2.0.0")
    repo.commit("alpha 2.0.0")
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("tagged", repo.url, ref="v1")
        await rt.add_source("pinned", repo.url, ref=first)
        assert (await rt.sync("tagged")).revision == first
        pinned = await rt.sync("pinned")
        assert (pinned.revision, pinned.published, pinned.unchanged) == (first, (), 2)
        assert versions(rt, "alpha") == ["1.0.0"]


async def test_sync__a_fetch_that_fails__keeps_the_last_good_state_and_records_the_error(
    repo: GitRepo, sqlite_url: str
) -> None:
    async with packrun.open_runtime(sqlite_url) as rt:
        await rt.add_source("packs", repo.url)
        good = await rt.sync("packs")
        shutil.rmtree(repo.path)
        report = await rt.sync("packs")
        assert report.published == ()
        assert report.revision is None
        assert [e.code for e in report.errors] == ["source_error"]
        assert "git fetch failed" in report.errors[0].message
    async with packrun.open_runtime(sqlite_url) as rt:  # as recorded in the store
        status = rt.source("packs")
        assert status.revision == good.revision
        assert status.report == report
        assert versions(rt, "alpha") == ["1.0.0"]


async def test_sync__an_index_missing__is_an_error_of_the_source(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "empty")
    (repo.path / "README").write_text("no packs here\n")
    repo.commit("no index")
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("empty", repo.url)
        report = await rt.sync("empty")
        assert [e.code for e in report.errors] == ["source_error"]
        assert "index.json" in report.errors[0].message


async def test_sync__over_smart_http_on_loopback__reads_the_branch(
    repo: GitRepo, tmp_path: Path
) -> None:
    with GitHttpServer(repo.path.parent) as server:
        async with packrun.open_runtime("memory:") as rt:
            await rt.add_source("http", server.url(repo.path.name), ref="main")
            report = await rt.sync("http")
            assert report.revision == repo.head()
            assert published(report) == [("alpha", "1.0.0"), ("beta", "1.0.0")]
            missing = await rt.add_source("missing", server.url("nothing"))
            assert missing.report is None
            failed = await rt.sync("missing")
            assert [e.code for e in failed.errors] == ["source_error"]


# --- trust --------------------------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(alice's key, mallory's key, an allowed-signers file naming alice only)."""
    alice = make_key(tmp_path / "keys", "alice")
    mallory = make_key(tmp_path / "keys", "mallory")
    return (
        alice,
        mallory,
        allowed_signers(tmp_path / "allowed_signers", ("alice@example.com", alice)),
    )


async def test_git_signed__a_commit_signed_by_an_allowed_signer__is_published(
    repo: GitRepo, keys: tuple[Path, Path, Path]
) -> None:
    alice, _, signers = keys
    set_pack(repo.path, "alpha", "1.1.0")
    repo.commit("alpha 1.1.0, signed", key=alice)
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("packs", repo.url, trust=Trust.git_signed(signers))
        report = await rt.sync("packs")
        assert published(report) == [("alpha", "1.1.0"), ("beta", "1.0.0")]


async def test_git_signed__an_unsigned_commit__is_untrusted_and_nothing_is_published(
    repo: GitRepo, keys: tuple[Path, Path, Path]
) -> None:
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("packs", repo.url, trust=Trust.git_signed(keys[2]))
        report = await rt.sync("packs")
        assert report.published == ()
        assert rt.packs() == []
        assert [e.code for e in report.errors] == ["untrusted_source"]
        assert report.revision == repo.head()  # the status says which commit ...
        assert repo.head() in report.errors[0].message
        assert "carries no signature" in report.errors[0].message  # ... and why
        assert rt.source("packs").revision is None  # never a good revision


async def test_git_signed__a_signature_by_an_unknown_key__is_untrusted(
    repo: GitRepo, keys: tuple[Path, Path, Path]
) -> None:
    _, mallory, signers = keys
    set_pack(repo.path, "alpha", "1.1.0")
    repo.commit("alpha 1.1.0, signed by someone else", key=mallory)
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("packs", repo.url, trust=Trust.git_signed(signers))
        report = await rt.sync("packs")
        assert report.published == ()
        assert rt.packs() == []
        assert [e.code for e in report.errors] == ["untrusted_source"]
        assert "not by an allowed signer" in report.errors[0].message


async def test_git_signed__a_signed_tag__is_trusted_for_the_commit_it_names(
    repo: GitRepo, keys: tuple[Path, Path, Path]
) -> None:
    alice, mallory, signers = keys
    repo.tag("v1", key=alice)
    repo.tag("v1-other", key=mallory)
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("good", repo.url, ref="v1", trust=Trust.git_signed(signers))
        await rt.add_source("bad", repo.url, ref="v1-other", trust=Trust.git_signed(signers))
        assert [e.code for e in (await rt.sync("bad")).errors] == ["untrusted_source"]
        assert published(await rt.sync("good")) == [("alpha", "1.0.0"), ("beta", "1.0.0")]


@pytest.fixture
def gpg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A GPG keyring of its own (``GNUPGHOME``) holding one signing key; its fingerprint."""
    if shutil.which("gpg") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no gpg in CI: apt-get install gnupg")
        pytest.skip("no gpg on this machine: apt-get install gnupg")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(home))
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Release <release@example.com>",
         "ed25519", "sign", "never"],
        check=True, capture_output=True,
    )  # fmt: skip
    listed = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    yield next(line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:"))
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False, capture_output=True)


async def test_git_signed__a_gpg_signature__needs_gpg_true_and_a_key_of_the_keyring(
    repo: GitRepo, keys: tuple[Path, Path, Path], gpg_home: str
) -> None:
    repo.git(
        "-c", "gpg.format=openpgp", "-c", f"user.signingkey={gpg_home}",
        "commit", "-q", "-S", "--allow-empty", "-m", "GPG-signed",
    )  # fmt: skip
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("ssh-only", repo.url, trust=Trust.git_signed(keys[2]))
        await rt.add_source("gpg", repo.url, trust=Trust.git_signed(gpg=True))
        refused = await rt.sync("ssh-only")
        assert [e.code for e in refused.errors] == ["untrusted_source"]
        assert "GPG signature" in refused.errors[0].message
        assert published(await rt.sync("gpg")) == [("alpha", "1.0.0"), ("beta", "1.0.0")]
    with pytest.raises(InvalidArgument, match="gpg=True"):
        Trust.git_signed()


async def test_rebuild__an_artifact_not_byte_identical_to_a_rebuild__is_refused(
    repo: GitRepo,
) -> None:
    dist = repo.path / "alpha" / "dist" / "alpha-1.0.0.bundle.tar.gz"
    # The same tar, compressed another way: the verify gate lets it through, a rebuild policy not.
    dist.write_bytes(gzip.compress(gzip.decompress(dist.read_bytes()), compresslevel=1, mtime=7))
    repo.commit("alpha's dist/ recompressed")
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("strict", repo.url, trust=Trust.rebuild())
        report = await rt.sync("strict")
        assert skipped(report) == [("alpha", "1.0.0", "untrusted_source")]
        assert published(report) == [("beta", "1.0.0")]
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("lenient", repo.url)
        assert published(await rt.sync("lenient")) == [("alpha", "1.0.0"), ("beta", "1.0.0")]


def test_trust__combines_a_signature_policy_with_rebuild(keys: tuple[Path, Path, Path]) -> None:
    trust = Trust.git_signed(keys[2]) & Trust.rebuild()
    assert trust.require_rebuild
    assert trust.allowed_signers == keys[2].read_text()
    assert trust.describe() == "signed+rebuild"
    assert Trust.none().describe() == "none"


def test_trust__an_empty_or_missing_allowed_signers_file__is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="allowed-signers file"):
        Trust.git_signed(tmp_path / "missing")
    (tmp_path / "empty").write_text("# nobody\n")
    with pytest.raises(InvalidArgument, match="holds none"):
        Trust.git_signed(tmp_path / "empty")


# --- sources as a catalog of their own ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ref", "fragment"),
    [
        ("https://host/packs.git", None, "git+https://"),
        ("git+https://", None, "git+https://"),
        ("oci://Host/Repo:tag", None, "lower-case"),
        ("oci://host/repo:v1", "v2", "give one of them"),
        ("git+file:///x", "-upload-pack=evil", "not valid"),
    ],
)
async def test_add_source__a_bad_url_or_ref__is_a_source_error(
    url: str, ref: str | None, fragment: str
) -> None:
    async with packrun.open_runtime("memory:") as rt:
        with pytest.raises(SourceError, match=re.escape(fragment)):
            await rt.add_source("bad", url, ref=ref)
        assert rt.sources() == []


async def test_add_source__a_name_in_use__is_refused_and_remove_frees_it(
    repo: GitRepo, shared_url: str
) -> None:
    async with packrun.open_runtime(shared_url) as rt:
        await rt.add_source("packs", repo.url)
        with pytest.raises(SourceError, match="exists"):
            await rt.add_source("packs", repo.url)
        with pytest.raises(InvalidArgument, match="sync interval"):
            await rt.add_source("other", repo.url, interval=0)
        assert [s.name for s in rt.sources()] == ["packs"]
        await rt.remove_source("packs")
        assert rt.sources() == []
        with pytest.raises(NotFound, match="source"):
            await rt.sync("packs")
        await rt.add_source("packs", repo.url, ref="main")
        assert rt.source("packs").spec.ref == "main"


async def test_sources__written_by_one_runtime__are_seen_by_another(
    repo: GitRepo, shared_url: str
) -> None:
    async with (
        packrun.open_runtime(shared_url, refresh_interval=0) as a,
        packrun.open_runtime(shared_url, refresh_interval=0, background_sync=False) as b,
    ):
        await a.add_source("packs", repo.url)
        report = await a.sync("packs")
        await b.refresh()
        assert b.source("packs").report == report
        assert versions(b, "alpha") == ["1.0.0"]


# --- fleets: one process syncs a source at a time -----------------------------------------------


async def test_sync__while_another_process_holds_the_lease__does_nothing(
    repo: GitRepo, shared_url: str
) -> None:
    async with packrun.open_runtime(shared_url) as rt:
        await rt.add_source("packs", repo.url)
    # Another process's sync in progress: its lease, written in the store.
    execute(
        shared_url,
        "UPDATE sources SET lease_owner = 'elsewhere', lease_until = 1e12 WHERE name = 'packs'",
    )
    async with packrun.open_runtime(shared_url) as rt:
        report = await rt.sync("packs")
        assert (report.held_by, report.published, report.fetches) == ("elsewhere", (), 0)
        assert rt.packs() == []
    execute(shared_url, "UPDATE sources SET lease_until = 1 WHERE name = 'packs'")  # it expired
    async with packrun.open_runtime(shared_url) as rt:
        assert published(await rt.sync("packs")) == [("alpha", "1.0.0"), ("beta", "1.0.0")]


async def test_sync__by_two_runtimes_at_once__publishes_each_version_once(
    repo: GitRepo, shared_url: str
) -> None:
    async with packrun.open_runtime(shared_url) as rt:
        await rt.add_source("packs", repo.url)
    reports: list[packrun.SyncReport] = []
    async with (
        packrun.open_runtime(shared_url, background_sync=False) as a,
        packrun.open_runtime(shared_url, background_sync=False) as b,
    ):

        async def sync(rt: packrun.Runtime) -> None:
            reports.append(await rt.sync("packs"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(sync, a)
            tg.start_soon(sync, b)
        await a.refresh()
        assert versions(a, "alpha") == ["1.0.0"]
        assert versions(a, "beta") == ["1.0.0"]
    done = sorted(p for r in reports for p in published(r))
    assert done == [("alpha", "1.0.0"), ("beta", "1.0.0")]  # each once, by one of the two
    assert all(i.code != "version_exists" for r in reports for i in r.skipped)


async def test_background__a_runtime_with_sources__syncs_them_on_their_interval(
    repo: GitRepo,
) -> None:
    async with packrun.open_runtime("memory:") as rt:
        await rt.add_source("packs", repo.url, interval=0.05)
        with anyio.fail_after(30):
            while rt.source("packs").report is None:
                await anyio.sleep(0.02)
        assert versions(rt, "alpha") == ["1.0.0"]


async def test_next_sync__is_one_interval_after_the_last_with_jitter(repo: GitRepo) -> None:
    async with packrun.open_runtime("memory:", background_sync=False) as rt:
        added = await rt.add_source("packs", repo.url, interval=1000)
        assert added.spec.added_at is not None
        assert added.next_sync is not None
        waits = []
        for _ in range(20):
            report = await rt.sync("packs")
            status = rt.source("packs")
            assert status.next_sync is not None
            waits.append((status.next_sync - report.finished_at).total_seconds())
        assert all(900 <= w <= 1100 for w in waits)
        assert len(set(waits)) > 1  # jittered, so a fleet's syncs do not all land together


async def test_background__off__leaves_a_due_source_alone(repo: GitRepo) -> None:
    async with packrun.open_runtime("memory:", background_sync=False) as rt:
        await rt.add_source("packs", repo.url, interval=0.01)
        await anyio.sleep(0.3)
        assert rt.source("packs").report is None
        assert rt.packs() == []


# --- the store: a store of the previous schema migrates ------------------------------------------


async def test_a_store_of_the_previous_schema__migrates_and_keeps_its_rows(
    repo: GitRepo, shared_url: str
) -> None:
    async with packrun.open_runtime(shared_url) as rt:
        await rt.add_source("packs", repo.url)
        await rt.sync("packs")
    # Back to the previous schema, as the previous release wrote it: no sources table (nor the
    # projects that came after it).
    undo_projects(shared_url)
    execute(shared_url, "DROP TABLE sources")
    if shared_url.startswith("sqlite:"):
        execute(shared_url, "PRAGMA user_version = 4")
    else:
        execute(shared_url, "UPDATE packrun_meta SET value = '2' WHERE key = 'schema_version'")
    async with packrun.open_runtime(shared_url) as rt:
        assert versions(rt, "alpha") == ["1.0.0"]
        assert rt.sources() == []
        await rt.add_source("packs", repo.url)
        report = await rt.sync("packs")
        assert (report.published, report.unchanged) == ((), 2)
