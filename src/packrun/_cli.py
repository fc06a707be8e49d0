"""The ``packrun`` command: a thin layer over the library.

Exit codes: 0 when all is well, 1 when a check found something wrong, 2 on an error (bad input, a
bad command line, a refused operation), 130 when interrupted. Every command takes ``--json`` for
output a program can read (errors included) and ``--log-level``, before or after its name. Every
error line starts with its ``[code]``.

The runtime commands (``publish``, ``install``, ``resolve``, ``call``, ``status``, ``review``,
``update``, ``rollback`` ...) each open the store given by ``--store`` (default: ``$PACKRUN_STORE``,
else ``./.packrun/state.db``), call one method of the runtime and close it. Only ``publish`` and a
settings change create a store that does not exist; the others refuse it. ``diff`` compares two
manifests and exits 1 on a red verdict (a release gate); it reads the store only for a
``PACK@VERSION`` side. ``demo`` tells the story on the sample packs in a store of its own.

``call`` takes credentials from options or from ``$PACKRUN_AUTH_KEY``, ``$PACKRUN_AUTH_TOKEN``,
``$PACKRUN_AUTH_USERNAME`` and ``$PACKRUN_AUTH_PASSWORD``; none of them is ever printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeAlias

import anyio
import msgspec

from packrun._auth import Auth, AuthMode
from packrun._bundle import Bundle, build_bundle, read_bundle
from packrun._catalog import CHANNELS, CatalogEntry
from packrun._checks import VersionHealth
from packrun._cli_fleet import age as _age
from packrun._cli_fleet import register as register_fleet_commands
from packrun._cli_rollouts import register as register_rollout_commands
from packrun._diff import DiffReport, Profile, diff, load_profile
from packrun._manifest import (
    decode_pack_manifest,
    encode_manifest,
    manifest_schema,
    read_document,
)
from packrun._policy import Rollback, UpdateReview
from packrun._resolver import Explanation, Resolution
from packrun._retention import DAY, HISTORY_LIMIT, Retention
from packrun._runs import Run
from packrun._runtime import Runtime, open_runtime
from packrun._source import CheckReport, check, discover, verify
from packrun._sources._commands import register as register_source_commands
from packrun._stores import (
    DEFAULT_PROJECT,
    POLICIES,
    Installation,
    PinEvent,
    Settings,
    default_url,
)
from packrun._versions import Version, version_key
from packrun.errors import InvalidArgument, NotFound, PackrunError, ToolFailed

__all__ = ["main"]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
"""Ctrl-C: 128 + SIGINT, what a shell reports for it."""


class _Output:
    def __init__(self, as_json: bool, stream: TextIO) -> None:
        self.as_json = as_json
        self.stream = stream
        self.committed: list[str] = []
        """What the command has changed so far, for a report when it is interrupted."""

    def line(self, text: str = "") -> None:
        if not self.as_json:
            print(text, file=self.stream)

    def data(self, payload: Any) -> None:
        if self.as_json:
            print(json.dumps(payload, indent=2, sort_keys=False), file=self.stream)


def _cmd_build(args: argparse.Namespace, out: _Output) -> int:
    src = Path(args.src)
    targets: list[tuple[Path, Path | None]] = []  # (integration source, dist override)
    for source in discover(src) if src.is_dir() else []:
        if source.kind == "integration":
            targets.append((source.path, None))
            continue
        pack = decode_pack_manifest(
            read_document(source.path / "pack.json"), source=str(source.path / "pack.json")
        )
        ref = pack.integration()
        if ref is not None:
            targets.append((source.path / ref.path, source.path / "dist"))
    if not targets:
        raise NotFound(
            "integration source (manifest.json with code/, or a pack.json with an integration entry) under",
            str(src),
        )
    built = []
    for path, dist in targets:
        out_dir = Path(args.output) if args.output else dist
        result = build_bundle(path, out_dir, contract=args.contract)
        built.append(
            {
                "path": str(result.path),
                "digest": result.digest,
                "id": result.manifest.id,
                "version": str(result.manifest.version),
                "contract": result.manifest.contract,
            }
        )
        out.line(f"built {result.path}  {result.digest}  (contract {result.manifest.contract})")
    out.data({"built": built})
    return EXIT_OK


def _print_report(report: CheckReport, out: _Output, verb: str) -> int:
    out.data(report.to_dict())
    for finding in report.findings:
        out.line(f"FAIL [{finding.code}] {finding.subject}")
        out.line(f"     {finding.message}")
        for layer in finding.layers:
            out.line(f"       - {layer}")
    for note in report.notes:
        out.line(f"note {note}")
    status = "ok" if report.ok else f"{len(report.findings)} finding(s)"
    out.line(f"{verb} {report.root}: {len(report.checked)} item(s) checked, {status}")
    return EXIT_OK if report.ok else EXIT_CHECK_FAILED


def _existing(given: str) -> str:
    """A path that exists; else ``not_found`` (an error, exit 2: not a finding)."""
    if not Path(given).exists():
        raise NotFound("file or folder", given)
    return given


def _cmd_import_openapi(args: argparse.Namespace, out: _Output) -> int:
    from packrun._openapi import import_openapi

    manifest = import_openapi(Path(args.spec), id=args.id)
    data = encode_manifest(manifest)
    if args.out is None:
        out.data(msgspec.json.decode(data))
        out.line(data.decode("utf-8").rstrip("\n"))
        return 0
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_bytes(data)
    out.data({"path": str(folder / "manifest.json"), "tools": list(manifest.tool_ids())})
    out.line(
        f"wrote {folder / 'manifest.json'}: {manifest.id} {manifest.version}, "
        f"{len(manifest.tools)} tool(s)"
    )
    return 0


def _cmd_schema(args: argparse.Namespace, out: _Output) -> int:
    schema = manifest_schema()
    text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    if args.out is None:
        out.data(schema)
        out.line(text.rstrip("\n"))
        return 0
    Path(args.out).write_text(text, encoding="utf-8")
    out.data({"path": args.out})
    out.line(f"wrote the manifest JSON Schema to {args.out}")
    return 0


def _cmd_check(args: argparse.Namespace, out: _Output) -> int:
    return _print_report(check(_existing(args.src)), out, "check")


def _cmd_verify(args: argparse.Namespace, out: _Output) -> int:
    return _print_report(verify(_existing(args.path)), out, "verify")


# --- diff: two manifests, and the semver-honesty verdict (a release gate) -----------------------

_PACK_AT = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)@([^@/\\]+)")
"""``pack@version``: a version published in the store (a path that exists wins)."""

_DiffSide: TypeAlias = str | Bundle


def _diff_path(given: str) -> str:
    """What :func:`diff` reads for a path: the path itself, or for a pack source (``pack.json``
    without ``manifest.json``) its integration entry's source folder."""
    path = Path(given)
    if not path.is_dir() or (path / "manifest.json").is_file():
        return given
    if not (path / "pack.json").is_file():
        raise NotFound(
            "manifest.json (an integration source) or pack.json (a pack source) in", given
        )
    pack = decode_pack_manifest(read_document(path / "pack.json"), source=str(path / "pack.json"))
    ref = pack.integration()
    if ref is None:
        raise NotFound("integration entry in the pack source", given)
    return str(path / ref.path)


