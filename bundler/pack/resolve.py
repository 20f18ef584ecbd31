"""Resolving: image references become manifests and blob descriptors (small requests only).

Each request is walked in the store of its registry: the top manifest, every child of an index
(those the platform filters keep; the index is rewritten when some are dropped), and the config
of a single-platform image to name its platform. Failures are collected per reference. Each resolved
image's small blobs are then read ahead (``CachedStore.prefetch``), so that a catalogue of thousands of small
images downloads while the rest is still being resolved. How many images are resolved at once adapts to how
many the registry answers per second (``bundler.width``): wider while that rate holds, narrower when it falls.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import msgspec

from bundler.bundle import ImageEntry, ReferrerEntry, SkippedEntry
from bundler.bundle.layout import check_manifest
from bundler.digest import Digest
from bundler.errors import ImgbundleError, InputError, RegistryContentError, RegistryError
from bundler.oci import IMAGE_CONFIG_TYPES, IMAGE_MANIFEST_TYPES, Descriptor, RawManifest
from bundler.pack.referrers import ALL_REFERRERS, ReferrerFinder, ReferrerPolicy, TagLists
from bundler.platforms import PlatformFilter, is_attestation, kept_children
from bundler.progress import NULL_PROGRESS, Progress
from bundler.reference import Reference, parse_image_list
from bundler.registry.options import MOST_SMALL_REQUESTS
from bundler.stores.cache import CachedPool
from bundler.threads import stop_workers
from bundler.width import AdaptiveWidth
from bundler.words import counted

__all__ = ["MAX_INDEX_DEPTH", "ImageRequest", "ResolvedImage", "read_requests", "resolve_images"]

log = logging.getLogger(__name__)

MAX_INDEX_DEPTH = 4
"""Indexes nest (an index of indexes) in the wild, but never deeply; deeper is a lying registry."""
LEAST_IMAGES_AT_ONCE = 4
"""The narrowest the resolving goes however slow the answers: a registry slow for everyone still gets a few."""


@dataclass(frozen=True)
class ImageRequest:
    """One line of the image list: the text as written and the reference it normalises to."""

    line: str
    reference: Reference

    def reason(self, error: ImgbundleError) -> str:
        """Why this image failed, for a line that names it already: without the error's subject when that is
        this image (as written or normalised); an error about a part of it (a child manifest) keeps its own."""
        return error.detail if error.subject in (self.line, str(self.reference)) else str(error)


@dataclass
class ResolvedImage:
    """An image and everything it needs: its manifests (top first) and blob descriptors."""

    request: ImageRequest
    top: RawManifest
    original_digest: Digest | None = None
    platforms: list[str] = field(default_factory=list)
    manifests: dict[Digest, RawManifest] = field(default_factory=dict)
    blobs: dict[Digest, Descriptor] = field(default_factory=dict)
    referrers: list[ReferrerEntry] = field(default_factory=list)
    """What is attached to the image's manifests; their manifests and blobs are in ``manifests`` and ``blobs``."""
    original_referrers: int = 0
    """Referrers of ``original_digest``, left out: they name the upstream index, not its rewrite."""
    artifact_type: str = ""

    @property
    def size(self) -> int:
        return sum(len(m.data) for m in self.manifests.values()) + sum(b.size for b in self.blobs.values())

    def entry(self) -> ImageEntry:
        return ImageEntry(
            source=self.request.line,
            reference=str(self.request.reference),
            digest=self.top.digest,
            media_type=self.top.media_type,
            platforms=sorted(set(self.platforms)),
            size=self.size,
            original_digest=self.original_digest,
            artifact_type=self.artifact_type,
            referrers=self.referrers,
            original_referrers=self.original_referrers,
        )


def read_requests(lines: Iterable[str], list_name: str, extra: Iterable[str] = ()) -> list[ImageRequest]:
    """Image requests from list lines plus command-line arguments, in order, duplicates dropped."""
    seen: set[Reference] = set()
    requests = []
    for text, reference in parse_image_list([*lines, *extra], list_name):
        if reference not in seen:
            seen.add(reference)
            requests.append(ImageRequest(text, reference))
    if not requests:
        raise InputError("no image references given (pass them as arguments or with -f FILE)")
    return requests


