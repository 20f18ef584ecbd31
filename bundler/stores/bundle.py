"""A bundle as a read store, straight from the compressed file through its seek table.

A bundle is content-addressed: a manifest asked for by digest and a blob are found whatever the
repository. Its repositories and tags are those of the images' references, a repository named
with its registry host (``docker.io/library/alpine``), since a bundle holds images of many registries;
the cosign tags (``sha256-….sig``) of the referrers it carries are tags of their image's repository.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING

import msgspec

from bundler.bundle import BundleIndex, BundleReader, FoundBy, ImageEntry, Member, MemberEntry
from bundler.bundle.reader import Location
from bundler.digest import Digest
from bundler.errors import ContentMismatchError, CorruptBundleError, InputError, NotFoundError
from bundler.oci import Descriptor, RawManifest, detect_media_type
from bundler.reference import Reference, parse_reference

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["BundleStore"]


class BundleStore:
    """An open bundle as a read store; a context manager. Thread-safe for reads by digest."""

    def __init__(self, reader: BundleReader) -> None:
        self.reader = reader
        self._manifests = {Digest(entry.digest): entry for entry in reader.index.manifests}
        self._blobs = {Digest(entry.digest): entry for entry in reader.index.blobs}

    @classmethod
    def open(cls, location: Location, *, page_cache: bool = False) -> BundleStore:
        """Open a bundle from a path, its volumes, a seekable file or a pipe (a pipe can only be scanned);
        ``page_cache``: read members through the page cache (see ``BundleReader.open``)."""
        return cls(BundleReader.open(location, page_cache=page_cache))

    @property
    def index(self) -> BundleIndex:
        return self.reader.index

    @property
    def seekable(self) -> bool:
        """Whether manifests and blobs can be read in any order (not from a pipe)."""
        return self.reader.seekable

    def members(self) -> Iterator[Member]:
        """Every member in file order, each checked; the way to read a bundle from a pipe."""
        return self.reader.members()

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- the read interface ------------------------------------------------------------------

    def manifest_get(self, repository: str, reference: str) -> RawManifest:
        digest = self._resolve(repository, reference)
        entry = self._manifest_entry(digest)
        data = self.reader.manifest_bytes(digest)
        try:
            return RawManifest.from_bytes(data, detect_media_type(data, entry.media_type), expected=digest)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise CorruptBundleError(f"manifest {digest} is not valid: {error}") from None
        except ContentMismatchError as error:
            raise error.retyped(CorruptBundleError) from None

    def manifest_head(self, repository: str, reference: str) -> Descriptor | None:
        try:
            digest = self._resolve(repository, reference)
            entry = self._manifest_entry(digest)
        except NotFoundError:
            return None
        return Descriptor(media_type=entry.media_type, digest=digest, size=entry.size)

    def blob_chunks(self, repository: str, digest: Digest, size: int) -> Iterator[bytes]:
        entry = self._blobs.get(digest) or self._manifests.get(digest)
        if entry is None:
            raise NotFoundError(f"blob {digest} is not in this bundle")
        if entry.size != size:
            raise CorruptBundleError(f"blob {digest}: the bundle holds {entry.size} bytes, {size} were expected")
        return self.reader.blob_chunks(digest)

    def blob_size(self, digest: Digest) -> int | None:
        """The size of a blob (or manifest) this bundle carries; None for one it does not, as a delta's
        external blobs."""
        entry = self._blobs.get(digest) or self._manifests.get(digest)
        return None if entry is None else entry.size

    def blob_range(self, digest: Digest, start: int, stop: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``stop`` of a blob, each frame checked by its checksum (not by the digest:
        that needs the whole blob)."""
        if self.blob_size(digest) is None:
            raise NotFoundError(f"blob {digest} is not in this bundle")
        return self.reader.blob_range(digest, start, stop)

    def tags_list(self, repository: str) -> list[str]:
        tags = self._tags.get(repository)
        if tags is None:
            raise NotFoundError(f"{repository}: no such repository in this bundle")
        return sorted(tags)

    def catalog(self) -> list[str]:
        return sorted(self._tags)

    def referrers(self, repository: str, digest: Digest) -> list[Descriptor]:
        """The OCI 1.1 referrers recorded for ``digest`` by the images of ``repository`` (not cosign's tagged
        artifacts, which have no ``subject`` and are found by their tags), as the referrers API lists them."""
        found: dict[str, Descriptor] = {}
        for image in self._images_by_repository.get(repository, ()):
            for referrer in image.referrers:
                if referrer.subject == digest and referrer.found_by is not FoundBy.COSIGN_TAG:
                    found.setdefault(referrer.digest, Descriptor(
                        media_type=referrer.media_type, digest=referrer.digest,
                        size=self._manifest_entry(Digest(referrer.digest)).size,
                        artifact_type=referrer.artifact_type, annotations=referrer.annotations,
                    ))
        return list(found.values())

    # --- helpers -----------------------------------------------------------------------------

    @cached_property
    def _images_by_repository(self) -> dict[str, list[ImageEntry]]:
        """Repository name (with its host) -> the images of it (read only when asked by name)."""
        images: dict[str, list[ImageEntry]] = {}
        for image in self.index.images:
            images.setdefault(self._reference(image).name, []).append(image)
        return images

    @cached_property
    def _tags(self) -> dict[str, dict[str, Digest]]:
        """Repository name -> tag -> digest, from the images' references and their referrers' cosign tags."""
        tags: dict[str, dict[str, Digest]] = {}
        for image in self.index.images:
            reference = self._reference(image)
            repository_tags = tags.setdefault(reference.name, {})
            repository_tags.update((r.tag, Digest(r.digest)) for r in image.referrers if r.tag)
            if reference.tag:
                repository_tags[reference.tag] = Digest(image.digest)
        return {name: repository_tags for name, repository_tags in tags.items() if repository_tags}

    @staticmethod
    def _reference(image: ImageEntry) -> Reference:
        try:
            return parse_reference(image.reference)
        except InputError:
            raise CorruptBundleError(f"image reference {image.reference[:200]!r} is not valid") from None

    def _resolve(self, repository: str, reference: str) -> Digest:
        if ":" in reference:
            try:
                return Digest(reference)
            except InputError:
                raise NotFoundError(f"{reference[:200]!r} is not a digest") from None
        digest = self._tags.get(repository, {}).get(reference)
        if digest is None:
            raise NotFoundError(f"{repository}:{reference}: no such tag in this bundle")
        return digest

    def _manifest_entry(self, digest: Digest) -> MemberEntry:
        entry = self._manifests.get(digest)
        if entry is None:
            raise NotFoundError(f"manifest {digest} is not in this bundle")
        return entry
