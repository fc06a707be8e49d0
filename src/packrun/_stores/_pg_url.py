"""A ``postgresql://`` store URL: packrun's own parameters taken out, the password kept out of
sight.

libpq reads the URL; packrun only removes the parameters that are its own (``schema``,
``pool_size``) and leaves every other character as it was written, so that the percent-encoding
libpq decodes is the user's. What packrun shows of the URL (``Runtime.url``, log lines, error
messages) has the password masked, and any message that might quote it is scrubbed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

__all__ = ["OWN_PARAMETERS", "StoreUrl", "mask_url", "parse_url"]

OWN_PARAMETERS: Final = frozenset({"schema", "pool_size"})
MASK: Final = "***"

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# ``password=…`` as a query parameter or a libpq keyword (``host=h password=…``), quoted or not.
_PASSWORD_PARAMETER: Final = re.compile(
    r"(?i)(?:^|(?<=[?&;\s]))password\s*=\s*(?P<password>'(?:[^'\\]|\\.)*'?|[^&#\s]*)"
)


def _password_span(url: str, *, query: bool = False) -> tuple[int, int] | None:
    """Where the password of ``url``'s user information is, read generously.

    The password runs from the first ``:`` of the user information to the *last* ``@``: libpq
    stops at the first ``@``, but a raw ``@`` in a password must not leave its tail in sight. A
    URL of another shape (``pg://``, ``postgresql:/``, ``postgresql//``, no scheme) is read the
    same way; with no ``://`` before it, user information without a ``:`` is masked whole. With
    ``query``, the URL may carry query parameters, and an ``@`` in them ends nothing.
    """
    end = len(url)
    if query and (first := url.find("@")) >= 0 and (mark := url.find("?", first)) >= 0:
        end = mark
    at = url.rfind("@", 0, end)
    if at < 0:
        return None
    scheme = _SCHEME.match(url)
    authority = scheme is not None and url.startswith("//", scheme.end())
    if scheme is not None:
        start = scheme.end()
    else:
        slashes = url.find("//", 0, at)
        start = slashes + 2 if slashes >= 0 else 0
    while start < at and url[start] == "/":
        start += 1
    colon = url.find(":", start, at)
    if colon >= 0:
        return colon + 1, at
    return None if authority else (start, at)


@dataclass(frozen=True)
class StoreUrl:
    conninfo: str
    """What libpq is given: the URL without packrun's own parameters."""
    shown: str
    """The URL as packrun shows it: the password masked."""
    own: dict[str, str]
    """packrun's parameters (``schema``, ``pool_size``), decoded."""
    libpq: frozenset[str]
    """The names of the parameters given for libpq."""
    secrets: tuple[str, ...]
    """Every form of the password that may appear in a message (as written, decoded)."""

    def scrub(self, text: str) -> str:
        """``text`` with every form of the password masked.

        libpq quotes the token it could not read (``invalid percent-encoded token: "…"``); a
        password of fewer than four characters is masked only where it is quoted like that, so
        that masking it does not rewrite every word it happens to be part of.
        """
        for secret in self.secrets:
            if len(secret) >= 4:
                text = text.replace(secret, MASK)
            else:
                text = text.replace(f'"{secret}"', f'"{MASK}"')
        return text


def parse_url(url: str) -> StoreUrl:
    """Split ``url`` into what libpq reads and what packrun reads, and mask its password."""
    secrets: list[str] = []
    shown = url
    start = url.find("//") + 2
    span = _password_span(url, query=True)
    if span is not None:
        password = url[span[0] : span[1]]
        secrets.extend([password, *password.split("@")])  # libpq reads it to the first "@"
        shown = url[: span[0]] + MASK + url[span[1] :]
        start = span[1] + 1
    query_at = url.find("?", start)
    if query_at < 0:
        return StoreUrl(url, shown, {}, frozenset(), _forms(secrets))
    base, query = url[:query_at], url[query_at + 1 :]
    shown_base = shown[: len(shown) - len(url) + query_at]
    own: dict[str, str] = {}
    kept: list[str] = []
    shown_tokens: list[str] = []
    libpq: set[str] = set()
    for token in query.split("&") if query else []:
        raw_name, sep, raw_value = token.partition("=")
        name = unquote(raw_name)
        if name in OWN_PARAMETERS:
            own[name] = unquote(raw_value)
            shown_tokens.append(token)
            continue
        kept.append(token)
        libpq.add(name)
        if name == "password" and raw_value:
            secrets.append(raw_value)
            shown_tokens.append(f"{raw_name}{sep}{MASK}")
        else:
            shown_tokens.append(token)
    conninfo = f"{base}?{'&'.join(kept)}" if kept else base
    return StoreUrl(
        conninfo,
        f"{shown_base}?{'&'.join(shown_tokens)}",
        own,
        frozenset(libpq),
        _forms(secrets),
    )


def mask_url(url: str) -> str:
    """``url`` as a message may show it, whatever its scheme or shape: the password of its user
    information and any ``password=`` parameter masked."""
    span = _password_span(url)
    if span is not None:
        url = url[: span[0]] + MASK + url[span[1] :]
    return _PASSWORD_PARAMETER.sub(lambda m: m[0][: m.start("password") - m.start()] + MASK, url)


def _forms(secrets: list[str]) -> tuple[str, ...]:
    """Each secret as written and decoded, longest first (so no form is masked only in part)."""
    forms = {s for secret in secrets if secret for s in (secret, unquote(secret))}
    return tuple(sorted(forms, key=len, reverse=True))
