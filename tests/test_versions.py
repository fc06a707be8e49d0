"""Versions: strict SemVer 2.0 parsing, precedence, bump kinds and the per-line publish rule.

The first half runs public test vectors (copied into ``tests/data/semver`` with their source, commit
and licence); the second half is packrun's own tables for what the vectors do not cover.
"""

from __future__ import annotations

import copy
import json
import pickle
import random
import re
from pathlib import Path
from typing import Any, cast

import pytest

from packrun._versions import (
    BumpKind,
    BumpProblem,
    ChangeLevel,
    Version,
    allowed_change,
    bump_kind,
    bump_problem,
    check_publish_order,
    release_line,
    version_key,
)
from packrun.errors import DowngradeNotAllowed, InvalidVersion

DATA = Path(__file__).parent / "data" / "semver"
MAX_NUMBER = 2**53 - 1


def load(name: str) -> dict[str, Any]:
    """One copied vector file from ``tests/data/semver``."""
    data: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return data


SEMVER_ORG = load("semver-org__spec-examples-and-regex.json")
PY_COMPARE = load("python-semver__test_compare.json")
PY_PARSING = load("python-semver__test_parsing.json")
NODE_COMPARISONS = load("node-semver__comparisons.json")
NODE_EQUALITY = load("node-semver__equality.json")
NODE_VALID = load("node-semver__valid-versions.json")
NODE_INVALID = load("node-semver__invalid-versions.json")
CARGO = load("cargo-semver-checks__bump-classification.json")
OASDIFF = load("oasdiff__versioning-policy.json")
ALL_VECTOR_FILES = [
    SEMVER_ORG,
    PY_COMPARE,
    PY_PARSING,
    NODE_COMPARISONS,
    NODE_EQUALITY,
    NODE_VALID,
    NODE_INVALID,
    CARGO,
    OASDIFF,
]

# The official SemVer 2.0 regex (semver.org FAQ), matched whole and ASCII-only, is the oracle for
# "is this strict SemVer 2.0" in the tests below.
OFFICIAL_REGEX = re.compile(SEMVER_ORG["official_regex_numbered_groups"], re.ASCII)


def is_strict_semver(text: object) -> bool:
    return isinstance(text, str) and OFFICIAL_REGEX.fullmatch(text) is not None


def within_packrun_limits(text: str) -> bool:
    """At most 256 characters and no numeric identifier above 2**53 - 1 (build is not numeric)."""
    match = OFFICIAL_REGEX.fullmatch(text)
    assert match is not None
    numbers = [match[1], match[2], match[3]]
    numbers += [p for p in (match[4] or "").split(".") if p.isdigit()]
    return len(text) <= 256 and all(int(n) <= MAX_NUMBER for n in numbers)


def cmp(a: Version, b: Version) -> int:
    return (a > b) - (a < b)


def short(text: object) -> str:
    """A readable test id for a possibly long or odd value."""
    shown = repr(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def parse_refused(text: object) -> InvalidVersion:
    with pytest.raises(InvalidVersion) as caught:
        Version.parse(cast(str, text))
    return caught.value


def dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


# --- the vectors themselves ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [pytest.param(d, id=d["source"].split(":")[0]) for d in ALL_VECTOR_FILES]
)
def test_vectors__every_copy_names_its_source_commit_licence_and_use(data: dict[str, Any]) -> None:
    for key in ("source", "commit", "license", "packrun_note"):
        assert isinstance(data[key], str)
        assert data[key]
    assert re.fullmatch(r"[0-9a-f]{40}", data["commit"])


def vector_strings() -> list[str]:
    """Every version string in the copied vectors (for the official-regex cross-check)."""
    found: list[str] = []
    found += SEMVER_ORG["prerelease_examples_valid"]
    found += SEMVER_ORG["build_metadata_examples_valid"]
    found += SEMVER_ORG["numeric_increase_example"]
    found += [v for chain in SEMVER_ORG["precedence_chains"] for v in chain]
    found += SEMVER_ORG["not_a_semver_per_faq"]
    found += [c[k] for c in PY_COMPARE["cases"] for k in ("left", "right")]
    found += PY_COMPARE["ascending_chain"]
    found += [c[k] for c in PY_COMPARE["invalid_pairs"] for k in ("left", "right")]
    found += [c["version"] for c in PY_PARSING["strict_cases"] + PY_PARSING["lenient_cases"]]
    found += PY_PARSING["invalid_zero_prefixed"]
    found += [c[k] for c in NODE_COMPARISONS["cases"] for k in ("greater", "lesser")]
    found += [c[k] for c in NODE_EQUALITY["cases"] for k in ("a", "b")]
    found += [c["version"] for c in NODE_VALID["cases"]]
    found += [c["value"] for c in NODE_INVALID["cases"] if isinstance(c["value"], str)]
    found += [c[k] for c in CARGO["cases"] for k in ("baseline", "current")]
    found += [c[k] for c in OASDIFF["cases"] for k in ("base", "revision")]
    return dedupe(found)


@pytest.mark.parametrize("text", [pytest.param(t, id=short(t)) for t in vector_strings()])
def test_parse__accepts_exactly_the_official_regex_within_limits(text: str) -> None:
    if is_strict_semver(text) and within_packrun_limits(text):
        assert str(Version.parse(text)) == text
    else:
        parse_refused(text)