class _Resolver:
    """Walks one image's manifests on one registry repository."""

    def __init__(self, pool: CachedPool, filters: tuple[PlatformFilter, ...], progress: Progress,
                 referrers: ReferrerPolicy) -> None:
        self.pool = pool
        self.filters = filters
        self.progress = progress
        self.referrers = referrers
        self.tag_lists = TagLists()

    def prefetch(self, image: ResolvedImage) -> None:
        """Read the image's small blobs now, so that their downloads overlap the resolving of the images
        behind it; a failure is left to the writer, which fetches the blob again and reports it."""
        reference = image.request.reference
        store = self.pool.get(reference.registry)
        for digest, blob in image.blobs.items():
            try:
                store.prefetch(reference.repository, digest, blob.size)
            except ImgbundleError as error:
                log.debug("%s: prefetch of %s failed: %s", image.request.line, digest, error)

    def resolve(self, request: ImageRequest) -> ResolvedImage:
        reference = request.reference
        client = self.pool.get(reference.registry)
        top = client.manifest_get(reference.repository, reference.identifier)
        if reference.digest and reference.tag:
            self._check_tag(request, reference.tag, top.digest)
        image = ResolvedImage(request, top)
        image.top = self._collect(image, top, depth=0)
        if image.top.digest != top.digest:
            image.original_digest = top.digest
        image.artifact_type = _artifact_type(top)
        if not image.platforms and not top.is_index and not image.artifact_type:
            image.platforms = self._single_platform(image, top)
        if self.referrers.enabled:
            self._attach_referrers(image)
        return image

    def _attach_referrers(self, image: ResolvedImage) -> None:
        """Add what is attached to the image's manifests; count what names an upstream index it rewrote."""
        reference = image.request.reference
        store = self.pool.get(reference.registry)
        finder = ReferrerFinder(store, reference.repository, self.referrers, image.request.line,
                                tag_lists=self.tag_lists, registry=reference.registry)
        own = [digest for digest in image.manifests if digest != image.top.digest or not image.original_digest]
        for found in finder.attached(own):
            for raw in found.manifests.values():
                _check_carriable(image, raw)
            image.referrers.append(found.entry)
            image.manifests.update(found.manifests)
            image.blobs.update(found.blobs)
        if image.original_digest:
            image.original_referrers = len(finder.direct(image.original_digest))

    def _check_tag(self, request: ImageRequest, tag: str, digest: Digest) -> None:
        reference = request.reference
        current = self.pool.get(reference.registry).manifest_head(reference.repository, tag)
        if current is not None and current.digest != digest:
            self.progress.warn(
                f"{request.line}: tag {reference.tag} now points at {current.digest}; packing the pinned {digest}"
            )

    def _collect(self, image: ResolvedImage, raw: RawManifest, depth: int) -> RawManifest:
        """Add ``raw`` and all below it to ``image``; return it, or its rewrite to the kept children."""
        if depth > MAX_INDEX_DEPTH:
            raise RegistryContentError(f"indexes nested more than {MAX_INDEX_DEPTH} deep", subject=image.request.line)
        _check_carriable(image, raw)  # before its children are fetched
        if raw.is_index:
            raw = self._collect_index(image, raw, depth)
        elif raw.media_type in IMAGE_MANIFEST_TYPES:
            for blob in raw.manifest().blobs:
                image.blobs[Digest(blob.digest)] = blob
        else:
            raise RegistryContentError(f"unsupported manifest media type {raw.media_type!r}",
                                       subject=image.request.line)
        image.manifests[raw.digest] = raw
        return raw

    def _collect_index(self, image: ResolvedImage, raw: RawManifest, depth: int) -> RawManifest:
        reference = image.request.reference
        client = self.pool.get(reference.registry)
        children = raw.index().manifests
        kept = kept_children(children, self.filters)
        if not kept:
            wanted = ", ".join(map(str, self.filters))
            raise InputError(f"no platform matches {wanted}", subject=image.request.line)
        for child in kept:
            child_raw = client.manifest_get(reference.repository, child.digest)
            self._collect(image, child_raw, depth + 1)
            if child.platform and not is_attestation(child):
                image.platforms.append(str(child.platform))
        return raw if len(kept) == len(children) else _rewrite_index(raw, kept)

    def _single_platform(self, image: ResolvedImage, top: RawManifest) -> list[str]:
        """The os/arch of a single-manifest image, read from its (small) config blob."""
        reference = image.request.reference
        config = top.manifest().config
        store = self.pool.get(reference.registry)
        data = store.blob_bytes(reference.repository, Digest(config.digest), config.size)
        try:
            fields = msgspec.json.decode(data, type=dict)
        except msgspec.DecodeError:
            return []
        os_name, arch = fields.get("os", ""), fields.get("architecture", "")
        variant = fields.get("variant", "")
        return ["/".join(p for p in (os_name, arch, variant) if p)] if os_name and arch else []


