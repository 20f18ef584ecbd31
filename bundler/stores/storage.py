"""``StorageTree``: a Docker Distribution storage directory as a read store, no registry running.

The layout (Distribution 2.x and 3.x, also under Harbor's registry volume)::

    docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link   "sha256:<hex>"
    docker/registry/v2/blobs/sha256/<hex[:2]>/<hex>/data                        manifests and blobs alike

``<name>`` may have several path elements (``devops/bmcx``); a directory is a repository when it
holds ``_manifests``. Everything read is checked against its digest, so a damaged tree cannot
leak wrong bytes into a bundle. This is the recovery path for a registry that no longer runs:
per-repository link files (``_layers``, ``revisions``) are not required, only the blob data is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import msgspec

from bundler.digest import Digest, DigestVerifier
from bundler.errors import (
    ContentMismatchError,
    InputError,
    LocalIOError,
    NotFoundError,
    RegistryContentError,
)
from bundler.oci import (
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    IMAGE_MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    RawManifest,
    detect_media_type,
)
from bundler.words import counted

__all__ = ["READ_CHUNK", "StorageTree", "find_v2_root"]

READ_CHUNK = 1024 * 1024
V2 = Path("docker", "registry", "v2")
_MAX_LISTED = 5
"""Missing blobs named in one message; more are counted."""


def find_v2_root(path: Path) -> Path:
    """``path/docker/registry/v2``, or ``path`` itself when it already is that directory."""
    path = Path(path)
    for candidate in (path / V2, path):
        if (candidate / "repositories").is_dir() and (candidate / "blobs").is_dir():
            return candidate
    if not path.is_dir():
        raise InputError(f"{path}: no such directory")
    raise InputError(f"{path}: not a registry storage tree (no {V2}/repositories and blobs below it)")


class StorageTree:
    """The read store of a registry, served from its storage directory; stateless, so thread-safe."""

    def __init__(self, path: Path) -> None:
        self.root = find_v2_root(path)

    def __repr__(self) -> str:
        return f"StorageTree({str(self.root)!r})"

    # Paths ---------------------------------------------------------------------------------------

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex[:2] / digest.hex / "data"

    def _repository(self, repository: str) -> Path:
        if not repository or any(part in ("", ".", "..") or part.startswith("_") for part in repository.split("/")):
            raise InputError(f"{repository!r} is not a repository name")
        return self.root / "repositories" / repository

    # Listings ------------------------------------------------------------------------------------

    def catalog(self) -> list[str]:
        """Every directory under ``repositories/`` that holds ``_manifests``, sorted; ``_*`` dirs are not walked."""
        top = self.root / "repositories"
        found = []
        for directory, subdirs, _ in os.walk(top, onerror=_raise_local):
            if "_manifests" in subdirs:
                found.append(Path(directory).relative_to(top).as_posix())
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("_"))
        return sorted(found)

    def tags_list(self, repository: str) -> list[str]:
        """Tags that have a ``current/link`` (a deleted tag loses its whole directory)."""
        manifests = self._repository(repository) / "_manifests"
        if not manifests.is_dir():
            raise NotFoundError(f"{repository}: no such repository in {self.root}")
        tags = manifests / "tags"
        try:
            names = sorted(entry.name for entry in os.scandir(tags) if entry.is_dir())
        except FileNotFoundError:
            return []
        except OSError as error:
            raise _local(error) from None
        return [name for name in names if (tags / name / "current" / "link").is_file()]

    # Manifests -----------------------------------------------------------------------------------

    def manifest_get(self, repository: str, reference: str) -> RawManifest:
        """The manifest by tag or digest, checked against its digest.

        Distribution never accepts a manifest whose blobs it lacks; a storage tree may have lost
        them since. So an image manifest whose config or layers are missing (or have the wrong
        size) is refused here with every missing digest named, while the failure is still one image's.
        """
        digest = self._resolve(repository, reference)
        path = self.blob_path(digest)
        data = self._read_manifest(path, digest, reference)
        raw = _raw_manifest(data, digest, reference)
        if raw.media_type in IMAGE_MANIFEST_TYPES:
            self._check_blobs(raw, reference)
        return raw

    def manifest_head(self, repository: str, reference: str) -> Descriptor | None:
        try:
            return self.manifest_get(repository, reference).descriptor()
        except NotFoundError:
            return None

    def _resolve(self, repository: str, reference: str) -> Digest:
        """The digest a tag's ``current/link`` names, or the digest given."""
        if ":" in reference:
            return _digest(reference, f"{repository}@{reference}")
        link = self._repository(repository) / "_manifests" / "tags" / reference / "current" / "link"
        try:
            text = link.read_text(encoding="ascii", errors="replace").strip()
        except FileNotFoundError:
            raise NotFoundError(f"tag {reference} not found in repository {repository} of {self.root}") from None
        except OSError as error:
            raise _local(error) from None
        return _digest(text, f"tag link {link.relative_to(self.root)}")

    def _read_manifest(self, path: Path, digest: Digest, reference: str) -> bytes:
        try:
            if path.stat().st_size > MAX_MANIFEST_BYTES:
                raise RegistryContentError(f"manifest {digest}: larger than {MAX_MANIFEST_BYTES >> 20} MiB, refused")
            return path.read_bytes()
        except FileNotFoundError:
            via = f"tag {reference} points at manifest" if ":" not in reference else "manifest"
            raise NotFoundError(f"{via} {digest}, whose data is missing from storage ({self._rel(path)})") from None
        except OSError as error:
            raise _local(error) from None

    def _check_blobs(self, raw: RawManifest, reference: str) -> None:
        try:
            blobs = raw.manifest().blobs
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise RegistryContentError(f"manifest {raw.digest}: not a valid image manifest") from None
        broken = [f"{blob.digest} ({problem})" for blob in blobs if (problem := self._blob_problem(blob))]
        if broken:
            more = len(broken) - _MAX_LISTED
            listed = ", ".join(broken[:_MAX_LISTED]) + (f" and {more} more" if more > 0 else "")
            raise NotFoundError(
                f"manifest {raw.digest}: {counted(len(broken), 'blob')} missing or damaged in storage: {listed}"
            )

    def _blob_problem(self, blob: Descriptor) -> str:
        """Why a blob cannot be read (``""`` when it looks whole; its digest is checked while it streams)."""
        try:
            path = self.blob_path(_digest(blob.digest, "a blob descriptor"))
            size = path.stat().st_size
        except FileNotFoundError:
            return "no data file"
        except InputError:
            return "not a valid digest"
        except OSError as error:
            raise _local(error) from None
        return "" if size == blob.size else f"{size} bytes, expected {blob.size}"

    # Blobs ---------------------------------------------------------------------------------------

    def blob_chunks(self, repository: str, digest: Digest, size: int) -> Iterator[bytes]:
        """The blob's data file in ~1 MiB chunks, verified against ``digest`` and ``size`` as it is read."""
        path = self.blob_path(digest)
        verifier = DigestVerifier(digest, size, what=f"blob {digest} in storage ({self._rel(path)})")
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(READ_CHUNK):
                    verifier.update(chunk)
                    yield chunk
            verifier.check()
        except ContentMismatchError as error:
            raise error.retyped(RegistryContentError) from None
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest}: its data is missing from storage ({self._rel(path)})") from None
        except OSError as error:
            raise _local(error) from None

    def referrers(self, repository: str, digest: Digest) -> list[Descriptor]:
        """None: the storage of Distribution 2.x keeps no referrers index (the registry's API answers 404 too)."""
        return []

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _digest(text: str, what: str) -> Digest:
    try:
        return Digest(text)
    except InputError:
        raise RegistryContentError(f"{what}: {text[:80]!r} is not a digest") from None


def _raw_manifest(data: bytes, digest: Digest, reference: str) -> RawManifest:
    """Bytes whose digest is checked, media type read from the bytes (storage keeps no Content-Type)."""
    try:
        media_type = detect_media_type(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise RegistryContentError(f"manifest {digest} ({reference}): stored data is not JSON") from None
    if media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
        raise RegistryContentError(f"manifest {digest} ({reference}): schema1 manifests are not supported")
    try:
        return RawManifest.from_bytes(data, media_type, digest)
    except ContentMismatchError as error:
        raise RegistryContentError(f"manifest {digest} ({reference}): stored data is damaged: {error}") from None


def _local(error: OSError) -> LocalIOError:
    return LocalIOError(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "))


def _raise_local(error: OSError) -> None:
    raise _local(error)
