"""A worker process for the rollout and fleet health tests, run with ``sys.executable``:

* ``URL start SECONDS``: start a rollout of shop 1.1.0 (steps 10, 50, 100, ``SECONDS`` apart),
  print ``{"started": id}``, then idle until killed;
* ``URL calls N INSTALLATION``: call ``ping`` ``N`` times, print ``{"done": N}`` and close.
"""

from __future__ import annotations

import json
import sys

import anyio

import packrun


async def main(*argv: str) -> None:
    url, command, *args = argv
    async with packrun.open_runtime(
        url, in_process={"vendor", "custom"}, fleet_interval=0.05
    ) as rt:
        if command == "start":
            status = await rt.start_rollout(
                "shop", "1.1.0", steps=(10, 50, 100), step_interval=float(args[0]), min_calls=0
            )
            print(json.dumps({"started": status.id}), flush=True)
            await anyio.sleep(3600)
        elif command == "calls":
            for _ in range(int(args[0])):
                await rt.call(args[1], "ping")
            print(json.dumps({"done": int(args[0])}), flush=True)


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:])
