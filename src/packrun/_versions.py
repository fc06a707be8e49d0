"""Versions: strict Semantic Versioning 2.0, bump kinds and the per-line publish rule.

Parsing goes through the ``semver`` package (its strict SemVer 2.0 grammar), with two limits of
packrun's own that keep versions portable to other tooling: at most 256 characters, and no numeric
identifier above 2**53 - 1 (the largest integer every JSON reader keeps exactly).

Ordering goes through one precomputed key, so sorting and ``max`` never re-parse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final, Literal, TypeAlias

import semver

from packrun.errors import DowngradeNotAllowed, InvalidArgument, InvalidVersion

__all__ = [
    "BumpKind",
    "BumpProblem",
    "ChangeLevel",
    "Version",
    "allowed_change",
    "bump_kind",
    "bump_problem",
    "check_publish_order",
    "release_line",
    "version_key",
]

MAX_LENGTH: Final = 256
MAX_NUMBER: Final = 2**53 - 1

BumpKind: TypeAlias = Literal["major", "minor", "patch", "prerelease", "none", "downgrade"]
"""How a version moved: see :func:`bump_kind`."""

ChangeLevel: TypeAlias = Literal["major", "minor", "patch"]
"""How much change a version step permits: see :func:`allowed_change`."""

BumpProblem: TypeAlias = Literal[
    "version_decreased", "version_not_bumped", "major_not_bumped", "minor_not_bumped"
]
"""Why a version step does not cover a change: see :func:`bump_problem`."""

_STRICT = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")
_SEMVER_EXPECTED: Final = (
    "MAJOR.MINOR.PATCH with optional -PRERELEASE and +BUILD (Semantic Versioning 2.0, "
    "no leading 'v', no leading zeros, no spaces), e.g. '1.2.3' or '2.0.0-rc.1'"
)
_STRICT_EXPECTED: Final = (
    "MAJOR.MINOR.PATCH of digits and dots only (strict mode: no prefix, no pre-release, "
    "no build metadata), e.g. '1.2.3'"
)

# A pre-release identifier sorts numerically when it is all digits, lexically otherwise, and
# numeric identifiers sort below alphanumeric ones (SemVer 2.0, item 11).
_PreKey: TypeAlias = tuple[tuple[int, int | str], ...]
_Key: TypeAlias = tuple[int, int, int, int, _PreKey]


class Version:
    """A version: ordered by SemVer 2.0 precedence, hashable, immutable; ``str()`` round-trips.

    Build one with :meth:`parse`, or from parts: ``Version(2, 0, 0, "rc.1")`` (pre-release and build
    given as dotted text or as a sequence of identifiers).

    Build metadata is kept in ``str()`` but ignored for precedence, equality and hashing, so
    ``1.0.0+a`` and ``1.0.0+b`` are the same version.

    A version compares with its text as with another version (as python-semver's does): equal
    when the text is a version of the same precedence, ordered by precedence (a text that is no
    version is unequal, and ordering against it raises ``invalid_version``). Its hash is the hash
    of its text without build metadata (:func:`version_key`), so a set or dict of versions finds
    ``"1.2.3"``; a text carrying build metadata compares equal but hashes apart, so use
    :func:`version_key` to mix texts and versions as keys.

    >>> Version.parse("1.10.0") > Version.parse("1.9.0")
    True
    >>> str(Version.parse("2.0.0-beta.1+build.7"))
    '2.0.0-beta.1+build.7'
    >>> Version.parse("1.2.3") == "1.2.3", "1.2.3" in {Version.parse("1.2.3")}
    (True, True)
    >>> Version.parse("1.2.3")
    Version.parse('1.2.3')
    """

    __slots__ = ("_hash", "_key", "_text", "build", "major", "minor", "patch", "prerelease")

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...]
    build: tuple[str, ...]
    _key: _Key
    _text: str
    _hash: int

    def __init__(
        self,
        major: int,
        minor: int,
        patch: int,
        prerelease: Iterable[str] = (),
        build: Iterable[str] = (),
    ) -> None:
        # Dotted text is split; an empty text means none.
        for part in (prerelease, build):
            if not isinstance(part, str) and (
                not isinstance(part, list | tuple) or not all(isinstance(i, str) for i in part)
            ):
                raise InvalidVersion(
                    part, "a pre-release or build as dotted text or a list of identifiers"
                )
        pre = (
            tuple(prerelease.split(".") if prerelease else ())
            if isinstance(prerelease, str)
            else tuple(prerelease)
        )
        bld = tuple(build.split(".") if build else ()) if isinstance(build, str) else tuple(build)
        text = f"{major}.{minor}.{patch}"
        if pre:
            text += "-" + ".".join(pre)
        if bld:
            text += "+" + ".".join(bld)
        # Construction from parts is validated exactly like parsing, so no invalid Version exists.
        checked = _parse(text, strict=False)
        object.__setattr__(self, "major", checked.major)
        object.__setattr__(self, "minor", checked.minor)
        object.__setattr__(self, "patch", checked.patch)
        object.__setattr__(self, "prerelease", checked.prerelease)
        object.__setattr__(self, "build", checked.build)
        object.__setattr__(self, "_key", checked._key)
        object.__setattr__(self, "_text", checked._text)
        object.__setattr__(self, "_hash", checked._hash)

    @classmethod
    def parse(cls, text: str, *, strict: bool = False) -> Version:
        """Parse ``text``; raise :class:`~packrun.errors.InvalidVersion` (``invalid_version``).

        ``strict=True`` accepts only ``MAJOR.MINOR.PATCH`` of digits and dots (a store's strict mode).
        """
        if not isinstance(strict, bool):
            raise InvalidArgument("strict", strict, ["True or False"])
        return _parse(text, strict=strict)

    @property
    def is_prerelease(self) -> bool:
        """True when the version has a pre-release part (``2.0.0-rc.1``)."""
        return bool(self.prerelease)

    @property
    def release(self) -> tuple[int, int, int]:
        """``(major, minor, patch)``."""
        return (self.major, self.minor, self.patch)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Version is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Version is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Version.parse, (self._text,))

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        # What evaluates back to an equal version (with ``from packrun import Version``).
        return f"Version.parse({self._text!r})"

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Version):
            return self._key == other._key
        if isinstance(other, str):
            if other == self._text:
                return True
            try:
                return self._key == _parse(other, strict=False)._key
            except InvalidVersion:
                return False
        return NotImplemented

    def __lt__(self, other: Version | str) -> bool:
        if isinstance(other, Version):
            return self._key < other._key
        key = _other_key(other)
        return NotImplemented if key is None else self._key < key

    def __le__(self, other: Version | str) -> bool:
        if isinstance(other, Version):
            return self._key <= other._key
        key = _other_key(other)
        return NotImplemented if key is None else self._key <= key

    def __gt__(self, other: Version | str) -> bool:
        if isinstance(other, Version):
            return self._key > other._key
        key = _other_key(other)
        return NotImplemented if key is None else self._key > key

    def __ge__(self, other: Version | str) -> bool:
        if isinstance(other, Version):
            return self._key >= other._key
        key = _other_key(other)
        return NotImplemented if key is None else self._key >= key


def _other_key(other: object) -> _Key | None:
    """The precedence key of a version's text, what a version may be ordered against."""
    if isinstance(other, str):
        return _parse(other, strict=False)._key  # not a version: invalid_version, loudly
    return None


def _identifiers(part: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(part, str):
        return tuple(part.split(".")) if part else ()
    return tuple(part)


def _parse(text: object, *, strict: bool) -> Version:
    expected = _STRICT_EXPECTED if strict else _SEMVER_EXPECTED
    if not isinstance(text, str):
        raise InvalidVersion(text, f"a string: {expected}")
    if len(text) > MAX_LENGTH:
        raise InvalidVersion(
            text, f"at most {MAX_LENGTH} characters (given {len(text)}): {expected}"
        )
    # Older semver releases matched with ``$`` and Unicode ``\d``: refuse what they let through
    # (a trailing newline, non-ASCII digits) whatever release is installed.
    if not text.isascii() or "\n" in text:
        raise InvalidVersion(text, expected)
    if strict and _STRICT.fullmatch(text) is None:
        raise InvalidVersion(text, expected)
    try:
        parsed = semver.Version.parse(text)
    except (ValueError, TypeError):
        raise InvalidVersion(text, expected) from None
    pre = tuple(parsed.prerelease.split(".")) if parsed.prerelease else ()
    build = tuple(parsed.build.split(".")) if parsed.build else ()
    numbers = [parsed.major, parsed.minor, parsed.patch]
    numbers.extend(int(p) for p in pre if p.isdigit())
    if any(n > MAX_NUMBER for n in numbers):
        raise InvalidVersion(text, f"numeric identifiers of at most {MAX_NUMBER}: {expected}")
    pre_key: _PreKey = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre)
    # A release (no pre-release) sorts above every pre-release of the same numbers.
    key: _Key = (parsed.major, parsed.minor, parsed.patch, 0 if pre else 1, pre_key)
    version = object.__new__(Version)
    object.__setattr__(version, "major", parsed.major)
    object.__setattr__(version, "minor", parsed.minor)
    object.__setattr__(version, "patch", parsed.patch)
    object.__setattr__(version, "prerelease", pre)
    object.__setattr__(version, "build", build)
    object.__setattr__(version, "_key", key)
    object.__setattr__(version, "_text", text)
    object.__setattr__(version, "_hash", hash(text.partition("+")[0]))  # as its version_key
    return version


def _coerce(value: str | Version) -> Version:
    return value if isinstance(value, Version) else _parse(value, strict=False)


def bump_kind(old: str | Version, new: str | Version) -> BumpKind:
    """How the version moved from ``old`` to ``new``.

    ``downgrade`` when ``new`` is lower, ``none`` when equal (build metadata is ignored),
    ``prerelease`` when only the pre-release part moved (``1.0.0-rc.1`` to ``1.0.0-rc.2`` or to
    ``1.0.0``), else the left-most number that moved. Below 1.0.0 the left-most non-zero number acts
    as the major: ``0.1.0`` to ``0.2.0`` is ``major``, ``0.1.0`` to ``0.1.1`` is ``minor``, and every
    ``0.0.z`` step is ``major``.

    >>> bump_kind("1.2.3", "1.3.0")
    'minor'
    >>> bump_kind("0.1.0", "0.2.0")
    'major'
    """
    a, b = _coerce(old), _coerce(new)
    if a == b:
        return "none"
    if b < a:
        return "downgrade"
    if a.release == b.release:
        return "prerelease"
    if a.major != b.major:
        return "major"
    if a.major == 0:
        if a.minor != b.minor or a.minor == 0:
            return "major"
        return "minor"
    if a.minor != b.minor:
        return "minor"
    return "patch"


def allowed_change(old: str | Version, new: str | Version) -> ChangeLevel | None:
    """How much change the step from ``old`` to ``new`` permits; ``None`` for a downgrade.

    A ``major`` step permits breaking changes, a ``minor`` one additions, a ``patch`` one fixes. A
    change of pre-release permits anything (it counts as major). The same version is read as the
    smallest step that could follow it: ``patch`` for ``1.0.0``, ``minor`` for ``0.1.0``, ``major``
    for ``0.0.1`` or any pre-release.
    """
    a, b = _coerce(old), _coerce(new)
    kind = bump_kind(a, b)
    if kind == "downgrade":
        return None
    if kind == "prerelease":
        return "major"
    if kind == "none":
        if a.is_prerelease or (a.major == 0 and a.minor == 0):
            return "major"
        return "minor" if a.major == 0 else "patch"
    return kind


_LEVEL_RANK: Final[dict[ChangeLevel, int]] = {"patch": 0, "minor": 1, "major": 2}


def bump_problem(
    old: str | Version, new: str | Version, required: ChangeLevel
) -> BumpProblem | None:
    """What is wrong with shipping a change of level ``required`` as ``old`` to ``new``, if anything.

    ``version_decreased``, ``version_not_bumped`` (same version, different content),
    ``major_not_bumped`` or ``minor_not_bumped`` when the step permits less than ``required``;
    ``None`` when the step is honest.

    >>> bump_problem("1.0.0", "1.1.0", "major")
    'major_not_bumped'
    >>> bump_problem("0.1.0", "0.2.0", "major") is None
    True
    """
    if not isinstance(required, str) or required not in _LEVEL_RANK:
        raise InvalidArgument("required", required, list(_LEVEL_RANK))
    kind = bump_kind(old, new)
    if kind == "downgrade":
        return "version_decreased"
    if kind == "none":
        return "version_not_bumped"
    allowed = allowed_change(old, new)
    assert allowed is not None
    if _LEVEL_RANK[allowed] >= _LEVEL_RANK[required]:
        return None
    return "major_not_bumped" if required == "major" else "minor_not_bumped"


def version_key(version: str | Version) -> str:
    """The version without build metadata: what identifies it in a catalog, since versions that
    differ only in build metadata are equal.

    >>> version_key("1.2.0-rc.1+build.7")
    '1.2.0-rc.1'
    """
    v = _coerce(version)
    text = f"{v.major}.{v.minor}.{v.patch}"
    return text + ("-" + ".".join(v.prerelease) if v.prerelease else "")


def release_line(version: str | Version) -> tuple[int, ...]:
    """The release line a version belongs to, for the publish rule.

    ``(major,)`` from 1.0.0 on; below it the left-most non-zero number leads, as for bump kinds:
    ``(0, minor)`` for ``0.y.z``; every ``0.0.z`` is one line ``(0, 0)``, so patches of 0.0 never go
    down either.
    """
    v = _coerce(version)
    return (v.major,) if v.major else (0, v.minor)


def _line_name(line: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in line) + ".x"


def check_publish_order(
    pack: str, existing: Iterable[str | Version], new: str | Version
) -> Literal["new", "republish"]:
    """Apply the per-line publish rule to ``new`` given the versions of ``pack`` already published.

    A new version must be above every existing version of its release line (see
    :func:`release_line`); any other line may be published, so a backport ``1.4.0`` after ``2.0.0``
    is fine when it is above every ``1.x``. Returns ``"republish"`` when ``new`` equals an existing
    version (the caller applies the immutability setting), ``"new"`` otherwise, and raises
    :class:`~packrun.errors.DowngradeNotAllowed` (``downgrade_not_allowed``) naming the highest
    version of the line when ``new`` is below it.
    """
    if not isinstance(pack, str) or not pack or not pack.isprintable() or len(pack) > 200:
        raise InvalidArgument("pack", pack, ["a pack id: 1 to 200 printable characters"])
    if isinstance(existing, str | bytes | Mapping) or not isinstance(existing, Iterable):
        raise InvalidArgument(
            "existing", existing, ["a list of the versions published, such as ['1.0.0']"]
        )
    candidate = _coerce(new)
    line = release_line(candidate)
    highest: Version | None = None
    for raw in existing:
        version = _coerce(raw)
        if version == candidate:
            return "republish"
        if release_line(version) == line and (highest is None or version > highest):
            highest = version
    if highest is not None and candidate < highest:
        raise DowngradeNotAllowed(pack, str(candidate), str(highest), _line_name(line))
    return "new"
