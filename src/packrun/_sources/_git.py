"""Fetching a Git pack source with the ``git`` binary, and checking its signature with Git itself.

Each sync fetches the one commit its ref names (``git fetch --depth 1``) into a fresh repository
in a temporary folder and checks it out there: one request to the remote per sync, whatever the
history, and a force-pushed ref is read like any other. Nothing is run from the checkout.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from packrun.errors import SourceError, UntrustedSource

__all__ = ["GitTree", "fetch", "verify_signature"]

GIT_TIMEOUT: Final = 600.0
"""Seconds one ``git`` command may take."""
_SYNCED: Final = "refs/packrun/synced"


@dataclass(frozen=True, slots=True)
class GitTree:
    """A fetched ref, checked out at ``root``: its commit, and whether the ref is a tag object."""

    root: Path
    commit: str
    tag_object: bool


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"  # a sync never waits for a password on a terminal
    env["GIT_ADVICE"] = "0"
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    return env


def _git(name: str, repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise SourceError(name, "the git binary is not installed: expected git on PATH") from None
    except subprocess.TimeoutExpired:
        raise SourceError(name, f"git {args[0]} took longer than {GIT_TIMEOUT:g}s") from None
    if check and done.returncode != 0:
        said = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        # Git's own diagnosis is its first "fatal:" or "error:" line; hints follow it.
        reason = next(
            (line for line in said if line.startswith(("fatal:", "error:"))),
            said[0] if said else f"exit {done.returncode}",
        )
        raise SourceError(name, f"git {args[0]} failed: {reason}")
    return done


def fetch(name: str, location: str, ref: str | None, into: Path) -> GitTree:
    """Fetch ``ref`` (default: the remote's ``HEAD``) of ``location`` and check it out in ``into``.

    ``source_error`` naming git's own words when the remote or the ref cannot be read.
    """
    repo = Path(tempfile.mkdtemp(prefix="repo-", dir=into))
    _git(name, repo, "init", "--quiet")
    wanted = ref or "HEAD"
    _git(
        name,
        repo,
        "fetch",
        "--depth=1",
        "--no-tags",
        "--quiet",
        "--",
        location,
        f"+{wanted}:{_SYNCED}",
    )
    kind = _git(name, repo, "cat-file", "-t", _SYNCED).stdout.strip()
    commit = _git(name, repo, "rev-parse", "--verify", f"{_SYNCED}^{{commit}}").stdout.strip()
    _git(name, repo, "-c", "core.symlinks=true", "checkout", "--quiet", "--detach", commit)
    return GitTree(repo, commit, kind == "tag")


def verify_signature(
    name: str, tree: GitTree, allowed_signers: str | None, *, gpg: bool = False
) -> str:
    """Check that the fetched commit (or the tag the ref names) is signed by an allowed signer:
    an SSH signature by a key of ``allowed_signers``, or, with ``gpg``, a GPG signature by a key
    of the syncing user's keyring.

    Returns Git's line naming the good signature; raises ``untrusted_source`` naming the commit and
    what Git said otherwise.
    """
    what, target = ("tag", _SYNCED) if tree.tag_object else ("commit", tree.commit)
    body = _git(name, tree.root, "cat-file", what, target).stdout
    header = body if what == "tag" else body.split("\n\n", 1)[0]
    if "-----BEGIN SSH SIGNATURE-----" in header:
        kind = "ssh"
    elif "-----BEGIN PGP SIGNATURE-----" in header:
        kind = "gpg"
    else:
        raise UntrustedSource(
            name, tree.commit, f"the {what} carries no signature; expected one by an allowed signer"
        )
    if kind == "gpg" and not gpg:
        raise UntrustedSource(
            name,
            tree.commit,
            f"the {what} carries a GPG signature; this source accepts SSH signatures by its "
            "allowed signers (Trust.git_signed(..., gpg=True) accepts GPG keys of the keyring)",
        )
    if kind == "ssh" and allowed_signers is None:
        raise UntrustedSource(
            name,
            tree.commit,
            f"the {what} carries an SSH signature; this source accepts GPG signatures only "
            "(give it an allowed-signers file)",
        )
    with tempfile.NamedTemporaryFile("w", suffix=".allowed_signers", delete=False) as file:
        file.write(allowed_signers or "")
    try:
        config = ("-c", f"gpg.ssh.allowedSignersFile={file.name}")
        done = _git(name, tree.root, *config, f"verify-{what}", target, check=False)
        said = " ".join((done.stderr or done.stdout).split())
        if done.returncode != 0 or "Good" not in said:
            raise UntrustedSource(
                name,
                tree.commit,
                f"the {what}'s signature is not by an allowed signer (git: {said or 'no output'})",
            )
        return said
    finally:
        os.unlink(file.name)
