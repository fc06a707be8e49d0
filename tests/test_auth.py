"""Auth: typed credentials that never show in reprs, and refuse a mode without its credentials."""

from __future__ import annotations

import base64

import pytest

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
        ("bogus", {}, "is not one of"),
        ("api_key", {}, "needs the credentials key"),
        ("basic", {"username": "u"}, "needs the credentials password"),
        ("oauth2", {"access_token": 42}, "needs the credentials access_token"),
    ],
)
def test_construction__refuses_a_mode_without_its_credentials(
    mode: str, credentials: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Auth(mode, credentials)  # type: ignore[arg-type]
