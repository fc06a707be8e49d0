"""The error tree: one root, stable unique codes, messages that say what was given and expected."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import packrun
from packrun import errors


def _concrete_errors() -> list[type[errors.PackrunError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.PackrunError) and "code" in vars(cls)
    ]


def test_every_error__derives_from_the_root() -> None:
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, Exception):
            assert issubclass(cls, packrun.PackrunError), cls


def test_codes__are_unique_and_cover_the_documented_set() -> None:
    codes = [cls.code for cls in _concrete_errors() if cls is not errors.PackrunError]
    assert len(codes) == len(set(codes))
    assert set(codes) == {
        "invalid_version",
        "invalid_manifest",
        "invalid_input",
        "invalid_output",
        "needs_reauth",
        "invalid_bundle",
        "artifact_mismatch",
        "version_exists",
        "installation_exists",
        "invalid_argument",
        "downgrade_not_allowed",
        "integration_contract_incompatible",
        "BUNDLE_CONTRACT_INCOMPATIBLE",
        "not_found",
        "breaking_diff",
        "tool_error",
        "drain_timeout",
        "rollout_in_progress",
        "store_error",
        "source_error",
        "untrusted_source",
        "tool_timeout",
        "sandbox_crashed",
        "sandbox_unavailable",
    }


def test_docs_errors__lists_every_code() -> None:
    text = (Path(__file__).parents[1] / "docs" / "errors.md").read_text()
    for cls in _concrete_errors():
        if cls is not errors.PackrunError:
            assert f"`{cls.code}`" in text, f"docs/errors.md does not document {cls.code}"


# Each error built with realistic arguments: (error, fragments the message must contain).
EXAMPLES: list[tuple[errors.PackrunError, tuple[str, ...]]] = [
    (errors.InvalidVersion("v1.2", "MAJOR.MINOR.PATCH"), ("'v1.2'", "MAJOR.MINOR.PATCH")),
    (errors.DowngradeNotAllowed("acme", "1.2.0", "1.3.0", "1.x"), ("1.2.0", "1.3.0", "1.x")),
    (
        errors.InvalidManifest(
            "m.json", [errors.Problem("$.tools[0].id", "required field is missing")]
        ),
        ("m.json", "$.tools[0].id", "1 problem"),
    ),
    (errors.InvalidBundle("a.bundle.tar.gz", "member '../x' escapes"), ("a.bundle.tar.gz", "../x")),
    (
        errors.ArtifactMismatch(
            "acme",
            [
                errors.LayerValue("pack", "pack.json", "1.0.1"),
                errors.LayerValue("artifact", "dist", "1.0.0"),
            ],
        ),
        ("pack (pack.json) = 1.0.1", "artifact (dist) = 1.0.0"),
    ),
    (errors.VersionExists("acme", "1.0.0", "versions are immutable"), ("acme 1.0.0", "immutable")),
    (errors.NotFound("installation", "acme-prod", ["a", "b"]), ("'acme-prod'", "known: a, b")),
    (errors.InstallationExists("acme-prod", "acme", "1.1.0"), ("'acme-prod'", "pinned to 1.1.0")),
    (
        errors.InvalidArgument("pin", "lastest", ["latest", "latest-vendor"]),
        ("'lastest'", "valid pin", "latest, latest-vendor"),
    ),
    (
        errors.IntegrationContractIncompatible("ancient", "1.0.0", 0, [2, 1]),
        ("ancient 1.0.0", "generation 0", "older", "supports 1, 2", "rebuild"),
    ),
    (
        errors.BundleContractIncompatible("acme", "3.0.0", 3, [1, 2]),
        ("acme 3.0.0", "generation 3", "newer", "supports 1, 2"),
    ),
    (
        errors.BreakingDiff("acme-prod", "1.1.0", "2.0.0", "a major"),
        ("acme-prod", "1.1.0", "2.0.0"),
    ),
    (errors.DrainTimeout("acme", "1.0.0", 2.5, ["r-1", "r-2"]), ("2 run(s)", "2.5s", "r-1, r-2")),
    (
        errors.ToolFailed("get_contact", "not_found", "no contact c-9"),
        ("get_contact", "not_found", "c-9"),
    ),
    (
        errors.ToolTimeout("acme", "1.2.0", "sync_all", 30),
        ("'sync_all'", "acme 1.2.0", "30s", "killed", "timeout_s"),
    ),
    (
        errors.SandboxCrashed("acme", "1.2.0", "export", "exited with status 3"),
        ("'export'", "acme 1.2.0", "exited with status 3"),
    ),
    (
        errors.SandboxUnavailable("bwrap", "bubblewrap (bwrap) is not installed"),
        ("'bwrap'", "not installed"),
    ),
    (errors.StoreError("unknown scheme 'mysql'; valid: memory, sqlite"), ("mysql", "sqlite")),
    (
        errors.SourceError("vendor-packs", "git fetch failed: repository not found"),
        ("'vendor-packs'", "repository not found"),
    ),
    (
        errors.UntrustedSource("vendor-packs", "3f2a9c1", "the commit is not signed"),
        ("'vendor-packs'", "3f2a9c1", "not signed"),
    ),
    (
        errors.InvalidInput(
            "acme", "1.2.0", "list_contacts", [errors.Problem("$.limit", "expected an integer")]
        ),
        (
            "acme 1.2.0",
            "'list_contacts'",
            "1 problem",
            "at $.limit: expected an integer",
            "not run",
        ),
    ),
    (
        errors.InvalidOutput(
            "acme",
            "1.2.0",
            "get_contact",
            [errors.Problem(f"$.f{i}", "required field is missing") for i in range(25)],
        ),
        ("acme 1.2.0", "'get_contact'", "25 problems", "at $.f0:", "and 5 more"),
    ),
    (
        errors.NeedsReauth(
            "acme-prod", "acme", "2.0.0", ["auth mode oauth2 (the run has api_key)"]
        ),
        ("'acme-prod'", "acme 2.0.0", "auth mode oauth2", "re-authenticate"),
    ),
    (
        errors.RolloutInProgress("acme", "default", "r1", "1.2.0"),
        ("acme", "r1", "1.2.0", "project default", "promote or abort"),
    ),
]


@pytest.mark.parametrize(("error", "fragments"), EXAMPLES, ids=lambda v: getattr(v, "code", ""))
def test_message__starts_with_its_code_and_names_the_facts(
    error: errors.PackrunError, fragments: tuple[str, ...]
) -> None:
    text = str(error)
    assert text.startswith(f"[{error.code}] ")
    for fragment in fragments:
        assert fragment in text


def test_examples__cover_every_concrete_error() -> None:
    covered = {type(error) for error, _ in EXAMPLES}
    assert covered == {cls for cls in _concrete_errors() if cls is not errors.PackrunError}


def test_contract_error__direction_attribute() -> None:
    old = errors.BundleContractIncompatible("x", "1.0.0", 0, [1, 2])
    new = errors.BundleContractIncompatible("x", "1.0.0", 5, [1, 2])
    assert (old.direction, new.direction) == ("too_old", "too_new")
    assert old.supported == (1, 2)


def test_tool_failed__keeps_the_tools_own_code() -> None:
    error = packrun.ToolFailed("get_contact", "not_found", "no such contact")
    assert (error.code, error.tool_code, error.tool) == ("tool_error", "not_found", "get_contact")


def test_contract_error__no_supported_generation__says_so() -> None:
    with pytest.raises(packrun.BundleContractIncompatible) as exc:
        packrun.check_generation("acme", "1.0.0", 2, set(), stage="run")
    assert "this runtime supports no generation" in str(exc.value)
