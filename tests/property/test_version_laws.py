"""Laws every packrun version obeys, checked on generated strict SemVer 2.0 strings.

The generator builds versions from parts (numbers 0..2**53-1 weighted to small values, numeric and
alphanumeric pre-release identifiers, optional build metadata) and is itself checked against the
official SemVer 2.0 regex copied in ``tests/data/semver``.
"""

from __future__ import annotations

import itertools
import json
import re
import string
from pathlib import Path

import pytest
import semver
from hypothesis import given, settings
from hypothesis import strategies as st

from packrun._versions import (
    Version,
    allowed_change,
    bump_kind,
    bump_problem,
    check_publish_order,
    release_line,
    version_key,
)
from packrun.errors import DowngradeNotAllowed

MAX_NUMBER = 2**53 - 1
DATA = Path(__file__).parent.parent / "data" / "semver"
_SEMVER_ORG = json.loads(
    (DATA / "semver-org__spec-examples-and-regex.json").read_text(encoding="utf-8")
)
OFFICIAL_REGEX = re.compile(_SEMVER_ORG["official_regex_numbered_groups"], re.ASCII)

Parts = tuple[int, int, int, list[str], list[str]]

_ALNUM = string.ascii_letters + string.digits + "-"

# Mostly small numbers, so that generated versions often share a prefix and compare interestingly.
numbers = st.one_of(st.integers(0, 3), st.integers(0, 20), st.integers(0, MAX_NUMBER))
numeric_identifiers = numbers.map(str)  # str(int) never has a leading zero
alphanumeric_identifiers = st.one_of(
    st.sampled_from(["alpha", "beta", "rc", "a", "b", "A", "-", "0a", "00a", "x-y", "rc1"]),
    st.text(_ALNUM, min_size=1, max_size=8).filter(lambda s: not s.isdigit()),
)
prerelease_identifiers = st.one_of(numeric_identifiers, alphanumeric_identifiers)
build_identifiers = st.text(_ALNUM, min_size=1, max_size=8)  # leading zeros are fine in build

parts: st.SearchStrategy[Parts] = st.tuples(
    numbers,
    numbers,
    numbers,
    st.one_of(st.just([]), st.lists(prerelease_identifiers, min_size=1, max_size=3)),
    st.one_of(st.just([]), st.lists(build_identifiers, min_size=1, max_size=2)),
)


def render(p: Parts) -> str:
    major, minor, patch, pre, build = p
    text = f"{major}.{minor}.{patch}"
    if pre:
        text += "-" + ".".join(pre)
    if build:
        text += "+" + ".".join(build)
    return text


@st.composite
def related_parts(draw: st.DrawFn, base: Parts) -> Parts:
    """Parts that keep a random subset of ``base``'s parts, to get near misses and ties."""
    other = draw(parts)
    keep = draw(st.lists(st.booleans(), min_size=5, max_size=5))
    return (
        base[0] if keep[0] else other[0],
        base[1] if keep[1] else other[1],
        base[2] if keep[2] else other[2],
        base[3] if keep[3] else other[3],
        base[4] if keep[4] else other[4],
    )


texts = parts.map(render)
versions = texts.map(Version.parse)


@st.composite
def text_pairs(draw: st.DrawFn) -> tuple[str, str]:
    base = draw(parts)
    return render(base), render(draw(related_parts(base)))


@st.composite
def version_triples(draw: st.DrawFn) -> tuple[Version, Version, Version]:
    base = draw(parts)
    b = draw(related_parts(base))
    c = draw(related_parts(draw(st.sampled_from([base, b]))))
    return Version.parse(render(base)), Version.parse(render(b)), Version.parse(render(c))


version_pairs = text_pairs().map(lambda pair: (Version.parse(pair[0]), Version.parse(pair[1])))


def sign(n: int) -> int:
    return (n > 0) - (n < 0)


@settings(deadline=None)
@given(parts)
def test_generated_versions_are_strict_semver_within_limits(p: Parts) -> None:
    text = render(p)
    assert OFFICIAL_REGEX.fullmatch(text)
    assert len(text) <= 256


@settings(deadline=None)
@given(parts)
def test_parse_then_str_round_trips(p: Parts) -> None:
    text = render(p)
    version = Version.parse(text)
    assert str(version) == text
    assert Version.parse(str(version)) == version
    assert (version.major, version.minor, version.patch) == p[:3]
    assert version.prerelease == tuple(p[3])
    assert version.build == tuple(p[4])
    assert Version(*p) == version
    assert str(Version(*p)) == text


