"""What a pack source is, what it trusts, and what a sync of it reports.

Values only: the URL forms (:func:`parse_url`), the trust policy (:class:`Trust`), a sync's
:class:`SyncReport` and a source's :class:`SourceStatus`. Fetching lives in ``_git`` and ``_oci``,
the reconciler in ``_reconcile``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from packrun._args import check_path
from packrun._catalog import CHANNELS, Channel
from packrun._stores._pg_url import mask_url
from packrun.errors import InvalidArgument, SourceError, shown

__all__ = [
    "DEFAULT_INTERVAL",
    "SourceSpec",
    "SourceStatus",
    "SourceUrl",
    "SyncItem",
    "SyncReport",
    "Trust",
    "parse_url",
]

DEFAULT_INTERVAL: Final = 300.0
"""Seconds between background syncs of a source, before jitter."""

_GIT_SCHEMES: Final = ("git+https", "git+http", "git+ssh", "git+file")
_REF: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/+-]{0,199}")
_OCI: Final = re.compile(
    r"oci://(?P<host>[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?)"
    r"/(?P<repo>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127})|@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_URL_FORMS: Final = (
    "git+https://host/repo.git, git+ssh://host/repo.git, git+file:///path/to/repo "
    "(git+http:// too) or oci://host/repository:tag"
)


@dataclass(frozen=True, slots=True)
class SourceUrl:
    """A parsed source URL: ``kind`` ``git`` (``location`` is what ``git fetch`` is given) or
    ``oci`` (``location`` is ``host/repository``, ``ref`` the tag or digest)."""

    kind: Literal["git", "oci"]
    location: str
    ref: str | None
    plain_http: bool = False
    """OCI only: the registry is on a loopback address and is spoken to over plain HTTP."""


def _loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1 : host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _url(url: object) -> str:
    """A source URL as a message shows it: its password masked, cut short when long."""
    return shown(mask_url(url) if isinstance(url, str) else url, 120)


def parse_url(name: str, url: object, ref: object = None) -> SourceUrl:
    """Check a source URL and ref; ``source_error`` saying what was expected when they are bad."""
    if not isinstance(url, str) or not url.isprintable() or " " in url:
        raise SourceError(name, f"URL {_url(url)} is not valid: expected {_URL_FORMS}")
    if ref is not None and (not isinstance(ref, str) or not _REF.fullmatch(ref)):
        raise SourceError(
            name,
            f"ref {shown(ref)} is not valid: expected a branch, a tag or a commit (letters, digits "
            "and . _ / + -, not starting with - or .)",
        )
    scheme, sep, _rest = url.partition("://")
    if sep and scheme in _GIT_SCHEMES and len(url) > len(scheme) + 3:
        return SourceUrl("git", url.removeprefix("git+"), ref)
    if scheme == "oci":
        match = _OCI.fullmatch(url)
        if match is None:
            raise SourceError(
                name,
                f"URL {_url(url)} is not a valid OCI reference: expected oci://host[:port]/"
                "repository[:tag] (a lower-case repository path) or oci://host/repository@sha256:…",
            )
        tag = match["tag"] or match["digest"]
        if tag is not None and ref is not None and ref != tag:
            raise SourceError(
                name,
                f"URL {_url(url)} names {shown(tag)} and ref names {shown(ref)}: give one of them",
            )
        return SourceUrl(
            "oci",
            f"{match['host']}/{match['repo']}",
            tag or ref or "latest",
            plain_http=_loopback(match["host"]),
        )
    raise SourceError(name, f"URL {_url(url)} is not a pack source URL: expected {_URL_FORMS}")


@dataclass(frozen=True, slots=True)
class Trust:
    """What a source must prove before anything of it is published.

    * ``Trust.none()`` (the default): nothing beyond the three-layer check and the verify gate.
    * ``Trust.git_signed(allowed_signers)``: the synced commit, or the tag when the ref is a signed
      tag, must carry a valid SSH signature by a key in the allowed-signers file (the format of
      ``ssh-keygen``'s ``ALLOWED SIGNERS``), verified by ``git verify-commit`` / ``verify-tag``.
      For an OCI source the same file checks an SSH signature over the artifact's manifest digest
      (``ssh-keygen -Y verify``, namespace ``packrun-oci``); see ``docs/sources.md``.
      GPG signatures are refused unless ``gpg=True``: then Git checks them against the syncing
      user's GPG keyring (every key in it is trusted, so give the syncing account a keyring of
      release keys only).
    * ``Trust.rebuild()``: a built artifact is accepted only when it is byte-identical to a
      rebuild from its sources. Combine it: ``Trust.git_signed(path) & Trust.rebuild()``.

    The allowed-signers file is read when the source is added and kept in the store, so every
    process of a fleet checks against the same keys.
    """

    allowed_signers: str | None = None
    """The allowed-signers text (``principal [options] key-type key``, one a line), or ``None``."""
    require_rebuild: bool = False
    """Whether artifacts must be byte-identical to a rebuild from their sources."""
    gpg: bool = False
    """Whether Git sources may also be GPG-signed by a key of the syncing user's keyring."""

    @property
    def signed_only(self) -> bool:
        """Whether a signature is required."""
        return self.allowed_signers is not None or self.gpg

    @classmethod
    def none(cls) -> Trust:
        """Trust what the three-layer check and the verify gate accept."""
        return cls()

    @classmethod
    def git_signed(cls, allowed_signers: str | Path | None = None, *, gpg: bool = False) -> Trust:
        """Require a valid signature by a key of the ``allowed_signers`` file (SSH), or, with
        ``gpg=True``, a GPG signature Git verifies against the syncing user's keyring."""
        if not isinstance(gpg, bool):
            raise InvalidArgument("gpg", gpg, ["True", "False"])
        if allowed_signers is None:
            if not gpg:
                raise InvalidArgument(
                    "signature policy",
                    "no allowed-signers file and gpg=False",
                    ["an allowed-signers file, gpg=True, or both"],
                )
            return cls(gpg=True)
        check_path("allowed_signers", allowed_signers)
        path = Path(allowed_signers)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgument(
                "allowed-signers file",
                str(path),
                [f"a readable file of ssh-keygen's ALLOWED SIGNERS format ({exc})"],
            ) from None
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not lines:
            raise InvalidArgument(
                "allowed-signers file",
                str(path),
                ["at least one line 'principal key-type key' (it holds none)"],
            )
        return cls(allowed_signers=text, gpg=gpg)

    signed = git_signed

    @classmethod
    def rebuild(cls) -> Trust:
        """Require artifacts byte-identical to a rebuild from their sources."""
        return cls(require_rebuild=True)

    def __and__(self, other: Trust) -> Trust:
        if not isinstance(other, Trust):
            return NotImplemented
        if (
            self.allowed_signers is not None
            and other.allowed_signers is not None
            and self.allowed_signers != other.allowed_signers
        ):
            raise InvalidArgument(
                "trust combination", "two allowed-signers files", ["at most one signature policy"]
            )
        return Trust(
            self.allowed_signers or other.allowed_signers,
            self.require_rebuild or other.require_rebuild,
            self.gpg or other.gpg,
        )

    def describe(self) -> str:
        """``none``, ``signed``, ``rebuild`` or ``signed+rebuild``."""
        parts = [
            p for p, on in (("signed", self.signed_only), ("rebuild", self.require_rebuild)) if on
        ]
        return "+".join(parts) or "none"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A source as added: where, which ref, how often, to which channel (and project)."""

    name: str
    url: str
    ref: str | None = None
    interval: float = DEFAULT_INTERVAL
    channel: Channel = "vendor"
    project: str | None = None
    trust: Trust = field(default_factory=Trust)
    added_at: datetime | None = None

    def checked(self) -> SourceUrl:
        """The parsed URL; raises on a bad spec."""
        if self.channel not in CHANNELS:
            raise InvalidArgument("channel", self.channel, CHANNELS)
        interval = self.interval
        if (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not (0 < interval < math.inf)
        ):
            raise InvalidArgument("sync interval", interval, ["a number of seconds above 0"])
        return parse_url(self.name, self.url, self.ref)


@dataclass(frozen=True, slots=True)
class SyncItem:
    """One pack version a sync published or skipped (``code`` says why), or a source-level
    error (``pack_id`` and ``version`` empty)."""

    code: str
    message: str
    pack_id: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one sync did: the revision (commit or manifest digest) it read, what it published,
    what it skipped and why, errors, and how many index entries were already in the catalog.

    ``fetches`` counts the requests made to the remote (a ``git fetch``; a registry request).
    ``held_by`` is set when another process held the source's lease: nothing was done.
    """

    source: str
    started_at: datetime
    finished_at: datetime
    revision: str | None = None
    published: tuple[SyncItem, ...] = ()
    skipped: tuple[SyncItem, ...] = ()
    errors: tuple[SyncItem, ...] = ()
    unchanged: int = 0
    fetches: int = 0
    held_by: str | None = None

    @property
    def ok(self) -> bool:
        """True when the sync ran and nothing was skipped or failed."""
        return self.held_by is None and not self.skipped and not self.errors

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--json``)."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        data["ok"] = self.ok
        return data


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A source and how its syncing goes: the last sync, the last good revision (kept when a
    later fetch fails), the last report, and when the next background sync is due."""

    spec: SourceSpec
    last_sync: datetime | None = None
    revision: str | None = None
    """The commit or digest of the last sync that fetched and passed the trust policy."""
    report: SyncReport | None = None
    next_sync: datetime | None = None

    @property
    def name(self) -> str:
        """The source's name."""
        return self.spec.name

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--json``); the allowed-signers text is shown as a count of keys."""
        spec = self.spec
        signers = spec.trust.allowed_signers
        return {
            "name": spec.name,
            "url": spec.url,
            "ref": spec.ref,
            "interval": spec.interval,
            "channel": spec.channel,
            "project": spec.project,
            "trust": spec.trust.describe(),
            "allowed_signers": None
            if signers is None
            else sum(
                1 for line in signers.splitlines() if line.strip() and not line.startswith("#")
            ),
            "added_at": msgspec.to_builtins(spec.added_at),
            "last_sync": msgspec.to_builtins(self.last_sync),
            "revision": self.revision,
            "next_sync": msgspec.to_builtins(self.next_sync),
            "report": None if self.report is None else self.report.to_dict(),
        }


class _State(msgspec.Struct, frozen=True):
    """What the store keeps of a source's syncing."""

    last_sync: datetime | None = None
    revision: str | None = None
    report: SyncReport | None = None
    next_sync: datetime | None = None


def encode_spec(spec: SourceSpec) -> str:
    """The stored form of a spec."""
    return msgspec.json.encode(spec).decode()


def decode_spec(text: str) -> SourceSpec:
    """A spec from its stored form."""
    return msgspec.json.decode(text, type=SourceSpec)


def encode_status(status: SourceStatus) -> str:
    """The stored form of a status (the spec is stored apart)."""
    return msgspec.json.encode(
        _State(status.last_sync, status.revision, status.report, status.next_sync)
    ).decode()


def decode_status(spec: SourceSpec, text: str | None) -> SourceStatus:
    """A status from its stored forms."""
    if not text:
        return SourceStatus(spec)
    state = msgspec.json.decode(text, type=_State)
    return SourceStatus(spec, state.last_sync, state.revision, state.report, state.next_sync)
