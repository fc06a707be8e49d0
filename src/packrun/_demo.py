"""``packrun demo``: the story of packrun, told on the sample packs in a throw-away store.

:func:`run_demo` publishes the sample bundles that come with packrun (:func:`packaged_samples`)
into an embedded SQLite store in a temporary folder (deleted at the end unless ``keep`` names a
folder to keep it in) and walks through what a platform does with them: pins, runs that keep their
version while an update lands, automatic updates, a major that waits for a review, a dishonest
minor that is never auto-applied, a generation-1 bundle served through the adapter, a generation-0
bundle refused, and a rollback that drains.

Every step is recorded as plain lines under a heading that says what happens; the text wraps at
:data:`WIDTH` columns and stays within about 60 lines. Nothing that changes from run to run (times,
temporary paths, random ids) is printed, so the output can be compared by substring.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import anyio

from packrun._auth import Auth
from packrun._catalog import Channel
from packrun._diff import diff
from packrun._runtime import Runtime, open_runtime
from packrun._stores import PinEvent
from packrun.errors import BreakingDiff, InvalidArgument, NotFound, PackrunError

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
"""The sample bundles the demo publishes, as ``{id}/{version}/dist/{id}-{version}.bundle.tar.gz``
under ``bundles/`` (and under ``packrun/_samples`` in the wheel: pyproject.toml copies exactly
these)."""

WIDTH = 80
"""The columns of the demo's text: it reads in an 80-column terminal."""

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
        """The story as a person reads it: numbered headings, indented lines, the summary last;
        every line fits in :data:`WIDTH` columns (longer ones wrap, indented under themselves)."""
        out: list[str] = []
        for n, section in enumerate(self.sections, 1):
            out += _wrap(section.title, f"{n}. ")
            for line in section.lines:
                out += _wrap(line, "   ") if line else [""]
            out.append("")
        out += _wrap(self.summary, "")
        return "\n".join(out)

    def to_list(self) -> list[dict[str, Any]]:
        """The story for programs: one ``{"section", "lines"}`` object a step, the summary last."""
        return [s.to_dict() for s in self.sections] + [
            {"section": "summary", "lines": [self.summary]}
        ]