def _pack_note(sides: Sequence[object], given: Sequence[str]) -> str | None:
    """For pack sources, what the report compares: the integration entries, not the others."""
    packs = []
    for side, text in zip(sides, given, strict=True):
        folder = Path(text)
        if isinstance(side, str) and side != text and (folder / "pack.json").is_file():
            pack = decode_pack_manifest(read_document(folder / "pack.json"), source=text)
            others = [
                f"{c.kind} {c.id} {c.version}" for c in pack.contents if c.kind != "integration"
            ]
            packs.append((pack.package.id, str(pack.package.version), others))
    if not packs:
        return None
    versions = " -> ".join(f"{p} {v}" for p, v, _ in packs)
    others = sorted({o for _, _, entries in packs for o in entries})
    shown = f"; not compared: {', '.join(others)}" if others else ""
    return f"pack {versions}: the report compares the packs' integration entries{shown}"


async def _published(rt: Runtime, pack_id: str, version: str, project: str) -> Bundle:
    """The artifact of ``pack_id`` ``version`` as ``project`` sees it in the store (digest
    included, so that a local build of the same version with other bytes is found out). As an
    exact pin: the project's own custom row first, else the vendor row; ``vendor:`` or
    ``custom:`` before the version names one."""
    channel, sep, rest = version.partition(":")
    if not (sep and channel in CHANNELS):
        channel, rest = "", version
    key = version_key(Version.parse(rest))
    entries = rt.versions(pack_id, project=project)  # not_found naming the packs it sees
    matching = [e for e in entries if e.version_key == key and channel in ("", e.channel)]
    entry = matching[-1] if matching else None  # the custom row sorts after the vendor row
    if entry is None:
        raise NotFound(f"version of {pack_id}", version, [str(e.version) for e in entries])
    if entry.digest is None:
        raise NotFound(f"integration in pack {pack_id}", str(entry.version))
    return read_bundle(await rt.artifact(entry.digest), source=f"{pack_id}@{entry.version}")


def _check_diff(args: argparse.Namespace) -> None:
    """Read the profile and settle what each side is before a store is opened."""
    # A Path is always read as a file (a str holding "=" would be taken for the profile's text).
    args.profile_levels = load_profile(Path(args.profile)) if args.profile is not None else None
    sides: list[_DiffSide | tuple[str, str]] = []
    for given in (args.old, args.new):
        at = _PACK_AT.fullmatch(given)
        sides.append((at[1], at[2]) if at and not Path(given).exists() else _diff_path(given))
    args.sides = sides


def _cmd_diff(args: argparse.Namespace, out: _Output) -> int:
    _check_diff(args)
    sides: list[_DiffSide | tuple[str, str]] = args.sides
    if any(isinstance(side, tuple) for side in sides):

        async def lookup() -> list[_DiffSide]:
            url = args.store or default_url()
            async with open_runtime(url, create=False, refresh_interval=0) as rt:
                return [
                    await _published(rt, *side, _project(args)) if isinstance(side, tuple) else side
                    for side in sides
                ]

        found = anyio.run(lookup)
    else:
        found = [side for side in sides if not isinstance(side, tuple)]
    profile: Profile | None = args.profile_levels
    report: DiffReport = diff(found[0], found[1], profile=profile)
    note = _pack_note(sides, (args.old, args.new))
    out.data({**report.to_dict(), **({"pack_note": note} if note else {})})
    if note:
        out.line(note)
    out.line(str(report))
    return EXIT_CHECK_FAILED if report.verdict == "red" else EXIT_OK


# --- the runtime commands: each opens the store, does one thing, and closes it ------------------

RuntimeBody: TypeAlias = Callable[[Runtime, argparse.Namespace, _Output], Awaitable[int]]


def _named_project(args: argparse.Namespace) -> str | None:
    """``--project``, else ``$PACKRUN_PROJECT``, else ``None`` (no project named)."""
    named: str | None = getattr(args, "project", None) or os.environ.get("PACKRUN_PROJECT")
    return named or None


def _project(args: argparse.Namespace) -> str:
    """The project a command works in: the one named, else ``default``."""
    return _named_project(args) or DEFAULT_PROJECT


def _on_runtime(
    body: RuntimeBody,
    check: Callable[[argparse.Namespace], None] | None = None,
    creates: Callable[[argparse.Namespace], bool] = lambda args: False,
) -> Callable[[argparse.Namespace, _Output], int]:
    """A command that runs ``body`` on a runtime over ``--store`` (default: ``default_url()``).

    ``check`` validates the arguments first, so bad input is reported before the store is opened
    (or created). Only a command that ``creates`` (given its arguments) may create a store that
    does not exist; the others refuse it with ``store_error``, so that a typo in ``--store`` is an
    error rather than an empty catalog."""

    def run(args: argparse.Namespace, out: _Output) -> int:
        if check is not None:
            check(args)

        async def session() -> int:
            # A command lives for one operation on what it has just loaded (and its own writes),
            # so a background refresh from the change log would only add work.
            url = args.store or default_url()
            async with open_runtime(
                url, create=creates(args), refresh_interval=0, background_sync=False
            ) as rt:
                return await body(rt, args, out)

        return anyio.run(session)

    return run


def _facts(contract: int | None, digest: str | None) -> str:
    return "no integration" if digest is None else f"contract {contract}, {digest}"


