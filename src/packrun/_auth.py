"""Credentials for one run: a typed, redacted value the executor passes per run and never stores."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

from packrun._args import check_choice
from packrun.errors import InvalidArgument

__all__ = ["Auth", "AuthMode", "Withheld"]

AuthMode: TypeAlias = Literal["none", "api_key", "basic", "oauth2"]

_NEEDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "api_key": ("key",),
    "oauth2": ("access_token",),
    "basic": ("username", "password"),
}
_MAX_CREDENTIAL: Final = 65_536  # larger than any header a server takes
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")  # an HTTP header name


class Withheld:
    """A credential value as a message shows it: its type and length, never its text."""

    __slots__ = ("_text",)

    def __init__(self, value: object) -> None:
        size = f" of {len(value):,} characters" if isinstance(value, str) else ""
        self._text = f"<{type(value).__name__}{size}, withheld>"  # the value itself is not kept

    def __repr__(self) -> str:
        return self._text


def _check_credential(name: str, value: object) -> None:
    # Its text is the bundle's business (a tool may take an empty password); its type is ours.
    if not isinstance(value, str) or len(value) > _MAX_CREDENTIAL:
        raise InvalidArgument(
            f"credential {name}",
            Withheld(value),
            [f"a string of at most {_MAX_CREDENTIAL:,} characters"],
        )


@dataclass(frozen=True, slots=True, repr=False)
class Auth:
    """The credentials of one run, as a generation-2 tool sees them in ``ctx.auth``.

    Build one with :meth:`api_key`, :meth:`oauth2`, :meth:`basic` or :meth:`none`. Credential values
    never appear in ``repr()`` or ``str()``; read them through ``credentials`` or :meth:`headers`.

    >>> Auth.api_key("s3cr3t")
    Auth(mode='api_key', credentials=<redacted: key>, scopes=())
    """

    mode: AuthMode
    credentials: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    scopes: tuple[str, ...] = ()
    header: str = "X-API-Key"

    def __post_init__(self) -> None:
        # Every problem is invalid_argument; a credential value never goes into a message.
        check_choice("auth mode", self.mode, list(_NEEDS))
        if not isinstance(self.credentials, Mapping) or not all(
            isinstance(k, str) for k in self.credentials
        ):
            raise InvalidArgument(
                "credentials",
                Withheld(self.credentials),
                ["a mapping of credential names to strings, such as {'key': ...}"],
            )
        missing = [name for name in _NEEDS[self.mode] if name not in self.credentials]
        if missing:
            raise InvalidArgument(
                f"set of credentials for auth mode {self.mode!r}",
                Withheld(self.credentials),
                [f"the credentials {', '.join(_NEEDS[self.mode])} (missing: {', '.join(missing)})"],
            )
        for name, value in self.credentials.items():
            _check_credential(name, value)
        if not isinstance(self.scopes, tuple | list) or not all(
            isinstance(s, str) and len(s) <= 1024 for s in self.scopes
        ):
            raise InvalidArgument(
                "scopes", self.scopes, ["a tuple or list of scopes (strings of at most 1,024)"]
            )
        if not isinstance(self.header, str) or not _TOKEN.fullmatch(self.header):
            raise InvalidArgument("header", self.header, ["an HTTP header name such as X-API-Key"])
        object.__setattr__(self, "credentials", MappingProxyType(dict(self.credentials)))
        object.__setattr__(self, "scopes", tuple(self.scopes))

    @classmethod
    def none(cls) -> Auth:
        """No credentials."""
        return cls("none")

    @classmethod
    def api_key(cls, key: str, *, header: str = "X-API-Key") -> Auth:
        """An API key, sent in ``header`` by :meth:`headers`."""
        return cls("api_key", MappingProxyType({"key": key}), (), header)

    @classmethod
    def oauth2(cls, access_token: str, *, scopes: tuple[str, ...] | list[str] = ()) -> Auth:
        """An OAuth 2 access token and the scopes it was granted."""
        return cls("oauth2", MappingProxyType({"access_token": access_token}), scopes)  # type: ignore[arg-type]

    @classmethod
    def basic(cls, username: str, password: str) -> Auth:
        """HTTP basic credentials."""
        return cls("basic", MappingProxyType({"username": username, "password": password}))

    def headers(self) -> dict[str, str]:
        """The HTTP headers that carry these credentials (empty for ``none``)."""
        if self.mode == "api_key":
            return {self.header: self.credentials["key"]}
        if self.mode == "oauth2":
            return {"Authorization": f"Bearer {self.credentials['access_token']}"}
        if self.mode == "basic":
            pair = f"{self.credentials['username']}:{self.credentials['password']}"
            return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
        return {}

    def __repr__(self) -> str:
        names = ", ".join(sorted(self.credentials)) or "none"
        return f"Auth(mode={self.mode!r}, credentials=<redacted: {names}>, scopes={self.scopes!r})"

    __str__ = __repr__
