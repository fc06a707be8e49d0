"""The resolver against a naive model: random publishes, retirements, installs and pin moves.

Each example runs a list of operations on one runtime. A model computed from scratch (plain
dictionaries and ``semver`` comparisons, no packrun code) predicts which operations are accepted
(the publish rules per stream) and what every installation resolves to (the pins, and the
exact-pin rule of projects); after every step the runtime must agree with it: its catalog, its
settings, its installations, their history and ``resolve``.

With projects, every answer for an installation (resolve, explain, review, versions, history,
errors) must involve only the vendor rows and its own project's rows: each project's custom
builds have digests of their own, so a row that crossed over would show.
"""

from __future__ import annotations

import functools
import hashlib
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

import anyio
import pytest
import semver
from hypothesis import HealthCheck, given, settings
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
POSTGRES = os.environ.get("PACKRUN_TEST_POSTGRES", "")
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
    project: str = "default"
    events: int = 1


DYNAMIC = ("latest", "latest-vendor", "latest-custom")


@dataclass
class Model:
    """Vendor rows are global; custom rows, installations and settings belong to one project."""

    vendor: dict[str, Row] = field(default_factory=dict)  # by key
    custom: dict[str, dict[str, Row]] = field(default_factory=dict)  # by project, then key
    immutable: bool = True  # the store's: the vendor stream's, and every project's by default
    project_immutable: dict[str, bool] = field(default_factory=dict)
    installations: dict[str, Inst] = field(default_factory=dict)

    @property
    def rows(self) -> dict[str, Row]:
        """The rows project ``default`` sees, by key (its custom row first)."""
        return {**self.vendor, **self.custom.get("default", {})}

    def stream(self, channel: Channel, project: str) -> dict[str, Row]:
        return self.vendor if channel == "vendor" else self.custom.setdefault(project, {})

    def ascending(self, project: str = "default") -> list[Row]:
        """What ``project`` sees: the vendor rows and its own, a vendor row first on a tie."""
        rows = [*self.vendor.values(), *self.custom.get(project, {}).values()]
        return sorted(rows, key=functools.cmp_to_key(_precedence))

    def digests(self, project: str) -> set[str]:
        return {r.digest for r in self.ascending(project)}

    def exact(self, pin: str, project: str) -> Row | None:
        channel, sep, rest = pin.partition(":")
        if sep:
            return self.stream(channel, project).get(key(rest))  # type: ignore[arg-type]
        return self.custom.get(project, {}).get(key(pin)) or self.vendor.get(key(pin))

    def pick(self, pin: str, allow_prerelease: bool, project: str = "default") -> Row | None:
        """What ``pin`` selects now for an installation of ``project``, from scratch."""
        if pin not in DYNAMIC:
            return self.exact(pin, project)
        eligible = [
            r
            for r in self.ascending(project)
            if r.state == "live" and (allow_prerelease or parse(r.version).prerelease is None)
        ]
        mine = self.custom.get(project, {})
        vendor = [r for r in eligible if r.channel == "vendor"]
        custom = [r for r in eligible if r.channel == "custom" and mine.get(key(r.version)) is r]
        chosen = {"latest-vendor": vendor, "latest-custom": custom, "latest": custom or vendor}
        rows = chosen[pin]
        return rows[-1] if rows else None

    def immutable_for(self, channel: Channel, project: str) -> bool:
        if channel == "vendor":
            return self.immutable
        return self.project_immutable.get(project, self.immutable)

    def publish_errors(
        self, version: str, force: bool, channel: Channel = "vendor", project: str = "default"
    ) -> set[str]:
        stream = self.stream(channel, project)
        if key(version) in stream:
            if self.immutable_for(channel, project) or not force:
                return {"version_exists"}
            return set()
        highest = [
            r.version for r in stream.values() if line(r.version) == line(version)
        ]  # retired rows count too
        if any(parse(version).compare(h) < 0 for h in highest):
            return {"downgrade_not_allowed"}
        return set()

    def pin_for(self, row: Row, project: str) -> str:
        """The exact pin an install without a pin stores: the plain version, unless it would name
        the project's custom row instead of this vendor row."""
        if row.channel == "vendor" and key(row.version) in self.custom.get(project, {}):
            return f"vendor:{key(row.version)}"
        return key(row.version)


