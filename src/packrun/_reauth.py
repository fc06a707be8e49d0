"""Re-authentication: when a version's auth asks more of a linked account than the one before.

A move between two versions whose diff changes the auth mode, adds a required scope or a required
credential field (or makes one required) leaves the installation *needing re-authentication*: the
credentials the executor holds for it were made for the old auth. A run whose :class:`Auth` does
not satisfy the auth of the version it binds to is refused ``needs_reauth`` before any bundle code
runs, naming what is missing (never a credential's value).
"""

from __future__ import annotations

from typing import Final

from packrun._auth import Auth
from packrun._diff import DiffReport
from packrun._manifest import AuthSpec

__all__ = ["REAUTH_RULES", "missing_auth", "reauth_reasons"]

REAUTH_RULES: Final[frozenset[str]] = frozenset(
    {
        "auth.mode_changed",
        "auth.scope_added",
        "auth.required_credential_added",
        "auth.credential_became_required",
    }
)
"""The diff rules whose findings mean a linked account must re-authenticate."""


def reauth_reasons(report: DiffReport) -> tuple[str, ...]:
    """What a move along ``report`` asks of the linked account: one line per finding of a
    :data:`REAUTH_RULES` rule (whatever level a profile gave it); empty when nothing."""
    return tuple(f.message for f in report.findings if f.rule_id in REAUTH_RULES)


def missing_auth(spec: AuthSpec, auth: Auth) -> tuple[str, ...]:
    """What ``auth`` lacks to satisfy ``spec``: the mode, required credential fields, scopes.

    An integration whose auth mode is ``none`` is satisfied by any credentials.
    """
    if spec.mode == "none":
        return ()
    if auth.mode != spec.mode:
        return (f"auth mode {spec.mode} (the run has {auth.mode})",)
    missing = [
        f"credential field {c.name!r}"
        for c in spec.credential_fields
        if c.required and not auth.credentials.get(c.name)
    ]
    missing += [f"scope {s!r}" for s in spec.scopes if s not in auth.scopes]
    return tuple(missing)