def test_vectors__strict_and_loose_split_is_as_documented() -> None:
    # Guards the oracle: the node-semver files must yield the strict cases the README promises.
    strict_comparisons = [
        c
        for c in NODE_COMPARISONS["cases"]
        if is_strict_semver(c["greater"]) and is_strict_semver(c["lesser"])
    ]
    strict_equalities = [
        c for c in NODE_EQUALITY["cases"] if is_strict_semver(c["a"]) and is_strict_semver(c["b"])
    ]
    assert len(strict_comparisons) == 19
    assert len(strict_equalities) == 2
    assert all("+" in c["a"] for c in strict_equalities)


# --- semver.org ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(t, id=t)
        for t in SEMVER_ORG["prerelease_examples_valid"]
        + SEMVER_ORG["build_metadata_examples_valid"]
        + SEMVER_ORG["numeric_increase_example"]
    ],
)
def test_semver_org__spec_examples_parse_and_round_trip(text: str) -> None:
    version = Version.parse(text)
    assert str(version) == text
    assert Version.parse(str(version)) == version


@pytest.mark.parametrize(
    "chain",
    [
        pytest.param(chain, id=" < ".join(chain))
        for chain in [*SEMVER_ORG["precedence_chains"], SEMVER_ORG["numeric_increase_example"]]
    ],
)
def test_semver_org__precedence_chains_are_strictly_ascending(chain: list[str]) -> None:
    versions = [Version.parse(t) for t in chain]
    for i, a in enumerate(versions):
        for j, b in enumerate(versions):
            assert cmp(a, b) == (i > j) - (i < j), (a, b)


@pytest.mark.parametrize(
    "text", [pytest.param(t, id=t) for t in SEMVER_ORG["build_metadata_examples_valid"]]
)
def test_semver_org__build_metadata_never_changes_precedence(text: str) -> None:
    with_build = Version.parse(text)
    without_build = Version.parse(text.split("+", 1)[0])
    assert with_build == without_build
    assert hash(with_build) == hash(without_build)
    assert with_build.build
    assert not without_build.build


@pytest.mark.parametrize(
    "text", [pytest.param(t, id=t) for t in SEMVER_ORG["not_a_semver_per_faq"]]
)
def test_semver_org__v_prefix_is_not_a_semver(text: str) -> None:
    parse_refused(text)


# --- python-semver ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        pytest.param(c["left"], c["right"], c["expected_cmp"], id=f"{c['left']} vs {c['right']}")
        for c in PY_COMPARE["cases"]
    ],
)
def test_python_semver__compare_gives_expected_sign(left: str, right: str, expected: int) -> None:
    a, b = Version.parse(left), Version.parse(right)
    assert cmp(a, b) == expected
    assert cmp(b, a) == -expected
    assert (a == b) is (expected == 0)
    if expected == 0:
        assert hash(a) == hash(b)


def test_python_semver__ascending_chain_is_strictly_ascending() -> None:
    chain = [Version.parse(t) for t in PY_COMPARE["ascending_chain"]]
    for i, a in enumerate(chain):
        for j, b in enumerate(chain):
            assert cmp(a, b) == (i > j) - (i < j), (a, b)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param(c["left"], c["right"], id=f"{c['left']} vs {c['right']}")
        for c in PY_COMPARE["invalid_pairs"]
    ],
)
def test_python_semver__invalid_pairs_are_refused(left: str, right: str) -> None:
    for side in (left, right):
        if not is_strict_semver(side):
            assert parse_refused(side).given == side
    with pytest.raises(InvalidVersion):
        bump_kind(left, right)


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c["version"]) for c in PY_PARSING["strict_cases"]]
)
def test_python_semver__strict_cases_parse_with_those_parts(case: dict[str, Any]) -> None:
    version = Version.parse(case["version"])
    expected = case["expected"]
    assert (version.major, version.minor, version.patch) == (
        expected["major"],
        expected["minor"],
        expected["patch"],
    )
    assert version.prerelease == (
        tuple(expected["prerelease"].split(".")) if expected["prerelease"] else ()
    )
    assert version.build == (tuple(expected["build"].split(".")) if expected["build"] else ())
    assert str(version) == case["version"]


@pytest.mark.parametrize(
    "text", [pytest.param(c["version"], id=c["version"]) for c in PY_PARSING["lenient_cases"]]
)
def test_python_semver__lenient_forms_without_minor_or_patch_are_refused(text: str) -> None:
    parse_refused(text)


@pytest.mark.parametrize(
    "text", [pytest.param(t, id=t) for t in PY_PARSING["invalid_zero_prefixed"]]
)
def test_python_semver__zero_prefixed_numbers_are_refused(text: str) -> None:
    parse_refused(text)


# --- node-semver --------------------------------------------------------------------------------


def strict_pairs(cases: list[dict[str, Any]], first: str, second: str) -> list[Any]:
    return [
        pytest.param(c[first], c[second], id=f"{c[first]} {c[second]}")
        for c in cases
        if is_strict_semver(c[first]) and is_strict_semver(c[second])
    ]


def loose_strings(cases: list[dict[str, Any]], *keys: str) -> list[Any]:
    found = dedupe([c[k] for c in cases for k in keys if not is_strict_semver(c[k])])
    return [pytest.param(t, id=short(t)) for t in found]


