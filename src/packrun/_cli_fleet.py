"""``packrun bulk update|rollback``, ``packrun alias set|list`` and ``packrun soak``: the CLI over
the runtime's fleet operations."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from packrun._aliases import AliasChange
from packrun._bulk import BulkPlan
from packrun._soak import Soak, parse_age
from packrun._stores import Alias

if TYPE_CHECKING:
    from packrun._cli import _Output
    from packrun._runtime import Runtime

__all__ = ["register"]

Body = Callable[["Runtime", argparse.Namespace, "_Output"], Awaitable[int]]
OnRuntime = Callable[..., Callable[[argparse.Namespace, "_Output"], int]]

EXIT_OK = 0


class _WorkflowView(msgspec.Struct):
    workflow_id: str
    source: str
    tools: list[str]


class _BulkMoveView(msgspec.Struct):
    installation_id: str
    project: str
    pack_id: str
    from_pin: str
    to_pin: str
    from_version: str
    to_version: str
    bump: str
    runs_in_flight: list[str]
    affected_workflows: list[_WorkflowView]


class _BulkBlockedView(msgspec.Struct):
    installation_id: str
    pack_id: str
    from_version: str | None
    to_version: str | None
    kind: str
    reason: str


class _SelectorView(msgspec.Struct):
    pack: str | None
    version: str | None
    project: str | None
    policy: str | None
    pin: str | None


class _BulkPlanView(msgspec.Struct):
    action: str
    selector: _SelectorView
    to: str | None
    dry_run: bool
    moves: list[_BulkMoveView]
    blocked: list[_BulkBlockedView]
    runs_in_flight: int
    affected_workflows: list[str]
    drained: bool | None
    still_in_flight: list[str]


class _AliasView(msgspec.Struct):
    project: str
    pack_id: str
    name: str
    version: str
    actor: str
    at: datetime


class _AliasChangeView(msgspec.Struct):
    alias: _AliasView
    from_version: str | None
    to_version: str
    installations: list[str]
    drained: bool | None
    still_in_flight: list[str]


class _SoakView(msgspec.Struct):
    min_release_age: float | None
    window: str | None


def _as_json(value: object, view: type[msgspec.Struct]) -> dict[str, Any]:
    shown: dict[str, Any] = msgspec.to_builtins(
        msgspec.convert(value, view, from_attributes=True), enc_hook=str
    )
    return shown


def plan_json(plan: BulkPlan) -> dict[str, Any]:
    """A bulk plan as ``--json`` prints it."""
    return _as_json(plan, _BulkPlanView)


def alias_json(alias: Alias) -> dict[str, Any]:
    """An alias as ``--json`` prints it."""
    return _as_json(alias, _AliasView)


def soak_json(soak: Soak) -> dict[str, Any]:
    """A soak as ``--json`` prints it."""
    return {"min_release_age": soak.min_release_age, "window": _window(soak)}


def _window(soak: Soak) -> str | None:
    return None if soak.window is None else str(soak.window)


def age(text: str) -> float:
    """``--min-release-age``: ``3d``, ``12h``, ``90m`` or seconds."""
    try:
        return parse_age(text)
    except Exception as exc:  # argparse reports it as a usage error
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a duration such as 3d, 12h, 90m"
        ) from exc


async def _bulk_update(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    plan = await rt.bulk_update(
        args.selector,
        to=args.to,
        dry_run=args.dry_run,
        actor=args.actor,
        acknowledge_breaking=args.acknowledge_breaking,
    )
    return _report(plan, out)


async def _bulk_rollback(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    plan = await rt.bulk_rollback(
        args.selector,
        to=args.to,
        dry_run=args.dry_run,
        actor=args.actor,
        drain_timeout=args.drain_timeout,
    )
    return _report(plan, out)


def _report(plan: BulkPlan, out: _Output) -> int:
    if not plan.dry_run:
        out.committed += [f"moved {m}" for m in plan.moves]
    out.data(plan_json(plan))
    for line in str(plan).splitlines():  # the library's keyword, as this command spells it
        out.line(line.replace("acknowledge_breaking=True", "--acknowledge-breaking"))
    return EXIT_OK


async def _alias_set(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    change: AliasChange = await rt.set_alias(
        args.pack,
        args.name,
        args.version,
        project=args.project_id,
        actor=args.actor,
        drain_timeout=args.drain_timeout,
    )
    out.committed.append(str(change))
    out.data(_as_json(change, _AliasChangeView))
    out.line(str(change))
    for iid in change.installations:
        out.line(f"  moved {iid}")
    if change.still_in_flight:
        out.line(f"  still in flight on {change.from_version}: {', '.join(change.still_in_flight)}")
    return EXIT_OK


async def _alias_list(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    aliases = rt.aliases(args.pack, project=args.project_id)
    out.data([alias_json(a) for a in aliases])
    if not aliases:
        out.line("no aliases")
    for a in aliases:
        on = sum(
            1
            for i in rt.installations(project=a.project)
            if i.pack_id == a.pack_id and i.pin == f"@{a.name}"
        )
        out.line(
            f"{a.pack_id} @{a.name} -> {a.version} (by {a.actor} at "
            f"{a.at.isoformat(timespec='seconds')}; {on} installation(s))"
        )
    return EXIT_OK


async def _soak(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    if args.clear or args.min_release_age is not None or args.window is not None:
        before = rt.project_soak(args.project_id)
        age_value = None if args.clear else args.min_release_age
        window = None if args.clear else args.window
        if not args.clear:  # an option not given keeps its value
            age_value = before.min_release_age if age_value is None else age_value
            window = _window(before) if window is None else window
        soak = await rt.set_project_soak(
            age_value, window=window, project=args.project_id, actor=args.actor
        )
        out.committed.append(f"project {args.project_id}: soak {soak.describe()}")
    soak = rt.project_soak(args.project_id)
    out.data({"project": args.project_id, **soak_json(soak)})
    out.line(f"project {args.project_id}: soak {soak.describe()}")
    return EXIT_OK


def register(
    sub: Any,
    on_runtime: OnRuntime,
    global_options: Callable[[argparse.ArgumentParser, Any], None],
    store_help: Callable[[argparse.ArgumentParser, str], None],
    project_of: Callable[[argparse.Namespace], str],
) -> None:
    """Add ``packrun bulk ...``, ``packrun alias ...`` and ``packrun soak`` to ``sub``."""

    def with_project(body: Body) -> Body:
        async def run(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
            args.project_id = project_of(args)
            return await body(rt, args, out)

        return run

    def group(name: str, text: str) -> Any:
        p = sub.add_parser(name, help=text, description=text)
        global_options(p, argparse.SUPPRESS)
        return p.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")

    def action(actions: Any, name: str, text: str, body: Body) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=text, description=text)
        global_options(p, argparse.SUPPRESS)
        p.set_defaults(run=on_runtime(with_project(body)))
        store_help(p, "never created")
        p.add_argument(
            "--project", metavar="ID", default=None, help="the project (default: $PACKRUN_PROJECT)"
        )
        p.add_argument("--actor", default="system", help="who, for the pin history")
        return p

    bulk = group("bulk", "Update or roll back every installation a selector picks.")
    for name, body, text in (
        ("update", _bulk_update, "Update the installations the selector picks."),
        ("rollback", _bulk_rollback, "Roll back the installations the selector picks."),
    ):
        p = action(bulk, name, text + " --dry-run prints the plan and moves nothing.", body)
        p.add_argument(
            "--selector",
            required=True,
            metavar="SELECTOR",
            help="key=value pairs: pack, version, project, policy, pin "
            "(e.g. pack=acme,version=1.1.0,policy=auto_patch)",
        )
        p.add_argument(
            "--to",
            metavar="VERSION",
            required=name == "rollback",
            default=None,
            help="the target version"
            + (" (default: each one's update available)" if name == "update" else ""),
        )
        p.add_argument("--dry-run", action="store_true", help="print the plan; move nothing")
        if name == "rollback":
            p.add_argument(
                "--drain-timeout",
                metavar="SECONDS",
                type=float,
                default=None,
                help="wait up to SECONDS for their runs on the versions left to end",
            )
        if name == "update":
            p.add_argument(
                "--acknowledge-breaking",
                action="store_true",
                help="the reviews were seen: move across majors and breaking findings too",
            )

    alias = group("alias", "Named pins (stable, canary) an operator moves once for all.")
    p = action(
        alias, "set", "Create or move an alias; installations on it move with it.", _alias_set
    )
    p.add_argument("pack", metavar="PACK")
    p.add_argument("name", metavar="NAME", help="the alias (installations pin it as @NAME)")
    p.add_argument("version", metavar="VERSION", help="1.2.0, vendor:1.2.0 or custom:1.2.0")
    p.add_argument(
        "--drain-timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help="wait up to SECONDS for their runs on the version left to end",
    )
    p = action(alias, "list", "List the aliases of the project (of one pack).", _alias_list)
    p.add_argument("pack", metavar="PACK", nargs="?", default=None)

    text = (
        "Show or set the project's soak: how old a version must be before auto policies take it "
        "(--min-release-age) and when they may move (--window, UTC)."
    )
    p = sub.add_parser("soak", help=text, description=text)
    global_options(p, argparse.SUPPRESS)
    p.set_defaults(run=on_runtime(with_project(_soak)))
    store_help(p, "never created")
    p.add_argument("--project", metavar="ID", default=None, help="the project")
    p.add_argument("--actor", default="system", help="who, for the log")
    p.add_argument(
        "--min-release-age", type=age, default=None, metavar="AGE", help="3d, 12h, 90m or seconds"
    )
    p.add_argument("--window", default=None, metavar="WINDOW", help="e.g. 'mon-fri 02:00-06:00'")
    p.add_argument("--clear", action="store_true", help="clear both")