@settings(deadline=None)
@given(text_pairs())
def test_ordering_agrees_with_semver_compare_exactly(pair: tuple[str, str]) -> None:
    a_text, b_text = pair
    a, b = Version.parse(a_text), Version.parse(b_text)
    expected = sign(semver.Version.parse(a_text).compare(b_text))
    assert (a > b) - (a < b) == expected
    assert (a == b) is (expected == 0)
    assert (a != b) is (expected != 0)
    assert (a <= b) is (expected <= 0)
    assert (a >= b) is (expected >= 0)


@settings(deadline=None)
@given(version_triples())
def test_ordering_is_a_total_order_consistent_with_hash_and_eq(
    triple: tuple[Version, Version, Version],
) -> None:
    a, b, c = triple
    # trichotomy
    assert [a < b, a == b, a > b].count(True) == 1
    # antisymmetry and the derived operators
    assert (a <= b and b <= a) is (a == b)
    assert (a <= b) is (a < b or a == b)
    assert (a >= b) is (b <= a)
    # transitivity
    if a <= b and b <= c:
        assert a <= c
    if a < b and b < c:
        assert a < c
    # equal versions hash equally (so sets and dict keys agree with ==)
    if a == b:
        assert hash(a) == hash(b)
        assert len({a, b}) == 1


@settings(deadline=None)
@given(st.lists(texts, max_size=8))
def test_sorting_agrees_with_semver_compare(items: list[str]) -> None:
    ours = [str(v) for v in sorted(Version.parse(t) for t in items)]
    assert sorted(ours) == sorted(items)  # a permutation, texts kept
    # non-decreasing under semver's own comparison (ties may differ only in build metadata)
    for low, high in itertools.pairwise(ours):
        assert semver.Version.parse(low).compare(high) <= 0


@settings(deadline=None)
@given(version_pairs)
def test_bump_kind_downgrade_iff_lower_and_none_iff_equal(pair: tuple[Version, Version]) -> None:
    a, b = pair
    kind = bump_kind(a, b)
    assert (kind == "downgrade") is (b < a)
    assert (kind == "none") is (a == b)
    if kind == "prerelease":
        assert a.release == b.release
    if kind in ("major", "minor", "patch"):
        assert a.release != b.release
        assert a < b


@settings(deadline=None)
@given(version_pairs)
def test_allowed_change_is_none_iff_downgrade(pair: tuple[Version, Version]) -> None:
    a, b = pair
    assert (allowed_change(a, b) is None) is (bump_kind(a, b) == "downgrade")


@settings(deadline=None)
@given(version_pairs)
def test_bump_problem_patch_is_none_whenever_the_version_goes_up(
    pair: tuple[Version, Version],
) -> None:
    a, b = pair
    if b > a:
        assert bump_problem(a, b, "patch") is None
    elif b == a:
        assert bump_problem(a, b, "patch") == "version_not_bumped"
    else:
        assert bump_problem(a, b, "patch") == "version_decreased"


@settings(deadline=None)
@given(st.lists(versions, max_size=8))
def test_publishing_in_ascending_order_never_raises(items: list[Version]) -> None:
    published: list[Version] = []
    for version in sorted(items):
        outcome = check_publish_order("pack", published, version)
        assert (outcome == "republish") is (version in published)
        published.append(version)


@settings(deadline=None)
@given(st.lists(versions, min_size=1, max_size=8), versions)
def test_publishing_below_the_highest_of_the_line_raises(
    existing: list[Version], new: Version
) -> None:
    same_line = [v for v in existing if release_line(v) == release_line(new)]
    if new in existing:
        assert check_publish_order("pack", existing, new) == "republish"
    elif same_line and new < max(same_line):
        with pytest.raises(DowngradeNotAllowed) as caught:
            check_publish_order("pack", existing, new)
        assert caught.value.highest == str(max(same_line))
    else:
        assert check_publish_order("pack", existing, new) == "new"


@given(text_pairs())
def test_a_version_and_a_text__compare_as_the_two_versions_do(pair: tuple[str, str]) -> None:
    a, b = Version.parse(pair[0]), Version.parse(pair[1])
    assert (a == pair[1]) is (a == b) is (pair[1] == a)
    assert (a < pair[1]) is (a < b)
    assert (a >= pair[1]) is (a >= b)


@given(texts)
def test_a_version__equals_its_text_and_hashes_like_its_key(text: str) -> None:
    version = Version.parse(text)
    assert version == text
    assert hash(version) == hash(version_key(version))
    if "+" not in text:  # equal to a text without build metadata: the same hash
        assert hash(version) == hash(text)
        assert {version: 1}.get(text) == 1  # type: ignore[call-overload]