@pytest.mark.parametrize(
    ("greater", "lesser"), strict_pairs(NODE_COMPARISONS["cases"], "greater", "lesser")
)
def test_node_semver__strict_comparisons_order_greater_above_lesser(
    greater: str, lesser: str
) -> None:
    high, low = Version.parse(greater), Version.parse(lesser)
    assert high > low
    assert low < high
    assert high != low
    assert max([low, high]) is high


@pytest.mark.parametrize("text", loose_strings(NODE_COMPARISONS["cases"], "greater", "lesser"))
def test_node_semver__loose_comparison_versions_are_refused(text: str) -> None:
    parse_refused(text)


@pytest.mark.parametrize(("a", "b"), strict_pairs(NODE_EQUALITY["cases"], "a", "b"))
def test_node_semver__strict_equalities_have_equal_precedence(a: str, b: str) -> None:
    left, right = Version.parse(a), Version.parse(b)
    assert left == right
    assert hash(left) == hash(right)
    assert cmp(left, right) == 0
    assert str(left) == a
    assert str(right) == b


@pytest.mark.parametrize("text", loose_strings(NODE_EQUALITY["cases"], "a", "b"))
def test_node_semver__loose_equality_forms_are_refused(text: str) -> None:
    parse_refused(text)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c["version"])
        for c in NODE_VALID["cases"]
        if is_strict_semver(c["version"])
    ],
)
def test_node_semver__valid_versions_parse_with_those_parts(case: dict[str, Any]) -> None:
    version = Version.parse(case["version"])
    assert version.release == (case["major"], case["minor"], case["patch"])
    assert version.prerelease == tuple(str(p) for p in case["prerelease"])
    assert version.build == tuple(case["build"])
    assert str(version) == case["version"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(c["version"], id=c["version"])
        for c in NODE_VALID["cases"]
        if not is_strict_semver(c["version"])
    ],
)
def test_node_semver__v_prefixed_valid_versions_are_refused(text: str) -> None:
    assert text.startswith("v")
    parse_refused(text)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=f"{c['reason']} {short(c['value'])}")
        for c in NODE_INVALID["cases"]
        if isinstance(c["value"], str)
    ],
)
def test_node_semver__invalid_versions_are_refused(case: dict[str, Any]) -> None:
    parse_refused(case["value"])


class _StrIs123:
    def __str__(self) -> str:
        return "1.2.3"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(re.compile("a regexp"), id="regexp"),
        pytest.param(re.compile("1.2.3"), id="semver-ish-regexp"),
        pytest.param(_StrIs123(), id="object-whose-str-is-1.2.3"),
    ],
)
def test_node_semver__non_string_values_are_refused_even_when_they_print_as_versions(
    value: object,
) -> None:
    assert parse_refused(value).given is value


# --- cargo-semver-checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("baseline", "current", "level"),
    [pytest.param(c["baseline"], c["current"], c["level"], id=c["test"]) for c in CARGO["cases"]],
)
def test_cargo_semver_checks__allowed_change_matches_level(
    baseline: str, current: str, level: ChangeLevel
) -> None:
    assert allowed_change(baseline, current) == level


# --- oasdiff ------------------------------------------------------------------------------------

OASDIFF_FINDINGS: dict[str | None, BumpProblem | None] = {
    "api-major-version-not-bumped": "major_not_bumped",
    "api-version-not-bumped": "version_not_bumped",
    "api-version-decreased": "version_decreased",
    None: None,
}


@pytest.mark.parametrize(
    ("base", "revision", "finding"),
    [
        pytest.param(
            c["base"], c["revision"], c["expected_finding"], id=f"{c['base']}->{c['revision']}"
        )
        for c in OASDIFF["cases"]
        if is_strict_semver(c["base"]) and is_strict_semver(c["revision"])
    ],
)
def test_oasdiff__breaking_change_bump_problem_matches_finding(
    base: str, revision: str, finding: str | None
) -> None:
    assert bump_problem(base, revision, "major") == OASDIFF_FINDINGS[finding]


@pytest.mark.parametrize(
    ("base", "revision"),
    [
        pytest.param(c["base"], c["revision"], id=f"{c['base']!r}->{c['revision']!r}")
        for c in OASDIFF["cases"]
        if not (is_strict_semver(c["base"]) and is_strict_semver(c["revision"]))
    ],
)
def test_oasdiff__non_strict_versions_raise_instead_of_staying_silent(
    base: str, revision: str
) -> None:
    with pytest.raises(InvalidVersion):
        bump_problem(base, revision, "major")


# --- packrun's own tables: ordering, identity, immutability --------------------------------------

# This list must be in sorting order: every pair compares as its positions do.
SORTED_VERSIONS = [
    "0.0.0-0",
    "0.0.0-alpha",
    "0.0.0",
    "0.0.1",
    "0.1.0-rc.1",
    "0.1.0",
    "0.9.0",
    "0.10.0",
    "1.0.0-0",
    "1.0.0-0.0",
    "1.0.0-1",
    "1.0.0-2",
    "1.0.0-10",
    "1.0.0--",
    "1.0.0-0a",
    "1.0.0-A",
    "1.0.0-a",
    "1.0.0-a.0",
    "1.0.0-a.1",
    "1.0.0-a.b",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0-rc.2",
    "1.0.0-rc.10",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "1.9.0",
    "1.10.0",
    "2.0.0",
    "10.0.0",
    f"{MAX_NUMBER}.0.0",
]


def test_ordering__sorted_list_pairs_compare_as_their_positions() -> None:
    versions = [Version.parse(t) for t in SORTED_VERSIONS]
    for i, a in enumerate(versions):
        for j, b in enumerate(versions):
            assert (a < b) is (i < j), (a, b)
            assert (a <= b) is (i <= j), (a, b)
            assert (a == b) is (i == j), (a, b)
            assert (a != b) is (i != j), (a, b)
            assert (a >= b) is (i >= j), (a, b)
            assert (a > b) is (i > j), (a, b)


def test_ordering__sorting_a_shuffled_copy_restores_the_list() -> None:
    shuffled = [Version.parse(t) for t in SORTED_VERSIONS]
    random.Random(20240611).shuffle(shuffled)
    assert [str(v) for v in sorted(shuffled)] == SORTED_VERSIONS
    assert str(max(shuffled)) == SORTED_VERSIONS[-1]
    assert str(min(shuffled)) == SORTED_VERSIONS[0]


@pytest.mark.parametrize(
    ("version", "text", "equal"),
    [
        ("1.2.3", "1.2.3", True),
        ("1.2.3", "1.2.4", False),
        ("1.2.3-rc.1", "1.2.3-rc.1", True),
        ("1.2.3-rc.1", "1.2.3", False),
        ("1.2.3+build.7", "1.2.3+build.7", True),
        ("1.2.3+build.7", "1.2.3", True),  # build metadata never counts, as between versions
        ("1.2.3", "1.2.3+other", True),
        ("1.2.3", "v1.2.3", False),  # not a version: unequal, never an error
        ("1.2.3", "", False),
    ],
)
def test_equality__with_its_text__is_the_equality_of_versions(
    version: str, text: str, equal: bool
) -> None:
    parsed = Version.parse(version)
    assert (parsed == text) is equal
    assert (text == parsed) is equal  # both ways round
    assert (parsed != text) is not equal


def test_equality__a_catalog_row_and_a_resolution_compare_as_the_same_version() -> None:
    rows = [Version.parse(t) for t in ("1.0.0", "1.1.0", "2.0.0")]
    resolved: str = "1.1.0"  # Resolution.version, PinEvent.to_version: the version's text
    assert [v for v in rows if v == resolved] == [Version.parse("1.1.0")]
    assert resolved in rows


@pytest.mark.parametrize("text", ["0.0.0", "1.2.3", "1.2.3-rc.1", "2.0.0-beta.1.x-y"])
def test_hash__equals_the_hash_of_its_text_so_sets_and_dicts_find_the_text(text: str) -> None:
    version = Version.parse(text)
    assert hash(version) == hash(text)
    assert text in {version}
    assert {version: "x"}[text] == "x"  # type: ignore[index]
    assert {text: "x"}[version] == "x"  # type: ignore[index]


def test_hash__with_build_metadata__is_the_hash_of_its_version_key() -> None:
    version = Version.parse("1.2.3-rc.1+build.7")
    assert hash(version) == hash(version_key(version)) == hash("1.2.3-rc.1")
    assert hash(version) == hash(Version(1, 2, 3, "rc.1", "other"))


def test_ordering__against_its_text__by_precedence_and_loud_for_a_non_version() -> None:
    version = Version.parse("1.2.3")
    assert version < "1.2.4"
    assert version <= "1.2.3+b"
    assert version > "1.2.3-rc.1"
    assert version >= "1.0.0"
    assert "1.10.0" > Version.parse("1.9.0")  # noqa: SIM300 - the reflected operation
    with pytest.raises(InvalidVersion):
        _ = version < "latest"
    with pytest.raises(TypeError):
        _ = version < 1  # type: ignore[operator]


@pytest.mark.parametrize(
    "text",
    [
        "0.0.0",
        "1.2.3",
        "10.20.30",
        "1.2.3-rc.1",
        "1.0.0-x-y-z.--",
        "1.2.3+build.01",
        "1.2.3-0a.00b+001",
        "2.0.0-beta.1+build.7",
        f"{MAX_NUMBER}.{MAX_NUMBER}.{MAX_NUMBER}",
    ],
)
def test_str__round_trips_exactly(text: str) -> None:
    version = Version.parse(text)
    assert str(version) == text
    assert repr(version) == f"Version.parse({text!r})"
    assert eval(repr(version), {"Version": Version}) == version  # the repr evaluates back
    assert Version.parse(str(version)) == version


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1.0.0+a", "1.0.0+b"),
        ("1.0.0", "1.0.0+build.5"),
        ("1.0.0-rc.1+x", "1.0.0-rc.1"),
        ("0.0.1+001", "0.0.1+1"),
    ],
)
def test_identity__equality_and_hash_ignore_build_metadata(a: str, b: str) -> None:
    left, right = Version.parse(a), Version.parse(b)
    assert left == right
    assert hash(left) == hash(right)
    assert len({left, right}) == 1
    assert {left: "x"}[right] == "x"
    assert str(left) == a
    assert str(right) == b  # the build metadata is kept for display


