"""Store URLs in messages: whatever a URL's scheme or shape, its password never shows — through
``open_runtime`` (the error's message, ``str()`` and ``repr()``) and through the CLI's ``--store``
(its text and ``--json`` output)."""

from __future__ import annotations

import io
import socket

import pytest

import packrun
from packrun._cli import main
from packrun._stores._pg_url import mask_url

SECRET = "Zq7xK9pw"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


PORT = _free_port()

# (url, the secret text that must never show): URLs packrun refuses, whatever their shape ...
REFUSED = [
    f"postgres+psycopg://ops:{SECRET}@db/fleet",
    f"postgresql+psycopg2://ops:{SECRET}@db/fleet",
    f"pg://ops:{SECRET}@db/fleet",
    f"postgresql:/ops:{SECRET}@db/fleet",
    f"postgresql//ops:{SECRET}@db/fleet",
    f"postgresql:ops:{SECRET}@db/fleet",
    f"mysql://ops:{SECRET}@db/fleet",
    f"pg://ops:{SECRET[:4]}@{SECRET[4:]}@db/fleet",  # a raw "@" in the password
    f"pg://ops:{SECRET}/x@db/fleet",  # a raw "/" in the password
    f"pg://:{SECRET}@db/fleet",
    f"pg:{SECRET}@db",
    f"ops:{SECRET}@db/fleet",
    f"//ops:{SECRET}@db/fleet",
    f"pg://ops@db/fleet?password={SECRET}",
    f"pg://ops@db/fleet?sslmode=off&PASSWORD={SECRET}&x=1",
    f"host=db user=ops password={SECRET}",
    f"host=db password = '{SECRET[:4]} {SECRET[4:]}' user=ops",
    f"sqlite://ops:{SECRET}@/tmp/state.db",
    f"sqlite:///tmp/state.db?password={SECRET}",
    f"postgres+psycopg://ops:{SECRET}@db/fleet?" + "x" * 5000,
    f"postgresql://ops:{SECRET}@db/fleet\x00",
    "sqlite:///tmp/state\x00.db",  # a NUL byte: a store_error, not a ValueError
]
# ... and URLs it accepts (the server is not there, so the open fails with libpq's reason).
ACCEPTED = [
    f"postgresql://ops:{SECRET}@127.0.0.1:{PORT}/fleet",
    f"postgres://ops:{SECRET}@127.0.0.1:{PORT}/fleet?schema=a",
    f"postgresql://ops@127.0.0.1:{PORT}/fleet?password={SECRET}",
    f"postgresql://ops:{SECRET[:4]}@{SECRET[4:]}@127.0.0.1:{PORT}/fleet",
    f"postgresql://ops:{SECRET[:4]}%40{SECRET[4:]}@127.0.0.1:{PORT}/fleet",
]


def _hidden(text: str) -> bool:
    """No form of the secret appears: whole, its halves (split by a raw "@" or a space)."""
    return all(part not in text for part in (SECRET, SECRET[:4], SECRET[4:]))


@pytest.mark.parametrize("url", REFUSED)
def test_a_refused_url__is_a_store_error_without_its_password(url: str) -> None:
    with pytest.raises(packrun.StoreError) as refused:
        packrun.open_runtime(url)
    assert refused.value.code == "store_error"
    assert "cannot open store" in str(refused.value)
    for text in (str(refused.value), repr(refused.value), refused.value.detail):
        assert _hidden(text), text


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("url", ACCEPTED)
async def test_an_unreachable_postgres_url__fails_without_its_password(url: str) -> None:
    rt = packrun.open_runtime(url)
    assert _hidden(rt.url)
    with pytest.raises(packrun.StoreError) as refused:
        async with rt:
            pass
    for text in (str(refused.value), repr(refused.value)):
        assert _hidden(text), text


@pytest.mark.parametrize("json_output", [False, True])
@pytest.mark.parametrize("url", REFUSED + ACCEPTED[:2])
def test_the_cli_store_option__never_prints_the_password(url: str, json_output: bool) -> None:
    out, err = io.StringIO(), io.StringIO()
    argv = ["resolve", "acme-prod", "--store", url] + (["--json"] if json_output else [])
    code = main(argv, stdout=out, stderr=err)
    assert code == 2
    printed = out.getvalue() + err.getvalue()
    assert "store_error" in printed
    assert _hidden(printed), printed


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("pg://ops:pw@db/x", "pg://ops:***@db/x"),
        ("postgresql:/ops:pw@db/x", "postgresql:/ops:***@db/x"),
        ("postgresql//ops:pw@db/x", "postgresql//ops:***@db/x"),
        ("pg://ops:p@w@db/x", "pg://ops:***@db/x"),
        ("pg://ops@db/x", "pg://ops@db/x"),  # a user name alone is not a secret
        ("pg:pw@db", "pg:***@db"),
        ("pg://db/x?password=pw&schema=a", "pg://db/x?password=***&schema=a"),
        ("host=db password='p w' user=ops", "host=db password=*** user=ops"),
        ("memory:", "memory:"),
        ("sqlite:///tmp/state.db", "sqlite:///tmp/state.db"),
    ],
)
def test_mask_url__keeps_the_shape_and_masks_only_the_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown
