"""The shapes every dispatcher and adapter step shares."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from packrun._bundle import LoadedBundle

__all__ = ["Dispatcher", "Step", "ToolEntry"]

ToolEntry: TypeAlias = tuple[Callable[..., Any], bool]
"""A callable tool ``(ctx, input) -> output`` and whether it is a coroutine function."""


@dataclass(frozen=True, slots=True)
class Dispatcher:
    """The tools of a loaded bundle as a run calls them, and what translated them."""

    loaded: LoadedBundle
    tools: Mapping[str, ToolEntry]
    generation: int
    """The generation the bundle was built for."""
    adapter: str | None = None
    """The adapter chain that serves it (``"1->2"``), ``None`` for the current generation."""
    manifest_tools: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Step:
    """One adapter step: makes a generation-``source`` bundle's tools look like ``source + 1``'s."""

    source: int
    wrap: Callable[[LoadedBundle, Mapping[str, ToolEntry]], Mapping[str, ToolEntry]]
    """Given the loaded bundle and the tools of the previous step (empty for the first), return
    the tools as the next generation calls them."""

    @property
    def name(self) -> str:
        return f"{self.source}->{self.source + 1}"