def test_parts__are_exposed_as_ints_and_string_tuples() -> None:
    version = Version.parse("1.2.3-rc.1+build.5")
    assert version.release == (1, 2, 3)
    assert (version.major, version.minor, version.patch) == (1, 2, 3)
    assert version.prerelease == ("rc", "1")
    assert version.build == ("build", "5")
    assert version.is_prerelease
    assert not Version.parse("1.2.3+build.5").is_prerelease


def test_parts__constructing_from_parts_equals_parsing() -> None:
    built = Version(1, 2, 3, ("rc", "1"), ("build", "5"))
    assert str(built) == "1.2.3-rc.1+build.5"
    assert built == Version.parse("1.2.3-rc.1+build.5")
    assert Version(0, 0, 0) == Version.parse("0.0.0")


@pytest.mark.parametrize(
    ("major", "minor", "patch", "prerelease"),
    [
        pytest.param(-1, 0, 0, (), id="negative-major"),
        pytest.param(MAX_NUMBER + 1, 0, 0, (), id="major-above-2**53-1"),
        pytest.param(1, 2, 3, ("01",), id="zero-prefixed-numeric-prerelease"),
        pytest.param(1, 2, 3, ("",), id="empty-prerelease-identifier"),
        pytest.param(1, 2, 3, ("r c",), id="space-in-prerelease"),
    ],
)
def test_parts__constructing_invalid_parts_is_refused_like_parsing(
    major: int, minor: int, patch: int, prerelease: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidVersion):
        Version(major, minor, patch, prerelease)


@pytest.mark.parametrize(
    "name", ["major", "minor", "patch", "prerelease", "build", "_key", "_text", "something_new"]
)
def test_immutability__setting_or_deleting_an_attribute_raises(name: str) -> None:
    version = Version.parse("1.2.3-rc.1+b")
    with pytest.raises(AttributeError):
        setattr(version, name, 9)
    with pytest.raises(AttributeError):
        delattr(version, name)
    assert str(version) == "1.2.3-rc.1+b"
    assert version.major == 1


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("text", ["1.2.3", "0.0.1-rc.1", "2.0.0-beta.1+build.7"])
def test_pickle__round_trip_keeps_value_and_text(text: str, protocol: int) -> None:
    version = Version.parse(text)
    restored = pickle.loads(pickle.dumps(version, protocol=protocol))
    assert type(restored) is Version
    assert restored == version
    assert str(restored) == text
    assert restored.build == version.build
    assert hash(restored) == hash(version)


def test_copy__copies_are_equal_versions() -> None:
    version = Version.parse("1.2.3-rc.1+b")
    assert copy.copy(version) == version
    assert str(copy.deepcopy(version)) == "1.2.3-rc.1+b"


# --- strict mode, refusals, messages, limits ---------------------------------------------------


@pytest.mark.parametrize("text", ["1.2.3", "0.0.0", "10.20.30", f"{MAX_NUMBER}.0.0"])
def test_strict_mode__accepts_plain_major_minor_patch(text: str) -> None:
    assert str(Version.parse(text, strict=True)) == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1.2.3-rc.1", id="prerelease"),
        pytest.param("1.2.3+b", id="build"),
        pytest.param("v1.2.3", id="v-prefix"),
        pytest.param(" 1.2.3", id="leading-space"),
        pytest.param("1.2.3 ", id="trailing-space"),
        pytest.param("1.2", id="two-parts"),
        pytest.param("1.2.3.4", id="four-parts"),
        pytest.param("01.2.3", id="zero-prefixed"),
        pytest.param("1.2.3\n", id="trailing-newline"),
        pytest.param("\uff11.2.3", id="fullwidth-digit"),
        pytest.param(f"{MAX_NUMBER + 1}.0.0", id="above-2**53-1"),
    ],
)
def test_strict_mode__refuses_anything_but_digits_and_dots(text: str) -> None:
    with pytest.raises(InvalidVersion) as caught:
        Version.parse(text, strict=True)
    assert "strict mode" in caught.value.expected


@pytest.mark.parametrize("text", ["1.2.3-rc.1", "1.2.3+b"])
def test_strict_mode__off_by_default(text: str) -> None:
    assert str(Version.parse(text)) == text


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="None"),
        pytest.param(1.2, id="float"),
        pytest.param(123, id="int"),
        pytest.param(b"1.2.3", id="bytes"),
        pytest.param(["1", "2", "3"], id="list"),
        pytest.param(Version.parse("1.2.3"), id="Version"),
    ],
)
def test_non_string_input__is_refused_naming_a_string_as_expected(value: object) -> None:
    error = parse_refused(value)
    assert error.given is value
    assert error.expected.startswith("a string")
    assert error.code == "invalid_version"


def test_non_string_input__is_refused_by_bump_kind_too() -> None:
    with pytest.raises(InvalidVersion):
        bump_kind(cast(str, None), "1.0.0")


