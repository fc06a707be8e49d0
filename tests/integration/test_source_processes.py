"""Two real processes syncing one pack source at once (``packrun source sync`` from the command
line), on a real SQLite file and a real PostgreSQL schema: each version is published once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _sources_util import GitRepo, set_pack
from packrun._cli import main

PACKS = 20


def test_two_processes_syncing_one_source__publish_each_version_once(
    tmp_path: Path, shared_url: str
) -> None:
    repo = GitRepo(tmp_path / "packs")
    for n in range(PACKS):
        set_pack(repo.path, f"pack{n:02d}", "1.0.0")
    repo.commit(f"{PACKS} packs")
    assert main(["source", "add", "packs", repo.url, "--store", shared_url]) == 0
    command = [sys.executable, "-m", "packrun", "source", "sync", "packs", "--json"]
    processes = [
        subprocess.Popen([*command, "--store", shared_url], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    reports = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0, out
        reports.append(json.loads(out))
    published = sorted(i["pack_id"] for r in reports for i in r["published"])
    assert published == [f"pack{n:02d}" for n in range(PACKS)]  # each once, whoever won
    for report in reports:  # the other one was held off by the lease, or found them published
        assert report["held_by"] is not None or report["skipped"] == []
