"""Every bad argument to the public API is a ``PackrunError`` naming the argument, and changes nothing.

The sweep finds the public callables by introspection (every function and class in
``packrun.__all__``, every public method of those classes) and calls each with bad values in each
argument (``None``, wrong types, lists as ids, NUL bytes, huge strings, NaN, infinities, negative
numbers), on the in-memory and the SQLite store. Each call must raise a :class:`packrun.PackrunError`
(never another exception) whose message names the argument, and the store must be exactly as it
was. A public callable the tables below do not cover fails
:func:`test_the_sweep__covers_every_public_callable`, so a new one cannot slip past.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import packrun
from packrun import blocking
from packrun._stores import Store

ROOT = Path(__file__).parents[1]
ACME = ROOT / "bundles" / "acme"


def dist(version: str) -> Path:
    return ACME / version / "dist" / f"acme-{version}.bundle.tar.gz"


# --- the bad values --------------------------------------------------------------------------------

BAD: dict[str, object] = {
    "none": None,
    "int": 7,
    "negative": -1,
    "float": 1.5,
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "bool": True,
    "list": ["acme"],
    "dict": {"acme": "1"},
    "bytes": b"acme",
    "object": object(),
    "empty": "",
    "nul": "ac\x00me",
    "huge": "x" * 100_000,
}
TEXT = frozenset({"empty", "nul", "huge"})
NUMBERS = frozenset({"int", "negative", "float", "nan", "inf", "-inf", "bool"})


@dataclass(frozen=True)
class Case:
    """How to call one public callable: ``call(world, **arguments)``, with ``valid`` arguments of
    which each is replaced in turn by every bad value but those it ``accepts``."""

    call: Callable[..., Any]
    valid: dict[str, Any]
    accepts: dict[str, frozenset[str]] = field(default_factory=dict)
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Words any of which the message may use to name an argument (default: its own name, with
    ``_`` or as words)."""

    def bad_calls(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for argument in self.valid:
            for label, value in BAD.items():
                if label not in self.accepts.get(argument, frozenset()):
                    yield argument, label, {**self.valid, argument: value}

    def named(self, argument: str) -> tuple[str, ...]:
        own = (argument, argument.replace("_", " "), argument.removesuffix("_id").replace("_", " "))
        return own + self.names.get(argument, ())


@dataclass
class World:
    """An open runtime with acme 1.0.0, 1.1.0 and 1.2.0 published, ``acme-prod`` pinned to 1.1.0
    and a run ``r-1`` in flight on it."""

    rt: packrun.Runtime
    run: packrun.Run
    digest: str
    tmp: Path


# --- the tables: every public callable, with valid arguments --------------------------------------

OPTIONAL = frozenset({"none"})
FLAG = frozenset({"bool"})  # True is a valid flag
# A credential's text is the bundle's business (an empty password, say); only its type and size
# are checked.
CREDENTIAL_TEXT = frozenset({"empty", "nul"})
ID_NAMES = ("id",)

RUNTIME: dict[str, Case] = {
    "resolve": Case(lambda w, **a: w.rt.resolve(**a), {"installation_id": "acme-prod"}),
    "explain": Case(
        lambda w, **a: w.rt.explain(**a),
        {"installation_id": "acme-prod", "project": "default"},
        accepts={"project": OPTIONAL},
    ),
    "publish": Case(
        lambda w, **a: w.rt.publish(**a),
        {"source": dist("2.0.0"), "channel": "custom", "force": False, "project": "acme-corp"},
        accepts={"force": FLAG, "project": OPTIONAL},
        names={"source": ("bundle", "manifest", "pack.json")},
    ),
    "retire": Case(
        lambda w, **a: w.rt.retire(**a),
        {"pack_id": "acme", "version": "1.0.0", "acknowledge_breaking": True, "project": "default"},
        accepts={"acknowledge_breaking": FLAG},
    ),
    "pinned_to": Case(
        lambda w, **a: w.rt.pinned_to(**a),
        {"pack_id": "acme", "version": "1.0.0", "project": "default"},
        accepts={"project": OPTIONAL},
    ),
    "versions": Case(lambda w, **a: w.rt.versions(**a), {"pack_id": "acme", "project": "default"}),
    "process_flows": Case(
        lambda w, **a: w.rt.process_flows(**a), {"pack_id": "acme", "project": "default"}
    ),
    "packs": Case(lambda w, **a: w.rt.packs(**a), {"project": "default"}),
    "project_settings": Case(lambda w, **a: w.rt.project_settings(**a), {"project": "default"}),
    "installations": Case(
        lambda w, **a: w.rt.installations(**a),
        {"project": "default"},
        accepts={"project": OPTIONAL},
    ),
    "set_immutable_versions": Case(
        lambda w, **a: w.rt.set_immutable_versions(**a),
        {"on": False, "project": "acme-corp"},
        accepts={"on": FLAG, "project": OPTIONAL},
        names={"on": ("immutable",)},
    ),
    "set_strict_versions": Case(
        lambda w, **a: w.rt.set_strict_versions(**a),
        {"on": False, "project": "acme-corp"},
        accepts={"on": FLAG, "project": OPTIONAL},
        names={"on": ("strict",)},
    ),
    "artifact": Case(lambda w, **a: w.rt.artifact(**a), {"digest": "<digest>"}),
    "run": Case(
        lambda w, **a: _run(w, **a),
        {
            "installation_id": "acme-prod",
            "run_id": "r-2",
            "workflow_id": "wf",
            "auth": None,
            "version": "1.2.0",
        },
        accepts={
            "run_id": OPTIONAL,
            "workflow_id": OPTIONAL,
            "auth": OPTIONAL,
            "version": OPTIONAL,
        },
    ),
    "call": Case(
        lambda w, **a: w.rt.call(**a),
        {
            "installation_id": "acme-prod",
            "tool": "list_contacts",
            "input": {},
            "auth": None,
            "run_id": "r-2",
            "workflow_id": "wf",
            "version": "1.2.0",
        },
        accepts={
            "input": OPTIONAL | {"dict"},
            "auth": OPTIONAL,
            "run_id": OPTIONAL,
            "workflow_id": OPTIONAL,
            "version": OPTIONAL,
        },
    ),
    "in_flight": Case(
        lambda w, **a: w.rt.in_flight(**a),
        {"pack_id": "acme", "version": "1.1.0", "project": "default"},
        accepts={"project": OPTIONAL},
    ),
    "in_flight_for": Case(lambda w, **a: w.rt.in_flight_for(**a), {"installation_id": "acme-prod"}),
    "runs_in_flight": Case(
        lambda w, **a: w.rt.runs_in_flight(**a),
        {"pack_id": "acme", "version": "1.1.0", "project": "default"},
        accepts={"project": OPTIONAL},
    ),
    "version_status": Case(
        lambda w, **a: w.rt.version_status(**a),
        {"pack_id": "acme", "version": "1.1.0", "project": "default"},
        accepts={"project": OPTIONAL},
    ),
    "wait_drained": Case(
        lambda w, **a: w.rt.wait_drained(**a),
        {"pack_id": "acme", "version": "1.0.0", "timeout": 0, "project": "default"},
        accepts={"timeout": OPTIONAL | {"int", "float"}, "project": OPTIONAL},
    ),
    "install": Case(
        lambda w, **a: w.rt.install(**a),
        {
            "installation_id": "acme-new",
            "pack_id": "acme",
            "pin": "1.0.0",
            "policy": "manual",
            "allow_prerelease": False,
            "actor": "ops",
            "project": "default",
        },
        accepts={"pin": OPTIONAL, "allow_prerelease": FLAG},
    ),
    "set_pin": Case(
        lambda w, **a: w.rt.set_pin(**a),
        {
            "installation_id": "acme-prod",
            "pin": "1.2.0",
            "actor": "ops",
            "origin": "user",
            "expect_pin": "1.1.0",
            "project": "default",
        },
        accepts={"expect_pin": OPTIONAL, "project": OPTIONAL},
    ),
    "set_policy": Case(
        lambda w, **a: w.rt.set_policy(**a),
        {
            "installation_id": "acme-prod",
            "policy": "auto_patch",
            "actor": "ops",
            "project": "default",
            "min_release_age": 3600,
            "window": "mon-fri 02:00-06:00",
        },
        accepts={
            "project": OPTIONAL,
            "min_release_age": OPTIONAL | {"int", "float"},
            "window": OPTIONAL,
        },
        names={"min_release_age": ("release age",), "window": ("update window",)},
    ),
    "review_update": Case(
        lambda w, **a: w.rt.review_update(**a),
        {"installation_id": "acme-prod", "to": "1.2.0", "project": "default"},
        accepts={"to": OPTIONAL, "project": OPTIONAL},
        names={"to": ("version",)},
    ),
    "declare_workflow": Case(
        lambda w, **a: w.rt.declare_workflow(**a),
        {
            "installation_id": "acme-prod",
            "workflow_id": "wf",
            "tools": ["list_contacts"],
            "project": "default",
        },
        accepts={"tools": frozenset({"list"}), "project": OPTIONAL},
    ),
    "update": Case(
        lambda w, **a: w.rt.update(**a),
        {
            "installation_id": "acme-prod",
            "to": "1.2.0",
            "actor": "ops",
            "acknowledge_breaking": True,
            "project": "default",
        },
        accepts={"to": OPTIONAL, "acknowledge_breaking": FLAG, "project": OPTIONAL},
        names={"to": ("version",)},
    ),
    "rollback": Case(
        lambda w, **a: w.rt.rollback(**a),
        {
            "installation_id": "acme-prod",
            "to": "1.0.0",
            "actor": "ops",
            "drain_timeout": 0,
            "project": "default",
        },
        accepts={"drain_timeout": OPTIONAL | {"int", "float"}, "project": OPTIONAL},
        names={"to": ("version",)},
    ),
    "installation": Case(
        lambda w, **a: w.rt.installation(**a),
        {"installation_id": "acme-prod", "project": "default"},
        accepts={"project": OPTIONAL},
    ),
    "add_source": Case(
        lambda w, **a: w.rt.add_source(**a),
        {
            "name": "packs",
            "url": "git+file:///srv/packs.git",
            "ref": "main",
            "interval": 300,
            "channel": "vendor",
            "project": "acme-corp",
            "trust": packrun.Trust.none(),
        },
        accepts={
            "ref": OPTIONAL,
            "interval": frozenset({"int", "float"}),
            "project": OPTIONAL,
            "trust": OPTIONAL,
        },
        names={"trust": ("trust policy",), "name": ("source name",), "url": ("URL",)},
    ),
    "remove_source": Case(lambda w, **a: w.rt.remove_source(**a), {"name": "packs"}),
    "sync": Case(lambda w, **a: w.rt.sync(**a), {"name": "packs"}),
    "source": Case(lambda w, **a: w.rt.source(**a), {"name": "packs"}),
    "health": Case(
        lambda w, **a: w.rt.health(**a),
        {"pack_id": "acme", "version": "1.1.0", "project": "default", "per_project": False},
        accepts={"per_project": FLAG},
    ),
    "start_rollout": Case(
        lambda w, **a: w.rt.start_rollout(**a),
        {
            "pack_id": "acme",
            "version": "1.2.0",
            "steps": (50, 100),
            "step_interval": 60.0,
            "max_error_rate": 0.05,
            "max_error_increase": 0.02,
            "min_calls": 10,
            "selector": ["acme-prod"],
            "project": "default",
            "actor": "ops",
        },
        accepts={
            "step_interval": frozenset({"int", "float"}),
            "min_calls": frozenset({"int"}),
            "selector": OPTIONAL,
        },
    ),
    "rollout_status": Case(
        lambda w, **a: w.rt.rollout_status(**a), {"pack_id": "acme", "project": "default"}
    ),
    "promote_rollout": Case(
        lambda w, **a: w.rt.promote_rollout(**a),
        {"pack_id": "acme", "project": "default", "actor": "ops"},
    ),
    "abort_rollout": Case(
        lambda w, **a: w.rt.abort_rollout(**a),
        {"pack_id": "acme", "project": "default", "actor": "ops", "drain_timeout": 0},
        accepts={"drain_timeout": OPTIONAL | {"int", "float"}},
    ),
    "events": Case(
        lambda w, **a: w.rt.events(**a),
        {"since": 0, "follow": False},
        accepts={"since": frozenset({"int"}), "follow": FLAG},
        names={"since": ("cursor",)},
    ),
    "history": Case(
        lambda w, **a: w.rt.history(**a),
        {"installation_id": "acme-prod", "limit": 10, "before": None, "project": "default"},
        accepts={"project": OPTIONAL, "before": OPTIONAL | {"int"}, "limit": frozenset({"int"})},
        names={"before": ("cursor",)},
    ),
    "bulk_update": Case(
        lambda w, **a: w.rt.bulk_update(**a),
        {
            "selector": "pack=acme",
            "to": "1.2.0",
            "dry_run": True,
            "actor": "ops",
            "acknowledge_breaking": True,
        },
        accepts={"to": OPTIONAL, "dry_run": FLAG, "acknowledge_breaking": FLAG},
        names={"to": ("version",)},
    ),
    "set_alias": Case(
        lambda w, **a: w.rt.set_alias(**a),
        {
            "pack_id": "acme",
            "name": "stable",
            "version": "1.2.0",
            "project": "default",
            "actor": "ops",
            "drain_timeout": 0,
        },
        accepts={"drain_timeout": OPTIONAL | {"int", "float"}},
        names={"name": ("alias name",)},
    ),
    "aliases": Case(
        lambda w, **a: w.rt.aliases(**a),
        {"pack_id": "acme", "project": "default"},
        accepts={"pack_id": OPTIONAL},
    ),
    "set_project_soak": Case(
        lambda w, **a: w.rt.set_project_soak(**a),
        {"min_release_age": 3600, "window": "02:00-06:00", "project": "default", "actor": "ops"},
        accepts={"min_release_age": OPTIONAL | {"int", "float"}, "window": OPTIONAL},
        names={"window": ("update window",)},
    ),
    "project_soak": Case(lambda w, **a: w.rt.project_soak(**a), {"project": "default"}),
    "soak_of": Case(lambda w, **a: w.rt.soak_of(**a), {"installation_id": "acme-prod"}),
    "pack_updates": Case(
        lambda w, **a: w.rt.pack_updates(**a), {"pack_id": "acme", "project": "default"}
    ),
    "bulk_rollback": Case(
        lambda w, **a: w.rt.bulk_rollback(**a),
        {
            "selector": "pack=acme",
            "to": "1.0.0",
            "dry_run": True,
            "actor": "ops",
            "drain_timeout": 0,
        },
        accepts={"dry_run": FLAG, "drain_timeout": OPTIONAL | {"int", "float"}},
        names={"to": ("version",)},
    ),
    "gc": Case(lambda w, **a: w.rt.gc(**a), {"dry_run": True}, accepts={"dry_run": FLAG}),
}

RUN: dict[str, Case] = {
    "call": Case(
        lambda w, **a: w.run.call(**a),
        {"tool": "list_contacts", "input": {}},
        accepts={"input": OPTIONAL | {"dict"}},
    ),
}

AUTH: dict[str, Case] = {
    "Auth": Case(
        lambda w, **a: packrun.Auth(**a),
        {"mode": "api_key", "credentials": {"key": "k"}, "scopes": (), "header": "X-API-Key"},
        accepts={"scopes": frozenset({"list"})},
    ),
    "api_key": Case(
        lambda w, **a: packrun.Auth.api_key(**a),
        {"key": "k", "header": "X-API-Key"},
        accepts={"key": CREDENTIAL_TEXT},
    ),
    "oauth2": Case(
        lambda w, **a: packrun.Auth.oauth2(**a),
        {"access_token": "t", "scopes": ("a",)},
        accepts={"access_token": CREDENTIAL_TEXT, "scopes": frozenset({"list"})},
    ),
    "basic": Case(
        lambda w, **a: packrun.Auth.basic(**a),
        {"username": "u", "password": "p"},
        accepts={"username": CREDENTIAL_TEXT, "password": CREDENTIAL_TEXT},
    ),
}

VERSION: dict[str, Case] = {
    "Version": Case(
        lambda w, **a: packrun.Version(**a),
        {"major": 1, "minor": 2, "patch": 3, "prerelease": "rc.1", "build": "b.7"},
        accepts={
            "major": frozenset({"int"}),
            "minor": frozenset({"int"}),
            "patch": frozenset({"int"}),
            "prerelease": frozenset({"empty", "list"}),
            "build": frozenset({"empty", "list"}),
        },
        names=dict.fromkeys(("major", "minor", "patch", "prerelease", "build"), ("version",)),
    ),
    "parse": Case(
        lambda w, **a: packrun.Version.parse(**a),
        {"text": "1.2.3", "strict": False},
        accepts={"strict": FLAG},
        names={"text": ("version",)},
    ),
}

SELECTOR: dict[str, Case] = {
    "Selector": Case(
        lambda w, **a: packrun.Selector(**a),
        {
            "pack": "acme",
            "version": "1.2.0",
            "project": "default",
            "policy": "manual",
            "pin": "1.2.0",
        },
        accepts=dict.fromkeys(("pack", "version", "project", "policy", "pin"), OPTIONAL),
    ),
    "parse": Case(
        lambda w, **a: packrun.Selector.parse(**a),
        {"text": "pack=acme"},
        names={"text": ("selector",)},
    ),
}

BUNDLE_LIMITS = Case(
    lambda w, **a: packrun.BundleLimits(**a),
    {
        "max_compressed_bytes": 1000,
        "max_unpacked_bytes": 1000,
        "max_file_bytes": 1000,
        "max_members": 10,
        "max_path_length": 100,
        "max_depth": 4,
    },
    accepts={
        k: frozenset({"int"})
        for k in (
            "max_compressed_bytes",
            "max_unpacked_bytes",
            "max_file_bytes",
            "max_members",
            "max_path_length",
            "max_depth",
        )
    },
)

RETENTION = Case(
    lambda w, **a: packrun.Retention(**a),
    {
        "ended_runs": 86_400.0,
        "change_log": 3600.0,
        "pin_events": 86_400.0,
        "event_log": 86_400.0,
        "interval": 60.0,
        "batch": 100,
        "pause": 0.0,
    },
    accepts={
        **{
            k: frozenset({"int", "float"})
            for k in ("ended_runs", "change_log", "pin_events", "event_log")
        },
        **{k: frozenset({"int", "float"}) for k in ("interval", "pause")},
        "batch": frozenset({"int"}),
    },
)

SANDBOX_LIMITS = Case(
    lambda w, **a: packrun.SandboxLimits(**a),
    {
        **dict.fromkeys(
            (
                "memory_bytes",
                "cpu_seconds",
                "open_files",
                "file_bytes",
                "output_bytes",
                "tmp_bytes",
                "processes",
            ),
            1 << 20,
        ),
        **dict.fromkeys(("workers_per_digest", "workers", "max_calls"), 4),
        **dict.fromkeys(("call_timeout", "load_timeout", "cancel_grace", "idle_timeout"), 5.0),
        "env": (),
        "worker_ids": (1_879_048_192, 65_536),
    },
    accepts={
        **dict.fromkeys(
            (
                "memory_bytes",
                "cpu_seconds",
                "open_files",
                "file_bytes",
                "output_bytes",
                "tmp_bytes",
                "processes",
                "workers_per_digest",
                "workers",
                "max_calls",
            ),
            frozenset({"int"}),
        ),
        **dict.fromkeys(
            ("call_timeout", "load_timeout", "cancel_grace", "idle_timeout"),
            frozenset({"int", "float"}),
        ),
        "env": frozenset({"list"}),
    },
)

VERSION_PAIR = {"old": "1.0.0", "new": "1.1.0"}
FUNCTIONS: dict[str, Case] = {
    "allowed_change": Case(
        lambda w, **a: packrun.allowed_change(**a),
        VERSION_PAIR,
        names={"old": ("version",), "new": ("version",)},
    ),
    "bump_kind": Case(
        lambda w, **a: packrun.bump_kind(**a),
        VERSION_PAIR,
        names={"old": ("version",), "new": ("version",)},
    ),
    "bump_problem": Case(
        lambda w, **a: packrun.bump_problem(**a),
        {**VERSION_PAIR, "required": "minor"},
        names={"old": ("version",), "new": ("version",)},
    ),
    "release_line": Case(lambda w, **a: packrun.release_line(**a), {"version": "1.2.3"}),
    "check_publish_order": Case(
        lambda w, **a: packrun.check_publish_order(**a),
        {"pack": "acme", "existing": ["1.0.0"], "new": "1.1.0"},
        accepts={"existing": frozenset({"list"})},  # ["acme"] is a list of one bad version ...
        names={"new": ("version",), "existing": ("version",)},
    ),
    "bundle_filename": Case(
        lambda w, **a: packrun.bundle_filename(**a), {"integration_id": "acme", "version": "1.0.0"}
    ),
    "build_bundle": Case(
        lambda w, **a: packrun.build_bundle(**a),
        {"src": ACME / "1.0.0", "out_dir": "<tmp>", "contract": None},
        accepts={"out_dir": OPTIONAL, "contract": OPTIONAL | {"int"}},
        names={"src": ("source", "manifest", "folder")},
    ),
    "check": Case(lambda w, **a: packrun.check(**a), {"root": ACME / "1.0.0"}),
    "verify": Case(lambda w, **a: packrun.verify(**a), {"path": ACME / "1.0.0"}),
    "check_generation": Case(
        lambda w, **a: packrun.check_generation(**a),
        {
            "bundle": "acme",
            "version": "1.0.0",
            "generation": 2,
            "supported": {1, 2},
            "stage": "run",
        },
        accepts={"generation": frozenset({"int"})},  # 7 is a generation, refused as too new
    ),
    "decode_manifest": Case(
        lambda w, **a: packrun.decode_manifest(**a),
        {
            "data": (ACME / "1.0.0" / "manifest.json").read_text(),
            "source": "m.json",
            "require_contract": False,
            "strict_versions": False,
        },
        accepts={"require_contract": FLAG, "strict_versions": FLAG},
        names={"data": ("manifest", "m.json")},
    ),
    "decode_entry_manifest": Case(
        lambda w, **a: packrun.decode_entry_manifest(**a),
        {"data": {"id": "e", "version": "1.0.0"}, "source": "e.json", "strict_versions": False},
        accepts={"strict_versions": FLAG},
        names={"data": ("manifest", "e.json")},
    ),
    "decode_index": Case(
        lambda w, **a: packrun.decode_index(**a),
        {"data": {"packs": []}, "source": "index.json", "strict_versions": False},
        accepts={"strict_versions": FLAG},
        names={"data": ("index",)},
    ),
    "decode_pack_manifest": Case(
        lambda w, **a: packrun.decode_pack_manifest(**a),
        {
            "data": {"package": {"id": "p", "version": "1.0.0"}},
            "source": "pack.json",
            "strict_versions": False,
        },
        accepts={"strict_versions": FLAG},
        names={"data": ("pack.json", "manifest")},
    ),
    "diff": Case(
        lambda w, **a: packrun.diff(**a),
        {"old": dist("1.0.0"), "new": dist("1.1.0"), "profile": None, "today": None},
        accepts={
            "profile": OPTIONAL | {"empty"},
            "today": OPTIONAL,
        },  # blank text: an empty profile
        names={"old": ("manifest", "bundle"), "new": ("manifest", "bundle")},
    ),
    "manifest_schema": Case(lambda w, **a: packrun.manifest_schema(**a), {}),
    "import_openapi": Case(
        lambda w, **a: packrun.import_openapi(**a),
        {"spec": ROOT / "tests" / "data" / "openapi" / "petstore.yaml", "id": "petstore"},
        accepts={"spec": frozenset({"dict"}), "id": OPTIONAL},
        names={"spec": ("OpenAPI", "openapi")},
    ),
    "load_profile": Case(
        lambda w, **a: packrun.load_profile(**a),
        {"source": "<tmp>/profile.toml"},
        accepts={"source": frozenset({"empty"})},  # blank text: an empty profile
        names={"source": ("profile",)},
    ),
    "read_bundle": Case(
        lambda w, **a: packrun.read_bundle(**a),
        {"data": dist("1.0.0"), "source": None, "limits": packrun.BundleLimits()},
        accepts={"source": OPTIONAL},
        names={"data": ("bundle",)},
    ),
    "load_bundle": Case(
        lambda w, **a: packrun.load_bundle(**a),
        {
            "data": "<bundle>",
            "expected_digest": None,
            "generations": {1, 2},
            "stage": "run",
            "source": None,
        },
        accepts={"expected_digest": OPTIONAL, "source": OPTIONAL},
        names={"data": ("bundle",)},
    ),
    "open_runtime": Case(
        lambda w, **a: packrun.open_runtime(**a),
        {
            "url": "memory:",
            "generations": {1, 2},
            "refresh_interval": 0.1,
            "lease_ttl": 30.0,
            "tool_threads": 4,
            "create": True,
            "background_sync": True,
            "check_input": "enforce",
            "check_output": "warn",
            "check_auth": "enforce",
            "in_process": frozenset({"vendor"}),
            "sandbox": "auto",
            "sandbox_limits": None,
            "fleet_interval": 1.0,
            "count_health": True,
            "clock": None,
            "retention": None,
        },
        accepts={
            "retention": OPTIONAL,
            "url": OPTIONAL,
            "fleet_interval": frozenset({"int", "float"}),
            "count_health": FLAG,
            "clock": OPTIONAL,
            "refresh_interval": frozenset({"int", "float"}),
            "lease_ttl": frozenset({"int", "float"}),
            "tool_threads": frozenset({"int"}),
            "create": FLAG,
            "background_sync": FLAG,
            "sandbox_limits": OPTIONAL,
        },
        names={"url": ("store",)},
    ),
}

# Classes whose constructor is not an input: packrun makes their values and hands them out (or, for
# Runtime, open_runtime makes it, and its options are swept there). Their public methods still are.
MADE_BY_PACKRUN = {
    "AffectedWorkflow",
    "Alias",
    "AliasChange",
    "BulkBlocked",
    "BulkMove",
    "BulkPlan",
    "Bundle",
    "CatalogEntry",
    "CheckReport",
    "ContentEntry",
    "ContentState",
    "DiffFinding",
    "DiffReport",
    "EntryManifest",
    "Event",
    "Explanation",
    "Finding",
    "GcReport",
    "HistoryPage",
    "Installation",
    "LiveVersion",
    "LoadedBundle",
    "Manifest",
    "Notice",
    "PackIndex",
    "PackManifest",
    "PackUpdates",
    "PinEvent",
    "ReleaseNotice",
    "Resolution",
    "Retirement",
    "RetirementMove",
    "Rollback",
    "RolloutStatus",
    "Run",
    "Runtime",
    "RuntimeStats",
    "Settings",
    "Soak",
    "SourceSpec",
    "SourceStatus",
    "SyncItem",
    "SyncReport",
    "Trust",
    "UpdateAvailable",
    "UpdateReview",
    "UpdateWindow",
    "VersionHealth",
}
CONSTRUCTORS: dict[str, Case] = {
    "Auth": AUTH["Auth"],
    "Selector": SELECTOR["Selector"],
    "Version": VERSION["Version"],
    "BundleLimits": BUNDLE_LIMITS,
    "SandboxLimits": SANDBOX_LIMITS,
    "Retention": RETENTION,
}
SIGNERS = ROOT / "tests" / "data" / "allowed_signers_example"
TRUST: dict[str, Case] = {
    name: Case(
        lambda w, _name=name, **a: getattr(packrun.Trust, _name)(**a),
        {"allowed_signers": SIGNERS, "gpg": False},
        accepts={"allowed_signers": OPTIONAL, "gpg": FLAG},
        names={"allowed_signers": ("allowed-signers", "signature policy")},
    )
    for name in ("git_signed", "signed")
}
METHODS: dict[str, dict[str, Case]] = {
    "Runtime": RUNTIME,
    "Run": RUN,
    "Auth": {k: v for k, v in AUTH.items() if k != "Auth"},
    "Version": {k: v for k, v in VERSION.items() if k != "Version"},
    "Trust": TRUST,
    "Selector": {k: v for k, v in SELECTOR.items() if k != "Selector"},
    "UpdateWindow": {
        "parse": Case(
            lambda w, **a: packrun.UpdateWindow.parse(**a),
            {"text": "mon-fri 02:00-06:00"},
            names={"text": ("update window",)},
        )
    },
}


def _public_callables() -> tuple[set[str], set[str], dict[str, set[str]]]:
    """(functions, classes, public methods with parameters by class) of ``packrun.__all__``."""
    functions, classes, methods = set(), set(), {}
    for name in packrun.__all__:
        value = getattr(packrun, name)
        if inspect.isclass(value):
            if issubclass(value, BaseException):
                continue  # errors are raised by packrun, not called
            classes.add(name)
            found = set()
            for attr, member in vars(value).items():
                if attr.startswith("_") or not callable(getattr(value, attr)):
                    continue
                if isinstance(member, property):
                    continue
                parameters = inspect.signature(getattr(value, attr)).parameters
                if [p for p in parameters if p != "self"]:
                    found.add(attr)
            methods[name] = found
        elif inspect.isfunction(value):
            functions.add(name)
    return functions, classes, methods


def test_the_sweep__covers_every_public_callable() -> None:
    functions, classes, methods = _public_callables()
    assert functions == set(FUNCTIONS), "a public function is missing from FUNCTIONS (or gone)"
    assert classes == MADE_BY_PACKRUN | set(CONSTRUCTORS), "classify every public class"
    for cls, names in methods.items():
        assert names == set(METHODS.get(cls, {})), f"sweep every public method of {cls}"


def _parameters(fn: Callable[..., Any]) -> set[str]:
    return {p for p in inspect.signature(fn).parameters if p not in ("self", "cls")}


def test_the_sweep__covers_every_parameter_of_every_callable_it_sweeps() -> None:
    """A keyword argument added to a swept callable must be added to its table too."""
    swept: list[tuple[str, Callable[..., Any], Case]] = [
        *((f"Runtime.{n}", getattr(packrun.Runtime, n), c) for n, c in RUNTIME.items()),
        *(
            (f"BlockingRuntime.{n}", getattr(blocking.BlockingRuntime, n), c)
            for n, c in RUNTIME.items()
        ),
        *((f"Run.{n}", getattr(packrun.Run, n), c) for n, c in RUN.items()),
        *((f"BlockingRun.{n}", getattr(blocking.BlockingRun, n), c) for n, c in RUN.items()),
        *((f"Auth.{n}", getattr(packrun.Auth, n), c) for n, c in METHODS["Auth"].items()),
        *((f"Version.{n}", getattr(packrun.Version, n), c) for n, c in METHODS["Version"].items()),
        *(
            (f"Selector.{n}", getattr(packrun.Selector, n), c)
            for n, c in METHODS["Selector"].items()
        ),
        *((n, getattr(packrun, n), c) for n, c in CONSTRUCTORS.items()),
        *((n, getattr(packrun, n), c) for n, c in FUNCTIONS.items()),
        ("blocking.open_runtime", blocking.open_runtime, FUNCTIONS["open_runtime"]),
    ]
    for where, fn, case in swept:
        assert _parameters(fn) == set(case.valid), f"sweep every parameter of {where}"


# --- running the sweep -------------------------------------------------------------------------------


async def _run(w: World, **arguments: Any) -> None:
    async with w.rt.run(**arguments):
        pass


async def _snapshot(store: Store) -> object:
    state = await store.load()
    return (
        state.settings,
        state.entries,
        state.installations,
        state.events,
        state.seq,
        await store.changes(0),
        await store.all_workflow_tools(),
        sorted((r.record.run_id, r.owner) for r in await store.live_runs(0)),
    )


def _resolve_placeholders(w: World, arguments: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in arguments.items():
        if value == "<digest>":
            value = w.digest
        elif value == "<tmp>":
            value = w.tmp / "out"
        elif value == "<tmp>/profile.toml":
            value = w.tmp / "profile.toml"
        elif value == "<bundle>":
            value = packrun.read_bundle(dist("1.0.0"))
        out[key] = value
    return out


async def _sweep(w: World, where: str, case: Case) -> list[str]:
    """Every bad call of ``case``; the problems found, as lines."""
    problems: list[str] = []
    store: Store = w.rt._store
    before = await _snapshot(store)
    for argument, label, arguments in case.bad_calls():
        arguments = _resolve_placeholders(w, arguments)
        try:
            with anyio.fail_after(10):
                result = case.call(w, **arguments)
                if inspect.isawaitable(result):
                    await result
        except packrun.PackrunError as exc:
            message = str(exc)
            if not any(name in message for name in case.named(argument)):
                problems.append(f"{where}({argument}={label}): message names no argument: {exc}")
            if len(message) > 2000:
                problems.append(f"{where}({argument}={label}): message of {len(message)} chars")
        except Exception as exc:  # what the sweep is looking for
            problems.append(f"{where}({argument}={label}): {type(exc).__name__}: {exc}"[:300])
        else:
            problems.append(f"{where}({argument}={label}): accepted")
        after = await _snapshot(store)
        if after != before:
            problems.append(f"{where}({argument}={label}): changed the store")
            before = after
    return problems


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory:" if request.param == "memory" else f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _all_cases() -> list[tuple[str, Case]]:
    cases = [(f"Runtime.{name}", case) for name, case in RUNTIME.items()]
    cases += [(f"Run.{name}", case) for name, case in RUN.items()]
    cases += [(f"Auth.{name}", case) for name, case in AUTH.items()]
    cases += [(f"Version.{name}", case) for name, case in VERSION.items()]
    cases += [("BundleLimits", BUNDLE_LIMITS)]
    cases += [(f"Selector.{name}", case) for name, case in SELECTOR.items()]
    cases += [("UpdateWindow.parse", METHODS["UpdateWindow"]["parse"])]
    cases += list(FUNCTIONS.items())
    return cases


@pytest.mark.anyio
@pytest.mark.parametrize(("where", "case"), _all_cases(), ids=[w for w, _ in _all_cases()])
async def test_a_bad_argument__is_a_packrun_error_naming_it_and_changes_nothing(
    where: str, case: Case, url: str, tmp_path: Path
) -> None:
    (tmp_path / "profile.toml").write_text("")
    async with packrun.open_runtime(url, refresh_interval=0) as rt:
        for version in ("1.0.0", "1.1.0", "1.2.0"):
            entry = await rt.publish(dist(version))
        await rt.install("acme-prod", "acme", pin="1.1.0")
        assert entry.digest is not None
        async with rt.run("acme-prod", run_id="r-1") as run:
            problems = await _sweep(World(rt, run, entry.digest, tmp_path), where, case)
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert not problems, "\n".join(problems)


ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=300),
    st.binary(max_size=50),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)