@pytest.mark.parametrize("text", ["1.2", "v1.2.3", "1.2.3-", "1.2.3-01", "latest", ""])
def test_invalid_version__message_names_the_given_value_and_what_was_expected(text: str) -> None:
    error = parse_refused(text)
    assert error.code == "invalid_version"
    assert error.given == text
    assert "MAJOR.MINOR.PATCH" in error.expected
    message = str(error)
    assert message.startswith("[invalid_version] ")
    assert repr(text) in message
    assert error.expected in message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("1.2.3\n", id="trailing-LF"),
        pytest.param("1.2.3\r\n", id="trailing-CRLF"),
        pytest.param("\n1.2.3", id="leading-LF"),
        pytest.param("1.2.3-rc.1\n", id="prerelease-trailing-LF"),
        pytest.param("1.2.3+b\n", id="build-trailing-LF"),
        pytest.param("1.2.3\t", id="trailing-tab"),
        pytest.param("1.2.3\x00", id="trailing-NUL"),
    ],
)
def test_whitespace__trailing_newline_and_control_characters_are_refused(text: str) -> None:
    parse_refused(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("\u0661.2.3", id="arabic-indic-digit-major"),
        pytest.param("1.2.3-\u0661", id="arabic-indic-digit-prerelease"),
        pytest.param("1.2.3-\u00b2", id="superscript-two-prerelease"),
        pytest.param("1.2.3-\u00df", id="non-ascii-letter-prerelease"),
        pytest.param("1.2.3+\u00e9", id="non-ascii-letter-build"),
    ],
)
def test_non_ascii__digits_and_letters_are_refused(text: str) -> None:
    parse_refused(text)


def test_limits__256_characters_accepted() -> None:
    text = "1.0.0-" + "a" * 250
    assert len(text) == 256
    assert str(Version.parse(text)) == text


def test_limits__257_characters_refused_with_the_length_in_the_message() -> None:
    text = "1.0.0-" + "a" * 251
    error = parse_refused(text)
    assert "at most 256 characters" in error.expected
    assert "257" in error.expected
    assert error.given == text  # the attribute keeps the whole value
    assert text not in str(error)  # the message shows it shortened
    assert "1.0.0-aaaa" in str(error)


@pytest.mark.parametrize(
    "template", ["{n}.0.0", "0.{n}.0", "0.0.{n}", "1.0.0-{n}", "1.0.0-rc.{n}", "1.0.0-rc.{n}+b"]
)
def test_limits__numbers_up_to_2_53_minus_1_are_accepted(template: str) -> None:
    text = template.format(n=MAX_NUMBER)
    assert str(Version.parse(text)) == text


@pytest.mark.parametrize(
    "template", ["{n}.0.0", "0.{n}.0", "0.0.{n}", "1.0.0-{n}", "1.0.0-rc.{n}", "1.0.0-rc.{n}+b"]
)
def test_limits__numbers_from_2_53_are_refused(template: str) -> None:
    error = parse_refused(template.format(n=MAX_NUMBER + 1))
    assert str(MAX_NUMBER) in error.expected


def test_limits__build_metadata_is_not_a_number_so_has_no_numeric_limit() -> None:
    assert Version.parse(f"1.0.0+{MAX_NUMBER + 1}").build == (str(MAX_NUMBER + 1),)


def test_limits__alphanumeric_prerelease_with_many_digits_is_not_a_number() -> None:
    text = f"1.0.0-{MAX_NUMBER + 1}a"
    assert str(Version.parse(text)) == text


# --- bump kinds, allowed change, bump problems ------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "kind"),
    [
        pytest.param("1.2.3", "2.0.0", "major", id="major-step-is-major"),
        pytest.param("1.2.3", "1.3.0", "minor", id="minor-step-is-minor"),
        pytest.param("1.2.3", "1.2.4", "patch", id="patch-step-is-patch"),
        pytest.param("1.2.3", "3.1.4", "major", id="left-most-moved-number-wins"),
        pytest.param("0.1.0", "0.2.0", "major", id="zero-major--minor-step-is-major"),
        pytest.param("0.1.0", "0.1.1", "minor", id="zero-major--patch-step-is-minor"),
        pytest.param("0.1.9", "0.1.10", "minor", id="zero-major--patch-step-is-minor-numeric"),
        pytest.param("0.0.1", "0.0.2", "major", id="zero-zero--patch-step-is-major"),
        pytest.param("0.0.0", "0.0.1", "major", id="zero-zero--first-patch-is-major"),
        pytest.param("0.0.3", "0.1.0", "major", id="zero-zero-to-zero-minor-is-major"),
        pytest.param("0.9.0", "1.0.0", "major", id="zero-major-to-one-is-major"),
        pytest.param("1.0.0-rc.1", "1.0.0", "prerelease", id="prerelease-to-release-is-prerelease"),
        pytest.param("1.0.0-rc.1", "1.0.0-rc.2", "prerelease", id="prerelease-step-is-prerelease"),
        pytest.param("1.0.0-rc.1", "1.0.1", "patch", id="prerelease-to-next-patch-is-patch"),
        pytest.param("1.0.0", "1.0.1-rc.1", "patch", id="patch-to-a-prerelease-is-patch"),
        pytest.param("1.0.0", "1.1.0-alpha.1", "minor", id="minor-to-a-prerelease-is-minor"),
        pytest.param("1.0.0", "1.0.0", "none", id="same-is-none"),
        pytest.param("1.0.0+a", "1.0.0+b", "none", id="build-only-is-none"),
        pytest.param("2.0.0", "1.9.9", "downgrade", id="lower-major-is-downgrade"),
        pytest.param(
            "1.0.0", "1.0.0-rc.1", "downgrade", id="release-to-its-prerelease-is-downgrade"
        ),
        pytest.param("1.0.0-rc.2", "1.0.0-rc.1", "downgrade", id="lower-prerelease-is-downgrade"),
        pytest.param("0.2.0", "0.1.5", "downgrade", id="zero-major-lower-is-downgrade"),
    ],
)
def test_bump_kind__classifies_the_step(old: str, new: str, kind: BumpKind) -> None:
    assert bump_kind(old, new) == kind
    assert bump_kind(Version.parse(old), Version.parse(new)) == kind


