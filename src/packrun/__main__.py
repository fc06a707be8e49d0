"""``python -m packrun``."""

from __future__ import annotations

from packrun._cli import entrypoint

if __name__ == "__main__":
    entrypoint()
