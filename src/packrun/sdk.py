"""The authoring SDK: what an integration's ``code/__init__.py`` imports (contract generation 2).

.. code-block:: python

    from packrun.sdk import Integration, ToolError

    integration = Integration("acme")

    @integration.tool("list_contacts")
    async def list_contacts(ctx, input):      # sync functions are allowed too
        if not ctx.auth.credentials.get("key"):
            raise ToolError("unauthorized", "an API key is required")
        return {"contacts": []}

The runtime calls each tool with a :class:`ToolContext` and the tool's input (a ``dict``); a tool
returns its output or raises :class:`ToolError` with a code of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeAlias, TypeVar

from packrun._auth import Auth

__all__ = ["Auth", "Integration", "ToolContext", "ToolError", "ToolFunction"]

ToolFunction: TypeAlias = Callable[["ToolContext", dict[str, Any]], Any | Awaitable[Any]]
"""A tool: ``(ctx, input) -> output``, sync or async."""

_F = TypeVar("_F", bound=ToolFunction)


class ToolError(Exception):
    """Raised by a tool to report a failure with a code of its own (``not_found``, ``rate_limited``).

    The runtime turns it into :class:`packrun.ToolFailed` (code ``tool_error``, ``.tool_code``).
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool receives besides its input: the run, the installation, the version and auth."""

    run_id: str
    installation_id: str
    pack_id: str
    version: str
    auth: Auth
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    """Logs to ``packrun.tools.<pack>``; the run's credentials are removed from every line."""


class Integration:
    """The tools of one integration, registered with :meth:`tool`.

    The bundle's ``code/__init__.py`` defines exactly one ``Integration`` at module level; its id
    and its tool ids must match the bundle's manifest.
    """

    __slots__ = ("_tools", "id")

    def __init__(self, id: str) -> None:
        self.id = id
        self._tools: dict[str, ToolFunction] = {}

    def tool(self, tool_id: str) -> Callable[[_F], _F]:
        """Register the decorated function as the tool ``tool_id``."""

        def register(fn: _F) -> _F:
            if tool_id in self._tools:
                raise ValueError(f"integration {self.id!r} already has a tool {tool_id!r}")
            self._tools[tool_id] = fn
            return fn

        return register

    @property
    def tools(self) -> Mapping[str, ToolFunction]:
        """The registered tools by id (read-only)."""
        return MappingProxyType(self._tools)

    def __repr__(self) -> str:
        return f"Integration({self.id!r}, tools={sorted(self._tools)!r})"
