"""``packrun demo``: the story of packrun, told on the sample packs in a throw-away store.

:func:`run_demo` publishes the samples of ``bundles/`` into an embedded SQLite store in a temporary
folder (deleted at the end unless ``keep`` names a folder to keep it in) and walks through what a
platform does with them: pins, runs that keep their version while an update lands, automatic
updates, a major that waits for a review, a dishonest minor refused, a generation-1 bundle served
through the adapter, a generation-0 bundle refused, and a rollback that drains.

Every step is recorded as a plain line under a short heading. Nothing that changes from run to run
(times, temporary paths, random ids) is printed, so the output can be compared by substring.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from packrun._auth import Auth
from packrun._catalog import CatalogEntry, Channel
from packrun._diff import diff
from packrun._runtime import Runtime, open_runtime
from packrun._stores import PinEvent
from packrun.errors import InvalidArgument, NotFound, PackrunError

__all__ = ["SAMPLES", "DemoResult", "Section", "run_demo"]

SAMPLES: tuple[tuple[str, str], ...] = (
    ("acme", "1.0.0"),
    ("acme", "1.0.1"),
    ("acme", "1.1.0"),
    ("acme", "1.1.1"),
    ("acme", "2.0.0"),
    ("acme", "1.2.0"),
    ("legacy-crm", "1.0.0"),
    ("ancient", "1.0.0"),
)
"""The sample bundles the demo publishes, as ``bundles/{id}/{version}/dist/{id}-{version}.bundle.tar.gz``."""

_API_KEY = Auth.api_key("demo-key")
_OAUTH2 = Auth.oauth2("demo-token", scopes=("contacts.read",))
_BASIC = Auth.basic("ada", "demo-password")


@dataclass(frozen=True, slots=True)
class Section:
    """One headed step of the story and the lines it printed."""

    title: str
    lines: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"section": self.title, "lines": list(self.lines)}


@dataclass(frozen=True, slots=True)
class DemoResult:
    """The sections of the story, its one-line summary, and where the store was kept (if it was)."""

    sections: tuple[Section, ...]
    summary: str
    kept: Path | None

    def text(self) -> str:
        """The story as a person reads it: numbered headings, indented lines, the summary last."""
        out: list[str] = []
        for n, section in enumerate(self.sections, 1):
            out.append(f"{n}. {section.title}")
            out.extend(f"   {line}" if line else "" for line in section.lines)
            out.append("")
        out.append(self.summary)
        return "\n".join(out)

    def to_list(self) -> list[dict[str, Any]]:
        """The story for programs: one ``{"section", "lines"}`` object a step, the summary last."""
        return [s.to_dict() for s in self.sections] + [
            {"section": "summary", "lines": [self.summary]}
        ]


class KeepFolderTaken(InvalidArgument):
    """``--keep DIR`` names a folder that already holds a store (code ``invalid_argument``)."""

    def __init__(self, folder: Path) -> None:
        self.what = "--keep"
        self.given = str(folder)
        self.allowed = ("a folder without a state.db",)
        PackrunError.__init__(
            self,
            f"--keep {folder}: the folder already holds a store (state.db); "
            "expected a new or empty folder for the demo's store",
        )


def _samples_folder(bundles: str | Path | None) -> Path:
    """``bundles`` when given, else ``./bundles``; ``not_found`` naming what is missing."""
    root = Path(bundles) if bundles is not None else Path.cwd() / "bundles"
    if not root.is_dir():
        where = (
            str(root)
            if bundles is not None
            else "bundles (in the current folder; or pass --bundles DIR)"
        )
        raise NotFound("sample bundles folder", where)
    missing = [
        f"{pack}/{version}"
        for pack, version in SAMPLES
        if not _bundle(root, pack, version).is_file()
    ]
    if missing:
        raise NotFound(f"sample bundle(s) {', '.join(missing)} under", str(root))
    return root


def _bundle(root: Path, pack: str, version: str) -> Path:
    return root / pack / version / "dist" / f"{pack}-{version}.bundle.tar.gz"


@contextmanager
def _warnings_into(lines: list[str]) -> Iterator[None]:
    """Record the ``packrun`` logger's warnings as lines of the story (not on stderr)."""

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"warning: {record.getMessage()}")

    logger = logging.getLogger("packrun")
    handler = Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class _Story:
    """The demo's steps on one runtime, each adding lines to the current section."""

    def __init__(self, rt: Runtime, samples: Path) -> None:
        self.rt = rt
        self.samples = samples
        self.sections: list[Section] = []
        self.lines: list[str] = []
        self.title = ""
        self.published = 0
        self.refused = 0
        self.runs = 0
        self.installations = 0

    def section(self, title: str) -> None:
        self.close()
        self.title = title

    def close(self) -> None:
        if self.title:
            self.sections.append(Section(self.title, tuple(self.lines)))
        self.title, self.lines = "", []

    def say(self, line: str = "") -> None:
        self.lines.append(line)

    # --- helpers --------------------------------------------------------------------------------

    async def publish(self, pack: str, version: str, channel: Channel = "vendor") -> CatalogEntry:
        entry = await self.rt.publish(_bundle(self.samples, pack, version), channel=channel)
        self.published += 1
        self.say(
            f"published {entry.pack_id} {entry.version} ({entry.channel}, contract {entry.contract})"
        )
        return entry

    def resolution(self, installation_id: str) -> str:
        inst = self.rt.installation(installation_id)
        res = self.rt.resolve(installation_id)
        return f"{installation_id} -> {res.pack_id} {res.version} (pin {inst.pin}, {inst.policy})"

    def blocked(self, installation_id: str) -> str:
        """The ``update blocked: breaking_diff (...)`` line of ``explain``, or what it says instead."""
        for line in str(self.rt.explain(installation_id)).splitlines():
            if line.startswith("update blocked:"):
                return line
        return "no update blocked"

    @staticmethod
    def move(event: PinEvent) -> str:
        return (
            f"{event.installation_id}: {event.from_version or '-'} -> {event.to_version} "
            f"by {event.actor} ({event.origin})"
        )

    def moves(self, installation_id: str) -> list[str]:
        return [self.move(e) for e in self.rt.history(installation_id)]

    def status(self, pack: str, version: str) -> str:
        status = self.rt.version_status(pack, version)
        runs = self.rt.runs_in_flight(pack, version)
        pinned = self.rt.pinned_to(pack, version)
        said = f"{pack} {version}: {status}"
        if pinned:
            said += f" (resolved to by {', '.join(pinned)})"
        if runs:
            said += f"; run(s) in flight: {', '.join(runs)}"
        return said

    # --- the story ------------------------------------------------------------------------------

    async def tell(self) -> None:
        await self.pins()
        await self.run_keeps_its_version()
        await self.automatic_updates()
        await self.major_waits_for_review()
        await self.dishonest_minor()
        await self.adapter()
        await self.generation_0()
        await self.rollback()
        self.close()
        self.installations = len(self.rt.installations())

    async def pins(self) -> None:
        self.section("Publish, install, pin")
        await self.publish("acme", "1.0.0")
        await self.rt.install("acme-prod", "acme", actor="ops")  # the exact version latest picks
        await self.rt.install("acme-auto", "acme", "1.0.0", "auto_minor", actor="ops")
        self.say(
            "installed acme-prod (manual) and acme-auto (auto_minor) while 1.0.0 is the latest"
        )
        await self.publish("acme", "1.0.1")
        await self.rt.install("acme-patch", "acme", None, "auto_patch", actor="ops")
        self.say("installed acme-patch (auto_patch) on what latest picks now")
        for iid in ("acme-prod", "acme-auto", "acme-patch"):
            self.say(self.resolution(iid))
        why = self.rt.explain("acme-prod")
        self.say(
            f"acme-prod stays on {why.resolution.version if why.resolution else '-'}: "
            f"a manual pin is inert until an update (update available: {why.update or 'none'})"
        )
        self.say(f"acme-auto took the patch itself: {self.moves('acme-auto')[-1]}")

    async def run_keeps_its_version(self) -> None:
        self.section("A run keeps its version while an update lands")
        async with self.rt.run("acme-prod", run_id="r-1", auth=_API_KEY) as run:
            self.runs += 1
            out = await run.call("list_contacts", {"limit": 2})
            self.say(
                f"run r-1 on acme-prod starts on acme {run.version}; list_contacts -> "
                f"{len(out['contacts'])} contacts"
            )
            await self.publish("acme", "1.1.0")
            review = await self.rt.update("acme-prod", to="1.1.0", actor="ops")
            self.say(
                f"update acme-prod {review.from_version} -> {review.to_version} "
                f"({review.bump}, verdict {review.verdict}) while r-1 is open"
            )
            self.say(f"acme-prod resolves to {self.rt.resolve('acme-prod').version} now")
            await run.call("get_contact", {"id": "c-001"})
            self.say(
                f"r-1 calls get_contact: still {run.version} (the run keeps the version it started with)"
            )
            async with self.rt.run("acme-prod", run_id="r-2", auth=_API_KEY) as new:
                self.runs += 1
                await new.call("list_contacts", {"limit": 2})
                self.say(f"a new run r-2 on acme-prod gets {new.version}")
            self.say(self.status("acme", run.version))
            left = run.version
        self.say("r-1 ends")
        await self.rt.wait_drained("acme", left, timeout=5)
        self.say(self.status("acme", left))

    async def automatic_updates(self) -> None:
        self.section("Automatic updates")
        self.say("publishing 1.1.0 moved acme-auto, a minor step its policy takes:")
        self.say(f"  history: {self.moves('acme-auto')[-1]}")
        for iid in ("acme-auto", "acme-patch"):
            self.say(self.resolution(iid))
        self.say(
            "acme-patch stays on 1.0.1, no patch above it "
            "(1.1.0: a minor update, which auto_patch does not take)"
        )
        await self.publish("acme", "1.1.1", "custom")
        self.say(
            f"acme-auto stays on {self.rt.resolve('acme-auto').version}: a custom build is "
            "another channel, which vendor installations never follow"
        )

    async def major_waits_for_review(self) -> None:
        self.section("A major waits for a review")
        await self.rt.declare_workflow("acme-prod", "wf-weekly-export", ["list_contacts"])
        self.say("declared workflow wf-weekly-export on acme-prod: uses list_contacts")
        async with self.rt.run(
            "acme-prod", run_id="r-3", workflow_id="wf-contact-card", auth=_API_KEY
        ) as run:
            self.runs += 1
            await run.call("get_contact", {"id": "c-001"})
        self.say("run r-3 of workflow wf-contact-card called get_contact (observed)")
        await self.publish("acme", "2.0.0")
        self.say(f"acme-auto stays on {self.rt.resolve('acme-auto').version}")
        self.say(f"explain acme-auto: {self.blocked('acme-auto')}")
        self.say("")
        review = self.rt.review_update("acme-prod", to="2.0.0")
        self.say("review acme-prod -> 2.0.0:")
        for line in str(review).splitlines():
            self.say(f"  {line}")
        self.say("")
        try:
            await self.rt.update("acme-prod", to="2.0.0", actor="ops")
        except PackrunError as exc:
            self.say(f"update acme-prod -> 2.0.0 refused: {exc}")
        done = await self.rt.update("acme-prod", to="2.0.0", actor="ops", acknowledge_breaking=True)
        self.say(
            f"update acme-prod -> 2.0.0 with acknowledge_breaking=True: moved "
            f"{done.from_version} -> {done.to_version}"
        )
        async with self.rt.run("acme-prod", run_id="r-4", auth=_OAUTH2) as run:
            self.runs += 1
            out = await run.call("list_contacts", {"limit": 2})
        fields = sorted(out["contacts"][0])
        self.say(
            f"run r-4 on acme {run.version} with OAuth 2 (scope contacts.read): list_contacts -> "
            f"{len(out['contacts'])} contacts with {', '.join(fields)}"
        )

    async def dishonest_minor(self) -> None:
        self.section("A dishonest minor is refused")
        await self.publish("acme", "1.2.0")
        self.say("1.2.0 is a backport on the 1.x line, published after 2.0.0")
        report = diff(
            _bundle(self.samples, "acme", "1.1.0"), _bundle(self.samples, "acme", "1.2.0")
        )
        self.say(f"diff acme 1.1.0 -> 1.2.0: verdict {report.verdict} ({report.reason})")
        for finding in report.breaking:
            self.say(f"  breaking {finding.path} [{finding.rule_id}]: {finding.message}")
        self.say(f"acme-auto stays on {self.rt.resolve('acme-auto').version}")
        self.say(f"explain acme-auto: {self.blocked('acme-auto')}")

    async def adapter(self) -> None:
        self.section("A generation-1 bundle runs through the adapter")
        await self.publish("legacy-crm", "1.0.0")
        await self.rt.install("crm-prod", "legacy-crm", actor="ops")
        self.say(self.resolution("crm-prod"))
        with _warnings_into(self.lines):
            async with self.rt.run("crm-prod", run_id="r-5", auth=_BASIC) as run:
                self.runs += 1
                out = await run.call("list_accounts", {"limit": 2})
        self.say(
            f"run r-5 (basic auth): list_accounts -> {len(out['accounts'])} accounts; "
            f"generation {run.generation}, run.adapter == {run.adapter!r}"
        )
        count = self.rt.stats().adapter_runs.get(("legacy-crm", "1.0.0", "1->2"), 0)
        self.say(f"adapter counter: legacy-crm 1.0.0 through 1->2: {count} run(s)")

    async def generation_0(self) -> None:
        self.section("A generation-0 bundle is refused")
        try:
            await self.publish("ancient", "1.0.0")
        except PackrunError as exc:
            self.refused += 1
            self.say(f"publish ancient 1.0.0 refused: {exc}")

    async def rollback(self) -> None:
        self.section("A rollback that drains")
        async with self.rt.run("acme-prod", run_id="r-6", auth=_OAUTH2) as run:
            self.runs += 1
            await run.call("list_contacts", {"limit": 1})
            self.say(f"run r-6 on acme-prod is in flight on {run.version}")
            back = await self.rt.rollback("acme-prod", "1.1.0", actor="ops", drain_timeout=0.2)
            self.say(
                f"rollback acme-prod {back.from_version} -> {back.to_version} "
                "(waiting up to 0.2s for the drain)"
            )
            if back.drained:
                self.say(f"{back.from_version}: drained")
            else:
                self.say(f"{back.from_version}: still in flight: {', '.join(back.still_in_flight)}")
            self.say(self.moves("acme-prod")[-1])
            self.say(f"new runs of acme-prod get {self.rt.resolve('acme-prod').version}")
            self.say(self.status("acme", back.from_version))
            await run.call("list_contacts", {"limit": 1})
            self.say(f"r-6 calls again: still {run.version}")
        self.say("r-6 ends")
        await self.rt.wait_drained("acme", back.from_version, timeout=5)
        self.say(f"wait_drained: {self.status('acme', back.from_version)}")


