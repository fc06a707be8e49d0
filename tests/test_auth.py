"""Auth: typed credentials that never show in reprs, and refuse a mode without its credentials."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

import packrun
from packrun import Auth


def test_headers__per_mode() -> None:
    assert Auth.none().headers() == {}
    assert Auth.api_key("k").headers() == {"X-API-Key": "k"}
    assert Auth.api_key("k", header="Authorization").headers() == {"Authorization": "k"}
    assert Auth.oauth2("t").headers() == {"Authorization": "Bearer t"}
    expected = "Basic " + base64.b64encode(b"u:p").decode()
    assert Auth.basic("u", "p").headers() == {"Authorization": expected}


@pytest.mark.parametrize(
    "auth",
    [Auth.api_key("s3cr3t-k"), Auth.oauth2("s3cr3t-t", scopes=["a"]), Auth.basic("u", "s3cr3t-p")],
    ids=lambda a: a.mode,
)
def test_repr_and_str__never_show_a_credential(auth: Auth) -> None:
    for text in (repr(auth), str(auth), f"{auth}", repr([auth])):
        assert "s3cr3t" not in text
        assert "redacted" in text


def test_credentials__are_read_only_and_scopes_a_tuple() -> None:
    auth = Auth.oauth2("t", scopes=["contacts.read"])
    assert auth.scopes == ("contacts.read",)
    with pytest.raises(TypeError):
        auth.credentials["access_token"] = "other"  # type: ignore[index]


@pytest.mark.parametrize(
    ("mode", "credentials", "message"),
    [
        ("bogus", {}, "'bogus' is not a valid auth mode: expected one of none, api_key"),
        ("api_key", {}, "expected the credentials key \\(missing: key\\)"),
        ("basic", {"username": "u"}, "username, password \\(missing: password\\)"),
        ("oauth2", {"access_token": 42}, "<int, withheld> is not a valid credential access_token"),
    ],
)
def test_construction__refuses_a_mode_without_its_credentials(
    mode: str, credentials: dict[str, object], message: str
) -> None:
    with pytest.raises(packrun.InvalidArgument, match=message):
        Auth(mode, credentials)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [
        lambda: Auth.api_key(b"s3cret-key-bytes"),  # type: ignore[arg-type]
        lambda: Auth.basic("ops", ["s3cret-key-bytes"]),  # type: ignore[arg-type]
        lambda: Auth.oauth2("s3cret-key-bytes" * 5000),
        lambda: Auth("api_key", {"key": "s3cret-key-bytes", 7: "x"}),  # type: ignore[dict-item]
        lambda: Auth("basic", {"username": "s3cret-key-bytes"}),
    ],
)
def test_a_refused_credential__is_invalid_argument_without_its_value(
    build: Callable[[], Auth],
) -> None:
    with pytest.raises(packrun.InvalidArgument) as refused:
        build()
    for text in (str(refused.value), repr(refused.value), repr(refused.value.given)):
        assert "s3cret" not in text
    assert "withheld" in str(refused.value)
