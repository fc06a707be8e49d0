"""Credentials stay secret (DESIGN.md section 7), tested as an attacker would.

Every row of ``WAYS`` is a tool, in a bundle built here, that tries one way of getting the run's
credential out: into the error the executor catches (its message, arguments, attributes, notes,
the exceptions chained to it, a traceback) or into a log record (message, arguments, ``extra``
fields, ``exc_info``, the logger under ``ctx.logger``). For each, the credential must not show in
any of its forms: as is, URL-encoded, as the base64 of ``user:password`` in a basic-auth header, or
as the repr of its bytes.
"""

from __future__ import annotations

import base64
import logging
import traceback
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote, quote_plus

import pytest

import packrun
from packrun import Runtime, ToolFailed
from packrun._bundle import bundle_bytes

pytestmark = pytest.mark.anyio

USER = "ops-account"
SECRET = "s3cr3t/Zq9+v7Kx=w"  # characters that URL-encoding and base64 change

WAYS: dict[str, str] = {
    # The tool's own message, code or log line.
    "tool_error_message": """
    raise ToolError("refused", "key " + KEY(ctx) + " refused")""",
    "tool_error_code": """
    raise ToolError("bad-" + KEY(ctx))""",
    "raw_exception_message": """
    raise ValueError("auth was " + KEY(ctx))""",
    "credentials_repr": """
    raise ValueError(repr(dict(ctx.auth.credentials)))""",
    "authorization_header": """
    raise ToolError("refused", "sent " + str(ctx.auth.headers()))""",
    "log_argument": """
    ctx.logger.warning("calling with %s", KEY(ctx))
    return {}""",
    "log_message": """
    ctx.logger.warning("calling with " + KEY(ctx))
    return {}""",
    "sync_tool_exception": """
    raise RuntimeError(KEY(ctx))""",
    # Everything else an exception or a log record carries.
    "chained_cause": """
    try:
        raise ValueError("inner " + KEY(ctx))
    except ValueError as inner:
        raise ToolError("outer", "failed") from inner""",
    "implicit_context": """
    try:
        raise ValueError("inner " + KEY(ctx))
    except ValueError:
        raise RuntimeError("outer failed")""",
    "log_exc_info": """
    try:
        raise ValueError("inner " + KEY(ctx))
    except ValueError:
        ctx.logger.warning("it failed", exc_info=True)
    return {}""",
    "log_exception": """
    try:
        raise ValueError("inner " + KEY(ctx))
    except ValueError:
        ctx.logger.exception("it failed")
    return {}""",
    "url_encoded": """
    raise ValueError("GET https://api.example/v1?key=" + quote(KEY(ctx), safe=""))""",
    "url_encoded_plus": """
    raise ToolError("refused", "q=" + quote_plus(KEY(ctx)))""",
    "oserror_filename": """
    raise OSError(errno.ENOENT, "No such file", "/var/cache/" + KEY(ctx))""",
    "note": """
    error = ValueError("failed")
    error.add_note("with " + KEY(ctx))
    raise error""",
    "bytes_argument": """
    raise ValueError(KEY(ctx).encode())""",
    "log_extra": """
    ctx.logger.warning("calling", extra={"token": KEY(ctx), "headers": ctx.auth.headers()})
    return {}""",
    "underlying_logger": """
    logging.getLogger("packrun.tools.leaky").warning("direct " + KEY(ctx))
    ctx.logger.logger.warning("adapter's logger %s", KEY(ctx).encode())
    return {}""",
    "tool_error_context": """
    raise ToolError(KEY(ctx))""",
    "attribute": """
    raise Custom(KEY(ctx))""",
    "exception_group": """
    raise ExceptionGroup("many", [ValueError(KEY(ctx)), KeyError(KEY(ctx))])""",
    "own_str": """
    raise Sneaky(KEY(ctx))""",
    "keyboard_interrupt": """
    raise KeyboardInterrupt(KEY(ctx))""",
    "log_bad_format": """
    ctx.logger.warning("%d items", KEY(ctx))
    return {}""",
}

HEADER = """\
import errno
import logging
from urllib.parse import quote, quote_plus

from packrun.sdk import Integration, ToolError

integration = Integration("leaky")


def KEY(ctx):
    creds = ctx.auth.credentials
    return creds.get("key") or creds.get("access_token") or creds.get("password")


class Custom(Exception):
    def __init__(self, key):
        super().__init__("custom failure")
        self.key = key
        self.pair = ("user", key)


class Sneaky(Exception):
    def __init__(self, key):
        super().__init__("sneaky failure")
        self._hidden = [key]

    def __str__(self):
        return "sneaky " + self._hidden[0][::-1][::-1]

    def __setattr__(self, name, value):
        if name != "_hidden" or not hasattr(self, "_hidden"):
            object.__setattr__(self, name, value)
"""