async def _tell(url: str, samples: Path) -> tuple[tuple[Section, ...], _Story]:
    # A demo lives for one story on its own store: nobody else writes to it.
    async with open_runtime(url, refresh_interval=0) as rt:
        story = _Story(rt, samples)
        await story.tell()
        return tuple(story.sections), story


def run_demo(bundles: str | Path | None = None, keep: str | Path | None = None) -> DemoResult:
    """Tell the demo's story on the sample bundles (``bundles``, default ``./bundles``).

    The store is an embedded SQLite file in a temporary folder, deleted at the end; with ``keep``
    it is ``keep/state.db`` instead and stays (``keep`` must not hold a store already).
    """
    samples = _samples_folder(bundles)
    if keep is not None:
        folder = Path(keep)
        if (folder / "state.db").exists():
            raise KeepFolderTaken(folder)
        folder.mkdir(parents=True, exist_ok=True)
        folder = folder.resolve()
    else:
        folder = Path(tempfile.mkdtemp(prefix="packrun-demo-"))
    try:
        sections, story = anyio.run(_tell, f"sqlite:///{folder / 'state.db'}", samples)
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    where = (
        f"the store is kept in {keep} (packrun status --store sqlite:///{folder / 'state.db'})"
        if keep is not None
        else "the temporary store was deleted"
    )
    summary = (
        f"done: {len(sections)} steps; {story.published} versions published, {story.refused} "
        f"refused; {story.installations} installations; {story.runs} runs, each on the version "
        f"it started with; {where}"
    )
    return DemoResult(sections, summary, folder if keep is not None else None)
