"""Pushing what is attached to the images (signatures, attestations, SBOMs), once the images are in.

Each referrer goes to its image's target repository after its subject: the images are pushed
first, and referrers in the order the bundle records them (each after its subject). An OCI 1.1
referrer is put by digest; a registry with the referrers API indexes it itself, and where the API
does not list it, unpack maintains the referrers tag schema's fallback tag ``<alg>-<hex>``, an index
of referrers merged with what the tag already lists (never dropping one it did not bring). A cosign
artifact goes under its tag. What is there already is left alone, so a second unpack pushes nothing.

One job per target repository, so that two images sharing one (aliases of one digest) never merge
the same fallback index at the same time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import msgspec

from bundler.bundle import FoundBy, ImageEntry, ReferrerEntry
from bundler.bundle.index import fallback_tag
from bundler.digest import Digest
from bundler.errors import CorruptBundleError, ImgbundleError, Interrupted, NotFoundError, UnreachableError
from bundler.oci import OCI_INDEX, RawManifest
from bundler.progress import Progress
from bundler.reference import parse_reference
from bundler.stores import WriteStore
from bundler.stores.bundle import BundleStore
from bundler.threads import stop_workers
from bundler.unpack.result import ImageOutcome, ReferrerCounts, UnpackResult

__all__ = ["push_referrers"]


def push_referrers(bundle: BundleStore, client: WriteStore, result: UnpackResult, *, jobs: int,
                   progress: Progress) -> None:
    """Push the referrers of every image that was pushed; an image whose referrers fail becomes a failure."""
    by_repository: dict[str, list[tuple[int, ImageEntry]]] = {}
    for number, outcome in enumerate(result.images):
        entry = result.entries.get(outcome.target.source_ref)
        if outcome.ok and entry is not None and entry.referrers:
            by_repository.setdefault(outcome.target.repository, []).append((number, entry))
    if not by_repository:
        return
    progress.phase("referrers", total_items=sum(len(images) for images in by_repository.values()))
    pusher = _Pusher(bundle, client, result.referrers, progress)
    executor = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="imgbundle-referrers")
    futures = [executor.submit(pusher.repository, name, images) for name, images in by_repository.items()]
    try:
        failures = [failure for future in futures for failure in future.result()]
    except KeyboardInterrupt:
        stop_workers(executor, futures)
        raise Interrupted("unpack interrupted; run it again to push the rest") from None
    except BaseException:
        stop_workers(executor, futures)
        raise
    executor.shutdown()
    for number, error in failures:
        outcome = result.images[number]
        result.images[number] = ImageOutcome(outcome.target, False, error)


class _Pusher:
    def __init__(self, bundle: BundleStore, client: WriteStore, counts: ReferrerCounts, progress: Progress) -> None:
        self.bundle = bundle
        self.client = client
        self.counts = counts
        self.progress = progress
        self.lock = threading.Lock()

    def repository(self, repository: str, images: list[tuple[int, ImageEntry]]) -> list[tuple[int, ImgbundleError]]:
        """Each image's referrers into ``repository`` in turn; the failures, by image number."""
        failures = []
        done: set[tuple[str, str]] = set()
        for number, image in images:
            try:
                _ImageReferrers(self, repository, image, done).push()
                self.progress.item_done(image.reference, True)
            except UnreachableError:
                raise
            except ImgbundleError as error:
                failures.append((number, error.reworded(f"referrers: {error}")))
                self.progress.item_done(image.reference, False)
        return failures