def leaky_bundle() -> bytes:
    code = [HEADER]
    for way, body in WAYS.items():
        sync = way.startswith("sync_")
        code.append(
            f"\n@integration.tool({way!r})\n{'def' if sync else 'async def'} {way}(ctx, input):"
            f"{body}\n"
        )
    manifest = packrun.decode_manifest(
        {"id": "leaky", "version": "1.0.0", "contract": 2, "tools": [{"id": w} for w in WAYS]}
    )
    return bundle_bytes(manifest, {"__init__.py": "".join(code).encode()})


AUTHS = {
    "api_key": packrun.Auth.api_key(SECRET),
    "oauth2": packrun.Auth.oauth2(SECRET, scopes=("contacts.read",)),
    "basic": packrun.Auth.basic(USER, SECRET),
}


def forms() -> list[str]:
    """The forms of the secret that must never show."""
    pair = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
    return [SECRET, quote(SECRET, safe=""), quote(SECRET), quote_plus(SECRET), pair, quote(pair)]


def chain(exc: BaseException) -> Iterator[BaseException]:
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        todo.extend(getattr(current, "exceptions", ()))


def exception_texts(exc: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(exc))]
    for current in chain(exc):
        texts += [str(current), repr(current), repr(current.args)]
        texts += [repr(getattr(current, "__notes__", None)), repr(vars(current))]
        for name in ("filename", "filename2", "strerror"):
            texts.append(repr(getattr(current, name, None)))
    return texts


def record_texts(record: logging.LogRecord) -> list[str]:
    formatter = logging.Formatter("%(message)s")
    return [
        record.getMessage(),
        repr(record.args),
        repr(record.exc_text),
        formatter.format(record),
        repr(vars(record)),  # extra fields and exc_info included
    ]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _opened(in_process: frozenset[str]) -> AsyncIterator[Runtime]:
    async with packrun.open_runtime("memory:", in_process=in_process) as runtime:
        await runtime.publish(leaky_bundle())
        await runtime.install("leak", "leaky")
        yield runtime


@pytest.fixture(params=["in_process", "sandbox"])
async def rt(request: pytest.FixtureRequest) -> AsyncIterator[Runtime]:
    """The tables hold both where the code runs in the executor and in sandbox workers."""
    trusted = frozenset({"vendor", "custom"}) if request.param == "in_process" else frozenset()
    async for runtime in _opened(trusted):
        yield runtime


@pytest.fixture
async def local_rt() -> AsyncIterator[Runtime]:
    """In-process: the tool's own exception objects reach the executor (redacted)."""
    async for runtime in _opened(frozenset({"vendor", "custom"})):
        yield runtime


@pytest.mark.parametrize("mode", sorted(AUTHS))
@pytest.mark.parametrize("way", sorted(WAYS))
async def test_a_tool_cannot_get_the_credential_out_through(
    rt: Runtime, caplog: pytest.LogCaptureFixture, way: str, mode: str
) -> None:
    caplog.set_level(logging.DEBUG)
    raised: BaseException | None = None
    try:
        await rt.call("leak", way, auth=AUTHS[mode])
    except BaseException as exc:  # whatever the executor would catch
        raised = exc
    texts: list[str] = []
    if raised is not None:
        assert isinstance(raised, Exception), repr(raised)  # never a raw BaseException
        texts += exception_texts(raised)
    for record in caplog.records:
        texts += record_texts(record)
    assert raised is not None or caplog.records, "the tool neither raised nor logged"
    shown = "\n".join(texts)
    for form in forms():
        assert form not in shown, (way, mode, form)
    if way == "log_extra" and not rt.in_process:
        # Only a record's text crosses from a sandbox worker: its extra fields stay there.
        assert not any(hasattr(r, "token") for r in caplog.records)
        return
    assert "<redacted>" in shown or isinstance(raised, ToolFailed | packrun.SandboxError), shown


async def test_tool_failed_keeps_no_unredacted_tool_error_behind_it(local_rt: Runtime) -> None:
    with pytest.raises(ToolFailed) as failed:
        await local_rt.call("leak", "tool_error_context", auth=AUTHS["api_key"])
    error = failed.value
    assert error.tool_code == "<redacted>"
    assert error.__context__ is None or SECRET not in repr(vars(error.__context__))
    cause = error.__cause__
    assert cause is not None
    assert SECRET not in str(cause)
    assert "<redacted>" in str(cause)


async def test_an_exception_that_shows_the_credential_in_its_own_str_is_withheld(
    local_rt: Runtime,
) -> None:
    with pytest.raises(ToolFailed) as failed:
        await local_rt.call("leak", "own_str", auth=AUTHS["api_key"])
    error = failed.value
    assert error.tool_code == "crashed"
    assert "Sneaky" in str(error)
    assert "withheld" in str(error)
    assert error.__cause__ is None
    assert error.__context__ is None


