"""Bundles: building them reproducibly, reading them defensively, loading their code in isolation.

A bundle is a gzip'd tar named ``{id}-{version}.bundle.tar.gz`` holding exactly ``manifest.json``
and the package ``code/``. It is identified by the sha256 of its bytes (its *digest*).

Reading never touches the disk and never trusts the archive: sizes are bounded before anything is
decompressed in full, and every member is checked (no absolute paths, no ``..``, no links or
devices, nothing outside ``manifest.json`` and ``code/``). Loading imports ``code/`` under a package
name made of the id and the digest, so two versions of one integration live side by side in one
process without sharing a module.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.abc
import importlib.util
import io
import os
import re
import stat
import sys
import tarfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Final, Literal

import msgspec

from packrun._args import (
    check_choice,
    check_generations,
    check_label,
    check_path,
    check_whole,
)
from packrun._contract import CURRENT_GENERATION, DEFAULT_GENERATIONS, check_generation
from packrun._manifest import Manifest, decode_manifest, encode_manifest, read_document
from packrun._versions import Version
from packrun.errors import ArtifactMismatch, InvalidArgument, InvalidBundle, LayerValue
from packrun.sdk import Integration, ToolFunction

__all__ = [
    "BUNDLE_SUFFIX",
    "Bundle",
    "BundleLimits",
    "LoadedBundle",
    "build_bundle",
    "bundle_bytes",
    "bundle_filename",
    "digest_of",
    "load_bundle",
    "read_bundle",
]

BUNDLE_SUFFIX: Final = ".bundle.tar.gz"
_INTEGRATION_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # the manifest's id pattern
_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
_FILENAME = re.compile(
    r"(?P<id>[a-z0-9][a-z0-9_-]*?)-(?P<version>\d+\.\d+\.\d+[^/]*)\.bundle\.tar\.gz"
)


@dataclass(frozen=True, slots=True)
class BundleLimits:
    """Bounds a bundle must stay within to be read. The defaults suit integration code."""

    max_compressed_bytes: int = 16 * 1024 * 1024
    max_unpacked_bytes: int = 64 * 1024 * 1024
    max_file_bytes: int = 16 * 1024 * 1024
    max_members: int = 1000
    max_path_length: int = 240
    max_depth: int = 16

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            check_whole(name, getattr(self, name), 1, 2**62)


DEFAULT_LIMITS: Final = BundleLimits()


def digest_of(data: bytes) -> str:
    """The digest packrun identifies an artifact by: ``sha256:`` and the hex sha256 of its bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def bundle_filename(integration_id: str, version: object) -> str:
    """``{id}-{version}.bundle.tar.gz``."""
    if not isinstance(integration_id, str) or not _INTEGRATION_ID.fullmatch(integration_id):
        raise InvalidArgument(
            "integration_id", integration_id, ["lowercase letters, digits, _ and - (at most 64)"]
        )
    if not isinstance(version, Version):
        version = Version.parse(version)  # type: ignore[arg-type]  # invalid_version if not one
    return f"{integration_id}-{version}{BUNDLE_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle that was read and checked: its manifest, its code files and its digest."""

    manifest: Manifest
    files: Mapping[str, bytes] = field(repr=False)
    """The files under ``code/``, by their path inside ``code/`` (``__init__.py``, ``_crm.py``)."""
    digest: str
    data: bytes = field(repr=False)
    source: str = "<bytes>"

    @property
    def id(self) -> str:
        """The integration id."""
        return self.manifest.id

    @property
    def version(self) -> str:
        """The version stamped in the manifest."""
        return str(self.manifest.version)

    @property
    def contract(self) -> int:
        """The contract generation stamped at build time."""
        assert self.manifest.contract is not None  # required when read from a bundle
        return self.manifest.contract

    @property
    def filename(self) -> str:
        """The file name this bundle should have."""
        return bundle_filename(self.manifest.id, self.manifest.version)


# --- building -----------------------------------------------------------------------------------