def test_bump_kind__zero_major__minor_step_is_major() -> None:
    assert bump_kind("0.1.0", "0.2.0") == "major"


def test_bump_kind__zero_zero__every_patch_step_is_major() -> None:
    assert bump_kind("0.0.1", "0.0.2") == "major"


def test_bump_kind__only_prerelease_moved_is_prerelease() -> None:
    assert bump_kind("1.0.0-rc.1", "1.0.0") == "prerelease"


@pytest.mark.parametrize(
    ("old", "new", "level"),
    [
        pytest.param("1.0.0", "2.0.0", "major", id="major"),
        pytest.param("1.0.0", "1.1.0", "minor", id="minor"),
        pytest.param("1.0.0", "1.0.1", "patch", id="patch"),
        pytest.param("0.1.0", "0.2.0", "major", id="zero-major-minor-step"),
        pytest.param("0.1.0", "0.1.1", "minor", id="zero-major-patch-step"),
        pytest.param("0.0.1", "0.0.2", "major", id="zero-zero-patch-step"),
        pytest.param("1.0.0-rc.1", "1.0.0-rc.2", "major", id="prerelease-change-permits-major"),
        pytest.param("1.0.0", "1.0.0", "patch", id="same-release-permits-patch"),
        pytest.param("0.1.0", "0.1.0", "minor", id="same-zero-major-permits-minor"),
        pytest.param("0.0.1", "0.0.1", "major", id="same-zero-zero-permits-major"),
        pytest.param("2.0.0-rc.1", "2.0.0-rc.1", "major", id="same-prerelease-permits-major"),
        pytest.param("2.0.0", "1.0.0", None, id="downgrade-permits-nothing"),
    ],
)
def test_allowed_change__what_the_step_permits(
    old: str, new: str, level: ChangeLevel | None
) -> None:
    assert allowed_change(old, new) == level


@pytest.mark.parametrize(
    ("old", "new", "required", "problem"),
    [
        pytest.param("1.0.0", "2.0.0", "major", None, id="major-step-covers-breaking"),
        pytest.param("1.0.0", "1.1.0", "major", "major_not_bumped", id="minor-step-hides-breaking"),
        pytest.param("1.0.0", "1.0.1", "major", "major_not_bumped", id="patch-step-hides-breaking"),
        pytest.param("1.0.0", "1.1.0", "minor", None, id="minor-step-covers-addition"),
        pytest.param("1.0.0", "1.0.1", "minor", "minor_not_bumped", id="patch-step-hides-addition"),
        pytest.param("1.0.0", "1.0.1", "patch", None, id="patch-step-covers-fix"),
        pytest.param("1.0.0", "1.0.0", "patch", "version_not_bumped", id="same-version-any-change"),
        pytest.param("1.0.0+a", "1.0.0+b", "patch", "version_not_bumped", id="build-only-change"),
        pytest.param("2.0.0", "1.0.0", "patch", "version_decreased", id="lower-version"),
        pytest.param("0.1.0", "0.2.0", "major", None, id="zero-major-minor-step-covers-breaking"),
        pytest.param(
            "0.1.0", "0.1.1", "major", "major_not_bumped", id="zero-major-patch-hides-breaking"
        ),
        pytest.param("0.1.0", "0.1.1", "minor", None, id="zero-major-patch-covers-addition"),
        pytest.param("0.0.1", "0.0.2", "major", None, id="zero-zero-patch-covers-breaking"),
        pytest.param(
            "1.0.0-rc.1", "1.0.0", "major", None, id="prerelease-to-release-covers-breaking"
        ),
    ],
)
def test_bump_problem__names_what_is_wrong_with_the_step(
    old: str, new: str, required: ChangeLevel, problem: BumpProblem | None
) -> None:
    assert bump_problem(old, new, required) == problem


# --- release lines and the publish rule -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("1.2.3", (1,)),
        ("2.0.0-rc.1", (2,)),
        ("10.4.0+b", (10,)),
        ("0.3.1", (0, 3)),
        ("0.3.0-rc.1", (0, 3)),
        ("0.0.5", (0, 0)),
        ("0.0.0", (0, 0)),
    ],
)
def test_release_line__major_from_one_on_zero_minor_below(text: str, line: tuple[int, ...]) -> None:
    assert release_line(text) == line
    assert release_line(Version.parse(text)) == line