@given(value=ANYTHING)
def test_any_value_as_an_id__is_a_packrun_error(value: object) -> None:
    rt = packrun.open_runtime("memory:")  # not opened: its catalog is empty, so every id misses
    misses: list[Callable[[Any], object]] = [
        rt.resolve,
        rt.explain,
        lambda v: anyio.run(rt.history, v),
        rt.installation,
        rt.versions,
        rt.process_flows,
    ]
    for lookup in misses:
        with pytest.raises(packrun.PackrunError):
            lookup(value)
    # Counting and parsing: an answer, or a PackrunError; never another exception.
    answers: list[Callable[[Any], object]] = [
        rt.in_flight_for,
        lambda v: rt.pinned_to(v, "1.0.0"),
        lambda v: rt.in_flight("acme", v),
        packrun.Version.parse,
        packrun.release_line,
        lambda v: packrun.bump_kind("1.0.0", v),
    ]
    for lookup in answers:
        with contextlib.suppress(packrun.PackrunError):
            lookup(value)


# --- packrun.blocking: the same calls without await ------------------------------------------------


def _blocking_methods() -> set[str]:
    cls = blocking.BlockingRuntime
    return {
        name
        for name, member in vars(cls).items()
        if not name.startswith("_")
        and callable(member)
        and [p for p in inspect.signature(getattr(cls, name)).parameters if p != "self"]
    }


