"""Fetching an OCI pack source with ORAS, and checking an SSH signature over its digest.

An OCI pack source is an artifact pushed with ORAS conventions (``oras push host/repo:tag
packs/``): its layers are the pack tree, a folder layer being a gzip'd tar that ORAS unpacks.
Reading it takes the manifest (one request) and then the artifact *by that digest*, so what is
checked and published is exactly what the digest names.

The signature, when the trust policy asks for one, is an SSH signature (``ssh-keygen -Y sign -n
packrun-oci``) over the manifest digest string, pushed as the single layer of an artifact tagged
``sha256-<hex>.sig`` in the same repository (the tag scheme cosign uses), and verified with
``ssh-keygen -Y verify`` against the source's allowed-signers.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from packrun._sources._model import SourceUrl
from packrun.errors import SourceError, UntrustedSource

__all__ = [
    "SIGNATURE_MEDIA_TYPE",
    "SIGNATURE_NAMESPACE",
    "OciTree",
    "fetch",
    "signature_tag",
    "verify_signature",
]

SIGNATURE_MEDIA_TYPE: Final = "application/vnd.packrun.ssh-signature.v1"
SIGNATURE_NAMESPACE: Final = "packrun-oci"
REQUEST_TIMEOUT: Final = 30.0
_ACCEPT: Final = (
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


@dataclass(frozen=True, slots=True)
class OciTree:
    """A fetched artifact unpacked at ``root`` (the folder holding ``index.json``), its manifest
    digest, and the requests it took."""

    root: Path
    digest: str
    fetches: int


def signature_tag(digest: str) -> str:
    """The tag a signature of ``digest`` is pushed under: ``sha256-<hex>.sig``."""
    return digest.replace(":", "-") + ".sig"


def _registry(name: str, url: SourceUrl) -> Any:
    try:
        import oras.provider
    except ImportError:
        raise SourceError(name, "OCI sources need the ORAS client: install packrun[oci]") from None
    host = url.location.split("/", 1)[0]
    return oras.provider.Registry(hostname=host, insecure=url.plain_http)


def _get_manifest(name: str, registry: Any, url: SourceUrl, ref: str) -> tuple[bytes, str]:
    """The raw manifest ``ref`` names and its digest; one request, no retries (a registry that
    is down fails the sync at once, and the next sync tries again)."""
    import requests

    host, repository = url.location.split("/", 1)
    address = f"{registry.prefix}://{host}/v2/{repository}/manifests/{ref}"
    try:
        response = registry.session.get(
            address, headers={"Accept": _ACCEPT}, timeout=REQUEST_TIMEOUT
        )
    except requests.RequestException as exc:
        raise SourceError(name, f"cannot reach the registry {host}: {exc}") from None
    if response.status_code == 404:
        raise SourceError(name, f"no artifact {url.location}:{ref} in the registry")
    if response.status_code != 200:
        raise SourceError(
            name,
            f"the registry {host} answered {response.status_code} for {url.location}:{ref}: "
            f"{response.text[:200]}",
        )
    data: bytes = response.content
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def fetch(name: str, url: SourceUrl, into: Path) -> OciTree:
    """Read the artifact ``url`` names into ``into``; ``source_error`` when that fails."""
    import requests

    registry = _registry(name, url)
    assert url.ref is not None
    manifest, digest = _get_manifest(name, registry, url, url.ref)
    if url.ref.startswith("sha256:") and digest != url.ref:
        raise SourceError(name, f"the registry sent a manifest of digest {digest}, not {url.ref}")
    try:
        layers = json.loads(manifest).get("layers", [])
    except ValueError:
        raise SourceError(name, f"the manifest of {url.location}:{url.ref} is not JSON") from None
    out = Path(tempfile.mkdtemp(prefix="oci-", dir=into))
    try:
        registry.pull(target=f"{url.location}@{digest}", outdir=str(out))
    except (requests.RequestException, ValueError, OSError) as exc:
        raise SourceError(name, f"cannot pull {url.location}@{digest}: {exc}") from None
    root = out
    if not (out / "index.json").is_file():
        candidates = [p for p in out.iterdir() if p.is_dir() and (p / "index.json").is_file()]
        if len(candidates) == 1:
            root = candidates[0]
    return OciTree(root, digest, 2 + len(layers))


def _ssh_keygen(name: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["ssh-keygen", *args], input=stdin, capture_output=True, timeout=60, check=False
        )
    except FileNotFoundError:
        raise SourceError(
            name, "ssh-keygen is not installed: expected OpenSSH's ssh-keygen on PATH"
        ) from None


def verify_signature(
    name: str, url: SourceUrl, digest: str, allowed_signers: str
) -> tuple[str, int]:
    """Check the SSH signature over ``digest``; ``(the signer, requests made)``.

    ``untrusted_source`` naming the digest when there is no signature or it is not by an
    allowed signer.
    """
    import requests

    registry = _registry(name, url)
    try:
        manifest, _ = _get_manifest(name, registry, url, signature_tag(digest))
    except SourceError as exc:
        if "no artifact" in exc.detail:
            raise UntrustedSource(
                name,
                digest,
                f"no signature: expected an artifact tagged {signature_tag(digest)} holding an "
                "SSH signature of the digest",
            ) from None
        raise
    layers = [
        layer
        for layer in json.loads(manifest).get("layers", [])
        if layer.get("mediaType") == SIGNATURE_MEDIA_TYPE
    ]
    if len(layers) != 1:
        raise UntrustedSource(
            name,
            digest,
            f"{signature_tag(digest)} holds {len(layers)} layers of type {SIGNATURE_MEDIA_TYPE}; "
            "expected one",
        )
    host, repository = url.location.split("/", 1)
    try:
        blob = registry.session.get(
            f"{registry.prefix}://{host}/v2/{repository}/blobs/{layers[0]['digest']}",
            timeout=REQUEST_TIMEOUT,
        )
    except requests.RequestException as exc:
        raise SourceError(name, f"cannot reach the registry {host}: {exc}") from None
    if blob.status_code != 200:
        raise SourceError(name, f"the registry {host} answered {blob.status_code} for a signature")
    with tempfile.TemporaryDirectory(prefix="packrun-sig-") as folder:
        signature = Path(folder) / "signature"
        signature.write_bytes(blob.content)
        signers = Path(folder) / "allowed_signers"
        signers.write_text(allowed_signers)
        found = _ssh_keygen(name, "-Y", "find-principals", "-s", str(signature), "-f", str(signers))
        principals = found.stdout.decode(errors="replace").split()
        if found.returncode != 0 or not principals:
            said = " ".join(found.stderr.decode(errors="replace").split())
            raise UntrustedSource(
                name, digest, f"the signature is not by an allowed signer (ssh-keygen: {said})"
            )
        done = _ssh_keygen(
            name,
            "-Y",
            "verify",
            "-f",
            str(signers),
            "-I",
            principals[0],
            "-n",
            SIGNATURE_NAMESPACE,
            "-s",
            str(signature),
            stdin=digest.encode(),
        )
        said = " ".join((done.stdout + done.stderr).decode(errors="replace").split())
        if done.returncode != 0:
            raise UntrustedSource(
                name, digest, f"the signature does not verify for {digest} (ssh-keygen: {said})"
            )
    return principals[0], 3