class _ImageReferrers:
    """One image's referrers into one repository; ``done`` is shared by the images of that repository."""

    def __init__(self, pusher: _Pusher, repository: str, image: ImageEntry, done: set[tuple[str, str]]) -> None:
        self.pusher = pusher
        self.client = pusher.client
        self.bundle = pusher.bundle
        self.repository = repository
        self.image = image
        self.source = parse_reference(image.reference).name
        self.done = done

    def push(self) -> None:
        indexed: dict[str, list[ReferrerEntry]] = {}
        for referrer in self.image.referrers:
            key = (referrer.digest, referrer.tag)
            if key not in self.done:
                self._put(referrer)
                self.done.add(key)
            if referrer.found_by is not FoundBy.COSIGN_TAG:
                indexed.setdefault(referrer.subject, []).append(referrer)
        for subject, referrers in indexed.items():
            self._index(Digest(subject), referrers)

    def _put(self, referrer: ReferrerEntry) -> None:
        """By digest, or under its cosign tag; nothing when it is there already."""
        reference = referrer.tag or referrer.digest
        current = self.client.manifest_head(self.repository, reference)
        if current is not None and current.digest == referrer.digest:
            with self.pusher.lock:
                self.pusher.counts.present += 1
            return
        raw = self._manifest(Digest(referrer.digest))
        self._content(raw, depth=0)
        self.client.manifest_put(self.repository, reference, raw)
        with self.pusher.lock:
            self.pusher.counts.pushed += 1
        if current is not None:
            self.pusher.progress.warn(f"{self.repository}:{reference} moved from {current.digest} to {raw.digest}")

    def _content(self, raw: RawManifest, depth: int) -> None:
        """What must be in the repository before ``raw``: its blobs, or (an index of artifacts) its manifests."""
        if raw.is_index:
            if depth > 0:
                raise CorruptBundleError(f"referrer {raw.digest} nests indexes")
            for child in raw.index().manifests:
                if self.client.manifest_head(self.repository, child.digest) is None:
                    child_raw = self._manifest(Digest(child.digest))
                    self._content(child_raw, depth + 1)
                    self.client.manifest_put(self.repository, child.digest, child_raw)
            return
        for blob in raw.manifest().blobs:
            self._blob(Digest(blob.digest), blob.size)

    def _blob(self, digest: Digest, size: int) -> None:
        if self.client.blob_exists(self.repository, digest):
            return
        chunks: Callable = lambda: self.bundle.blob_chunks(self.source, digest, size)
        try:
            self.client.blob_upload(self.repository, digest, size, chunks)
        except NotFoundError:
            raise CorruptBundleError(f"the bundle lacks blob {digest} and {self.repository} does not have it") from None

    def _manifest(self, digest: Digest) -> RawManifest:
        try:
            return self.bundle.manifest_get(self.source, digest)
        except NotFoundError:
            raise CorruptBundleError(f"the bundle lacks referrer manifest {digest}") from None

    def _index(self, subject: Digest, referrers: list[ReferrerEntry]) -> None:
        """Where the registry's referrers API does not list them all, add them to the fallback tag's index."""
        listed = {descriptor.digest for descriptor in self.client.referrers(self.repository, subject)}
        missing = [referrer for referrer in referrers if referrer.digest not in listed]
        if not missing:
            return
        tag = fallback_tag(subject)
        document = self._fallback_document(tag)
        have = {entry.get("digest") for entry in document["manifests"] if isinstance(entry, dict)}
        added = [self._descriptor(referrer) for referrer in missing if referrer.digest not in have]
        if not added:
            return
        document["manifests"] = [*document["manifests"], *added]
        self.client.manifest_put(self.repository, tag, RawManifest.from_bytes(msgspec.json.encode(document), OCI_INDEX))
        with self.pusher.lock:
            self.pusher.counts.indexes_updated += 1

    def _fallback_document(self, tag: str) -> dict:
        """The index the fallback tag holds (its other fields kept as they are), or a new empty one."""
        try:
            current = self.client.manifest_get(self.repository, tag)
        except NotFoundError:
            current = None
        if current is not None and current.is_index:
            document = msgspec.json.decode(current.data, type=dict)
            if isinstance(document.get("manifests"), list):
                return document
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}

    def _descriptor(self, referrer: ReferrerEntry) -> dict:
        """As the referrers API lists it: media type, digest, size, artifactType and annotations."""
        size = len(self._manifest(Digest(referrer.digest)).data)
        descriptor: dict = {"mediaType": referrer.media_type, "digest": referrer.digest, "size": size,
                            "artifactType": referrer.artifact_type}
        if referrer.annotations:
            descriptor["annotations"] = referrer.annotations
        return descriptor