def _source_files(code_dir: Path) -> dict[str, bytes]:
    """The files of ``code/`` that go into a bundle: regular files, no caches, no hidden files."""
    files: dict[str, bytes] = {}
    limits = DEFAULT_LIMITS
    for path in sorted(code_dir.rglob("*")):
        rel = path.relative_to(code_dir)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        # A link is refused before anything follows it (is_dir() and is_file() would).
        if path.is_symlink():
            raise InvalidBundle(
                str(path), "code/ may hold only regular files and folders (no links)"
            )
        if path.is_dir() or path.suffix in (".pyc", ".pyo"):
            continue
        if not path.is_file():
            raise InvalidBundle(
                str(path), "code/ may hold only regular files and folders (no devices)"
            )
        name = f"code/{rel.as_posix()}"
        if len(name) > limits.max_path_length or name.count("/") + 1 > limits.max_depth:
            raise InvalidBundle(
                str(path),
                f"{name!r} is nested too deep or named too long for a bundle (at most "
                f"{limits.max_depth} levels, {limits.max_path_length} characters)",
            )
        files[rel.as_posix()] = path.read_bytes()
    return files


def _tar_member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def bundle_bytes(manifest: Manifest, files: Mapping[str, bytes]) -> bytes:
    """The bytes of a bundle holding ``manifest`` and the ``code/`` ``files``: same input, same bytes.

    Members are sorted, timestamps and owners zeroed, the gzip header carries no name or time.
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        entries = {"manifest.json": encode_manifest(manifest)}
        entries.update({f"code/{name}": data for name, data in files.items()})
        for name in sorted(entries):
            data = entries[name]
            try:
                tar.addfile(_tar_member(name, len(data)), io.BytesIO(data))
            except ValueError as exc:  # a name the USTAR format cannot hold
                raise InvalidBundle(name, f"cannot be stored in a bundle: {exc}") from None
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What :func:`build_bundle` wrote."""

    path: Path
    digest: str
    manifest: Manifest


def build_source(src: Path, *, contract: int | None = None) -> tuple[Manifest, bytes]:
    """Build the bundle of an integration source folder in memory: ``(stamped manifest, bytes)``.

    The generation stamped is ``contract`` when given, else the source manifest's own ``contract``
    (a fixture pinned to an older generation), else :data:`CURRENT_GENERATION`.
    """
    manifest_path = src / "manifest.json"
    code_dir = src / "code"
    if not manifest_path.is_file():
        raise InvalidBundle(str(src), "an integration source needs manifest.json")
    if not (code_dir / "__init__.py").is_file():
        raise InvalidBundle(str(src), "an integration source needs code/__init__.py")
    manifest = decode_manifest(read_document(manifest_path), source=str(manifest_path))
    generation = contract if contract is not None else manifest.contract
    stamped = msgspec.structs.replace(
        manifest, contract=CURRENT_GENERATION if generation is None else generation
    )
    data = bundle_bytes(stamped, _source_files(code_dir))
    # Never write what reading would refuse (a negative generation, a bundle over the limits).
    read_bundle(data, source=f"the bundle built from {src}")
    return stamped, data


def build_bundle(
    src: str | Path, out_dir: str | Path | None = None, *, contract: int | None = None
) -> BuildResult:
    """Build ``{id}-{version}.bundle.tar.gz`` from ``src`` (``manifest.json`` and ``code/``).

    The manifest inside is stamped with ``contract``: the current generation unless a fixture for
    an older SDK is wanted (see :func:`build_source`). The file goes to ``out_dir`` (default
    ``src/dist``).
    """
    check_path("src", src)
    if out_dir is not None:
        check_path("out_dir", out_dir)
    if contract is not None and type(contract) is not int:  # its range is the manifest's to check
        raise InvalidArgument("contract", contract, ["None or a contract generation, such as 2"])
    source = Path(src)
    manifest, data = build_source(source, contract=contract)
    target_dir = Path(out_dir) if out_dir is not None else source / "dist"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / bundle_filename(manifest.id, manifest.version)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)  # never leave a half-written bundle under the real name
    return BuildResult(target, digest_of(data), manifest)


# --- reading ------------------------------------------------------------------------------------


def _gunzip(data: bytes, source: str, limits: BundleLimits) -> bytes:
    if len(data) > limits.max_compressed_bytes:
        raise InvalidBundle(
            source,
            f"the file is {len(data)} bytes; at most {limits.max_compressed_bytes} are accepted",
        )
    if data[:2] != b"\x1f\x8b":
        raise InvalidBundle(source, "not a gzip file (a bundle is a .tar.gz)")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    # This ceiling only bounds memory; the exact limits are checked member by member below. The tar
    # stream is larger than its files: a header (and for long names, up to three more blocks) per
    # member, padding to 512 bytes, the end blocks, and padding to a 10 KiB record.
    ceiling = limits.max_unpacked_bytes + 512 * 4 * (limits.max_members + 1) + 2 * 10240
    try:
        out = inflater.decompress(data, ceiling + 1)
    except zlib.error as exc:
        raise InvalidBundle(source, f"corrupt gzip data ({exc})") from None
    if len(out) > ceiling or inflater.unconsumed_tail:
        raise InvalidBundle(
            source, f"unpacks to more than {limits.max_unpacked_bytes} bytes (the limit)"
        )
    if not inflater.eof:
        raise InvalidBundle(source, "truncated: the gzip stream ends early")
    if inflater.unused_data:
        raise InvalidBundle(source, "trailing data after the gzip stream")
    return out


