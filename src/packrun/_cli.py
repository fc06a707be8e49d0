"""The ``packrun`` command: a thin layer over the library.

Exit codes: 0 when all is well, 1 when a check found something wrong, 2 on an error (bad input, a
refused operation). Every command takes ``--json`` for output a program can read.

The runtime commands (``publish``, ``install``, ``resolve`` ...) each open the store given by
``--store`` (default: ``$PACKRUN_STORE``, else ``./.packrun/state.db``), call one method of the
runtime and close it.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, TextIO, TypeAlias

import anyio

from packrun._bundle import build_bundle
from packrun._catalog import CHANNELS, CatalogEntry
from packrun._manifest import decode_pack_manifest, read_document
from packrun._resolver import Explanation, Resolution
from packrun._runtime import Runtime, open_runtime
from packrun._source import CheckReport, check, discover, verify
from packrun._stores import POLICIES, Installation, PinEvent, Settings, default_url
from packrun.errors import NotFound, PackrunError

__all__ = ["main"]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2


class _Output:
    def __init__(self, as_json: bool, stream: TextIO) -> None:
        self.as_json = as_json
        self.stream = stream

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


def _cmd_check(args: argparse.Namespace, out: _Output) -> int:
    return _print_report(check(args.src), out, "check")


def _cmd_verify(args: argparse.Namespace, out: _Output) -> int:
    return _print_report(verify(args.path), out, "verify")


# --- the runtime commands: each opens the store, does one thing, and closes it ------------------

RuntimeBody: TypeAlias = Callable[[Runtime, argparse.Namespace, _Output], Awaitable[int]]


def _on_runtime(body: RuntimeBody) -> Callable[[argparse.Namespace, _Output], int]:
    """A command that runs ``body`` on a runtime over ``--store`` (default: ``default_url()``)."""

    def run(args: argparse.Namespace, out: _Output) -> int:
        async def session() -> int:
            # A command lives for one operation on what it has just loaded (and its own writes),
            # so a background refresh from the change log would only add work.
            async with open_runtime(args.store or default_url(), refresh_interval=0) as rt:
                return await body(rt, args, out)

        return anyio.run(session)

    return run


def _facts(contract: int | None, digest: str | None) -> str:
    return "no integration" if digest is None else f"contract {contract}, {digest}"


def _time(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def _entry_json(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "pack_id": entry.pack_id,
        "version": str(entry.version),
        "channel": entry.channel,
        "state": entry.state,
        "contract": entry.contract,
        "digest": entry.digest,
        "published_at": entry.published_at.isoformat(),
        "entries": [
            {"kind": e.kind, "id": e.id, "version": str(e.version), "name": e.name}
            for e in entry.entries
        ],
    }


def _resolution_json(res: Resolution | None) -> dict[str, Any] | None:
    if res is None:
        return None
    return {
        "pack_id": res.pack_id,
        "version": res.version,
        "channel": res.channel,
        "contract": res.contract,
        "digest": res.digest,
        "pin": res.pin,
    }


def _installation_json(inst: Installation) -> dict[str, Any]:
    return {
        "id": inst.id,
        "pack_id": inst.pack_id,
        "pin": inst.pin,
        "policy": inst.policy,
        "allow_prerelease": inst.allow_prerelease,
        "created_at": inst.created_at.isoformat(),
    }


def _event_json(event: PinEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "installation_id": event.installation_id,
        "actor": event.actor,
        "origin": event.origin,
        "from_pin": event.from_pin,
        "to_pin": event.to_pin,
        "from_version": event.from_version,
        "to_version": event.to_version,
        "at": event.at.isoformat(),
    }


def _explanation_json(why: Explanation) -> dict[str, Any]:
    return {
        "installation": _installation_json(why.installation),
        "resolution": _resolution_json(why.resolution),
        "candidates": [_entry_json(c) for c in why.candidates],
        "skipped": [{"version": v, "reason": reason} for v, reason in why.skipped],
        "update": why.update,
        "notes": list(why.notes),
        "last_event": _event_json(why.last_event) if why.last_event else None,
    }


def _settings_json(settings: Settings) -> dict[str, bool]:
    return {
        "immutable_versions": settings.immutable_versions,
        "strict_versions": settings.strict_versions,
    }


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
    entry = await rt.publish(args.path, channel=args.channel, force=args.force)
    out.data(_entry_json(entry))
    out.line(
        f"published {entry.pack_id} {entry.version} "
        f"({entry.channel}, {_facts(entry.contract, entry.digest)})"
    )
    return EXIT_OK


async def _cmd_versions(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    entries = rt.versions(args.pack)
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
    entry = await rt.retire(args.pack, args.version)
    pinned = rt.pinned_to(entry.pack_id, str(entry.version))
    out.data({**_entry_json(entry), "pinned": pinned})
    out.line(
        f"retired {entry.pack_id} {entry.version}: out of latest pins and update targets; exact pins keep it"
    )
    if pinned:
        out.line(f"still pinned to it ({len(pinned)}): {', '.join(pinned)}")
    return EXIT_OK


async def _cmd_install(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    inst = await rt.install(
        args.id,
        args.pack,
        args.pin,
        args.policy,
        allow_prerelease=args.allow_prerelease,
        actor=args.actor,
    )
    res = rt.resolve(inst.id)
    out.data({"installation": _installation_json(inst), "resolution": _resolution_json(res)})
    out.line(f"installed {_resolved(inst.id, res)}, policy {inst.policy}")
    return EXIT_OK


async def _cmd_resolve(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    res = rt.resolve(args.id)
    out.data({"installation_id": args.id, "resolution": _resolution_json(res)})
    out.line(_resolved(args.id, res))
    return EXIT_OK


async def _cmd_explain(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    why = rt.explain(args.id)
    out.data(_explanation_json(why))
    out.line(str(why))
    return EXIT_OK


async def _cmd_history(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    events = rt.history(args.id)
    out.data([_event_json(e) for e in events])
    for e in events:
        out.line(
            f"{_time(e.at)}  {e.from_pin or '-'} -> {e.to_pin} "
            f"({e.from_version or '-'} -> {e.to_version or '-'}) by {e.actor} ({e.origin})"
        )
    return EXIT_OK


async def _cmd_pin(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    inst = await rt.set_pin(args.id, args.pin, actor=args.actor)
    res = rt.resolve(inst.id)
    out.data({"installation": _installation_json(inst), "resolution": _resolution_json(res)})
    out.line(f"pinned {_resolved(inst.id, res)}")
    return EXIT_OK


async def _cmd_policy(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    inst = await rt.set_policy(args.id, args.policy)
    out.data({"installation": _installation_json(inst)})
    out.line(f"{inst.id}: policy {inst.policy}")
    return EXIT_OK


async def _cmd_installations(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    found = [(inst, rt.explain(inst.id).resolution) for inst in rt.installations()]
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
    if args.immutable_versions is not None:
        await rt.set_immutable_versions(args.immutable_versions == "on")
    if args.strict_versions is not None:
        await rt.set_strict_versions(args.strict_versions == "on")
    settings = rt.settings
    out.data(_settings_json(settings))
    out.line(f"immutable-versions: {'on' if settings.immutable_versions else 'off'}")
    out.line(f"strict-versions: {'on' if settings.strict_versions else 'off'}")
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="packrun",
        description="Build, check and run versioned integration bundles.",
        epilog="Exit codes: 0 ok, 1 a check failed, 2 an error.",
    )
    parser.add_argument("--version", action="version", version=f"packrun {dist_version('packrun')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help: str, run: Callable[[argparse.Namespace, _Output], int]
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="print JSON for programs")
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

    def runtime_command(name: str, help: str, body: RuntimeBody) -> argparse.ArgumentParser:
        p = command(name, help, _on_runtime(body))
        p.add_argument(
            "--store",
            metavar="URL",
            default=None,
            help="the store: sqlite:///path/to/state.db or memory: "
            "(default: $PACKRUN_STORE, else sqlite:///.packrun/state.db)",
        )
        return p

    p = runtime_command(
        "publish",
        "Publish a bundle file, or the built artifact of a pack or integration source folder.",
        _cmd_publish,
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

    p = runtime_command("install", "Install a pack as an installation ID.", _cmd_install)
    p.add_argument("id", metavar="ID")
    p.add_argument("pack", metavar="PACK")
    p.add_argument(
        "--pin",
        default=None,
        help="latest, latest-vendor, latest-custom or an exact version "
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

    p = runtime_command("history", "Print an installation's pin moves, oldest first.", _cmd_history)
    p.add_argument("id", metavar="ID")

    p = runtime_command("pin", "Move an installation's pin.", _cmd_pin)
    p.add_argument("id", metavar="ID")
    p.add_argument("pin", metavar="PIN", help="latest, latest-vendor, latest-custom or a version")
    p.add_argument("--actor", default="system", help="who, for the pin history (default: system)")

    p = runtime_command("policy", "Change how an installation follows new versions.", _cmd_policy)
    p.add_argument("id", metavar="ID")
    p.add_argument("policy", metavar="POLICY", choices=POLICIES, help=", ".join(POLICIES))

    runtime_command("installations", "List every installation.", _cmd_installations)

    p = runtime_command(
        "settings", "Show the store-wide settings, changing those given.", _cmd_settings
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

    return parser


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    out_stream = stdout or sys.stdout
    err_stream = stderr or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help/--version
        return int(exc.code or 0)
    out = _Output(args.json, out_stream)
    try:
        code: int = args.run(args, out)
    except PackrunError as exc:
        if args.json:
            print(
                json.dumps({"error": {"code": exc.code, "message": exc.detail}}, indent=2),
                file=out_stream,
            )
        else:
            print(f"packrun: error: {exc}", file=err_stream)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        message = f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
        if args.json:
            print(
                json.dumps({"error": {"code": "io_error", "message": message}}, indent=2),
                file=out_stream,
            )
        else:
            print(f"packrun: error: {message}", file=err_stream)
        return EXIT_ERROR
    except Exception:  # a bug, not bad input: say so, and never exit 1 ("a check failed")
        print("packrun: internal error; please report it with this traceback:", file=err_stream)
        traceback.print_exc(file=err_stream)
        return EXIT_ERROR
    return code


def entrypoint() -> None:
    """The console script."""
    raise SystemExit(main())
