"""Pack sources: a sync of an unchanged 100-pack Git source against a bare fetch of its commit.

A sync of a source whose index has not moved fetches the ref once (``git fetch --depth 1``), reads
the index and each listed pack's own version (to report ``index_stale``), and publishes nothing:
no rebuilds, no imports. The baseline is that one fetch, done with the git binary alone; the ratio
is what the reconciler adds to it. The fetch and publish counts come from the sync's report and are
checked here: one fetch, no publishes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import anyio.from_thread
from _harness import Row, best_of, main

import packrun

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from _sources_util import GitRepo, set_pack, write_index

PACKS = 100


def _tree(root: Path) -> GitRepo:
    repo = GitRepo(root / "packs")
    entries = []
    for n in range(PACKS):
        set_pack(repo.path, f"pack{n:03d}", "1.0.0", index=False)
        entries.append({"id": f"pack{n:03d}", "version": "1.0.0", "path": f"pack{n:03d}"})
    write_index(repo.path, entries)
    repo.commit(f"{PACKS} packs")
    return repo


def _bare_fetch(repo: GitRepo, into: Path) -> None:
    target = Path(tempfile.mkdtemp(dir=into))
    subprocess.run(["git", "init", "-q", str(target)], check=True)
    subprocess.run(
        ["git", "-C", str(target), "fetch", "--depth=1", "-q", f"file://{repo.path}", "main"],
        check=True,
    )
    subprocess.run(["git", "-C", str(target), "checkout", "-q", "FETCH_HEAD"], check=True)


def rows() -> list[Row]:
    with (
        tempfile.TemporaryDirectory() as folder,
        anyio.from_thread.start_blocking_portal() as portal,
    ):
        root = Path(folder)
        repo = _tree(root)
        store = f"sqlite:///{root / 'state.db'}"
        with portal.wrap_async_context_manager(
            packrun.open_runtime(store, background_sync=False)
        ) as rt:
            portal.call(lambda: rt.add_source("packs", repo.url, ref="main"))
            first = portal.call(rt.sync, "packs")
            assert len(first.published) == PACKS, first
            reports: list[packrun.SyncReport] = []

            def sync() -> None:
                reports.append(portal.call(rt.sync, "packs"))

            synced = best_of(sync, repeat=5)
            for report in reports:  # bounded: one fetch, no publishes, every entry unchanged
                assert (report.fetches, len(report.published), report.unchanged) == (1, 0, PACKS)
            fetched = best_of(lambda: _bare_fetch(repo, root), repeat=5)
        fetches, published = reports[-1].fetches, len(reports[-1].published)
    return [
        Row(
            f"sync of an unchanged {PACKS}-pack Git source ({fetches} fetch, {published} publishes)",
            "git init + fetch --depth 1 + checkout of the same commit",
            synced,
            fetched,
            goal="<= 3",
        )
    ]


if __name__ == "__main__":
    main(rows)