def _member_name(info: tarfile.TarInfo, source: str, limits: BundleLimits) -> str:
    name = info.name
    if name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/") if info.isdir() else name
    if not name or "\x00" in name or "\\" in name:
        raise InvalidBundle(source, f"member {info.name!r} has an invalid name")
    if name.startswith("/"):
        raise InvalidBundle(source, f"member {info.name!r} has an absolute path")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidBundle(
            source, f"member {info.name!r} leaves or escapes its folder ('..', '.', '//')"
        )
    if len(name) > limits.max_path_length or len(parts) > limits.max_depth:
        raise InvalidBundle(
            source,
            f"member {info.name[:60]!r} is nested too deep or named too long "
            f"(at most {limits.max_depth} levels, {limits.max_path_length} characters)",
        )
    if name != "manifest.json" and parts[0] != "code":
        raise InvalidBundle(
            source, f"unexpected member {name!r}: a bundle holds only manifest.json and code/"
        )
    if name == "code" and not info.isdir():
        raise InvalidBundle(source, "code must be a folder")
    return name


def _kind(info: tarfile.TarInfo) -> str:
    if info.issym():
        return f"a symbolic link to {info.linkname!r}"
    if info.islnk():
        return f"a hard link to {info.linkname!r}"
    if info.ischr() or info.isblk():
        return "a device"
    if info.isfifo():
        return "a FIFO"
    if info.issparse():
        return "a sparse file"
    return f"an entry of type {info.type!r}"


