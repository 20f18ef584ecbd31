"""The two interfaces every home of images implements: one to read from, one to write to.

A registry (over HTTP), a registry's storage directory, the local blob cache (around another
store) and a bundle are all read stores; a registry is also a write store. Plans copy between
stores (pack: stores into a bundle writer; unpack: a bundle store into a registry store) and know
nothing of HTTP, files or tar. Methods are named object-first, as the distribution API is.

Rules every read store keeps:

- ``manifest_get`` returns the bytes exactly as stored, checked against the digest asked for (or,
  for a tag, the digest the store says the tag points at); schema1 is refused.
- ``blob_chunks`` yields the blob verified against ``digest`` and ``size`` as it streams and raises
  at the end when they disagree: a consumer must not keep bytes of a stream that did not finish.
- Something missing is ``NotFoundError``; a listing the store refuses is ``AuthError`` (or
  ``NotFoundError``).

Rules for writers: a blob MUST be in a repository before a manifest that lists it is put there,
and a child manifest before the index that lists it; tagging is ``manifest_put`` under a tag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bundler.digest import Digest
from bundler.errors import NotFoundError
from bundler.oci import Descriptor, Placement, RawManifest

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Placement", "ReadStore", "SinglePool", "StorePool", "WriteStore"]


@runtime_checkable
class ReadStore(Protocol):
    """Where images can be read from. ``reference`` is a tag or a digest."""

    def manifest_get(self, repository: str, reference: str) -> RawManifest:
        """A manifest or index by tag or digest, byte-exact."""

    def manifest_head(self, repository: str, reference: str) -> Descriptor | None:
        """The manifest's descriptor, or ``None`` when it does not exist."""

    def blob_chunks(self, repository: str, digest: Digest, size: int) -> Iterator[bytes]:
        """The blob in chunks, verified against ``digest`` and ``size`` while it streams."""

    def tags_list(self, repository: str) -> list[str]:
        """Every tag of ``repository``."""

    def catalog(self) -> list[str]:
        """Every repository; ``AuthError``/``NotFoundError`` when the store will not list them."""

    def referrers(self, repository: str, digest: Digest) -> list[Descriptor]:
        """The manifests whose ``subject`` is ``digest`` (OCI 1.1); empty when there are none."""


@runtime_checkable
class WriteStore(ReadStore, Protocol):
    """Where images can be written to; ordering is the caller's job (see the module docstring)."""

    def blob_exists(self, repository: str, digest: Digest) -> bool:
        """Whether ``repository`` holds the blob."""

    def blob_upload(self, repository: str, digest: Digest, size: int, chunks: Callable[[], Iterable[bytes]], *,
                    mount_from: str | None = None) -> Placement:
        """Put a blob into ``repository``, mounted from ``mount_from`` when the store can, else sent.

        ``chunks`` is called once per attempt and must yield exactly ``size`` bytes.
        """

    def blob_mount(self, repository: str, digest: Digest, source: str) -> bool:
        """Take the blob from ``source`` into ``repository`` without sending it; False when refused."""

    def manifest_put(self, repository: str, reference: str, manifest: RawManifest) -> None:
        """Store ``manifest`` under a tag or its digest; the store must compute the same digest."""


class StorePool(Protocol):
    """Hands out the read store for a registry host; thread-safe; closed once by its owner."""

    def get(self, host: str) -> ReadStore: ...

    def close(self) -> None: ...


class SinglePool:
    """A pool serving one host from one store, e.g. a storage tree under a chosen host name; closes the store."""

    def __init__(self, host: str, store: ReadStore) -> None:
        self.host = host
        self.store = store

    def get(self, host: str) -> ReadStore:
        if host != self.host:
            raise NotFoundError(f"{host}: this run reads only {self.host}")
        return self.store

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