@pytest.mark.parametrize(
    ("existing", "new", "outcome"),
    [
        pytest.param([], "1.0.0", "new", id="first-version-is-new"),
        pytest.param(["1.3.0", "2.0.0"], "1.4.0", "new", id="backport-above-its-line-is-new"),
        pytest.param(["1.3.0", "2.0.0"], "2.0.1", "new", id="above-everything-is-new"),
        pytest.param(["1.3.0", "2.0.0"], "3.0.0-rc.1", "new", id="prerelease-of-new-major-is-new"),
        pytest.param(["2.0.0-rc.1"], "2.0.0", "new", id="release-after-its-prerelease-is-new"),
        pytest.param(["2.0.0"], "1.0.0", "new", id="first-of-an-older-line-is-new"),
        pytest.param(["1.3.0", "2.0.0"], "1.3.0", "republish", id="equal-is-republish"),
        pytest.param(["1.3.0+a"], "1.3.0+b", "republish", id="equal-but-build-is-republish"),
        pytest.param(
            ["1.2.0", "1.3.0"], "1.2.0", "republish", id="equal-below-highest-is-republish"
        ),
        pytest.param(["0.3.0"], "0.2.5", "new", id="zero-minors-are-separate-lines"),
        pytest.param(["0.0.3"], "0.1.0", "new", id="zero-zero-to-zero-one-is-new"),
        pytest.param(["0.0.3"], "0.0.4", "new", id="zero-zero-step-up-is-new"),
    ],
)
def test_check_publish_order__allows(existing: list[str], new: str, outcome: str) -> None:
    assert check_publish_order("weather", existing, new) == outcome
    as_versions = (Version.parse(v) for v in existing)
    assert check_publish_order("weather", as_versions, Version.parse(new)) == outcome


@pytest.mark.parametrize(
    ("existing", "new", "highest", "line"),
    [
        pytest.param(["1.3.0", "2.0.0"], "1.2.0", "1.3.0", "1.x", id="below-its-line"),
        pytest.param(["2.0.0"], "2.0.0-rc.1", "2.0.0", "2.x", id="prerelease-after-its-release"),
        pytest.param(["1.0.0", "1.5.0", "1.4.0"], "1.4.1", "1.5.0", "1.x", id="highest-not-last"),
        pytest.param(["0.3.1"], "0.3.0", "0.3.1", "0.3.x", id="zero-minor-line-never-goes-down"),
        pytest.param(["0.0.3"], "0.0.2", "0.0.3", "0.0.x", id="zero-zero-is-one-line"),
    ],
)
def test_check_publish_order__refuses_going_down_within_a_line(
    existing: list[str], new: str, highest: str, line: str
) -> None:
    with pytest.raises(DowngradeNotAllowed) as caught:
        check_publish_order("weather", existing, new)
    error = caught.value
    assert error.code == "downgrade_not_allowed"
    assert (error.pack, error.version, error.highest, error.line) == ("weather", new, highest, line)


def test_check_publish_order__downgrade_message_names_the_highest_and_the_line() -> None:
    with pytest.raises(DowngradeNotAllowed) as caught:
        check_publish_order("weather", ["1.3.0", "2.0.0"], "1.2.0")
    error = caught.value
    message = str(error)
    assert message.startswith("[downgrade_not_allowed] ")
    assert "1.3.0" in message
    assert "1.x" in message
    assert "weather" in message
    assert "1.2.0" in message
    assert error.pack == "weather"
    assert error.version == "1.2.0"
    assert error.highest == "1.3.0"


def test_check_publish_order__invalid_existing_version_is_refused() -> None:
    with pytest.raises(InvalidVersion):
        check_publish_order("weather", ["1.0.0", "v1.1.0"], "1.2.0")


# --- the tables in docs/versions.md say what the functions do ----------------------------------

VERSIONS_DOC = Path(__file__).parents[1] / "docs" / "versions.md"


def doc_table(header: str) -> list[list[str]]:
    """The rows of the Markdown table under ``header``, as lists of backquoted values per cell."""
    lines = VERSIONS_DOC.read_text(encoding="utf-8").splitlines()
    rows: list[list[str]] = []
    for line in lines[lines.index(header) + 2 :]:
        if not line.startswith("|"):
            break
        cells = line.strip().strip("|").split("|")
        rows.append([" ".join(re.findall(r"`([^`]*)`", cell)) for cell in cells])
    assert rows, header
    return rows


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(r, id=" -> ".join(r[:2]))
        for r in doc_table("| old | new | `bump_kind` | `allowed_change` |")
    ],
)
def test_docs__bump_table_rows_are_what_the_functions_return(row: list[str]) -> None:
    old, new, kind, level = row
    assert bump_kind(old, new) == kind
    assert allowed_change(old, new) == (None if level == "None" else level)


@pytest.mark.parametrize(
    "row",
    [pytest.param(r, id=f"[{r[0]}] {r[1]}") for r in doc_table("| published | new | result |")],
)
def test_docs__publish_table_rows_are_what_check_publish_order_does(row: list[str]) -> None:
    published, new, result = row
    existing = published.split()
    if result.startswith("downgrade_not_allowed"):
        _, highest, line = result.split()
        with pytest.raises(DowngradeNotAllowed) as caught:
            check_publish_order("acme", existing, new)
        assert (caught.value.highest, caught.value.line) == (highest, line)
    else:
        assert check_publish_order("acme", existing, new) == result.split()[0]


def test_version_from_parts__dotted_text_or_identifiers() -> None:
    assert str(Version(2, 0, 0, "rc.1", "build.5")) == "2.0.0-rc.1+build.5"
    assert Version(2, 0, 0, ("rc", "1")) == Version.parse("2.0.0-rc.1")
    with pytest.raises(InvalidVersion):
        Version(1, 2, 3, "rc..1")


def test_version_from_parts__empty_text_means_no_prerelease() -> None:
    assert Version(1, 0, 0, "", "") == Version.parse("1.0.0")
    assert str(Version(1, 0, 0, "", "")) == "1.0.0"