def _time(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


# --- JSON: the public types through msgspec, in the shapes the views below declare ------------
#
# Each view lists the fields of a public type that ``--json`` prints, in order; msgspec reads them
# from the object (``from_attributes``) and encodes them: versions as their text, times as
# RFC 3339 in UTC. Fields for programs of the library only (a manifest, a diff report) are left out.


class _ContentView(msgspec.Struct):
    kind: str
    id: str
    version: Version
    name: str


class _EntryView(msgspec.Struct):
    pack_id: str
    version: Version
    channel: str
    state: str
    contract: int | None
    digest: str | None
    published_at: datetime
    project: str
    entries: list[_ContentView]


class _ResolutionView(msgspec.Struct):
    pack_id: str
    version: str
    channel: str
    contract: int | None
    digest: str | None
    pin: str


class _InstallationView(msgspec.Struct):
    id: str
    pack_id: str
    pin: str
    policy: str
    allow_prerelease: bool
    created_at: datetime
    hold: str | None
    project: str


class _EventView(msgspec.Struct):
    seq: int
    installation_id: str
    actor: str
    origin: str
    from_pin: str | None
    to_pin: str
    from_version: str | None
    to_version: str | None
    at: datetime


class _NoticeView(msgspec.Struct):
    version: str
    message: str
    upgrade_deadline: date | None
    migration_url: str | None


class _UpdateAvailableView(msgspec.Struct):
    version: str
    channel: str
    bump: str
    integration: tuple[str, str] | None
    notices: list[_NoticeView]
    soaking_until: datetime | None
    blocked: str | None


class _LiveVersionView(msgspec.Struct):
    version: str
    channel: str
    published_at: datetime


class _ContentStateView(msgspec.Struct):
    kind: str
    id: str
    version: str
    update_version: str | None


class _PackUpdatesView(msgspec.Struct):
    pack_id: str
    project: str
    installations: int
    with_update: int
    by_version: list[tuple[str, int, int]]


class _ExplanationView(msgspec.Struct):
    installation: _InstallationView
    resolution: _ResolutionView | None
    candidates: list[_EntryView]
    skipped: list[tuple[str, str]]
    update: str | None
    notes: list[str]
    last_event: _EventView | None
    update_blocked: list[str]
    holding: str | None
    needs_reauth: list[str]
    update_available: _UpdateAvailableView | None
    other_live_versions: list[_LiveVersionView]
    contents: list[_ContentStateView]
    soaking: list[str]


class _SettingsView(msgspec.Struct):
    immutable_versions: bool
    strict_versions: bool


class _WorkflowView(msgspec.Struct):
    workflow_id: str
    source: str
    tools: list[str]


class _ReviewView(msgspec.Struct):
    installation_id: str
    from_version: str
    to_version: str
    bump: str
    required_bump: str
    verdict: str
    affected_workflows: list[_WorkflowView]
    runs_in_flight: list[str]
    needs_acknowledgement: bool
    acknowledge: list[str]
    needs_reauth: list[str]
    notices: list[_NoticeView]
    soaking_until: datetime | None


class _RetirementMoveView(msgspec.Struct):
    installation_id: str
    pin: str
    from_version: str
    to_version: str | None
    to_channel: str | None
    bump: str | None
    step: str | None
    acknowledge: list[str]


class _RollbackView(msgspec.Struct):
    installation_id: str
    from_version: str
    to_version: str
    drained: bool | None
    still_in_flight: list[str]


class _RunView(msgspec.Struct):
    run_id: str
    installation_id: str
    workflow_id: str | None
    pack_id: str
    version: str
    channel: str
    contract: int | None
    digest: str | None
    generation: int
    adapter: str | None
    resumed: bool
    chosen: bool
    started_at: datetime


def _as_json(value: object, view: type[msgspec.Struct]) -> dict[str, Any]:
    """``value`` (a public type) as the builtins ``view`` declares, ready for ``json.dumps``."""
    shown: dict[str, Any] = msgspec.to_builtins(
        msgspec.convert(value, view, from_attributes=True), enc_hook=str
    )
    return shown


def _entry_json(entry: CatalogEntry) -> dict[str, Any]:
    shown = _as_json(entry, _EntryView)
    shown["project"] = entry.project or None  # a vendor row belongs to no project
    return shown


def _resolution_json(res: Resolution | None) -> dict[str, Any] | None:
    return None if res is None else _as_json(res, _ResolutionView)


def _installation_json(inst: Installation) -> dict[str, Any]:
    return _as_json(inst, _InstallationView)


def _event_json(event: PinEvent) -> dict[str, Any]:
    return _as_json(event, _EventView)


def _explanation_json(why: Explanation) -> dict[str, Any]:
    shown = _as_json(why, _ExplanationView)
    shown["skipped"] = [{"version": v, "reason": reason} for v, reason in shown["skipped"]]
    for candidate in shown["candidates"]:
        candidate["project"] = candidate["project"] or None  # a vendor row belongs to no project
    if why.holding is not None:
        shown["holding"] = _for_cli(why.holding)
    return shown


def _settings_json(settings: Settings) -> dict[str, Any]:
    return _as_json(settings, _SettingsView)


def _resolved(installation_id: str, res: Resolution) -> str:
    """``acme-prod -> acme 1.1.0 (vendor, contract 2, sha256:…, pin 1.1.0)``"""
    return (
        f"{installation_id} -> {res.pack_id} {res.version} "
        f"({res.channel}, {_facts(res.contract, res.digest)}, pin {res.pin})"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]


async def _cmd_publish(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    project = _project(args) if args.channel == "custom" else None  # vendor rows are global
    entry = await rt.publish(args.path, channel=args.channel, force=args.force, project=project)
    out.committed.append(f"published {entry.pack_id} {entry.version}")
    out.data(_entry_json(entry))
    out.line(
        f"published {entry.pack_id} {entry.version} "
        f"({entry.channel}, {_facts(entry.contract, entry.digest)})"
    )
    return EXIT_OK


async def _cmd_versions(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    entries = rt.versions(args.pack, project=_project(args))
    out.data([_entry_json(e) for e in entries])
    rows = [
        [
            str(e.version),
            e.channel,
            e.state,
            "-" if e.contract is None else str(e.contract),
            "-" if e.digest is None else e.digest[: len("sha256:") + 12],
            _time(e.published_at),
        ]
        for e in entries
    ]
    for line in _table(["version", "channel", "state", "contract", "digest", "published_at"], rows):
        out.line(line)
    return EXIT_OK


async def _cmd_retire(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    project = _project(args)
    retirement = await rt.retire(
        args.pack,
        args.version,
        acknowledge_breaking=args.acknowledge_breaking,
        project=project,
    )
    out.committed.append(f"retired {retirement.entry.pack_id} {retirement.entry.version}")
    # What the command shows is its project's: the installations of other projects stay unnamed.
    mine = {inst.id for inst in rt.installations(project=project)}
    retirement = dataclasses.replace(
        retirement,
        moves=tuple(m for m in retirement.moves if m.installation_id in mine),
        pinned=tuple(i for i in retirement.pinned if i in mine),
    )
    out.data(
        {
            **_entry_json(retirement.entry),
            "pinned": list(retirement.pinned),
            "moves": [_as_json(m, _RetirementMoveView) for m in retirement.moves],
        }
    )
    for line in str(retirement).splitlines():
        out.line(line)
    return EXIT_OK


async def _cmd_install(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    inst = await rt.install(
        args.id,
        args.pack,
        args.pin,
        args.policy,
        allow_prerelease=args.allow_prerelease,
        actor=args.actor,
        project=_project(args),
    )
    out.committed.append(f"installed {inst.id} ({inst.pack_id}, pin {inst.pin})")
    res = rt.resolve(inst.id)
    out.data({"installation": _installation_json(inst), "resolution": _resolution_json(res)})
    out.line(f"installed {_resolved(inst.id, res)}, policy {inst.policy}")
    return EXIT_OK


def _own(rt: Runtime, args: argparse.Namespace) -> None:
    """``not_found`` for an installation of another project than the command's (told as if
    there were none)."""
    try:
        inst = rt.installation(args.id)
    except NotFound:
        return  # the command says so in its own words
    if inst.project != _project(args):
        raise NotFound("installation", args.id)


async def _cmd_resolve(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    _own(rt, args)
    res = rt.resolve(args.id)
    out.data({"installation_id": args.id, "resolution": _resolution_json(res)})
    out.line(_resolved(args.id, res))
    return EXIT_OK


async def _cmd_explain(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    why = rt.explain(args.id, project=_project(args))
    out.data(_explanation_json(why))
    out.line(_for_cli(str(why)))
    return EXIT_OK


async def _cmd_history(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    page = await rt.history(args.id, limit=args.limit, before=args.before, project=_project(args))
    out.data([_event_json(e) for e in page])
    for e in page:
        out.line(
            f"{_time(e.at)}  {e.from_pin or '-'} -> {e.to_pin} "
            f"({e.from_version or '-'} -> {e.to_version or '-'}) by {e.actor} ({e.origin})"
        )
    if page.before is not None:
        out.line(f"older moves: packrun history {args.id} --before {page.before}")
    return EXIT_OK


async def _cmd_gc(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    defaults = Retention()
    rt.retention = Retention(
        ended_runs=defaults.ended_runs if args.keep_runs is None else args.keep_runs * DAY,
        change_log=defaults.change_log if args.keep_changes is None else args.keep_changes * DAY,
        pin_events=defaults.pin_events if args.keep_events is None else args.keep_events * DAY,
        event_log=defaults.event_log if args.keep_log is None else args.keep_log * DAY,
    )
    report = await rt.gc(dry_run=args.dry_run)
    out.data(
        {
            "dry_run": report.dry_run,
            "ended_runs": report.ended_runs,
            "pin_events": report.pin_events,
            "changes": report.changes,
            "log_events": report.log_events,
        }
    )
    verb = "would prune" if report.dry_run else "pruned"
    out.line(
        f"{verb} {report.ended_runs} ended run(s), {report.pin_events} pin event(s), "
        f"{report.changes} change-log line(s), {report.log_events} event-log event(s) "
        f"from {rt.url}"
    )
    return EXIT_OK


def _review_json(review: UpdateReview) -> dict[str, Any]:
    shown = _as_json(review, _ReviewView)
    head = ("installation_id", "from_version", "to_version", "bump", "required_bump", "verdict")
    return {
        **{key: shown.pop(key) for key in head},
        "reason": review.report.reason,
        "notes": list(review.report.notes),
        "findings": [f.to_dict() for f in review.findings],
        **shown,
    }


async def _cmd_review(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    await rt.refresh()  # other processes' runs in flight, and what their runs observed
    review = rt.review_update(args.id, to=args.to, project=_project(args))
    out.data(_review_json(review))
    out.line(_for_cli(str(review)))
    return EXIT_OK


async def _cmd_update(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    await rt.refresh()
    review = await rt.update(
        args.id,
        to=args.to,
        actor=args.actor,
        acknowledge_breaking=args.acknowledge_breaking,
        project=_project(args),
    )
    out.committed.append(f"updated {args.id}: {review.from_version} -> {review.to_version}")
    res = rt.resolve(args.id)
    out.data({**_review_json(review), "resolution": _resolution_json(res)})
    out.line(
        f"updated {args.id}: {review.from_version} -> {review.to_version} "
        f"({review.bump}; verdict {review.verdict}) by {args.actor}"
    )
    if review.acknowledge:
        out.line("acknowledged: " + "; ".join(review.acknowledge))
    runs = review.runs_in_flight
    out.line(
        f"runs in flight on {review.from_version}: {len(runs)}"
        + (f" ({', '.join(runs[:10])}); they finish on it" if runs else "")
        + f"; new runs use {review.to_version}"
    )
    out.line(_resolved(args.id, res))
    return EXIT_OK


def _rollback_json(back: Rollback, timeout: float | None) -> dict[str, Any]:
    shown = _as_json(back, _RollbackView)
    head = ("installation_id", "from_version", "to_version")
    return {**{key: shown.pop(key) for key in head}, "drain_timeout": timeout, **shown}


async def _cmd_rollback(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    before = rt.resolve(args.id).version
    try:
        back = await rt.rollback(
            args.id,
            args.version,
            actor=args.actor,
            drain_timeout=args.drain_timeout,
            project=_project(args),
        )
    except anyio.get_cancelled_exc_class():  # Ctrl-C: while waiting for the drain, the pin moved
        now = rt.resolve(args.id).version
        if now != before:
            out.committed.append(
                f"rolled back {args.id}: {before} -> {now}; the rollback stands (the wait for "
                f"{before} to drain was interrupted, and its runs in flight finish on it)"
            )
        raise
    out.committed.append(f"rolled back {args.id}: {back.from_version} -> {back.to_version}")
    res = rt.resolve(args.id)
    out.data({**_rollback_json(back, args.drain_timeout), "resolution": _resolution_json(res)})
    out.line(f"rolled back {args.id}: {back.from_version} -> {back.to_version} by {args.actor}")
    if back.drained is None:
        out.line(
            f"{back.from_version}: not waited for (--drain-timeout SECONDS waits); "
            f"runs of {args.id} in flight on it finish on it"
        )
    elif back.drained:
        out.line(f"{back.from_version}: drained (no run of {args.id} in flight on it)")
    else:
        still = back.still_in_flight
        shown = ", ".join(still[:10]) + (", ..." if len(still) > 10 else "")
        out.line(
            f"{back.from_version}: still in flight after {args.drain_timeout:g}s: {shown}; "
            "they finish on it"
        )
    out.line(_resolved(args.id, res))
    return EXIT_OK


def _seconds(text: str) -> float:
    """``--drain-timeout``: a number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds, 0 or more")
    return value


async def _cmd_pin(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    inst = await rt.set_pin(args.id, args.pin, actor=args.actor, project=_project(args))
    out.committed.append(f"pinned {inst.id} to {inst.pin}")
    res = rt.resolve(inst.id)
    out.data({"installation": _installation_json(inst), "resolution": _resolution_json(res)})
    out.line(f"pinned {_resolved(inst.id, res)}")
    return EXIT_OK


async def _cmd_policy(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    inst = await rt.set_policy(
        args.id,
        args.policy,
        actor=args.actor,
        project=_project(args),
        min_release_age=args.min_release_age,
        window=args.window,
    )
    soak = rt.soak_of(inst.id)
    out.committed.append(f"{inst.id}: policy {inst.policy}")
    out.data(
        {
            "installation": _installation_json(inst),
            "soak": {
                "min_release_age": soak.min_release_age,
                "window": None if soak.window is None else str(soak.window),
            },
        }
    )
    out.line(
        f"{inst.id}: policy {inst.policy}" + (f"; soak {soak.describe()}" if soak.is_set else "")
    )
    return EXIT_OK


async def _cmd_installations(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    found = [
        (inst, rt.explain(inst.id).resolution) for inst in rt.installations(project=_project(args))
    ]
    out.data(
        [{**_installation_json(inst), "resolution": _resolution_json(res)} for inst, res in found]
    )
    if not found:
        out.line("no installations")
        return EXIT_OK
    rows = [
        [
            inst.id,
            inst.pack_id,
            inst.pin,
            inst.policy,
            "yes" if inst.allow_prerelease else "no",
            "-" if res is None else f"{res.version} ({res.channel})",
        ]
        for inst, res in found
    ]
    for line in _table(["id", "pack", "pin", "policy", "pre-releases", "resolves to"], rows):
        out.line(line)
    return EXIT_OK


async def _cmd_settings(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    # Without a project named, the store's own settings (the vendor stream's, and every
    # project's that has not set its own); with one, that project's custom stream.
    project = _named_project(args)
    if args.immutable_versions is not None:
        await rt.set_immutable_versions(args.immutable_versions == "on", project=project)
        out.committed.append(f"immutable-versions: {args.immutable_versions}")
    if args.strict_versions is not None:
        await rt.set_strict_versions(args.strict_versions == "on", project=project)
        out.committed.append(f"strict-versions: {args.strict_versions}")
    settings = rt.settings if project is None else rt.project_settings(project)
    out.data(_settings_json(settings))
    out.line(f"immutable-versions: {'on' if settings.immutable_versions else 'off'}")
    out.line(f"strict-versions: {'on' if settings.strict_versions else 'off'}")
    return EXIT_OK


# --- call: one tool call in a run of its own ----------------------------------------------------


class ArgumentProblem(InvalidArgument):
    """A command-line value the CLI cannot use (code ``invalid_argument``, as for any value that
    is not one of those allowed). The message names the option and the problem and never repeats
    a credential."""

    def __init__(self, what: str, problem: str, expected: str) -> None:
        self.what = what
        self.given = None
        self.allowed = (expected,)
        PackrunError.__init__(self, f"{what}: {problem}; expected {expected}")


AUTH_MODES: tuple[AuthMode, ...] = ("none", "api_key", "oauth2", "basic")
AUTH_ENV = {
    "key": "PACKRUN_AUTH_KEY",
    "token": "PACKRUN_AUTH_TOKEN",
    "username": "PACKRUN_AUTH_USERNAME",
    "password": "PACKRUN_AUTH_PASSWORD",
}
"""The environment variables ``call`` reads credentials from, by the option each stands for."""
_OPTIONS = {name: f"--{name}" for name in AUTH_ENV}
_MODE_FIELDS: dict[AuthMode, tuple[str, ...]] = {
    "none": (),
    "api_key": ("key",),
    "oauth2": ("token",),
    "basic": ("username", "password"),
}
_MODE_EXPECTS: dict[AuthMode, str] = {
    "none": "no credentials",
    "api_key": "--key",
    "oauth2": "--token and any --scope",
    "basic": "--username and --password",
}
_EXAMPLE_INPUT = 'a JSON object, such as {"limit": 2}'


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "an array"


def _tool_input(args: argparse.Namespace) -> dict[str, Any] | None:
    """The tool's input from ``--input`` or ``--input-file`` (``-``: standard input), if given."""
    if args.input is not None:
        what, text = "--input", args.input
    elif args.input_file is not None:
        what = f"--input-file {args.input_file}"
        path = args.input_file
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ArgumentProblem(
                what, f"not UTF-8 text (byte {exc.start})", _EXAMPLE_INPUT
            ) from None
    else:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArgumentProblem(
            what,
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            _EXAMPLE_INPUT,
        ) from None
    if not isinstance(value, dict):
        raise ArgumentProblem(what, f"{_json_kind(value)}, not an object", _EXAMPLE_INPUT)
    return value


def _mode_of(given: dict[str, str | None], names: dict[str, str], where: str) -> AuthMode | None:
    """The one auth mode the credentials ``given`` are for; ``None`` when there are none."""
    modes = [m for m, fields in _MODE_FIELDS.items() if any(given[f] is not None for f in fields)]
    if len(modes) > 1:
        shown = ", ".join(names[f] for f in AUTH_ENV if given[f] is not None)  # names, not values
        raise ArgumentProblem(
            "credentials",
            f"the {where} has credentials for more than one auth mode ({shown})",
            f"--auth to choose one of {', '.join(AUTH_MODES)}",
        )
    return modes[0] if modes else None


def _auth(args: argparse.Namespace) -> Auth | None:
    """The run's credentials: each from its option, else from its ``$PACKRUN_AUTH_*`` variable.

    The mode is ``--auth``, else the one the options' credentials (or ``--scope``) are for, else
    the one the environment's are for. With none of these the run is given no credentials
    (``None``: the tool sees mode ``none``, and a tool that needs credentials refuses).
    """
    options: dict[str, str | None] = {f: getattr(args, f) for f in AUTH_ENV}
    env: dict[str, str | None] = {f: os.environ.get(var) or None for f, var in AUTH_ENV.items()}
    scopes: list[str] = args.scope or []
    mode: AuthMode | None = args.auth
    if mode is None:
        mode = (
            _mode_of(options, _OPTIONS, "command line")
            or ("oauth2" if scopes else None)
            or _mode_of(env, {f: f"${var}" for f, var in AUTH_ENV.items()}, "environment")
            or "none"
        )
    fields = _MODE_FIELDS[mode]
    stray = [_OPTIONS[f] for f, v in options.items() if v is not None and f not in fields]
    if scopes and mode != "oauth2":
        stray.append("--scope")
    if stray:
        verb = "does" if len(stray) == 1 else "do"
        raise ArgumentProblem(
            f"--auth {mode}", f"{', '.join(stray)} {verb} not go with it", _MODE_EXPECTS[mode]
        )
    values = {f: options[f] if options[f] is not None else env[f] for f in fields}
    missing = [f"{_OPTIONS[f]} (or ${AUTH_ENV[f]})" for f, v in values.items() if v is None]
    if missing:
        raise ArgumentProblem(
            f"--auth {mode}", f"missing {' and '.join(missing)}", _MODE_EXPECTS[mode]
        )
    if mode == "api_key":
        return Auth.api_key(values["key"] or "")
    if mode == "oauth2":
        return Auth.oauth2(values["token"] or "", scopes=scopes)
    if mode == "basic":
        return Auth.basic(values["username"] or "", values["password"] or "")
    return Auth.none() if args.auth == "none" else None


def _check_call(args: argparse.Namespace) -> None:
    """Read the input and the credentials before the store is opened."""
    args.tool_input = _tool_input(args)
    args.credentials = _auth(args)


def _run_json(run: Run) -> dict[str, Any]:
    """A run's binding (credentials are not part of it)."""
    return _as_json(run, _RunView)


def _tool_raised(tool: str, exc: Exception) -> ToolFailed:
    """A tool's own exception (not a ``ToolError``) as its failure: its type is the tool's code,
    its message (credentials already redacted by the run) the message."""
    return ToolFailed(tool, type(exc).__name__, str(exc) or type(exc).__name__)


async def _cmd_call(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    _own(rt, args)
    # rt.call() in its two steps, so that --json can show the run's binding as well.
    async with rt.run(
        args.id,
        run_id=args.run_id,
        workflow_id=args.workflow_id,
        auth=args.credentials,
        version=args.run_version,
    ) as run:
        try:
            output = await run.call(args.tool, args.tool_input)
        except PackrunError:
            raise
        except Exception as exc:
            raise _tool_raised(args.tool, exc) from exc
        except anyio.get_cancelled_exc_class():  # Ctrl-C: the run ends as the runtime closes
            out.committed.append(f"run {run.run_id} of {args.id} ended; its id is free")
            raise
    payload = {"run": _run_json(run), "output": output} if args.json else output
    # A value JSON has no type for (a datetime, a set) is printed as its text.
    print(json.dumps(payload, indent=2, default=str), file=out.stream)
    return EXIT_OK


# --- status: installations, versions with their runs in flight, totals ---------------------------


def _health_json(health: VersionHealth) -> dict[str, int | float | None]:
    return {
        "calls": health.calls,
        "invalid_input": health.invalid_input,
        "invalid_output": health.invalid_output,
        "tool_errors": health.tool_errors,
        "timeouts": health.timeouts,
        "crashes": health.crashes,
        "error_rate": health.error_rate,
        "p50": health.p50,
        "p99": health.p99,
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:g}"


async def _cmd_status(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    # Other processes' runs under live leases: a runtime opened for one command has not read them.
    await rt.refresh()
    project = _project(args)
    packs = [args.pack] if args.pack is not None else rt.packs(project=project)
    # not_found for a PACK the project does not see
    entries = [e for pack in packs for e in rt.versions(pack, project=project)]
    explained = [
        (inst, rt.explain(inst.id), rt.in_flight_for(inst.id))
        for inst in rt.installations(project=project)
        if inst.pack_id in packs
    ]
    installations = [(inst, why.resolution, n) for inst, why, n in explained]
    # What an update policy did not move to, and why (a major, breaking findings, a red verdict).
    blocked = {inst.id: why.update_blocked for inst, why, _ in explained}
    # The update available (as review and update take it), and a policy held by a manual move.
    available = {
        inst.id: (why.update, None if why.holding is None else _for_cli(why.holding))
        for inst, why, _ in explained
    }
    reauth = {inst.id: why.needs_reauth for inst, why, _ in explained}
    views = {inst.id: _explanation_json(why) for inst, why, _ in explained}
    fleet = {inst.id: why for inst, why, _ in explained}
    updates = [rt.pack_updates(pack, project=project) for pack in packs]
    versions = [
        (
            e,
            rt.pinned_to(e.pack_id, f"{e.channel}:{e.version}", project=project),
            rt.in_flight(e.pack_id, f"{e.channel}:{e.version}", project=project),
            rt.version_status(e.pack_id, f"{e.channel}:{e.version}", project=project),
        )
        for e in entries
    ]
    health = [rt.health(e.pack_id, f"{e.channel}:{e.version}", project=project) for e in entries]
    statuses = Counter(status for *_, status in versions)
    totals = {
        "packs": len(packs),
        "installations": len(installations),
        "versions": len(versions),
        "active": statuses["active"],
        "draining": statuses["draining"],
        "drained": statuses["drained"],
        "runs_in_flight": sum(count for _, _, count, _ in versions),
    }
    out.data(
        {
            "project": project,
            "installations": [
                {
                    **_installation_json(inst),
                    "resolution": _resolution_json(res),
                    "in_flight": n,
                    "update_blocked": list(blocked[inst.id]),
                    "update": available[inst.id][0],
                    "holding": available[inst.id][1],
                    "needs_reauth": list(reauth[inst.id]),
                    "update_available": views[inst.id]["update_available"],
                    "soaking": views[inst.id]["soaking"],
                    "other_live_versions": views[inst.id]["other_live_versions"],
                    "contents": views[inst.id]["contents"],
                }
                for inst, res, n in installations
            ],
            "packs": [_as_json(u, _PackUpdatesView) for u in updates],
            "versions": [
                {
                    "pack_id": e.pack_id,
                    "version": str(e.version),
                    "channel": e.channel,
                    "state": e.state,
                    "contract": e.contract,
                    "digest": e.digest,
                    "installations": pinned,
                    "in_flight": n,
                    "status": status,
                    "health": _health_json(h),
                }
                for (e, pinned, n, status), h in zip(versions, health, strict=True)
            ],
            "totals": totals,
        }
    )

    if installations:
        rows = [
            [
                inst.id,
                inst.pack_id,
                inst.pin,
                "-" if res is None else f"{res.version} ({res.channel})",
                inst.policy,
                str(n),
            ]
            for inst, res, n in installations
        ]
        for line in _table(["id", "pack", "pin", "resolves to", "policy", "in flight"], rows):
            out.line(line)
        for inst, _, _ in installations:
            holding = available[inst.id][1]
            if holding:
                out.line(f"{inst.id}: policy holding: {holding}")
            if blocked[inst.id]:
                out.line(
                    f"{inst.id}: update blocked: breaking_diff ({'; '.join(blocked[inst.id])})"
                )
            if reauth[inst.id]:
                out.line(f"{inst.id}: needs re-authentication ({'; '.join(reauth[inst.id])})")
            why = fleet[inst.id]
            if why.update_available is not None:
                for notice in why.update_available.notices:
                    out.line(f"{inst.id}: notice: {notice}")
            for soaking in why.soaking:
                out.line(f"{inst.id}: soaking: {soaking}")
    else:
        out.line("no installations" + (f" of {args.pack}" if args.pack is not None else ""))
    out.line()
    if versions:
        header = ["pack", "version", "channel", "state", "installations", "in flight", "status"]
        header += ["calls", "errors", "invalid in", "invalid out", "p50 ms", "p99 ms"]
        rows = [
            [
                e.pack_id,
                str(e.version),
                e.channel,
                e.state,
                str(len(pinned)),
                str(n),
                status,
                str(h.calls),
                str(h.errors),
                str(h.invalid_input),
                str(h.invalid_output),
                _ms(h.p50),
                _ms(h.p99),
            ]
            for (e, pinned, n, status), h in zip(versions, health, strict=True)
        ]
        for line in _table(header, rows):
            out.line(line)
    else:
        out.line("no packs published")
    out.line()
    out.line(
        (f"project {project}: " if project != DEFAULT_PROJECT else "")
        + f"{totals['installations']} installation(s); {totals['versions']} version(s) of "
        f"{totals['packs']} pack(s): {totals['active']} active, {totals['draining']} draining, "
        f"{totals['drained']} drained; {totals['runs_in_flight']} run(s) in flight"
    )
    for u in updates:
        if u.with_update:
            out.line(
                f"{u.pack_id}: {u.with_update} of {u.installations} installation(s) have an "
                "update available"
            )
    return EXIT_OK


# --- demo: the story of packrun on the sample packs ---------------------------------------------


def _cmd_demo(args: argparse.Namespace, out: _Output) -> int:
    from packrun._demo import run_demo  # only this command needs it

    result = run_demo(args.bundles, args.keep)
    out.data(result.to_list())
    out.line(result.text())
    return EXIT_OK


class UsageError(PackrunError):
    """The command line does not parse: an unknown command or option, a missing argument, a value
    that is not one of the choices (code ``usage_error``, exit 2). ``usage`` is the command's
    usage line."""

    code = "usage_error"

    def __init__(self, message: str, usage: str) -> None:
        self.usage = usage
        super().__init__(message)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`UsageError` (the subcommands' parsers too), so
    that they are reported like every other error: with their code, and as JSON with ``--json``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)", self.format_usage().strip())


LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")


def _global_options(p: argparse.ArgumentParser, default: Any) -> None:
    """The options every command takes, before or after its name (``default`` is ``SUPPRESS``
    on a command, so that an option given before the command name is not reset by it)."""
    p.add_argument(
        "--json",
        action="store_true",
        default=default if default is argparse.SUPPRESS else False,
        help="print JSON for programs (errors too)",
    )
    p.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=default if default is argparse.SUPPRESS else None,
        metavar="LEVEL",
        help="log packrun's records of LEVEL and above to stderr: " + ", ".join(LOG_LEVELS),
    )


def _store_option(p: argparse.ArgumentParser, created: str) -> None:
    p.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help=f"the store ({created}): sqlite:///path/to/state.db, "
        "postgresql://user:password@host/db?schema=NAME or memory: "
        "(default: $PACKRUN_STORE, else sqlite:///.packrun/state.db)",
    )


def _add_project(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--project",
        metavar="ID",
        default=None,
        help="the project (tenant) to work in: its installations, its custom versions and "
        "settings (default: $PACKRUN_PROJECT, else default)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="packrun",
        description="Build, check and run versioned integration bundles.",
        epilog="Exit codes: 0 ok, 1 a check failed, 2 an error.",
    )
    parser.add_argument("--version", action="version", version=f"packrun {dist_version('packrun')}")
    _global_options(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help: str, run: Callable[[argparse.Namespace, _Output], int]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _global_options(p, argparse.SUPPRESS)
        p.set_defaults(run=run)
        return p

    p = command(
        "build",
        "Build {id}-{version}.bundle.tar.gz from an integration or pack source (or a tree of them).",
        _cmd_build,
    )
    p.add_argument(
        "src", help="integration source (manifest.json + code/), pack source (pack.json) or a tree"
    )
    p.add_argument("-o", "--output", help="folder to write to (default: the source's dist/)")
    p.add_argument(
        "--contract",
        type=int,
        default=None,
        metavar="N",
        help="stamp contract generation N (a fixture for an older SDK); default: the source "
        "manifest's own, else the current generation",
    )

    p = command(
        "import-openapi",
        "Make an integration manifest from an OpenAPI 3.0/3.1 document (JSON or YAML): one tool "
        "per operation. Needs pip install 'packrun[openapi]'.",
        _cmd_import_openapi,
    )
    p.add_argument("spec", metavar="SPEC", help="the OpenAPI document (.json, .yaml or .yml)")
    p.add_argument(
        "--out", metavar="DIR", default=None, help="write DIR/manifest.json (default: print it)"
    )
    p.add_argument("--id", default=None, help="the integration id (default: from info.title)")

    p = command(
        "schema",
        "Print (or write with --out) the JSON Schema of manifest.json, for editor completion.",
        _cmd_schema,
    )
    p.add_argument("--out", metavar="FILE", default=None, help="write the schema to FILE")

    p = command(
        "check",
        "Check a pack source or tree: version layers, index, pack pace and dist/.",
        _cmd_check,
    )
    p.add_argument("src")

    p = command(
        "verify",
        "Rebuild the integrations under PATH and compare with dist/; or check one bundle file.",
        _cmd_verify,
    )
    p.add_argument("path")

    p = command(
        "diff",
        "Compare two versions of an integration: findings by level, required and declared bump, "
        "and the verdict (ok, amber, red). Exit 1 on red: usable as a release gate.",
        _cmd_diff,
    )
    for name, which in (("old", "the old version"), ("new", "the new version")):
        p.add_argument(
            name,
            metavar=name.upper(),
            help=f"{which}: a bundle file, a manifest.json, an integration or pack source folder, "
            "or PACK@VERSION as published in --store",
        )
    p.add_argument(
        "--profile",
        metavar="FILE",
        default=None,
        help="a profile of rule_id = level lines that reclassifies rules",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help="the store PACK@VERSION is read from (never created): sqlite:///path/to/state.db, "
        "postgresql://user:password@host/db?schema=NAME or memory: "
        "(default: $PACKRUN_STORE, else sqlite:///.packrun/state.db)",
    )
    _add_project(p)

    p = command(
        "demo",
        "Tell packrun's story on the sample packs in a throw-away store: pins, runs that keep "
        "their version, updates, review, rollback.",
        _cmd_demo,
    )
    p.add_argument(
        "--keep",
        metavar="DIR",
        default=None,
        help="keep the store in DIR/state.db (default: a temporary folder, deleted at the end)",
    )
    p.add_argument(
        "--bundles",
        metavar="DIR",
        default=None,
        help="the sample packs (default: the ones installed with packrun)",
    )

    def runtime_command(
        name: str,
        help: str,
        body: RuntimeBody,
        check: Callable[[argparse.Namespace], None] | None = None,
        creates: Callable[[argparse.Namespace], bool] = lambda args: False,
    ) -> argparse.ArgumentParser:
        p = command(name, help, _on_runtime(body, check, creates))
        created = {
            "publish": "created if missing",
            "settings": "created if missing when a setting changes",
        }.get(name, "never created")
        _store_option(p, created)
        _add_project(p)
        return p

    register_source_commands(sub, _on_runtime, _global_options, _store_option)
    register_rollout_commands(runtime_command, _seconds)
    register_fleet_commands(sub, _on_runtime, _global_options, _store_option, _project)

    p = runtime_command(
        "publish",
        "Publish a bundle file, or the built artifact of a pack or integration source folder.",
        _cmd_publish,
        creates=lambda args: True,
    )
    p.add_argument("path", help="a .bundle.tar.gz file, or a pack or integration source folder")
    p.add_argument(
        "--channel", choices=CHANNELS, default="vendor", help="the channel (default: vendor)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing version (only with immutable versions off)",
    )

    p = runtime_command(
        "versions", "List every published version of a pack, live and retired.", _cmd_versions
    )
    p.add_argument("pack")

    p = runtime_command(
        "retire",
        "Retire a version: it leaves latest pins and update targets; exact pins keep it.",
        _cmd_retire,
    )
    p.add_argument("pack")
    p.add_argument("version")
    p.add_argument(
        "--acknowledge-breaking",
        action="store_true",
        help="retire even if a latest* installation moves across a major or breaking findings",
    )

    p = runtime_command("install", "Install a pack as an installation ID.", _cmd_install)
    p.add_argument("id", metavar="ID")
    p.add_argument("pack", metavar="PACK")
    p.add_argument(
        "--pin",
        default=None,
        help="latest, latest-vendor, latest-custom, an exact version or an alias (@stable) "
        "(default: the exact version latest picks now)",
    )
    p.add_argument("--policy", choices=POLICIES, default="manual", help="default: manual")
    p.add_argument(
        "--allow-prerelease", action="store_true", help="let dynamic pins pick pre-releases"
    )
    p.add_argument("--actor", default="system", help="who, for the pin history (default: system)")

    p = runtime_command(
        "resolve", "Print which artifact runs for an installation now.", _cmd_resolve
    )
    p.add_argument("id", metavar="ID")

    p = runtime_command(
        "explain",
        "Explain an installation's resolution: pin, candidates, what was skipped and why.",
        _cmd_explain,
    )
    p.add_argument("id", metavar="ID")

    p = runtime_command(
        "history",
        "Print an installation's pin moves, oldest first (the newest --limit of them).",
        _cmd_history,
    )
    p.add_argument("id", metavar="ID")
    p.add_argument(
        "--limit",
        type=int,
        default=HISTORY_LIMIT,
        help=f"the most moves to print (default: {HISTORY_LIMIT})",
    )
    p.add_argument(
        "--before",
        type=int,
        default=None,
        metavar="SEQ",
        help="print the moves before this one (the cursor the previous page printed)",
    )

    p = runtime_command(
        "gc",
        "Prune what retention no longer keeps: old ended runs, pin events, change-log lines, "
        "event-log events.",
        _cmd_gc,
    )
    p.add_argument(
        "--dry-run", action="store_true", help="count what would be pruned, prune nothing"
    )
    for flag, what, days in (
        ("--keep-runs", "ended runs", Retention().ended_runs / DAY),
        ("--keep-changes", "change-log lines", Retention().change_log / DAY),
        ("--keep-events", "pin events", Retention().pin_events / DAY),
        ("--keep-log", "the event log's events", Retention().event_log / DAY),
    ):
        p.add_argument(
            flag,
            type=float,
            default=None,
            metavar="DAYS",
            help=f"keep {what} this many days (default: {days:g})",
        )

    p = runtime_command(
        "review",
        "Review an update before making it: bump, verdict, findings, affected workflows, runs "
        "in flight, and whether it needs --acknowledge-breaking.",
        _cmd_review,
    )
    p.add_argument("id", metavar="ID")
    p.add_argument(
        "--to",
        metavar="VERSION",
        default=None,
        help="the target (default: the newest live version above the current one on the "
        "installation's channel)",
    )

    p = runtime_command(
        "update",
        "Move an installation to a newer version; runs in flight finish on theirs.",
        _cmd_update,
    )
    p.add_argument("id", metavar="ID")
    p.add_argument(
        "--to",
        metavar="VERSION",
        default=None,
        help="the target (default: the newest live version above the current one on the "
        "installation's channel)",
    )
    p.add_argument("--actor", default="system", help="who, for the pin history (default: system)")
    p.add_argument(
        "--acknowledge-breaking",
        action="store_true",
        help="the review was seen: allow a major, breaking findings or a red verdict",
    )

    p = runtime_command(
        "rollback",
        "Move an installation back to an earlier version; the version left behind drains.",
        _cmd_rollback,
    )
    p.add_argument("id", metavar="ID")
    p.add_argument("version", metavar="VERSION", help="an earlier version, live or retired")
    p.add_argument("--actor", default="system", help="who, for the pin history (default: system)")
    p.add_argument(
        "--drain-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=None,
        help="wait up to SECONDS for the installation's runs on the version left to end, and "
        "report those still in flight (default: do not wait)",
    )

    p = runtime_command("pin", "Move an installation's pin.", _cmd_pin)
    p.add_argument("id", metavar="ID")
    p.add_argument(
        "pin", metavar="PIN", help="latest, latest-vendor, latest-custom, a version or @ALIAS"
    )
    p.add_argument("--actor", default="system", help="who, for the pin history (default: system)")

    p = runtime_command("policy", "Change how an installation follows new versions.", _cmd_policy)
    p.add_argument("id", metavar="ID")
    p.add_argument("policy", metavar="POLICY", choices=POLICIES, help=", ".join(POLICIES))
    p.add_argument("--actor", default="system", help="who, for the log (default: system)")
    p.add_argument(
        "--min-release-age",
        type=_age,
        default=None,
        metavar="AGE",
        help="an auto policy takes a version only once it is this old: 3d, 12h, 90m or seconds "
        "(default: the project's, see packrun soak)",
    )
    p.add_argument(
        "--window",
        default=None,
        metavar="WINDOW",
        help="an auto policy moves only inside this window, e.g. 'mon-fri 02:00-06:00' (UTC)",
    )

    runtime_command("installations", "List every installation.", _cmd_installations)

    p = runtime_command(
        "settings",
        "Show the store-wide settings, changing those given.",
        _cmd_settings,
        creates=lambda args: (
            args.immutable_versions is not None or args.strict_versions is not None
        ),
    )
    p.add_argument(
        "--immutable-versions",
        choices=("on", "off"),
        default=None,
        help="refuse every republish (on, the default) or allow it with --force (off)",
    )
    p.add_argument(
        "--strict-versions",
        choices=("on", "off"),
        default=None,
        help="only MAJOR.MINOR.PATCH may be published (on) or any version (off, the default)",
    )

    p = runtime_command(
        "call",
        "Call one tool of an installation in a run of its own; print the tool's output as JSON.",
        _cmd_call,
        _check_call,
    )
    p.add_argument("id", metavar="ID", help="the installation")
    p.add_argument("tool", metavar="TOOL", help="the tool id")
    given = p.add_mutually_exclusive_group()
    given.add_argument("--input", metavar="JSON", help="the tool's input: a JSON object")
    given.add_argument(
        "--input-file", metavar="PATH", help="read the input from a file (- for standard input)"
    )
    p.add_argument(
        "--auth",
        choices=AUTH_MODES,
        default=None,
        help="the auth mode (default: the one the credentials given are for, else none)",
    )
    p.add_argument("--key", metavar="K", help="API key (better: $PACKRUN_AUTH_KEY)")
    p.add_argument(
        "--token", metavar="T", help="OAuth 2 access token (better: $PACKRUN_AUTH_TOKEN)"
    )
    p.add_argument(
        "--scope",
        metavar="S",
        action="append",
        help="a scope the token was granted (repeat for more)",
    )
    p.add_argument("--username", metavar="U", help="basic auth user (or $PACKRUN_AUTH_USERNAME)")
    p.add_argument(
        "--password", metavar="P", help="basic auth password (better: $PACKRUN_AUTH_PASSWORD)"
    )
    p.add_argument(
        "--run-id", metavar="RID", default=None, help="the run id (one seen before resumes it)"
    )
    p.add_argument("--workflow-id", metavar="W", default=None, help="the workflow the run is of")
    p.add_argument(
        "--version",
        metavar="V",
        dest="run_version",
        default=None,
        help="run on this version instead of the installation's (one it could move to; "
        "the pin does not move)",
    )

    p = runtime_command(
        "status",
        "Show installations, every version with its runs in flight and status, and totals.",
        _cmd_status,
    )
    p.add_argument("pack", metavar="PACK", nargs="?", default=None, help="only this pack")

    return parser


_CLI_WORDS: tuple[tuple[str, str], ...] = (
    ("acknowledge_breaking=True", "--acknowledge-breaking"),
    ("so force=True changes nothing", "so --force changes nothing"),
    ("(force changes nothing)", "(--force changes nothing)"),
    (
        "publish it again with force (force=True, or packrun publish --force)",
        "publish it again with --force",
    ),
    (
        "this open does not create one (create=False)",
        "this command does not create one: check --store and $PACKRUN_STORE (packrun publish "
        "creates a store)",
    ),
    ("or after set_policy", "or after packrun policy"),
    (
        "change it with set_pin or set_policy (packrun pin, packrun policy)",
        "change it with packrun pin or packrun policy",
    ),
)
"""The library's words for its keyword arguments, and what a user of the command line types."""


def _for_cli(text: str) -> str:
    """``text`` (a message or a report of the library) in the command line's words."""
    for library, cli in _CLI_WORDS:
        text = text.replace(library, cli)
    return text


def _json_from(argv: Sequence[str]) -> bool:
    """Whether ``--json`` was given, for a command line that does not parse."""
    given = list(argv)
    return "--json" in (given[: given.index("--")] if "--" in given else given)


def _error(code: str, message: str, as_json: bool, out: TextIO, err: TextIO, **more: Any) -> None:
    """An error: ``packrun: error: [code] message`` on stderr, or a JSON object on stdout."""
    if as_json:
        payload = {"error": {"code": code, "message": message, **more}}
        print(json.dumps(payload, indent=2), file=out)
    else:
        print(f"packrun: error: [{code}] {message}", file=err)


def _log_to(stream: TextIO, level: str | None) -> logging.Handler | None:
    """``--log-level``: packrun's records of ``level`` and above to ``stream``."""
    if level is None:
        return None
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("packrun: %(levelname)s: %(name)s: %(message)s"))
    logger = logging.getLogger("packrun")
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    return handler


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    out_stream = stdout or sys.stdout
    err_stream = stderr or sys.stderr
    given = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args = parser.parse_args(given)
    except UsageError as exc:
        if not _json_from(given):
            print(exc.usage, file=err_stream)
        _error(exc.code, exc.detail, _json_from(given), out_stream, err_stream, usage=exc.usage)
        return EXIT_ERROR
    except SystemExit as exc:  # --help and --version print, and exit 0
        return int(exc.code or 0)
    out = _Output(args.json, out_stream)
    logger = logging.getLogger("packrun")
    level = logger.level
    handler = _log_to(err_stream, args.log_level)
    try:
        return _run(args, out, err_stream)
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(level)


def _run(args: argparse.Namespace, out: _Output, err_stream: TextIO) -> int:
    as_json = args.json
    try:
        code: int = args.run(args, out)
    except PackrunError as exc:
        more = {"tool": exc.tool, "tool_code": exc.tool_code} if isinstance(exc, ToolFailed) else {}
        _error(exc.code, _for_cli(exc.detail), as_json, out.stream, err_stream, **more)
        return EXIT_ERROR
    except KeyboardInterrupt:
        done = "; ".join(out.committed)
        message = "interrupted" + (f"; done before that: {done}" if done else "")
        _error("interrupted", message, as_json, out.stream, err_stream, committed=out.committed)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (packrun ... | head): see entrypoint()
        raise
    except OSError as exc:
        message = f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
        _error("io_error", message, as_json, out.stream, err_stream)
        return EXIT_ERROR
    except Exception:  # a bug, not bad input: say so, and never exit 1 ("a check failed")
        print("packrun: internal error; please report it with this traceback:", file=err_stream)
        traceback.print_exc(file=err_stream)
        return EXIT_ERROR
    return code


def entrypoint() -> None:
    """The console script."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of the output went away (``packrun ... | head``): stop quietly, as other
        # tools do, and keep Python from complaining when it flushes stdout on the way out.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE, what a shell reports for it
    raise SystemExit(code)