def _wrap(line: str, indent: str) -> list[str]:
    """``line`` after ``indent``, wrapped at :data:`WIDTH`; the continuation lines are indented
    two columns deeper than the line's own text."""
    own = indent + " " * (len(line) - len(line.lstrip(" ")))
    return textwrap.wrap(
        line.lstrip(" "),
        WIDTH,
        initial_indent=own,
        subsequent_indent=" " * len(own) + "  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


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


def packaged_samples() -> Path | None:
    """The folder of the sample bundles installed with packrun, or ``None`` when there is none.

    A wheel carries them as package data in ``packrun/_samples`` (copied from ``bundles/`` when the
    wheel is built); a source checkout, or an editable install of one, has ``bundles/`` itself
    next to ``src/``.
    """
    here = resources.files("packrun")
    shipped = here.joinpath("_samples")
    if isinstance(shipped, Path) and shipped.is_dir():
        return shipped
    if isinstance(here, Path):
        checkout = here.parent.parent
        if (checkout / "pyproject.toml").is_file() and (checkout / "bundles").is_dir():
            return checkout / "bundles"
    return None


def _samples_folder(bundles: str | Path | None) -> Path:
    """``bundles`` when given, else the samples installed with packrun; ``not_found`` naming what
    is missing."""
    root = Path(bundles) if bundles is not None else packaged_samples()
    if root is None or not root.is_dir():
        where = (
            str(root)
            if root is not None
            else "installed with packrun (reinstall it, or pass --bundles DIR)"
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

    async def publish(self, pack: str, version: str, channel: Channel = "vendor") -> str:
        """Publish a sample: ``published acme 1.0.0 (vendor, contract 2)``."""
        entry = await self.rt.publish(_bundle(self.samples, pack, version), channel=channel)
        self.published += 1
        return f"published {entry.pack_id} {entry.version} ({entry.channel}, contract {entry.contract})"

    def resolution(self, installation_id: str) -> str:
        inst = self.rt.installation(installation_id)
        res = self.rt.resolve(installation_id)
        return f"{installation_id} -> {res.pack_id} {res.version} (pin {inst.pin}, {inst.policy})"

    def blocked(self, installation_id: str) -> list[str]:
        """What ``explain`` says blocks the installation's policy: one line a version."""
        return [f"  blocked: {why}" for why in self.rt.explain(installation_id).update_blocked]

    @staticmethod
    def move(event: PinEvent) -> str:
        return (
            f"{event.installation_id}: {event.from_version or '-'} -> {event.to_version} "
            f"by {event.actor} ({event.origin})"
        )

    async def moves(self, installation_id: str) -> list[str]:
        return [self.move(e) for e in await self.rt.history(installation_id)]

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
        self.section("Publish and install: a manual pin stays put, auto_minor takes a patch")
        published = await self.publish("acme", "1.0.0")
        await self.rt.install("acme-prod", "acme", actor="ops")  # the exact version latest picks
        await self.rt.install("acme-auto", "acme", "1.0.0", "auto_minor", actor="ops")
        self.say(f"{published}; installed acme-prod, acme-auto")
        published = await self.publish("acme", "1.0.1")
        await self.rt.install("acme-patch", "acme", None, "auto_patch", actor="ops")
        self.say(f"{published}; installed acme-patch")
        for iid in ("acme-prod", "acme-auto", "acme-patch"):
            self.say(self.resolution(iid))

    async def run_keeps_its_version(self) -> None:
        self.section("A run keeps its version while an update lands")
        async with self.rt.run("acme-prod", run_id="r-1", auth=_API_KEY) as run:
            self.runs += 1
            await run.call("list_contacts", {"limit": 2})
            self.say(f"run r-1 on acme-prod starts on acme {run.version}")
            self.say(await self.publish("acme", "1.1.0"))
            review = await self.rt.update("acme-prod", to="1.1.0", actor="ops")
            self.say(
                f"update acme-prod {review.from_version} -> {review.to_version} "
                f"({review.bump}, verdict {review.verdict}) while r-1 is open"
            )
            await run.call("get_contact", {"id": "c-001"})
            async with self.rt.run("acme-prod", run_id="r-2", auth=_API_KEY) as new:
                self.runs += 1
                await new.call("list_contacts", {"limit": 2})
                self.say(
                    f"r-1 calls get_contact: still {run.version}; a new run r-2 gets {new.version}"
                )
            self.say(self.status("acme", run.version))
            left = run.version
        await self.rt.wait_drained("acme", left, timeout=5)
        self.say(f"r-1 ends; {self.status('acme', left)}")

    async def automatic_updates(self) -> None:
        self.section("Automatic updates: auto_minor takes 1.1.0, auto_patch waits for a patch")
        self.say(f"history: {(await self.moves('acme-auto'))[-1]}")
        self.say(
            f"acme-patch stays on {self.rt.resolve('acme-patch').version}: auto_patch does not "
            "take the minor 1.1.0"
        )
        self.say(await self.publish("acme", "1.1.1", "custom"))
        self.say(
            f"acme-auto stays on {self.rt.resolve('acme-auto').version}: vendor installations "
            "never follow a custom build"
        )

    async def major_waits_for_review(self) -> None:
        self.section("A major waits for a review; an acknowledged update takes it")
        await self.rt.declare_workflow("acme-prod", "wf-weekly-export", ["list_contacts"])
        async with self.rt.run(
            "acme-prod", run_id="r-3", workflow_id="wf-contact-card", auth=_API_KEY
        ) as run:
            self.runs += 1
            await run.call("get_contact", {"id": "c-001"})
        self.say("declared wf-weekly-export; run r-3 of wf-contact-card called get_contact")
        published = await self.publish("acme", "2.0.0")
        self.say(f"{published}; acme-auto stays on {self.rt.resolve('acme-auto').version}:")
        self.lines.extend(self.blocked("acme-auto"))
        review = self.rt.review_update("acme-prod", to="2.0.0")
        counts = ", ".join(
            f"{len(found)} {level}" for level, found in review.report.by_level().items() if found
        )
        self.say(
            f"review acme-prod -> {review.to_version}: {review.bump}, {review.verdict}; {counts}"
        )
        for workflow in review.affected_workflows:
            self.say(
                f"  affects {workflow.workflow_id} ({workflow.source}): {', '.join(workflow.tools)}"
            )
        self.say(
            f"  full review: packrun review acme-prod --to {review.to_version} (on a demo --keep store)"
        )
        try:
            await self.rt.update("acme-prod", to="2.0.0", actor="ops")
        except BreakingDiff as exc:
            refused = f"update refused [{exc.code}]"
        done = await self.rt.update("acme-prod", to="2.0.0", actor="ops", acknowledge_breaking=True)
        self.say(
            f"{refused}; with --acknowledge-breaking: {done.from_version} -> {done.to_version}"
        )
        async with self.rt.run("acme-prod", run_id="r-4", auth=_OAUTH2) as run:
            self.runs += 1
            out = await run.call("list_contacts", {"limit": 2})
        fields = ", ".join(sorted(out["contacts"][0]))
        self.say(f"run r-4 on acme {run.version} (OAuth 2): contacts have {fields}")

    async def dishonest_minor(self) -> None:
        self.section("A dishonest minor is published and never auto-applied")
        self.say(f"{await self.publish('acme', '1.2.0')}, a backport after 2.0.0")
        report = diff(
            _bundle(self.samples, "acme", "1.1.0"), _bundle(self.samples, "acme", "1.2.0")
        )
        self.say(
            f"diff 1.1.0 -> 1.2.0: verdict {report.verdict}, {len(report.breaking)} "
            f"breaking change(s) in a {report.declared_bump} release"
        )
        for finding in report.breaking:
            self.say(f"  breaking: {finding.message}")
        self.say(f"acme-auto stays on {self.rt.resolve('acme-auto').version}:")
        self.lines.extend(self.blocked("acme-auto"))

    async def adapter(self) -> None:
        self.section("A generation-1 bundle runs through the 1->2 adapter")
        published = await self.publish("legacy-crm", "1.0.0")
        await self.rt.install("crm-prod", "legacy-crm", actor="ops")
        self.say(f"{published}; installed crm-prod")
        with _warnings_into(self.lines):
            async with self.rt.run("crm-prod", run_id="r-5", auth=_BASIC) as run:
                self.runs += 1
                out = await run.call("list_accounts", {"limit": 2})
        count = self.rt.stats().adapter_runs.get(("legacy-crm", "1.0.0", "1->2"), 0)
        self.say(
            f"run r-5 (basic auth): {len(out['accounts'])} accounts; run.adapter == "
            f"{run.adapter!r}, counted: {count} run(s)"
        )

    async def generation_0(self) -> None:
        self.section("A generation-0 bundle is refused at publish")
        try:
            await self.publish("ancient", "1.0.0")
        except PackrunError as exc:
            self.refused += 1
            self.say(str(exc))

    async def rollback(self) -> None:
        self.section("A rollback: new runs get 1.1.0 at once, the run in flight drains")
        async with self.rt.run("acme-prod", run_id="r-6", auth=_OAUTH2) as run:
            self.runs += 1
            await run.call("list_contacts", {"limit": 1})
            self.say(f"run r-6 on acme-prod is in flight on {run.version}")
            back = await self.rt.rollback("acme-prod", "1.1.0", actor="ops", drain_timeout=0.2)
            waited = (
                "drained"
                if back.drained
                else f"still in flight after 0.2s: {', '.join(back.still_in_flight)}"
            )
            self.say(f"rollback acme-prod {back.from_version} -> {back.to_version}: {waited}")
            self.say(f"history: {(await self.moves('acme-prod'))[-1]}")
            await run.call("list_contacts", {"limit": 1})
            self.say(
                f"new runs get {self.rt.resolve('acme-prod').version}; r-6 calls again: "
                f"still {run.version}"
            )
        await self.rt.wait_drained("acme", back.from_version, timeout=5)
        self.say(f"r-6 ends; wait_drained: {self.status('acme', back.from_version)}")


async def _tell(url: str, samples: Path) -> tuple[tuple[Section, ...], _Story]:
    # A demo lives for one story on its own store: nobody else writes to it.
    async with open_runtime(url, refresh_interval=0) as rt:
        story = _Story(rt, samples)
        await story.tell()
        return tuple(story.sections), story


def run_demo(bundles: str | Path | None = None, keep: str | Path | None = None) -> DemoResult:
    """Tell the demo's story on the sample bundles (``bundles``, default: the ones that come with
    packrun, :func:`packaged_samples`).

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
