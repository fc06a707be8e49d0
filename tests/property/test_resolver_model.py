"""The resolver against a naive model: random publishes, retirements, installs and pin moves.

Each example runs a list of operations on one runtime over the in-memory store. A model computed
from scratch (plain dictionaries and ``semver`` comparisons, no packrun code) predicts which
operations are accepted (the publish rules of DESIGN §2 and §4) and what every installation
resolves to (the pins of §1, §2 and §5); after every step the runtime must agree with it: its
catalog, its settings, its installations, their history and ``resolve``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import anyio
import semver
from hypothesis import given, settings
from hypothesis import strategies as st

import packrun
from packrun import PackrunError, Runtime
from packrun._bundle import bundle_bytes

Channel: TypeAlias = Literal["vendor", "custom"]

VERSIONS = (
    "0.1.0",
    "0.1.1",
    "0.2.0",
    "1.0.0",
    "1.0.1",
    "1.1.0-rc.1",
    "1.1.0",
    "1.1.0+build.7",
    "1.2.0-beta.1",
    "1.2.0",
    "2.0.0-rc.1",
    "2.0.0",
    "2.0.1",
)
PINS = (
    "latest",
    "latest-vendor",
    "latest-custom",
    *VERSIONS,
    "1.0.0+other.build",  # build metadata in a pin: the same version as 1.0.0
    "3.0.0",  # never published
)
INSTALLATION_IDS = ("i1", "i2", "i3")
VARIANTS = 2  # two builds of every version with different code, hence different digests

CODE = b"""\
from packrun.sdk import Integration

integration = Integration("acme")


@integration.tool("t")
def t(ctx, input):
    return {}