async def test_other_exceptions_keep_their_type_with_the_credential_removed(
    local_rt: Runtime,
) -> None:
    with pytest.raises(OSError, match="No such file") as failed:
        await local_rt.call("leak", "oserror_filename", auth=AUTHS["basic"])
    assert failed.value.filename == "/var/cache/<redacted>"
    with pytest.raises(ValueError, match="failed") as noted:
        await local_rt.call("leak", "note", auth=AUTHS["basic"])
    assert noted.value.__notes__ == ["with <redacted>"]
    with pytest.raises(ValueError, match="redacted") as raw:
        await local_rt.call("leak", "bytes_argument", auth=AUTHS["basic"])
    assert raw.value.args == (b"<redacted>",)


async def test_a_short_user_name_is_redacted_as_a_whole_word_only(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="packrun.tools.leaky")
    await rt.call("leak", "log_argument", auth=packrun.Auth.basic("ops", SECRET))
    assert caplog.records[0].getMessage() == "calling with <redacted>"
    shown = "{'username': '<redacted>', 'password': '<redacted>'}"
    if not rt.in_process:  # from a sandbox worker, the exception comes back as its text
        with pytest.raises(ToolFailed, match="username") as crossed:
            await rt.call("leak", "credentials_repr", auth=packrun.Auth.basic("ops", SECRET))
        assert crossed.value.tool_message == f"ValueError: {shown}"
        return
    with pytest.raises(ValueError, match="username") as failed:
        await rt.call("leak", "credentials_repr", auth=packrun.Auth.basic("ops", SECRET))
    assert str(failed.value) == shown


async def test_records_on_the_pack_logger_from_outside_a_run_are_left_alone(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="packrun.tools.leaky")
    await rt.call("leak", "log_argument", auth=AUTHS["api_key"])  # watched while it ran
    logging.getLogger("packrun.tools.leaky").info("after the run: %s", SECRET)
    assert caplog.records[-1].getMessage() == f"after the run: {SECRET}"


GEN1_CODE = """\
import logging
from urllib.parse import quote


def handle(action, params, auth):
    secret = auth.get("password") or auth.get("key") or auth.get("access_token")
    if action == "error_answer":
        return {"error": {"code": "bad-" + secret, "message": "sent " + quote(secret, safe="")}}
    if action == "auth_in_exception":
        try:
            raise KeyError(secret)
        except KeyError as inner:
            raise ValueError(auth) from inner
    if action == "answer_keys":
        return {secret: 1}
    logging.getLogger("packrun.tools.old-leaky").warning("auth %r", auth)
    return {"data": None}
"""

GEN1_WAYS = ("answer_keys", "auth_in_exception", "error_answer", "log_auth")


@pytest.mark.parametrize("mode", sorted(AUTHS))
@pytest.mark.parametrize("way", GEN1_WAYS)
async def test_a_generation_1_bundle_cannot_get_the_credential_out_through(
    rt: Runtime, caplog: pytest.LogCaptureFixture, way: str, mode: str
) -> None:
    manifest = packrun.decode_manifest(
        {
            "id": "old-leaky",
            "version": "1.0.0",
            "contract": 1,
            "tools": [{"id": w} for w in GEN1_WAYS],
        }
    )
    await rt.publish(bundle_bytes(manifest, {"__init__.py": GEN1_CODE.encode()}))
    await rt.install("old", "old-leaky")
    caplog.set_level(logging.DEBUG)
    raised: BaseException | None = None
    try:
        await rt.call("old", way, auth=AUTHS[mode])
    except Exception as exc:
        raised = exc
    texts = [] if raised is None else exception_texts(raised)
    for record in caplog.records:
        texts += record_texts(record)
    assert raised is not None or caplog.records
    shown = "\n".join(texts)
    for form in forms():
        assert form not in shown, (way, mode, form)


@pytest.mark.parametrize(
    "auth",
    ["Bearer sk-live-4f9a2c7e", {"key": "sk-live-4f9a2c7e"}, ("u", "sk-live-4f9a2c7e")],
    ids=["header text", "dict", "tuple"],
)
def test_a_credential_passed_as_auth_without_an_auth_is_never_shown(auth: object) -> None:
    rt = packrun.open_runtime("memory:")
    with pytest.raises(packrun.InvalidArgument) as caught:
        rt.run("leak", auth=auth)  # type: ignore[arg-type]
    assert "auth" in str(caught.value)
    assert "withheld" in str(caught.value)
    assert "sk-live" not in str(caught.value)
    assert "sk-live" not in repr(caught.value.given)
