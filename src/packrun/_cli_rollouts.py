"""``packrun rollout start | status | promote | abort`` and ``packrun events``: thin commands over
:meth:`Runtime.start_rollout` and friends, and :meth:`Runtime.events`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from packrun._rollouts import DEFAULT_STEPS, RolloutStatus
from packrun._runtime import Runtime
from packrun.errors import InvalidArgument

if TYPE_CHECKING:
    from packrun._cli import _Output

__all__ = ["register"]

ACTIONS = ("start", "status", "promote", "abort")

RuntimeCommand = Callable[..., argparse.ArgumentParser]


def _project(args: argparse.Namespace) -> str:
    from packrun._cli import _project as project_of

    return project_of(args)


def _show(status: RolloutStatus, out: _Output) -> None:
    out.data(status.to_json())
    for line in str(status).splitlines():
        out.line(line)


def _steps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected percentages separated by commas, such as 1,10,50,100"
        ) from None


async def _cmd_rollout(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    await rt.refresh()  # other processes' runs in flight: what an abort reports as draining
    project = _project(args)
    if args.action == "start":
        if args.version is None:
            raise InvalidArgument(
                "version to roll out", None, ["packrun rollout start PACK VERSION"]
            )
        status = await rt.start_rollout(
            args.pack,
            args.version,
            steps=args.steps,
            step_interval=args.step_interval,
            max_error_rate=args.max_error_rate,
            max_error_increase=args.max_error_increase,
            min_calls=args.min_calls,
            selector=args.selector if args.selector is not None else args.select,
            project=project,
            actor=args.actor,
        )
        out.committed.append(f"started rollout {status.id} of {args.pack} {status.version}")
    elif args.action == "status":
        status = await rt.rollout_status(args.pack, project=project)
    elif args.action == "promote":
        status = await rt.promote_rollout(args.pack, project=project, actor=args.actor)
    else:
        status = await rt.abort_rollout(
            args.pack, project=project, actor=args.actor, drain_timeout=args.drain_timeout
        )
    _show(status, out)
    return 0


async def _cmd_events(rt: Runtime, args: argparse.Namespace, out: _Output) -> int:
    async for event in rt.events(since=args.since, follow=args.follow):
        if out.as_json:  # one JSON object a line: a stream a program reads as it comes
            print(json.dumps(event.to_json(), default=str), file=out.stream, flush=True)
        else:
            print(str(event), file=out.stream, flush=True)
    return 0


def register(
    runtime_command: RuntimeCommand,
    seconds: Callable[[str], float],
) -> None:
    """Add ``packrun rollout`` and ``packrun events``."""
    body: Callable[[Runtime, argparse.Namespace, Any], Awaitable[int]] = _cmd_rollout
    p = runtime_command(
        "rollout",
        "Start, show, promote (to 100%%) or abort a ramped rollout of a pack version. Any "
        "long-running runtime on the store (an executor) steps it through its health gates.",
        body,
    )
    p.add_argument("action", metavar="ACTION", choices=ACTIONS, help=", ".join(ACTIONS))
    p.add_argument("pack", metavar="PACK")
    p.add_argument("version", metavar="VERSION", nargs="?", help="the version (start)")
    p.add_argument(
        "--steps",
        type=_steps,
        default=DEFAULT_STEPS,
        help="percentages of the installations, in order (default: 1,10,50,100)",
    )
    p.add_argument(
        "--step-interval",
        type=seconds,
        default=600.0,
        metavar="SECONDS",
        help="seconds each step lasts before its health gate (default: 600)",
    )
    p.add_argument(
        "--max-error-rate",
        type=float,
        default=0.05,
        metavar="RATE",
        help="the highest error rate a gate passes (default: 0.05)",
    )
    p.add_argument(
        "--max-error-increase",
        type=float,
        default=0.02,
        metavar="RATE",
        help="how far above the replaced version's error rate a gate passes (default: 0.02)",
    )
    p.add_argument(
        "--min-calls",
        type=int,
        default=100,
        metavar="N",
        help="calls a gate waits for before it judges (default: 100)",
    )
    chosen = p.add_mutually_exclusive_group()
    chosen.add_argument(
        "--selector",
        metavar="SELECTOR",
        default=None,
        help="roll out to the installations this selector picks now, as for packrun bulk "
        "(pack=...,version=...,policy=...,pin=...)",
    )
    chosen.add_argument(
        "--select",
        action="append",
        metavar="ID",
        default=None,
        help="roll out to this installation (repeat for more; default: those that would take "
        "the version: dynamic pins, auto policies)",
    )
    p.add_argument("--actor", default="system", help="who, for the pin history (default: system)")
    p.add_argument(
        "--drain-timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="abort: wait up to SECONDS for runs in flight on the version to end",
    )

    p = runtime_command(
        "events",
        "Print the fleet's events (publishes, pin moves, blocked updates, rollouts) after a "
        "cursor; with --json, one JSON object a line.",
        _cmd_events,
    )
    p.add_argument(
        "--since",
        type=int,
        default=0,
        metavar="CURSOR",
        help="print the events after this cursor (default: 0, every event)",
    )
    p.add_argument("--follow", action="store_true", help="keep printing new events as they come")