def _read_file(path: Path, label: str, limits: BundleLimits) -> bytes:
    """The bytes of a regular file, never more than the limit (a device or FIFO is refused)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before it can be refused.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidBundle(label, "not a regular file")
            blob = handle.read(limits.max_compressed_bytes + 1)
    except OSError as exc:
        raise InvalidBundle(label, f"cannot be read: {exc.strerror or exc}") from None
    if len(blob) > limits.max_compressed_bytes:
        raise InvalidBundle(
            label,
            f"the file is over {limits.max_compressed_bytes} bytes; "
            f"at most {limits.max_compressed_bytes} are accepted",
        )
    return blob


def read_bundle(
    data: bytes | str | Path, *, source: str | None = None, limits: BundleLimits = DEFAULT_LIMITS
) -> Bundle:
    """Read and check a bundle from its bytes or its path.

    Raises :class:`~packrun.errors.InvalidBundle` (``invalid_bundle``) for a corrupt, truncated,
    oversized or hostile archive or a missing part, :class:`~packrun.errors.InvalidManifest` for a
    malformed manifest, and :class:`~packrun.errors.ArtifactMismatch` when a file named
    ``{id}-{version}.bundle.tar.gz`` holds another id or version.
    """
    check_label("source", source, optional=True)
    if not isinstance(limits, BundleLimits):
        raise InvalidArgument("limits", limits, ["a packrun.BundleLimits"])
    name_from_path: str | None = None
    if isinstance(data, str | Path):
        check_path("data", data)
        path = Path(data)
        label = source or str(path)
        blob = _read_file(path, label, limits)
        name_from_path = path.name
    elif isinstance(data, bytes | bytearray | memoryview):
        blob = bytes(data)
        label = source or "<bytes>"
    else:
        raise InvalidBundle(
            source or "<input>", f"expected the bundle's bytes or path, got {type(data).__name__}"
        )
    tar_bytes = _gunzip(blob, label, limits)

    manifest_raw: bytes | None = None
    code: dict[str, bytes] = {}
    total = 0
    count = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            while (info := tar.next()) is not None:
                count += 1
                if count > limits.max_members:
                    raise InvalidBundle(label, f"more than {limits.max_members} members")
                name = _member_name(info, label, limits)
                if info.isdir():
                    continue
                if not info.isreg() or info.issparse():
                    raise InvalidBundle(
                        label, f"member {name!r} is {_kind(info)}; only files are allowed"
                    )
                if info.size > limits.max_file_bytes:
                    raise InvalidBundle(
                        label,
                        f"member {name!r} is {info.size} bytes; at most {limits.max_file_bytes}",
                    )
                total += info.size
                if total > limits.max_unpacked_bytes:
                    raise InvalidBundle(
                        label, f"unpacks to more than {limits.max_unpacked_bytes} bytes"
                    )
                handle = tar.extractfile(info)
                content = handle.read() if handle is not None else b""
                if len(content) != info.size:
                    raise InvalidBundle(label, f"truncated: member {name!r} is cut short")
                if name == "manifest.json":
                    if manifest_raw is not None:
                        raise InvalidBundle(label, "manifest.json appears twice")
                    manifest_raw = content
                else:
                    rel = name.removeprefix("code/")
                    if rel in code:
                        raise InvalidBundle(label, f"member {name!r} appears twice")
                    code[rel] = content
            # tarfile reads a damaged header after the first member as the end of the archive;
            # what follows the last member read must be the end blocks (zeros) and nothing else.
            if tar_bytes[tar.offset :].strip(b"\0"):
                raise InvalidBundle(
                    label,
                    f"corrupt or truncated tar archive: a damaged header at byte {tar.offset}",
                )
    except InvalidBundle:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError) as exc:
        raise InvalidBundle(label, f"corrupt or truncated tar archive ({exc})") from None
    if count == 0:
        raise InvalidBundle(label, "the archive is empty")
    if manifest_raw is None:
        raise InvalidBundle(label, "manifest.json is missing")
    if "__init__.py" not in code:
        raise InvalidBundle(label, "the entry module code/__init__.py is missing")
    manifest = decode_manifest(manifest_raw, source=f"{label}:manifest.json", require_contract=True)
    if name_from_path is not None and (match := _FILENAME.fullmatch(name_from_path)):
        named = (match["id"], match["version"])
        if named != (manifest.id, str(manifest.version)):
            raise ArtifactMismatch(
                label,
                [
                    LayerValue("file name", name_from_path, f"{named[0]} {named[1]}"),
                    LayerValue("artifact", "manifest.json", f"{manifest.id} {manifest.version}"),
                ],
                hint="the file was renamed, or dist/ is stale: rebuild it with packrun build",
            )
    return Bundle(manifest, MappingProxyType(code), digest_of(blob), blob, label)


# --- loading ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadedBundle:
    """A bundle whose code is imported and checked against its manifest.

    Generation 2 exposes ``tools`` (by id); generation 1 exposes ``handle``.
    """

    bundle: Bundle
    module: ModuleType = field(repr=False)
    generation: int
    tools: Mapping[str, ToolFunction] = field(default_factory=lambda: MappingProxyType({}))
    handle: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def digest(self) -> str:
        """The digest of the bundle the code came from."""
        return self.bundle.digest


class _MemoryLoader(importlib.abc.SourceLoader):
    """Serves one module's source from memory; tracebacks show ``<bundle file>/code/<path>``."""

    def __init__(self, filename: str, source: bytes) -> None:
        self._filename = filename
        self._source = source

    def get_filename(self, fullname: str) -> str:
        return self._filename

    def get_data(self, path: str) -> bytes:
        if path != self._filename:
            raise OSError(f"no such bundle file {path!r}")
        return self._source


