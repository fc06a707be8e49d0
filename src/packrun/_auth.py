"""Credentials for one run: a typed, redacted value the executor passes per run and never stores."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeAlias

__all__ = ["Auth", "AuthMode"]

AuthMode: TypeAlias = Literal["none", "api_key", "basic", "oauth2"]

_NEEDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "api_key": ("key",),
    "oauth2": ("access_token",),
    "basic": ("username", "password"),
}


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
        needed = _NEEDS.get(self.mode)
        if needed is None:
            raise ValueError(f"auth mode {self.mode!r} is not one of: {', '.join(_NEEDS)}")
        missing = [name for name in needed if not isinstance(self.credentials.get(name), str)]
        if missing:
            # Names only: a credential value never goes into a message.
            raise ValueError(f"auth mode {self.mode!r} needs the credentials {', '.join(missing)}")
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
        return cls("oauth2", MappingProxyType({"access_token": access_token}), tuple(scopes))

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
