"""Dispatch: how a run calls a bundle's tools, directly or through translation adapters.

A bundle of the current generation is called directly: its tools are ``(ctx, input)`` functions.
A bundle of an older generation is called through adapter *steps*, each translating one generation
to the next (``1 -> 2``). Moving the platform to generation 3 means registering one ``2 -> 3`` step;
steps are chained only when the runtime's window admits the older generation.

Every dispatcher has the same shape: a mapping from tool id to ``(function, is_async)``, where the
function takes ``(ctx, input)``. The run calls it without knowing which generation is behind it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Final

from packrun._adapters._base import Dispatcher, Step, ToolEntry, is_async
from packrun._adapters._gen1 import STEP as GEN1_TO_2
from packrun._bundle import LoadedBundle
from packrun._contract import CURRENT_GENERATION, check_generation

__all__ = ["STEPS", "Dispatcher", "Step", "ToolEntry", "dispatcher_for"]


def _native(loaded: LoadedBundle) -> Mapping[str, ToolEntry]:
    return MappingProxyType({tool: (fn, is_async(fn)) for tool, fn in loaded.tools.items()})


STEPS: Final[Mapping[int, Step]] = MappingProxyType({GEN1_TO_2.source: GEN1_TO_2})
"""The registered adapter steps by the generation they translate from."""


def dispatcher_for(
    loaded: LoadedBundle,
    generations: Collection[int],
    *,
    current: int = CURRENT_GENERATION,
    steps: Mapping[int, Step] = STEPS,
) -> Dispatcher:
    """The dispatcher of a loaded bundle, through as many steps as its generation needs.

    The generation must be in ``generations`` (``BUNDLE_CONTRACT_INCOMPATIBLE`` otherwise), and
    every step from it to ``current`` must be registered.
    """
    bundle = loaded.bundle
    generation = loaded.generation
    check_generation(bundle.id, bundle.version, generation, generations, stage="run")
    tools_list = bundle.manifest.tool_ids()
    if generation == current:
        return Dispatcher(loaded, _native(loaded), generation, None, tools_list)
    chain = list(range(generation, current))
    if generation > current or any(g not in steps for g in chain):
        check_generation(bundle.id, bundle.version, generation, (current,), stage="run")
    tools = _native(loaded)  # empty for a bundle older than generation 2
    for source in chain:
        tools = steps[source].wrap(loaded, tools)
    name = "->".join(str(g) for g in [*chain, current])
    return Dispatcher(loaded, tools, generation, name, tools_list)