"""


@functools.cache
def bundle(version: str, variant: int) -> bytes:
    """A minimal acme bundle of ``version``; ``variant`` changes the code, hence the digest."""
    manifest = packrun.decode_manifest(
        {"id": "acme", "version": version, "contract": 2, "tools": [{"id": "t"}]}
    )
    return bundle_bytes(manifest, {"__init__.py": CODE + f"# variant {variant}\n".encode()})


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- the model ----------------------------------------------------------------------------------


def parse(version: str) -> semver.Version:
    return semver.Version.parse(version)


def key(version: str) -> str:
    """The version without build metadata: versions equal in precedence share it."""
    return version.split("+", 1)[0]


def line(version: str) -> tuple[int, ...]:
    """The release line of the publish rule: the major, or ``0.minor`` below 1.0.0."""
    v = parse(version)
    return (v.major,) if v.major else (0, v.minor)


@dataclass
class Row:
    version: str
    channel: Channel
    digest: str
    state: Literal["live", "retired"] = "live"


def _precedence(a: Row, b: Row) -> int:
    return parse(a.version).compare(b.version)


@dataclass
class Inst:
    pin: str
    allow_prerelease: bool
    events: int = 1


@dataclass
class Model:
    rows: dict[str, Row] = field(default_factory=dict)  # by key
    immutable: bool = True
    installations: dict[str, Inst] = field(default_factory=dict)

    def ascending(self) -> list[Row]:
        return sorted(self.rows.values(), key=functools.cmp_to_key(_precedence))

    def pick(self, pin: str, allow_prerelease: bool) -> Row | None:
        """What ``pin`` selects now, from scratch."""
        if pin not in ("latest", "latest-vendor", "latest-custom"):
            return self.rows.get(key(pin))
        eligible = [
            r
            for r in self.ascending()
            if r.state == "live" and (allow_prerelease or parse(r.version).prerelease is None)
        ]
        vendor = [r for r in eligible if r.channel == "vendor"]
        custom = [r for r in eligible if r.channel == "custom"]
        chosen = {"latest-vendor": vendor, "latest-custom": custom, "latest": custom or vendor}
        rows = chosen[pin]
        return rows[-1] if rows else None

    def publish_errors(self, version: str, force: bool, channel: Channel = "vendor") -> set[str]:
        same = self.rows.get(key(version))
        if same is not None:
            # One version number per pack whatever the channel: force never moves it across.
            if same.channel != channel or self.immutable or not force:
                return {"version_exists"}
            return set()
        highest = [
            r.version for r in self.rows.values() if line(r.version) == line(version)
        ]  # retired rows count too
        if any(parse(version).compare(h) < 0 for h in highest):
            return {"downgrade_not_allowed"}
        return set()


# --- operations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Publish:
    version: str
    channel: Channel
    variant: int
    force: bool


@dataclass(frozen=True)
class Retire:
    version: str


@dataclass(frozen=True)
class Install:
    iid: str
    pin: str | None
    allow_prerelease: bool


@dataclass(frozen=True)
class SetPin:
    iid: str
    pin: str


@dataclass(frozen=True)
class SetImmutable:
    on: bool


Op: TypeAlias = Publish | Retire | Install | SetPin | SetImmutable

versions = st.sampled_from(VERSIONS)
pins = st.sampled_from(PINS)
iids = st.sampled_from(INSTALLATION_IDS)
publishes = st.builds(
    Publish,
    versions,
    st.sampled_from(("vendor", "custom")),
    st.integers(0, VARIANTS - 1),
    st.booleans(),
)
operations: st.SearchStrategy[Op] = st.one_of(
    publishes,
    st.builds(Publish, versions, st.just("vendor"), st.just(0), st.just(False)),
    st.builds(Retire, versions),
    st.builds(Install, iids, st.one_of(st.none(), pins), st.booleans()),
    st.builds(Install, iids, st.none(), st.booleans()),
    st.builds(SetPin, iids, pins),
    st.builds(SetPin, iids, st.sampled_from(("latest", "latest-vendor", "latest-custom"))),
    st.builds(SetImmutable, st.booleans()),
)


async def code_of(call: Awaitable[object]) -> str | None:
    """The error code ``call`` raised, or ``None`` when it was accepted."""
    try:
        await call
    except PackrunError as exc:
        return exc.code
    return None


def sync_code_of(call: Callable[[], object]) -> str | None:
    """The error code ``call()`` raised, or ``None`` when it answered."""
    try:
        call()
    except PackrunError as exc:
        return exc.code
    return None


def stored_pin(pin: str) -> str:
    """A pin as stored: a dynamic pin as is, an exact one without build metadata."""
    return pin if pin in ("latest", "latest-vendor", "latest-custom") else key(pin)


async def apply(rt: Runtime, model: Model, op: Op) -> None:
    """Run ``op`` on the runtime and on the model; they must agree on whether it is accepted."""
    if isinstance(op, Publish):
        expected = model.publish_errors(op.version, op.force, op.channel)
        data = bundle(op.version, op.variant)
        code = await code_of(rt.publish(data, channel=op.channel, force=op.force))
        if expected:
            assert code in expected, (op, code)
            return
        assert code is None, (op, code)
        replaced = model.rows.get(key(op.version))
        model.rows[key(op.version)] = Row(op.version, op.channel, digest(data))
        if replaced is not None:  # an overwrite keeps the row's state
            model.rows[key(op.version)].state = replaced.state
    elif isinstance(op, Retire):
        row = model.rows.get(key(op.version))
        code = await code_of(rt.retire("acme", op.version, acknowledge_breaking=True))
        if row is None:
            assert code == "not_found", (op, code)
            return
        assert code is None, (op, code)
        row.state = "retired"
    elif isinstance(op, Install):
        expected = set()
        target = model.pick(op.pin or "latest", op.allow_prerelease)
        if target is None:
            expected.add("not_found")
        if op.iid in model.installations:
            expected.add("installation_exists")
        code = await code_of(
            rt.install(op.iid, "acme", pin=op.pin, allow_prerelease=op.allow_prerelease)
        )
        if expected:
            assert code in expected, (op, code)
            return
        assert code is None, (op, code)
        assert target is not None
        pin = stored_pin(op.pin if op.pin is not None else target.version)
        assert rt.installation(op.iid).pin == pin, (op, rt.installation(op.iid))
        model.installations[op.iid] = Inst(pin, op.allow_prerelease)
    elif isinstance(op, SetPin):
        current = model.installations.get(op.iid)
        target = model.pick(op.pin, current.allow_prerelease) if current else None
        before = model.pick(current.pin, current.allow_prerelease) if current else None
        code = await code_of(rt.set_pin(op.iid, op.pin, actor="prop"))
        if current is None or target is None:
            assert code == "not_found", (op, code)
            return
        assert code is None, (op, code)
        event = rt.history(op.iid)[-1]
        assert (event.origin, event.actor) == ("user", "prop")
        assert (event.from_pin, event.to_pin) == (current.pin, stored_pin(op.pin))
        assert event.from_version == (before.version if before else None)
        assert event.to_version == target.version
        current.pin = stored_pin(op.pin)
        current.events += 1
    else:
        await rt.set_immutable_versions(op.on)
        model.immutable = op.on


def check(rt: Runtime, model: Model) -> None:
    """Everything the runtime says equals what the model computes from scratch."""
    rows = [(r.version, r.channel, r.digest, r.state) for r in model.ascending()]
    if rows:
        listed = [(str(e.version), e.channel, e.digest, e.state) for e in rt.versions("acme")]
        assert listed == rows
    else:
        assert sync_code_of(functools.partial(rt.versions, "acme")) == "not_found"
    assert rt.settings.immutable_versions is model.immutable
    assert [(i.id, i.pin, i.allow_prerelease) for i in rt.installations()] == [
        (iid, inst.pin, inst.allow_prerelease) for iid, inst in sorted(model.installations.items())
    ]
    for iid, inst in model.installations.items():
        assert len(rt.history(iid)) == inst.events
        want = model.pick(inst.pin, inst.allow_prerelease)
        explanation = rt.explain(iid)
        if want is None:
            assert sync_code_of(functools.partial(rt.resolve, iid)) == "not_found", (iid, inst)
            assert explanation.resolution is None
            continue
        got = rt.resolve(iid)
        assert (got.version, got.channel, got.contract, got.digest, got.pin) == (
            want.version,
            want.channel,
            2,
            want.digest,
            inst.pin,
        ), (iid, inst)
        assert explanation.resolution == got


async def run(ops: list[Op]) -> None:
    model = Model()
    async with packrun.open_runtime("memory:") as rt:
        check(rt, model)
        for op in ops:
            await apply(rt, model, op)
            check(rt, model)


@settings(max_examples=60, deadline=None)
@given(st.lists(publishes, min_size=1, max_size=6), st.lists(operations, max_size=30))
def test_the_resolver_agrees_with_a_naive_model(first: list[Publish], then: list[Op]) -> None:
    anyio.run(run, [*first, *then])


def test_the_model_reads_the_samples_as_the_design_says() -> None:
    """The model itself, on a fixed history: latest prefers custom; build metadata is one key."""
    model = Model()
    model.rows["1.1.0"] = Row("1.1.0+build.7", "vendor", "d1")
    model.rows["2.0.0"] = Row("2.0.0", "vendor", "d2")
    model.rows["1.2.0-beta.1"] = Row("1.2.0-beta.1", "custom", "d3")
    assert model.pick("latest", False) is model.rows["2.0.0"]
    assert model.pick("latest", True) is model.rows["1.2.0-beta.1"]
    assert model.pick("latest-custom", False) is None
    assert model.pick("1.1.0", False) is model.rows["1.1.0"]
    assert model.publish_errors("1.1.0", force=True) == {"version_exists"}
    model.immutable = False
    assert model.publish_errors("1.1.0", force=True) == set()
    assert model.publish_errors("1.1.0", force=True, channel="custom") == {"version_exists"}
    model.immutable = True
    assert model.publish_errors("1.0.9", force=False) == {"downgrade_not_allowed"}
    assert model.publish_errors("1.3.0", force=False) == set()