def test_the_blocking_sweep__covers_every_method_of_the_blocking_runtime() -> None:
    assert _blocking_methods() == set(RUNTIME), "sweep every public method of BlockingRuntime"
    run_methods = {
        name
        for name, member in vars(blocking.BlockingRun).items()
        if not name.startswith("_") and callable(member)
    }
    assert run_methods == set(RUN)


def test_a_bad_argument_to_the_blocking_runtime__is_a_packrun_error_naming_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "profile.toml").write_text("")
    problems: list[str] = []

    def check(where: str, case: Case, argument: str, label: str, call: Callable[[], Any]) -> None:
        try:
            result = call()
            assert not inspect.isawaitable(result), where
        except packrun.PackrunError as exc:
            if not any(name in str(exc) for name in case.named(argument)):
                problems.append(f"{where}({argument}={label}): message names no argument: {exc}")
        except Exception as exc:  # what the sweep is looking for
            problems.append(f"{where}({argument}={label}): {type(exc).__name__}: {exc}"[:300])
        else:
            problems.append(f"{where}({argument}={label}): accepted")

    with blocking.open_runtime(f"sqlite:///{tmp_path / 'state.db'}", refresh_interval=0) as rt:
        for version in ("1.0.0", "1.1.0", "1.2.0"):
            entry = rt.publish(dist(version))
        rt.install("acme-prod", "acme", pin="1.1.0")
        assert entry.digest is not None
        with rt.run("acme-prod", run_id="r-1") as run:
            world: Any = World(rt, run, entry.digest, tmp_path)  # type: ignore[arg-type]
            for name, case in RUNTIME.items():
                for argument, label, arguments in case.bad_calls():
                    arguments = _resolve_placeholders(world, arguments)
                    if name == "run":

                        def enter(arguments: dict[str, Any] = arguments) -> None:
                            with rt.run(**arguments):
                                pass

                        check("BlockingRuntime.run", case, argument, label, enter)
                    else:
                        call = functools.partial(case.call, world, **arguments)
                        check(f"BlockingRuntime.{name}", case, argument, label, call)
            for argument, label, arguments in RUN["call"].bad_calls():
                call = functools.partial(run.call, **arguments)
                check("BlockingRun.call", RUN["call"], argument, label, call)
    opening = FUNCTIONS["open_runtime"]
    for argument, label, arguments in opening.bad_calls():

        def open_and_close(arguments: dict[str, Any] = arguments) -> None:
            blocking.open_runtime(**arguments).close()

        check("blocking.open_runtime", opening, argument, label, open_and_close)
    assert not problems, "\n".join(problems)
