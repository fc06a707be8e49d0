"""The shapes every dispatcher and adapter step shares."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from packrun._bundle import LoadedBundle
from packrun._manifest import Manifest

__all__ = ["Dispatcher", "Step", "ToolEntry", "is_async"]


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns an awaitable: a coroutine function, or an object whose
    ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method itself, not callable()
    )


ToolEntry: TypeAlias = tuple[Callable[..., Any], bool]
"""A callable tool ``(ctx, input) -> output`` and whether it is a coroutine function."""


@dataclass(frozen=True, slots=True)
class Dispatcher:
    """The tools of a loaded bundle as a run calls them, and what translated them."""

    loaded: LoadedBundle | None
    """The bundle imported in this process; ``None`` when its code runs in sandbox workers."""
    tools: Mapping[str, ToolEntry]
    generation: int
    """The generation the bundle was built for."""
    adapter: str | None = None
    """The adapter chain that serves it (``"1->2"``), ``None`` for the current generation."""
    manifest_tools: tuple[str, ...] = field(default=())
    manifest: Manifest | None = None
    """The bundle's manifest when its code runs in sandbox workers (``loaded`` has it otherwise)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One adapter step: makes a generation-``source`` bundle's tools look like ``source + 1``'s."""

    source: int
    wrap: Callable[[LoadedBundle, Mapping[str, ToolEntry]], Mapping[str, ToolEntry]]
    """Given the loaded bundle and its tools as the previous step left them (for the first step,
    the tools the bundle itself registers: none before generation 2), return them as the next
    generation calls them."""

    @property
    def name(self) -> str:
        return f"{self.source}->{self.source + 1}"
