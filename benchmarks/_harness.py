"""A small timing harness: every subject is timed against a baseline measured in the same run.

Absolute times depend on the machine; the ratio to a baseline measured moments before on the same
machine is what a benchmark reports and what the goals in the docs are stated in.
"""

from __future__ import annotations

import platform
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version


@dataclass(frozen=True)
class Row:
    """One line of a results table."""

    subject: str
    baseline: str
    seconds: float
    baseline_seconds: float
    goal: str = ""
    """A goal on the ratio: ``"<= 2"`` or ``">= 1000"`` (how many times faster the baseline is
    slower, for speed-ups the ratio is inverted: see ``inverse``)."""
    inverse: bool = False
    """Report baseline/subject instead (a speed-up: how many times faster the subject is)."""
    unit: str = "s"
    """``"s"`` for times (the values are seconds), ``"B"`` for sizes (the values are bytes)."""

    @property
    def ratio(self) -> float:
        if self.inverse:
            return self.baseline_seconds / self.seconds
        return self.seconds / self.baseline_seconds

    @property
    def verdict(self) -> str:
        if not self.goal:
            return ""
        op, _, number = self.goal.partition(" ")
        limit = float(number)
        met = self.ratio <= limit if op == "<=" else self.ratio >= limit
        return "met" if met else "NOT met"


def best_of(fn: Callable[[], object], *, repeat: int = 7, min_time: float = 0.05) -> float:
    """Seconds per call: the best of ``repeat`` rounds, each long enough to be measured."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(number, int(number * min_time / 0.2) or 1)
    return min(timer.repeat(repeat=repeat, number=number)) / number


def machine() -> str:
    """The machine and versions the figures were measured with."""
    deps = ", ".join(f"{name} {version(name)}" for name in ("packrun", "semver", "msgspec"))
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.system()} {platform.machine()}, {platform.processor() or 'unknown CPU'}; {deps}"
    )


def table(rows: list[Row]) -> str:
    """A Markdown table with a ratio column."""
    lines = [
        "| subject | baseline | measured | baseline | ratio | goal | |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ratio = f"{row.ratio:,.0f}x faster" if row.inverse else f"{row.ratio:.2f}x"
        show = _time if row.unit == "s" else _bytes
        lines.append(
            f"| {row.subject} | {row.baseline} | {show(row.seconds)} | "
            f"{show(row.baseline_seconds)} | {ratio} | {row.goal} | {row.verdict} |"
        )
    return "\n".join(lines)


def _time(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.3f} µs"


def _bytes(size: float) -> str:
    return f"{size:,.0f} B"


def main(rows: Callable[[], list[Row]]) -> None:
    """Print the machine line and the table of ``rows()``."""
    print(machine(), file=sys.stdout)
    print(file=sys.stdout)
    print(table(rows()), file=sys.stdout)