def _check_carriable(image: ResolvedImage, raw: RawManifest) -> None:
    """Refuse the image (``RegistryContentError``, naming it) for a manifest no bundle may carry: the writer
    would refuse it, as every reader would (the rules and caps of spec section 7.5)."""
    try:
        check_manifest(raw)
    except InputError as error:
        raise RegistryContentError(error.detail, subject=image.request.line) from None


def _artifact_type(raw: RawManifest) -> str:
    """What a top manifest that is no image holds (a Helm chart, a WASM module); empty for images."""
    if raw.is_index:
        return raw.index().artifact_type
    manifest = raw.manifest()
    config = manifest.config.media_type
    return manifest.artifact_type or ("" if config in IMAGE_CONFIG_TYPES else config)


def _rewrite_index(raw: RawManifest, kept: list[Descriptor]) -> RawManifest:
    """The index with only the kept children, other fields and their order untouched."""
    document = msgspec.json.decode(raw.data, type=dict)
    keep = {child.digest for child in kept}
    document["manifests"] = [child for child in document["manifests"] if child.get("digest") in keep]
    data = msgspec.json.encode(document)
    return RawManifest.from_bytes(data, raw.media_type)


def resolve_images(
    requests: list[ImageRequest],
    pool: CachedPool,
    *,
    filters: tuple[PlatformFilter, ...] = (),
    skip_missing: bool = False,
    jobs: int = 4,
    progress: Progress = NULL_PROGRESS,
    referrers: ReferrerPolicy = ALL_REFERRERS,
) -> tuple[list[ResolvedImage], list[SkippedEntry]]:
    """Resolve every request with what is attached to it (as ``referrers`` says); fail listing every
    failing reference, or skip them with ``skip_missing``."""
    resolver = _Resolver(pool, filters, progress, referrers)
    progress.phase("resolve", total_items=len(requests))

    width = AdaptiveWidth(least=LEAST_IMAGES_AT_ONCE, most=MOST_SMALL_REQUESTS)

    def attempt(request: ImageRequest) -> ResolvedImage | ImgbundleError:
        with width.slot():
            try:
                image = resolver.resolve(request)
            except (RegistryError, InputError) as error:
                return error
            finally:
                progress.item_done(request.line)
            resolver.prefetch(image)
        return image

    executor = ThreadPoolExecutor(max_workers=max(jobs, width.most), thread_name_prefix="imgbundle-resolve")
    futures = [executor.submit(attempt, request) for request in requests]
    try:
        outcomes = [future.result() for future in futures]
    except BaseException:  # Ctrl-C: stop now, not after resolving the rest of the list
        stop_workers(executor, futures)
        raise
    executor.shutdown()
    failures = [(r, o) for r, o in zip(requests, outcomes) if isinstance(o, ImgbundleError)]
    if failures and not skip_missing:
        raise _combined_failure(failures, len(requests))
    skipped = [SkippedEntry(source=r.line, reason=r.reason(error)) for r, error in failures]
    for entry in skipped:
        progress.warn(f"skipped {entry.source}: {entry.reason}")
    images = [o for o in outcomes if isinstance(o, ResolvedImage)]
    if not images:
        raise _combined_failure(failures, len(requests))
    return images, skipped


_FAILURES_SHOWN = 5
"""A failure message details this many references and counts the rest: one readable line, even for 900."""


def _combined_failure(failures: list[tuple[ImageRequest, ImgbundleError]], total: int) -> ImgbundleError:
    """One error naming the failing references; its class (so its exit code) is the first failure's."""
    first = failures[0][1]
    details = "; ".join(f"{request.line}: {request.reason(error)}" for request, error in failures[:_FAILURES_SHOWN])
    more = f"; and {len(failures) - _FAILURES_SHOWN} more" if len(failures) > _FAILURES_SHOWN else ""
    return first.reworded(f"{len(failures)} of {counted(total, 'reference')} failed: {details}{more}")

