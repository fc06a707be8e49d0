"""Run every benchmark: ``python benchmarks/run.py`` prints the machine and one table per subject."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _harness import machine, table  # noqa: E402


def main() -> None:
    print(machine())
    began = time.monotonic()
    for path in sorted(HERE.glob("bench_*.py")):
        started = time.monotonic()
        module = importlib.import_module(path.stem)
        print(f"\n## {path.stem.removeprefix('bench_')}\n")
        print((module.__doc__ or "").strip().splitlines()[0] + "\n")
        try:
            found = module.rows()
        except ModuleNotFoundError as exc:  # bench_executor needs uvicorn (the dev group)
            print(f"skipped: {exc.name} is not installed (install the dev dependency group)")
            continue
        print(table(found))
        print(f"\n({time.monotonic() - started:.0f} s)")
    print(f"\nThe whole run took {time.monotonic() - began:.0f} s.")


if __name__ == "__main__":
    main()
