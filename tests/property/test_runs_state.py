"""Runs against a model, as a hypothesis state machine (DESIGN.md section 7).

Random sequences of publishes, forced overwrites, retirements, pin moves, run starts, calls and run
ends drive one runtime over the in-memory store. The runtime lives in an event loop of its own
(an anyio blocking portal); runs are kept open across steps by entering their ``async with``
through the portal and leaving it in a later step. A model of plain dictionaries predicts what
each installation resolves to; after every step:

* every open run is still bound to the ``(version, digest)`` it started with, and a call in it
  answers that version and the marker compiled into that digest's code;
* ``in_flight``, ``runs_in_flight``, ``in_flight_for`` and ``stats().runs_in_flight`` equal the
  model's open runs;
* ``version_status`` is ``active`` when an installation resolves to the version, else
  ``draining`` while a run is open on it, else ``drained``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import packrun
from packrun import NotFound, Run, Runtime
from packrun._bundle import bundle_bytes

PACK = "probe"
VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "2.0.0", "2.1.0")
"""Published in this order, so every publish is accepted (each is above its line)."""
VARIANTS = 3
INSTALLATIONS = ("i-latest", "i-exact")
PINS = ("latest", *VERSIONS)
MAX_OPEN = 6

CODE = """\
from packrun.sdk import Integration

integration = Integration("probe")
MARKER = "__MARKER__"


@integration.tool("whoami")
async def whoami(ctx, input):
    return {"version": ctx.version, "marker": MARKER}


@integration.tool("whoami_sync")
def whoami_sync(ctx, input):
    return {"version": ctx.version, "marker": MARKER}
