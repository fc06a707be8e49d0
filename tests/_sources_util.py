"""Pack source trees, Git repositories and SSH keys made for the tests with the real tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from packrun._bundle import build_bundle

__all__ = [
    "CODE",
    "GitHttpServer",
    "GitRepo",
    "allowed_signers",
    "make_key",
    "set_pack",
    "write_index",
]

CODE = """
from packrun.sdk import Integration

integration = Integration({id!r})


@integration.tool("ping")
def ping(ctx, input):
    return {{"pong": {answer!r}}}
"""


def set_pack(
    root: Path,
    id: str,
    version: str,
    *,
    answer: str = "a",
    build: bool = True,
    index: bool = True,
) -> Path:
    """Write the integration source ``root/id`` at ``version`` (its dist/ rebuilt unless
    ``build=False``) and, unless ``index=False``, set its index entry to that version."""
    folder = root / id
    (folder / "code").mkdir(parents=True, exist_ok=True)
    manifest = {"id": id, "version": version, "tools": [{"id": "ping"}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "code" / "__init__.py").write_text(CODE.format(id=id, answer=answer))
    if build:
        shutil.rmtree(folder / "dist", ignore_errors=True)
        build_bundle(folder)
    if index:
        entries = {}
        if (root / "index.json").is_file():
            entries = {e["id"]: e for e in json.loads((root / "index.json").read_text())["packs"]}
        entries[id] = {"id": id, "version": version, "path": id}
        write_index(root, list(entries.values()))
    return folder


def write_index(root: Path, entries: list[dict[str, str]]) -> None:
    """Write ``root/index.json``."""
    (root / "index.json").write_text(json.dumps({"packs": entries}, indent=2))


def _run(*args: str, cwd: Path | None = None, input: bytes | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    done = subprocess.run(args, cwd=cwd, capture_output=True, check=True, env=env, input=input)
    return done.stdout.decode()


def make_key(folder: Path, name: str) -> Path:
    """A new ed25519 key pair (``ssh-keygen``) at ``folder/name``; returns the private key."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / name
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key))
    return key


def allowed_signers(path: Path, *keys: tuple[str, Path], namespaces: str = "") -> Path:
    """An allowed-signers file naming each ``(principal, private key)``'s public key."""
    options = f' namespaces="{namespaces}"' if namespaces else ""
    lines = [
        f"{principal}{options} {Path(str(key) + '.pub').read_text().strip()}"
        for principal, key in keys
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class GitRepo:
    """A Git repository whose work tree is a pack source tree."""

    def __init__(self, path: Path, branch: str = "main") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", branch)
        self.git("config", "user.name", "Pack Author")
        self.git("config", "user.email", "author@example.com")
        self.git("config", "gpg.format", "ssh")
        self.git("config", "commit.gpgsign", "false")

    @property
    def url(self) -> str:
        """The ``git+file://`` URL of the repository."""
        return f"git+file://{self.path}"

    def git(self, *args: str) -> str:
        """Run git in the repository; its output."""
        return _run("git", *args, cwd=self.path)

    def commit(self, message: str, *, key: Path | None = None) -> str:
        """Commit everything (signed with ``key`` when given); the commit id."""
        self.git("add", "-A")
        sign = ["-c", f"user.signingkey={key}", "commit", "-S"] if key else ["commit"]
        self.git(*sign, "-q", "--allow-empty", "-m", message)
        return self.head()

    def tag(self, name: str, *, key: Path | None = None) -> None:
        """Tag HEAD (a signed annotated tag with ``key``)."""
        if key:
            self.git("-c", f"user.signingkey={key}", "tag", "-s", "-m", name, name)
        else:
            self.git("tag", name)

    def head(self) -> str:
        """The commit HEAD names."""
        return self.git("rev-parse", "HEAD").strip()


class GitHttpServer:
    """``git http-backend`` (Git's smart HTTP server, a CGI program) behind a WSGI server on a
    free loopback port, serving the repositories under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = make_server("127.0.0.1", 0, self._app, handler_class=_QuietHandler)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        """The ``git+http://`` URL of the repository ``root/name``."""
        return f"git+http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> GitHttpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "REQUEST_METHOD": environ["REQUEST_METHOD"],
            "PATH_INFO": environ.get("PATH_INFO", ""),
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
        }
        for name in ("HTTP_GIT_PROTOCOL", "HTTP_CONTENT_ENCODING"):
            if name in environ:
                env[name] = environ[name]
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status, headers = "200 OK", []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name, value.strip()))
        start_response(status, headers)
        return [payload]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return
