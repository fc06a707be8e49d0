"""A real OCI registry for the tests: Debian's ``docker-registry`` (the CNCF distribution
registry), started on a free loopback port with a configuration and storage of its own.

Locally without it the tests that need it skip, saying how to install it; in CI (``CI=true``) a
missing registry fails them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

__all__ = ["Registry", "registry_binary"]

INSTALL = "install Debian's registry with: apt-get install docker-registry"


def registry_binary() -> str:
    """The registry's binary; skips (fails in CI) when it is not installed."""
    found = shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").is_file() else None
    )
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no OCI registry (docker-registry) in CI: {INSTALL}")
        pytest.skip(f"no OCI registry (docker-registry) on this machine: {INSTALL}")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Registry:
    """One registry process on ``127.0.0.1:port``, its storage under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "config.yml"
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
            f"http:\n  addr: {self.host}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Registry:
        """Start it and wait until it answers (20 s at most)."""
        with (self.folder / "registry.log").open("ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [registry_binary(), "serve", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the registry did not start on {self.host}: see {self.folder}/registry.log"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop it (its storage stays)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None
