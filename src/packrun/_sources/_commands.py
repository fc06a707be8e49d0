"""``packrun source add | list | sync | status | remove``: the CLI over the runtime's sources."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from packrun._catalog import CHANNELS
from packrun._sources._model import DEFAULT_INTERVAL, SourceStatus, SyncReport, Trust, parse_url
from packrun._sources._sync import check_name

if TYPE_CHECKING:
    from packrun._cli import _Output
    from packrun._runtime import Runtime

__all__ = ["register"]

Body = Callable[["Runtime", argparse.Namespace, "_Output"], Awaitable[int]]
OnRuntime = Callable[..., Callable[[argparse.Namespace, "_Output"], int]]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1


def _when(at: datetime | None) -> str:
    return "-" if at is None else at.strftime("%Y-%m-%d %H:%M:%S")


def _report_lines(report: SyncReport) -> list[str]:
    if report.held_by is not None:
        return [f"source {report.source} is being synced by another process ({report.held_by})"]
    lines = [
        f"synced {report.source} at {report.revision or '-'}: {len(report.published)} published, "
        f"{len(report.skipped)} skipped, {report.unchanged} unchanged, {len(report.errors)} error(s)"
    ]
    lines += [f"  published {i.pack_id} {i.version}" for i in report.published]
    lines += [f"  skipped {i.pack_id} {i.version} [{i.code}] {i.message}" for i in report.skipped]
    lines += [f"  error [{i.code}] {i.message}" for i in report.errors]
    return lines


def _status_lines(status: SourceStatus) -> list[str]:
    spec = status.spec
    lines = [
        f"source {spec.name}: {spec.url}" + (f" ({spec.ref})" if spec.ref else ""),
        f"  channel {spec.channel}"
        + (f", project {spec.project}" if spec.project else "")
        + f", every {spec.interval:g}s, trust {spec.trust.describe()}",
        f"  last sync {_when(status.last_sync)}, revision {status.revision or '-'}, "
        f"next sync {_when(status.next_sync)}",
    ]
    if status.report is not None:
        lines += ["  " + line for line in _report_lines(status.report)]
    return lines


async def _add(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    trust = Trust.none()
    if args.allowed_signers is not None or args.gpg:
        trust = Trust.git_signed(args.allowed_signers, gpg=args.gpg)
    if args.rebuild:
        trust = trust & Trust.rebuild()
    status = await rt.add_source(
        args.name,
        args.url,
        ref=args.ref,
        interval=args.interval,
        channel=args.channel,
        project=args.project,
        trust=trust,
    )
    out.committed.append(f"added source {args.name}")
    out.data(status.to_dict())
    out.line(
        f"added source {args.name} ({args.url}); run packrun source sync {args.name} to sync now"
    )
    return EXIT_OK


async def _list(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    sources = rt.sources()
    out.data([s.to_dict() for s in sources])
    rows = [
        [
            s.name,
            s.spec.url + (f"#{s.spec.ref}" if s.spec.ref else ""),
            s.spec.channel,
            s.spec.trust.describe(),
            _when(s.last_sync),
            (s.revision or "-")[:19],
            "-" if s.report is None else ("ok" if s.report.ok else "problems"),
        ]
        for s in sources
    ]
    header = ["name", "url", "channel", "trust", "last_sync", "revision", "last_report"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


async def _sync(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    report = await rt.sync(args.name)
    out.committed += [f"published {i.pack_id} {i.version}" for i in report.published]
    out.data(report.to_dict())
    for line in _report_lines(report):
        out.line(line)
    return EXIT_OK if report.held_by is not None or report.ok else EXIT_CHECK_FAILED


async def _status(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    status = rt.source(args.name)
    out.data(status.to_dict())
    for line in _status_lines(status):
        out.line(line)
    return EXIT_OK


async def _remove(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    await rt.remove_source(args.name)
    out.committed.append(f"removed source {args.name}")
    out.data({"removed": args.name})
    out.line(f"removed source {args.name} (what it published stays published)")
    return EXIT_OK


def _check_add(args: argparse.Namespace) -> None:
    """Bad input is reported before the store is created."""
    check_name(args.name)
    parse_url(args.name, args.url, args.ref)
    if args.allowed_signers is not None:
        Trust.git_signed(args.allowed_signers)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds above 0")
    return value


def register(
    sub: Any,
    on_runtime: OnRuntime,
    global_options: Callable[[argparse.ArgumentParser, Any], None],
    store_help: Callable[[argparse.ArgumentParser, str], None],
) -> None:
    """Add ``packrun source ...`` to the CLI's subcommands ``sub``."""
    helptext = "Pack sources in Git or OCI: add, list, sync (Refresh), status, remove."
    source = sub.add_parser("source", help=helptext, description=helptext)
    global_options(source, argparse.SUPPRESS)
    actions = source.add_subparsers(dest="source_command", required=True, metavar="ACTION")

    def action(
        name: str,
        text: str,
        body: Body,
        *,
        creates: bool = False,
        check: Callable[[argparse.Namespace], None] | None = None,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=text, description=text)
        global_options(p, argparse.SUPPRESS)
        p.set_defaults(run=on_runtime(body, check, lambda args: creates))
        store_help(p, "created if missing" if creates else "never created")
        return p

    p = action(
        "add",
        "Add a pack source; it is synced on its interval by runtimes that run, or now with "
        "packrun source sync.",
        _add,
        creates=True,
        check=_check_add,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "url",
        metavar="URL",
        help="git+https://host/repo.git, git+ssh://..., git+file:///path, or oci://host/repo:tag",
    )
    p.add_argument(
        "--ref", default=None, help="a branch, tag or commit (default: the remote's HEAD)"
    )
    p.add_argument(
        "--interval",
        type=_seconds,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between background syncs, with jitter (default: {DEFAULT_INTERVAL:g})",
    )
    p.add_argument("--channel", choices=CHANNELS, default="vendor", help="default: vendor")
    p.add_argument("--project", default=None, help="the project custom rows belong to")
    p.add_argument(
        "--allowed-signers",
        metavar="FILE",
        default=None,
        help="require a signature by a key of this ssh-keygen allowed-signers file",
    )
    p.add_argument(
        "--gpg",
        action="store_true",
        help="accept GPG-signed commits and tags by a key of the syncing user's GPG keyring",
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="require artifacts byte-identical to a rebuild from their sources",
    )
    action("list", "List every pack source and its last sync.", _list)
    p = action(
        "sync",
        "Sync a pack source now (Refresh); exit 1 when something was skipped or failed.",
        _sync,
    )
    p.add_argument("name", metavar="NAME")
    p = action("status", "Show a pack source: its settings, last sync and report.", _status)
    p.add_argument("name", metavar="NAME")
    p = action("remove", "Forget a pack source; what it published stays.", _remove)
    p.add_argument("name", metavar="NAME")
