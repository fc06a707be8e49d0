"""Packs for the health, rollout and event tests: ``shop`` versions whose one tool, ``ping``,
answers, or fails every call (a deliberately broken release)."""

from __future__ import annotations

import json
from pathlib import Path

import packrun

CODE = """
from packrun.sdk import Integration, ToolError

integration = Integration("shop")


@integration.tool("ping")
async def ping(ctx, input):
    if {fail!r}:
        raise ToolError("broken", "this release fails every call")
    return {{"pong": {version!r}}}
"""


def shop(folder: Path, version: str, *, fail: bool = False) -> Path:
    """Build shop ``version`` under ``folder``; the path of its bundle."""
    src = folder / f"shop-{version}"
    (src / "code").mkdir(parents=True, exist_ok=True)
    manifest = {"id": "shop", "version": version, "tools": [{"id": "ping"}]}
    (src / "manifest.json").write_text(json.dumps(manifest))
    (src / "code" / "__init__.py").write_text(CODE.format(fail=fail, version=version))
    return packrun.build_bundle(src).path
