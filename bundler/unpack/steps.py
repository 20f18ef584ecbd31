"""The steps of a push that write to the target, run by the job runner's workers.

Each step returns what it settled (an ``Outcome`` or the ``ImgbundleError`` that stopped it) and
counts itself in the ``UnpackResult`` and the progress. An unreachable target is a result too: the
registry client gives up on a host only after it moved nothing for the whole retry timeout, and then
fails every later request at once, so the steps after it end quickly and each image is reported.
Which step runs when is ``bundler.unpack.push``'s business.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from functools import partial

from bundler.digest import Digest
from bundler.errors import CorruptBundleError, ImgbundleError, ReferenceUnknownError
from bundler.progress import Progress
from bundler.stores import Placement, WriteStore
from bundler.stores.bundle import BundleStore
from bundler.unpack.facts import BlobFact, Fact, ManifestFact, Outcome, Settled, TagFact, head_blob
from bundler.unpack.plan import BlobPlan, PushPlan
from bundler.unpack.result import UnpackResult

__all__ = ["MANIFEST_PUT_TRIES", "PushSteps"]

log = logging.getLogger("bundler.unpack")

MANIFEST_PUT_TRIES = 3
"""Tries in all of a manifest PUT refused for a reference the registry does not find
(``ReferenceUnknownError``); before each further try, what the manifest names is checked and what the
repository really lacks is put again. Bounded: a registry that keeps refusing ends as that error."""


class PushSteps:
    """Blob placements and manifest/tag PUTs into ``client``; thread-safe.

    ``plan`` says what each manifest names, to put it again when the registry does not find it;
    ``tag_digests`` is what each tag pointed at before the run (``None``: no such tag), to tell a
    moved tag; ``check_cancelled`` raises once the run is being stopped, between an upload's chunks.
    """

    def __init__(self, client: WriteStore, bundle: BundleStore, plan: PushPlan, progress: Progress,
                 result: UnpackResult, tag_digests: Mapping[TagFact, str | None],
                 check_cancelled: Callable[[], None]) -> None:
        self.client = client
        self.bundle = bundle
        self.plan = plan
        self.blob_plans = {blob.digest: blob for blob in plan.blobs()}
        self.progress = progress
        self.result = result
        self.tag_digests = tag_digests
        self.check_cancelled = check_cancelled
        self.lock = threading.Lock()

    def place_blob(self, blob: BlobPlan, repositories: list[str], source: str | None) -> Mapping[Fact, Settled]:
        """Upload once into the first repository that lacks it, then mount into the others."""
        results: dict[Fact, Settled] = {}
        chunks = self._chunk_source(blob)
        for position, repository in enumerate(repositories):
            fact = BlobFact(repository, blob.digest)
            try:
                if source is None and self._already_there(fact, blob.size or 0):
                    results[fact], source = Outcome.PRESENT, repository
                    continue
                how = self.client.blob_upload(repository, blob.digest, blob.size or 0, chunks, mount_from=source)
            except CorruptBundleError as error:  # the bundle's bytes are bad: every repository would get them
                return {**results, **{BlobFact(r, blob.digest): error for r in repositories[position:]}}
            except ImgbundleError as error:
                results[fact] = error
                continue
            results[fact] = Outcome.of(how)
            source = source or repository
            self._count_blob(how, blob.size or 0)
        return results

    def put_manifest(self, fact: ManifestFact) -> Mapping[Fact, Settled]:
        return self._put(fact.repository, fact.digest, fact.digest, (fact,))

    def put_tag(self, fact: TagFact, digest: Digest, produces: tuple[Fact, ...]) -> Mapping[Fact, Settled]:
        """PUT by tag (settling the top manifest too when the tag carries it); warn when the tag moved."""
        results = self._put(fact.repository, fact.tag, digest, produces)
        previous = self.tag_digests.get(fact)
        if results[fact] is Outcome.PUSHED and previous is not None and previous != digest:
            with self.lock:
                self.result.tags_moved.append(fact.label)
            self.progress.warn(f"{self.result.registry}/{fact.label} moved from {previous} to {digest}")
        return results

    def _already_there(self, fact: BlobFact, size: int) -> bool:
        """HEAD before an upload (an earlier run may have sent it); a blob found counts as sent for progress.

        Why a HEAD and not a mount from the repository itself (one request fewer per new blob): Harbor's
        HEAD marks a blob that garbage collection has picked as in use again, and a mount does not, so a
        blob found by a mount could be swept before the manifest that needs it lands.
        """
        if head_blob(self.client, fact) is None:
            return False
        with self.lock:
            self.result.blobs_present += 1
        self.progress.advance(size)
        return True

    def _count_blob(self, how: Placement, size: int) -> None:
        with self.lock:
            if how is Placement.MOUNTED:
                self.result.blobs_mounted += 1
            else:
                self.result.blobs_uploaded += 1
                self.result.bytes_uploaded += size

    def _chunk_source(self, blob: BlobPlan) -> Callable[[], Iterator[bytes]]:
        """A restartable chunk stream from the bundle that reports progress once per byte of the blob
        (a retried upload re-reads, but does not re-count) and stops when the run is cancelled."""
        reported = [0]

        def chunks() -> Iterator[bytes]:
            sent = 0
            for chunk in self.bundle.blob_chunks(blob.origin, blob.digest, blob.size or 0):
                self.check_cancelled()
                sent += len(chunk)
                if sent > reported[0]:
                    self.progress.advance(sent - reported[0])
                    reported[0] = sent
                yield chunk

        return chunks

    def _put(self, repository: str, reference: str, digest: Digest,
             produces: tuple[Fact, ...]) -> Mapping[Fact, Settled]:
        """PUT the manifest ``digest``, read again from the bundle, under ``reference`` (a digest or a tag);
        settles every fact of ``produces``."""
        try:
            self._put_checked(repository, reference, digest)
        except ImgbundleError as error:
            return dict.fromkeys(produces, error)
        with self.lock:
            for fact in produces:
                if isinstance(fact, TagFact):
                    self.result.tags_set += 1
                else:
                    self.result.manifests_pushed += 1
        return dict.fromkeys(produces, Outcome.PUSHED)

    def _put_checked(self, repository: str, reference: str, digest: Digest) -> None:
        """PUT the manifest; refused for a reference the registry does not find, put again what the repository
        really lacks and try again, ``MANIFEST_PUT_TRIES`` in all. Another writer re-linking the same
        digest (a second unpack into the same repository) makes Distribution say so of what it holds."""
        for tries_left in reversed(range(MANIFEST_PUT_TRIES)):
            try:
                self.client.manifest_put(repository, reference, self.bundle.manifest_get(repository, digest))
                return
            except ReferenceUnknownError as error:
                if not tries_left:
                    raise
                log.debug("%s; checking what the manifest names and trying again", error)
            self._restore_references(repository, digest)

    def _restore_references(self, repository: str, digest: Digest) -> None:
        """Put again each blob and child manifest of ``digest`` that a HEAD does not find in ``repository``."""
        node = self.plan.manifests[digest]
        for blob in node.blobs:
            if not self.client.blob_exists(repository, blob):
                self._upload_again(repository, blob)
        for child in node.children:
            if self.client.manifest_head(repository, child) is None:
                self._put_checked(repository, child, child)

    def _upload_again(self, repository: str, digest: Digest) -> None:
        """Send a blob the repository lost (a blob the bundle leaves to the target has nothing to send)."""
        blob = self.blob_plans.get(digest)
        if blob is None or blob.size is None:
            return
        chunks = partial(self.bundle.blob_chunks, blob.origin, digest, blob.size)
        self._count_blob(self.client.blob_upload(repository, digest, blob.size, chunks), blob.size)
