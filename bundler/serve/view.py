"""What serve shows: the images of one or more bundles under the names unpack would push them to.

Repositories are named by ``bundler.mapping`` (the reference without its host, or with
``keep_host``, ``flatten``, ``maps`` and a prefix), so what a client pulls from serve is what it would
pull after an unpack. Manifests and blobs are content-addressed: any served bundle that carries one
serves it, so a delta served with its base finds the blobs it leaves out in the base. When two bundles
hold the same tag, the bundle named last wins (a delta is newer than its base). No HTTP here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import msgspec

from bundler.digest import Digest
from bundler.errors import BundleError, InputError, NotFoundError
from bundler.mapping import Target, plan_targets
from bundler.oci import Descriptor, RawManifest
from bundler.stores.bundle import BundleStore

__all__ = ["Naming", "ServedView", "page"]

_NAMING_HOST = "localhost"
"""``plan_targets`` names a target registry; serve is that registry, so only the path is kept."""


@dataclass(frozen=True)
class Naming:
    """How repositories are named, as unpack's ``--to HOST/PREFIX``, ``--keep-host``, ``--flatten``, ``--map``."""

    prefix: str = ""
    keep_host: bool = False
    flatten: bool = False
    maps: tuple[tuple[str, str], ...] = ()

    def targets(self, store: BundleStore) -> list[Target]:
        to = f"{_NAMING_HOST}/{self.prefix}" if self.prefix else _NAMING_HOST
        return plan_targets(store.index.images, to, self.keep_host, self.flatten, self.maps)


class ServedView:
    """The served registry's content over open bundle stores (which the caller owns and closes)."""

    def __init__(self, stores: Sequence[BundleStore], naming: Naming) -> None:
        self.stores = list(stores)
        self.tags: dict[str, dict[str, Digest]] = {}
        self.images: dict[str, Digest] = {}
        """What a user pulls (``repo:tag`` or ``repo@digest``) -> the image's top digest."""
        self._sources: dict[str, set[str]] = {}
        for store in self.stores:
            for target in naming.targets(store):
                self._add(target)
        self.repositories = sorted(self.tags)

    def _add(self, target: Target) -> None:
        self.tags.setdefault(target.repository, {})
        if target.tag:
            self.tags[target.repository][target.tag] = target.digest
        self._sources.setdefault(target.repository, set()).add(target.source_name)
        display = target.display.removeprefix(f"{_NAMING_HOST}/")
        self.images[display] = target.digest

    def has_repository(self, repository: str) -> bool:
        return repository in self.tags

    def resolve(self, repository: str, reference: str) -> Digest | None:
        """The manifest digest a tag or digest names in ``repository``; None when it names none served."""
        if ":" not in reference:
            return self.tags.get(repository, {}).get(reference)
        try:
            digest = Digest(reference)
        except InputError:
            return None
        return digest if self._manifest_store(digest) is not None else None

    def manifest(self, digest: Digest) -> RawManifest:
        """The manifest's bytes as stored, checked against ``digest``."""
        store = self._manifest_store(digest)
        if store is None:
            raise NotFoundError(f"manifest {digest} is in no served bundle")
        return store.manifest_get("", digest)

    def manifest_descriptor(self, digest: Digest) -> Descriptor | None:
        store = self._manifest_store(digest)
        return None if store is None else store.manifest_head("", digest)

    def blob_store(self, digest: Digest) -> tuple[BundleStore, int] | None:
        """The first served bundle that carries the blob, and its size."""
        for store in self.stores:
            size = store.blob_size(digest)
            if size is not None:
                return store, size
        return None

    def referrers(self, repository: str, digest: Digest) -> list[Descriptor]:
        """Every served bundle's referrers of ``digest`` under the repository's source names, once each."""
        found: dict[str, Descriptor] = {}
        for store in self.stores:
            for source in sorted(self._sources.get(repository, ())):
                for descriptor in store.referrers(source, digest):
                    found.setdefault(descriptor.digest, descriptor)
        return list(found.values())

    def images_needing(self, digest: Digest) -> list[str]:
        """The served images whose manifests lead to ``digest``: what a damaged blob breaks."""
        return sorted(name for name, top in self.images.items() if digest in set(self._closure(top)))

    def _closure(self, top: Digest) -> Iterator[str]:
        stack, seen = [top], set()
        while stack:
            digest = stack.pop()
            if digest in seen:
                continue
            seen.add(digest)
            yield digest
            stack.extend(self._children(digest))

    def _children(self, digest: Digest) -> list[Digest]:
        store = self._manifest_store(digest)
        if store is None:
            return []
        try:
            raw = store.manifest_get("", digest)
            descriptors = raw.index().manifests if raw.is_index else raw.manifest().blobs
        except (BundleError, msgspec.DecodeError, msgspec.ValidationError):
            return []
        return [Digest(descriptor.digest) for descriptor in descriptors]

    def _manifest_store(self, digest: Digest) -> BundleStore | None:
        for store in self.stores:
            if store.manifest_head("", digest) is not None:
                return store
        return None


def page(names: list[str], count: int | None, last: str | None) -> tuple[list[str], bool]:
    """One page of sorted ``names`` after ``last``, at most ``count`` long, and whether more follow
    (the distribution spec's ``n``/``last`` pagination)."""
    start = 0
    if last:
        start = next((i for i, name in enumerate(names) if name > last), len(names))
    rest = names[start:]
    if count is None:
        return rest, False
    return rest[:count], len(rest) > count