"""


def _build(version: str, variant: int) -> bytes:
    manifest = packrun.decode_manifest(
        {
            "id": PACK,
            "version": version,
            "contract": 2,
            "tools": [{"id": "whoami"}, {"id": "whoami_sync"}],
        }
    )
    marker = f"{version}#{variant}"
    return bundle_bytes(manifest, {"__init__.py": CODE.replace("__MARKER__", marker).encode()})


BUILDS = {(v, k): _build(v, k) for v in VERSIONS for k in range(VARIANTS)}
DIGESTS = {key: packrun.read_bundle(data).digest for key, data in BUILDS.items()}
MARKER_OF = {DIGESTS[(v, k)]: f"{v}#{k}" for v, k in BUILDS}

_T = TypeVar("_T")


@dataclass
class OpenRun:
    scope: AbstractContextManager[Run]
    run: Run
    installation: str
    version: str
    digest: str


class RunsMachine(RuleBasedStateMachine):
    """One runtime, driven through a blocking portal, against a model of pins and open runs."""

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = start_blocking_portal()
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self._rt_cm = self.portal.wrap_async_context_manager(
            packrun.open_runtime("memory:", refresh_interval=0)
        )
        self.rt: Runtime = self._rt_cm.__enter__()
        self.published: dict[str, int] = {}  # version -> variant in the catalog now
        self.retired: set[str] = set()
        self.pins: dict[str, str] = {}
        self.open: dict[str, OpenRun] = {}
        self.counter = 0

    def sync(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a synchronous runtime call on the runtime's event loop thread."""
        return self.portal.call(fn, *args)

    # --- the model ----------------------------------------------------------------------------

    def expected(self, installation: str) -> str | None:
        """The version ``installation`` resolves to in the model (``None``: nothing does)."""
        pin = self.pins[installation]
        if pin != "latest":
            return pin  # an exact pin keeps resolving, retired or not
        live = [v for v in self.published if v not in self.retired]
        return max(live, key=packrun.Version.parse) if live else None

    def expected_status(self, version: str) -> str:
        if any(self.expected(i) == version for i in INSTALLATIONS):
            return "active"
        return "draining" if any(o.version == version for o in self.open.values()) else "drained"

    # --- rules --------------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        self.portal.call(self.rt.set_immutable_versions, False)
        self.portal.call(self.rt.publish, BUILDS[(VERSIONS[0], 0)])
        self.published[VERSIONS[0]] = 0
        self.portal.call(self.rt.install, "i-latest", PACK, "latest")
        self.portal.call(self.rt.install, "i-exact", PACK, VERSIONS[0])
        self.pins.update({"i-latest": "latest", "i-exact": VERSIONS[0]})

    @precondition(lambda self: len(self.published) < len(VERSIONS))
    @rule()
    def publish_next(self) -> None:
        version = VERSIONS[len(self.published)]
        entry = self.portal.call(self.rt.publish, BUILDS[(version, 0)])
        assert entry.digest == DIGESTS[(version, 0)]
        self.published[version] = 0

    @rule(data=st.data(), variant=st.integers(0, VARIANTS - 1))
    def overwrite(self, data: st.DataObject, variant: int) -> None:
        version = data.draw(st.sampled_from(sorted(self.published)), label="version")
        self.portal.call(partial(self.rt.publish, BUILDS[(version, variant)], force=True))
        self.published[version] = variant

    @rule(data=st.data())
    def retire(self, data: st.DataObject) -> None:
        version = data.draw(st.sampled_from(sorted(self.published)), label="version")
        self.portal.call(partial(self.rt.retire, PACK, version, acknowledge_breaking=True))
        self.retired.add(version)

    @rule(installation=st.sampled_from(INSTALLATIONS), pin=st.sampled_from(PINS))
    def set_pin(self, installation: str, pin: str) -> None:
        before = self.pins[installation]
        self.pins[installation] = pin
        acceptable = self.expected(installation) in self.published
        if acceptable:
            self.portal.call(self.rt.set_pin, installation, pin)
        else:
            self.pins[installation] = before
            try:
                self.portal.call(self.rt.set_pin, installation, pin)
            except NotFound:
                pass
            else:
                raise AssertionError(f"set_pin({installation!r}, {pin!r}) was accepted")

    @precondition(lambda self: len(self.open) < MAX_OPEN)
    @rule(installation=st.sampled_from(INSTALLATIONS))
    def start_run(self, installation: str) -> None:
        self.counter += 1
        run_id = f"run-{self.counter}"
        version = self.expected(installation)
        scope = self.portal.wrap_async_context_manager(self.rt.run(installation, run_id=run_id))
        if version is None:
            try:
                scope.__enter__()
            except NotFound:
                return
            raise AssertionError(f"a run of {installation} started with nothing to resolve to")
        run = scope.__enter__()
        digest = DIGESTS[(version, self.published[version])]
        assert (run.run_id, run.version, run.digest) == (run_id, version, digest)
        assert run.resumed is False
        self.open[run_id] = OpenRun(scope, run, installation, version, digest)

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data(), sync_tool=st.booleans())
    def call(self, data: st.DataObject, sync_tool: bool) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.open)), label="run")
        self.check_call(self.open[run_id], "whoami_sync" if sync_tool else "whoami")

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data())
    def end_run(self, data: st.DataObject) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.open)), label="run")
        self.open.pop(run_id).scope.__exit__(None, None, None)

    # --- invariants ---------------------------------------------------------------------------

    def check_call(self, entry: OpenRun, tool: str) -> None:
        answer = self.portal.call(entry.run.call, tool)
        assert answer == {"version": entry.version, "marker": MARKER_OF[entry.digest]}, (
            entry.run.run_id,
            answer,
        )

    @invariant()
    def open_runs_keep_their_binding(self) -> None:
        for entry in self.open.values():
            assert (entry.run.version, entry.run.digest) == (entry.version, entry.digest)
            self.check_call(entry, "whoami")

    @invariant()
    def resolutions_agree_with_the_model(self) -> None:
        for installation in self.pins:
            version = self.expected(installation)
            if version is None:
                try:
                    self.sync(self.rt.resolve, installation)
                except NotFound:
                    continue
                raise AssertionError(f"{installation} resolves with no version to resolve to")
            res = self.sync(self.rt.resolve, installation)
            assert (res.version, res.digest) == (
                version,
                DIGESTS[(version, self.published[version])],
            )

    @invariant()
    def counts_agree_with_the_open_runs(self) -> None:
        for version in VERSIONS:
            ids = sorted(r for r, o in self.open.items() if o.version == version)
            assert self.sync(self.rt.in_flight, PACK, version) == len(ids), version
            assert self.sync(self.rt.runs_in_flight, PACK, version) == ids, version
        for installation in INSTALLATIONS:
            count = sum(1 for o in self.open.values() if o.installation == installation)
            assert self.sync(self.rt.in_flight_for, installation) == count, installation
        assert self.sync(self.rt.stats).runs_in_flight == len(self.open)

    @invariant()
    def version_status_agrees_with_the_model(self) -> None:
        for version in self.published:
            assert self.sync(self.rt.version_status, PACK, version) == self.expected_status(
                version
            ), version

    def teardown(self) -> None:
        try:
            for entry in self.open.values():
                entry.scope.__exit__(None, None, None)
            self.open.clear()
            assert self.sync(self.rt.stats).runs_in_flight == 0
            for version in self.published:
                assert self.sync(self.rt.in_flight, PACK, version) == 0
                self.portal.call(partial(self.rt.wait_drained, PACK, version, timeout=5))
        finally:
            try:
                self._rt_cm.__exit__(None, None, None)
            finally:
                self._portal_cm.__exit__(None, None, None)


def test_runs_keep_their_binding_and_the_counts_follow_a_model() -> None:
    run_state_machine_as_test(
        RunsMachine,
        settings=settings(max_examples=30, stateful_step_count=30, deadline=None),
    )
