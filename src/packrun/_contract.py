"""Contract generations: the window of generations a runtime supports, and its one checker.

A bundle is stamped at build time with the generation of the runtime contract it was compiled
against (the shape of ``ctx.auth`` and the dispatch protocol). This runtime's current generation is
:data:`CURRENT_GENERATION`; the previous one runs through a translation adapter.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final, Literal

from packrun._args import check_choice, check_generations, check_label, check_whole
from packrun.errors import BundleContractIncompatible, IntegrationContractIncompatible

__all__ = [
    "CURRENT_GENERATION",
    "DEFAULT_GENERATIONS",
    "check_generation",
]

CURRENT_GENERATION: Final = 2
"""The generation ``packrun build`` stamps and the runtime calls directly."""

DEFAULT_GENERATIONS: Final = frozenset({CURRENT_GENERATION - 1, CURRENT_GENERATION})
"""The supported window: the current generation and the one before it."""


def check_generation(
    bundle: str,
    version: str,
    generation: int,
    supported: Collection[int] = DEFAULT_GENERATIONS,
    *,
    stage: Literal["publish", "run"] = "publish",
) -> None:
    """Refuse a bundle whose generation is outside ``supported``.

    At ``stage="publish"`` (publish and install) the error is ``integration_contract_incompatible``;
    at ``stage="run"`` it is ``BUNDLE_CONTRACT_INCOMPATIBLE``. Both name the bundle, its generation,
    the supported generations sorted, the direction and the remedy.
    """
    check_label("bundle", bundle)
    check_label("version", version)
    check_whole("generation", generation, 0, 1000)
    check_generations("supported", supported)
    check_choice("stage", stage, ("publish", "run"))
    if generation in supported:
        return
    cls = IntegrationContractIncompatible if stage == "publish" else BundleContractIncompatible
    raise cls(bundle, version, generation, supported)