# --- operations ---------------------------------------------------------------------------------

PROJECTS = ("default", "p1", "p2")


@dataclass(frozen=True)
class Publish:
    version: str
    channel: Channel
    variant: int
    force: bool
    project: str = "default"


@dataclass(frozen=True)
class Retire:
    version: str
    project: str = "default"


@dataclass(frozen=True)
class Install:
    iid: str
    pin: str | None
    allow_prerelease: bool
    project: str = "default"


@dataclass(frozen=True)
class SetPin:
    iid: str
    pin: str
    project: str | None = None


@dataclass(frozen=True)
class SetImmutable:
    on: bool
    project: str | None = None


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

projects = st.sampled_from(PROJECTS)
project_pins = st.sampled_from(
    (*PINS, "vendor:1.0.0", "custom:1.0.0", "vendor:2.0.0", "custom:2.0.0", "custom:1.1.0")
)
project_publishes = st.builds(
    Publish,
    versions,
    st.sampled_from(("vendor", "custom", "custom")),
    st.integers(0, VARIANTS - 1),
    st.booleans(),
    projects,
)
project_operations: st.SearchStrategy[Op] = st.one_of(
    project_publishes,
    st.builds(Retire, versions, projects),
    st.builds(Install, iids, st.one_of(st.none(), project_pins), st.booleans(), projects),
    st.builds(SetPin, iids, project_pins, st.one_of(st.none(), projects)),
    st.builds(SetImmutable, st.booleans(), st.one_of(st.none(), projects)),
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
    if pin in DYNAMIC:
        return pin
    channel, sep, rest = pin.partition(":")
    return f"{channel}:{key(rest)}" if sep else key(pin)


def project_bundle(version: str, variant: int, channel: Channel, project: str) -> bytes:
    """A vendor bundle, or one of ``project``'s own: every project's build has its own digest,
    so a digest tells whose row an answer came from."""
    return bundle(
        version, variant if channel == "vendor" else variant + 10 * (1 + PROJECTS.index(project))
    )


async def apply(rt: Runtime, model: Model, op: Op) -> None:
    """Run ``op`` on the runtime and on the model; they must agree on whether it is accepted."""
    if isinstance(op, Publish):
        expected = model.publish_errors(op.version, op.force, op.channel, op.project)
        data = project_bundle(op.version, op.variant, op.channel, op.project)
        owner = op.project if op.channel == "custom" else None
        code = await code_of(rt.publish(data, channel=op.channel, force=op.force, project=owner))
        if expected:
            assert code in expected, (op, code)
            return
        assert code is None, (op, code)
        stream = model.stream(op.channel, op.project)
        replaced = stream.get(key(op.version))
        stream[key(op.version)] = Row(op.version, op.channel, digest(data))
        if replaced is not None:  # an overwrite keeps the row's state
            stream[key(op.version)].state = replaced.state
    elif isinstance(op, Retire):
        row = model.exact(op.version, op.project)
        code = await code_of(
            rt.retire("acme", op.version, acknowledge_breaking=True, project=op.project)
        )
        if row is None:
            assert code == "not_found", (op, code)
            return
        assert code is None, (op, code)
        row.state = "retired"
    elif isinstance(op, Install):
        expected = set()
        target = model.pick(op.pin or "latest", op.allow_prerelease, op.project)
        if target is None:
            expected.add("not_found")
        if op.iid in model.installations:
            expected.add("installation_exists")
        try:
            await rt.install(
                op.iid, "acme", pin=op.pin, allow_prerelease=op.allow_prerelease, project=op.project
            )
            code = None
        except PackrunError as exc:
            code = exc.code
            check_error(model, op.project, exc)
        if expected:
            assert code in expected, (op, code)
            return
        assert code is None, (op, code)
        assert target is not None
        pin = stored_pin(op.pin) if op.pin is not None else model.pin_for(target, op.project)
        assert rt.installation(op.iid).pin == pin, (op, rt.installation(op.iid))
        model.installations[op.iid] = Inst(pin, op.allow_prerelease, op.project)
    elif isinstance(op, SetPin):
        current = model.installations.get(op.iid)
        if current is not None and op.project not in (None, current.project):
            current = None  # another project's installation: as if there were none
        where = current.project if current else op.project or "default"
        target = model.pick(op.pin, current.allow_prerelease, where) if current else None
        before = model.pick(current.pin, current.allow_prerelease, where) if current else None
        try:
            await rt.set_pin(op.iid, op.pin, actor="prop", project=op.project)
            code = None
        except PackrunError as exc:
            code = exc.code
            check_error(model, where, exc)
        if current is None or target is None:
            assert code == "not_found", (op, code)
            return
        assert code is None, (op, code)
        event = (await rt.history(op.iid))[-1]
        assert (event.origin, event.actor) == ("user", "prop")
        assert (event.from_pin, event.to_pin) == (current.pin, stored_pin(op.pin))
        assert event.from_version == (before.version if before else None)
        assert event.to_version == target.version
        current.pin = stored_pin(op.pin)
        current.events += 1
    else:
        await rt.set_immutable_versions(op.on, project=op.project)
        if op.project is None:
            model.immutable = op.on
        else:
            model.project_immutable[op.project] = op.on


def check_error(model: Model, project: str, exc: PackrunError) -> None:
    """An error raised for ``project`` names only rows and installations it may see."""
    known = getattr(exc, "known", ())
    seen = {(r.version, r.channel) for r in model.ascending(project)}
    mine = {i for i, inst in model.installations.items() if inst.project == project}
    for item in known:
        if item.endswith(")"):  # "1.2.0 (custom, live)": a row
            version, _, rest = item.partition(" (")
            assert (version, rest.split(",")[0].rstrip(")")) in seen, (project, exc)
        elif item in model.installations:
            assert item in mine, (project, exc)


async def check(rt: Runtime, model: Model) -> None:
    """Everything the runtime says equals what the model computes from scratch, and every answer
    for an installation involves only vendor rows and its own project's rows."""
    for project in PROJECTS:
        rows = [(r.version, r.channel, r.digest, r.state) for r in model.ascending(project)]
        if rows:
            listed = [
                (str(e.version), e.channel, e.digest, e.state)
                for e in rt.versions("acme", project=project)
            ]
            assert listed == rows, project
            assert rt.packs(project=project) == ["acme"]
        else:
            assert sync_code_of(functools.partial(rt.versions, "acme", project=project)) == (
                "not_found"
            )
            assert rt.packs(project=project) == []
        immutable = model.immutable_for("custom", project)
        assert rt.project_settings(project).immutable_versions is immutable
        assert [(i.id, i.pin, i.allow_prerelease) for i in rt.installations(project=project)] == [
            (iid, inst.pin, inst.allow_prerelease)
            for iid, inst in sorted(model.installations.items())
            if inst.project == project
        ]
    assert rt.settings.immutable_versions is model.immutable
    for iid, inst in model.installations.items():
        allowed = model.digests(inst.project)
        for other in PROJECTS:
            if other != inst.project:  # another project never sees it
                assert sync_code_of(functools.partial(rt.explain, iid, project=other)) == (
                    "not_found"
                )
                assert await code_of(rt.history(iid, project=other)) == "not_found"
        assert len(await rt.history(iid, project=inst.project)) == inst.events
        want = model.pick(inst.pin, inst.allow_prerelease, inst.project)
        explanation = rt.explain(iid, project=inst.project)
        shown = {c.digest for c in explanation.candidates}
        assert shown <= allowed, (iid, inst)
        assert {v for v, _ in explanation.skipped} <= {
            r.version for r in model.ascending(inst.project)
        }
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
        review = functools.partial(rt.review_update, iid, project=inst.project)
        if sync_code_of(review) is None:
            assert (review().to_version, got.channel) in {
                (r.version, r.channel) for r in model.ascending(inst.project)
            }


async def run(ops: list[Op], url: str = "memory:") -> None:
    model = Model()
    async with packrun.open_runtime(url) as rt:
        await check(rt, model)
        for op in ops:
            await apply(rt, model, op)
            await check(rt, model)
    if url != "memory:":  # what was stored reads back the same, in a runtime of its own
        async with packrun.open_runtime(url) as again:
            await check(again, model)


@settings(max_examples=60, deadline=None)
@given(st.lists(publishes, min_size=1, max_size=6), st.lists(operations, max_size=30))
def test_the_resolver_agrees_with_a_naive_model(first: list[Publish], then: list[Op]) -> None:
    anyio.run(run, [*first, *then])


@settings(max_examples=80, deadline=None)
@given(
    st.lists(project_publishes, min_size=1, max_size=8), st.lists(project_operations, max_size=30)
)
def test_projects__random_histories__never_see_each_others_rows(
    first: list[Publish], then: list[Op]
) -> None:
    anyio.run(run, [*first, *then])


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(project_publishes, min_size=1, max_size=6), st.lists(project_operations, max_size=20)
)
def test_projects__random_histories_on_a_durable_store__never_see_each_others_rows(
    kind: str, tmp_path: Path, first: list[Publish], then: list[Op]
) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
        anyio.run(run, [*first, *then], url)
        return
    if not POSTGRES:
        pytest.skip("no PostgreSQL server configured: set PACKRUN_TEST_POSTGRES")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        anyio.run(
            run, [*first, *then], f"{POSTGRES}{'&' if '?' in POSTGRES else '?'}schema={schema}"
        )
    finally:
        drop_schema(schema)


def drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_the_model_reads_the_samples_as_the_design_says() -> None:
    """The model itself, on a fixed history: latest prefers custom; build metadata is one key;
    a project's custom rows are its own."""
    model = Model()
    model.vendor["1.1.0"] = Row("1.1.0+build.7", "vendor", "d1")
    model.vendor["2.0.0"] = Row("2.0.0", "vendor", "d2")
    model.custom["default"] = {"1.2.0-beta.1": Row("1.2.0-beta.1", "custom", "d3")}
    assert model.pick("latest", False) is model.vendor["2.0.0"]
    assert model.pick("latest", True) is model.custom["default"]["1.2.0-beta.1"]
    assert model.pick("latest", True, "p1") is model.vendor["2.0.0"]
    assert model.pick("latest-custom", False) is None
    assert model.pick("1.1.0", False) is model.vendor["1.1.0"]
    assert model.publish_errors("1.1.0", force=True) == {"version_exists"}
    model.immutable = False
    assert model.publish_errors("1.1.0", force=True) == set()
    # Streams: a project's custom 1.1.0 beside the vendor's; only that project sees it.
    assert model.publish_errors("1.1.0", force=False, channel="custom", project="p1") == set()
    model.custom["p1"] = {"1.1.0": Row("1.1.0", "custom", "d4")}
    assert model.pick("1.1.0", False, "p1") is model.custom["p1"]["1.1.0"]
    assert model.pick("vendor:1.1.0", False, "p1") is model.vendor["1.1.0"]
    assert model.pick("1.1.0", False) is model.vendor["1.1.0"]
    assert model.pick("latest-custom", False, "p2") is None
    assert model.publish_errors("1.0.0", force=False, channel="custom", project="p1") == {
        "downgrade_not_allowed"
    }
    assert model.publish_errors("1.0.0", force=False, channel="custom", project="p2") == set()
    model.immutable = True
    assert model.publish_errors("1.0.9", force=False) == {"downgrade_not_allowed"}
    assert model.publish_errors("1.3.0", force=False) == set()