class _BundleFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of loaded bundles. One per process: the import system is process-wide.

    Its registry is content-addressed (a package name carries the bundle's digest), so sharing it
    between runtimes is safe: the same name always means the same bytes. It is on ``sys.meta_path``
    only while it holds a bundle.
    """

    def __init__(self) -> None:
        self.packages: dict[str, tuple[str, Mapping[str, bytes]]] = {}
        # By digest, least recently used first: bundles read from their own bytes.
        self.slots: OrderedDict[str, _Slot] = OrderedDict()

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        root, _, rest = fullname.partition(".")
        entry = self.packages.get(root)
        if entry is None:
            return None
        label, files = entry
        base = rest.replace(".", "/")
        for rel, is_package in (
            (f"{base}/__init__.py" if base else "__init__.py", True),
            (f"{base}.py", False),
        ):
            if rel in files:
                loader = _MemoryLoader(f"{label}/code/{rel}", files[rel])
                return importlib.util.spec_from_loader(fullname, loader, is_package=is_package)
        return None


@dataclass(slots=True)
class _Slot:
    """One bundle in the finder: its package name, its module once loaded and checked, and how
    many users (imports under way, runs in flight) keep it from being evicted."""

    bundle: Bundle
    name: str
    module: ModuleType | None = None
    holds: int = 0


MAX_LOADED_BUNDLES: Final = 128
"""How many loaded bundles a process keeps imported, least recently used evicted first; a bundle
a run in flight uses is never evicted (the process may then keep more for a while)."""

_finder = _BundleFinder()
_finder_lock = threading.Lock()


def _forget(slot: _Slot) -> None:
    """Remove every trace of a bundle from the import system (the caller holds the lock)."""
    _finder.slots.pop(slot.bundle.digest, None)
    _finder.packages.pop(slot.name, None)
    prefix = slot.name + "."
    # list() copies at once: another thread may be importing (and adding to sys.modules) meanwhile.
    for module_name in list(sys.modules):
        if module_name == slot.name or module_name.startswith(prefix):
            sys.modules.pop(module_name, None)
    if not _finder.slots and _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def _evict(limit: int) -> None:
    """Evict the least recently used bundles nobody holds, down to ``limit`` (lock held)."""
    excess = len(_finder.slots) - limit
    if excess > 0:
        for slot in [s for s in _finder.slots.values() if not s.holds][:excess]:
            _forget(slot)


def hold_bundle(loaded: LoadedBundle) -> bool:
    """Keep ``loaded`` from being evicted until :func:`release_bundle`; ``False`` (and no hold)
    when it was evicted already and must be loaded again."""
    with _finder_lock:
        slot = _finder.slots.get(loaded.digest)
        if slot is None or slot.module is not loaded.module:
            return False
        slot.holds += 1
        _finder.slots.move_to_end(loaded.digest)
        return True


def release_bundle(loaded: LoadedBundle, *, limit: int = MAX_LOADED_BUNDLES) -> None:
    """Give back a hold taken by :func:`hold_bundle` or :func:`load_held`."""
    with _finder_lock:
        slot = _finder.slots.get(loaded.digest)
        if slot is not None and slot.module is loaded.module and slot.holds:
            slot.holds -= 1
            _evict(limit)


def bundle_is_loaded(loaded: LoadedBundle) -> bool:
    """Whether ``loaded`` is still the bundle the import system serves for its digest."""
    slot = _finder.slots.get(loaded.digest)
    return slot is not None and slot.module is loaded.module


def loaded_bundles() -> int:
    """How many bundles the process holds imported (refused ones are never counted)."""
    return len(_finder.slots)


def _package_name(bundle: Bundle) -> str:
    safe_id = re.sub(r"[^0-9a-zA-Z_]", "_", bundle.id)
    return f"_packrun_bundle_{safe_id}_{bundle.digest.removeprefix('sha256:')[:20]}"


def load_bundle(
    data: Bundle | bytes,
    *,
    expected_digest: str | None = None,
    generations: frozenset[int] | set[int] = DEFAULT_GENERATIONS,
    stage: Literal["publish", "run"] = "run",
    source: str | None = None,
) -> LoadedBundle:
    """Import a bundle's code and check it against its manifest.

    ``expected_digest`` (what the catalog recorded) is compared with the digest computed from the
    bytes before anything is imported or taken from the cache; a bundle's code and manifest are
    always those of its bytes. The generation must be in ``generations``
    (see :func:`packrun._contract.check_generation`). A generation-2 bundle must define one
    :class:`~packrun.sdk.Integration` with the manifest's id whose tools are exactly the manifest's
    tools; a generation-1 bundle must define ``handle(action, params, auth)``.

    Whatever the code does while it is imported (raise, call ``sys.exit()``, raise
    ``KeyboardInterrupt`` or another ``BaseException``) is ``invalid_bundle``, and a refused bundle
    leaves nothing behind in ``sys.modules`` or the import system. A process keeps at most
    :data:`MAX_LOADED_BUNDLES` bundles imported, evicting the least recently used.
    """
    if expected_digest is not None and (
        not isinstance(expected_digest, str) or not _DIGEST.fullmatch(expected_digest)
    ):
        raise InvalidArgument(
            "expected_digest", expected_digest, ["None or sha256: and 64 lowercase hex digits"]
        )
    check_generations("generations", generations)
    check_choice("stage", stage, ("publish", "run"))
    check_label("source", source, optional=True)
    return load_held(
        data,
        expected_digest=expected_digest,
        generations=generations,
        stage=stage,
        source=source,
        hold=False,
    )


def load_held(
    data: Bundle | bytes,
    *,
    expected_digest: str | None = None,
    generations: frozenset[int] | set[int] = DEFAULT_GENERATIONS,
    stage: Literal["publish", "run"] = "run",
    source: str | None = None,
    hold: bool = True,
) -> LoadedBundle:
    """:func:`load_bundle`, returning with a hold on the bundle when ``hold`` (give it back with
    :func:`release_bundle`): a held bundle is never evicted."""
    if isinstance(data, Bundle):
        blob, label = data.data, data.source
    elif isinstance(data, bytes | bytearray | memoryview):
        blob, label = bytes(data), source or "<bytes>"
    else:
        raise InvalidBundle(
            source or "<input>",
            f"expected a Bundle or the bundle's bytes, got {type(data).__name__}",
        )
    # The digest is always computed from the bytes, never taken from a field a caller could set.
    digest = digest_of(blob)
    if expected_digest is not None and expected_digest != digest:
        raise InvalidBundle(
            label,
            f"digest mismatch: the catalog recorded {expected_digest} but the bytes are "
            f"{digest}; the artifact changed after it was published",
        )
    with _finder_lock:
        known = _finder.slots.get(digest)
    # Code and manifest come from these bytes, read afresh: a Bundle built by hand with files that
    # are not its bytes' never reaches the import system.
    bundle = known.bundle if known is not None else read_bundle(blob, source=label)
    check_generation(bundle.id, bundle.version, bundle.contract, generations, stage=stage)
    name = _package_name(bundle)
    with _finder_lock:
        slot = _finder.slots.get(digest)
        if slot is None:
            slot = _finder.slots[digest] = _Slot(bundle, name)
            _finder.packages[name] = (bundle.filename, bundle.files)
        _finder.slots.move_to_end(digest)
        slot.holds += 1  # an import under way is never evicted
        if _finder not in sys.meta_path:
            sys.meta_path.append(_finder)
    try:
        loaded = _import(slot.bundle, name)
    except BaseException:
        with _finder_lock:
            slot.holds -= 1
            if slot.module is None and not slot.holds:  # refused: leave nothing behind
                _forget(slot)
        raise
    with _finder_lock:
        slot.module = loaded.module
        if not hold:
            slot.holds -= 1
        _evict(MAX_LOADED_BUNDLES)
    return loaded


def _import(bundle: Bundle, name: str) -> LoadedBundle:
    try:
        module = importlib.import_module(name)
    except BaseException as exc:  # bundle code may even call sys.exit() or raise GeneratorExit
        raise InvalidBundle(
            bundle.source, f"importing code/ failed: {type(exc).__name__}: {exc}"
        ) from (exc if isinstance(exc, Exception) else None)
    if bundle.contract == 1:
        handle = getattr(module, "handle", None)
        if not callable(handle):
            raise InvalidBundle(
                bundle.source, "a generation-1 bundle must define handle(action, params, auth)"
            )
        return LoadedBundle(bundle, module, 1, handle=handle)
    return LoadedBundle(bundle, module, bundle.contract, tools=_integration_tools(bundle, module))


def _integration_tools(bundle: Bundle, module: ModuleType) -> Mapping[str, ToolFunction]:
    # Keyed by identity: one Integration bound to two names is still one.
    found = list({id(v): v for v in vars(module).values() if isinstance(v, Integration)}.values())
    if len(found) != 1:
        raise InvalidBundle(
            bundle.source,
            f"code/__init__.py must define exactly one packrun.sdk.Integration; found {len(found)}",
        )
    integration = found[0]
    if integration.id != bundle.id:
        raise InvalidBundle(
            bundle.source,
            f"the code defines Integration({integration.id!r}) but the manifest's id is {bundle.id!r}",
        )
    declared = set(bundle.manifest.tool_ids())
    provided = set(integration.tools)
    if declared != provided:
        missing = ", ".join(sorted(declared - provided)) or "none"
        extra = ", ".join(sorted(provided - declared)) or "none"
        raise InvalidBundle(
            bundle.source,
            f"the manifest and the code disagree on tools: in the manifest but not the code: "
            f"{missing}; in the code but not the manifest: {extra}",
        )
    return integration.tools
