"""Versions: packrun's cached-key ordering against the ``semver`` package, in the same run.

The catalog keeps parsed versions, so picking the highest of a pack's versions is a ``max`` over
precomputed keys; a per-request ``max`` that parses with ``semver`` is the baseline to beat.
"""

from __future__ import annotations

import semver
from _harness import Row, best_of, main

from packrun import Version


def rows() -> list[Row]:
    texts = [f"1.{minor}.{patch}" for minor in range(10) for patch in range(10)]  # 100 versions
    texts += ["2.0.0-rc.1", "2.0.0-rc.2"]
    parsed = [Version.parse(t) for t in texts]
    theirs = [semver.Version.parse(t) for t in texts]

    return [
        Row(
            "max over 100 parsed packrun Versions",
            "max over 100 parsed semver.Versions",
            best_of(lambda: max(parsed)),
            best_of(lambda: max(theirs)),
        ),
        Row(
            "sort 100 parsed packrun Versions",
            "sort 100 parsed semver.Versions",
            best_of(lambda: sorted(parsed)),
            best_of(lambda: sorted(theirs)),
        ),
        Row(
            "Version.parse (with packrun's limits)",
            "semver.Version.parse",
            best_of(lambda: Version.parse("1.20.3-rc.1+build.5")),
            best_of(lambda: semver.Version.parse("1.20.3-rc.1+build.5")),
        ),
    ]


if __name__ == "__main__":
    main(rows)
