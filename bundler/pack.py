"""pack: resolve image references against registries, then write them into one bundle.

Two steps, data first: ``resolve_images`` turns references into manifests and blob
descriptors (small requests only); ``pack`` then streams every unique blob into the bundle.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import msgspec

from bundler.bundle import BlobSpec, ImageEntry, SkippedEntry, WriteResult, write_bundle
from bundler.bundle.volumes import existing_outputs
from bundler.cache import BlobCache
from bundler.bundle.delta import DeltaBase, split_blobs
from bundler.digest import Digest
from bundler.errors import ImgbundleError, InputError, LocalIOError, RegistryContentError, RegistryError
from bundler.oci import IMAGE_MANIFEST_TYPES, Descriptor, RawManifest
from bundler.platforms import PlatformFilter, is_attestation, kept_children
from bundler.progress import NULL_PROGRESS, Progress
from bundler.reference import Reference, parse_image_list
from bundler.registry import RegistryOptions, RegistryPool
from bundler.source import SourcePool
from bundler.threads import stop_workers

__all__ = ["ImageRequest", "ResolvedImage", "PackResult", "read_requests", "resolve_images", "pack", "created_now"]

log = logging.getLogger(__name__)

MAX_INDEX_DEPTH = 4
"""Indexes nest (an index of indexes) in the wild, but never deeply; deeper is a lying registry."""


@dataclass(frozen=True)
class ImageRequest:
    """One line of the image list: the text as written and the reference it normalises to."""

    source: str
    reference: Reference


@dataclass
class ResolvedImage:
    """An image and everything it needs: its manifests (top first) and blob descriptors."""

    request: ImageRequest
    top: RawManifest
    original_digest: Digest | None = None
    platforms: list[str] = field(default_factory=list)
    manifests: dict[Digest, RawManifest] = field(default_factory=dict)
    blobs: dict[Digest, Descriptor] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(m.data) for m in self.manifests.values()) + sum(b.size for b in self.blobs.values())

    def entry(self) -> ImageEntry:
        return ImageEntry(
            source=self.request.source,
            reference=str(self.request.reference),
            digest=self.top.digest,
            media_type=self.top.media_type,
            platforms=sorted(set(self.platforms)),
            size=self.size,
            original_digest=self.original_digest,
        )


@dataclass(frozen=True)
class PackResult:
    write: WriteResult
    images: list[ResolvedImage]
    skipped: list[SkippedEntry]
    downloaded_bytes: int
    """Blob bytes read from the source (registry or storage tree); manifests are not counted."""
    seconds: float
    cached_bytes: int = 0
    """Blob bytes served by the local blob cache instead of the source."""


def created_now() -> str:
    """RFC 3339 UTC timestamp; ``SOURCE_DATE_EPOCH`` fixes it for reproducible builds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    seconds = int(epoch) if epoch and epoch.isdigit() else int(time.time())
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def read_requests(lines: Iterable[str], source: str, extra: Iterable[str] = ()) -> list[ImageRequest]:
    """Image requests from list lines plus command-line arguments, in order, duplicates dropped."""
    seen: set[Reference] = set()
    requests = []
    for text, reference in parse_image_list([*lines, *extra], source):
        if reference not in seen:
            seen.add(reference)
            requests.append(ImageRequest(text, reference))
    if not requests:
        raise InputError("no image references given (pass them as arguments or with -f FILE)")
    return requests


class _Resolver:
    """Walks one image's manifests on one registry repository."""

    def __init__(
        self, pool: SourcePool, filters: tuple[PlatformFilter, ...], progress: Progress, blobs: "BlobReader"
    ) -> None:
        self.pool = pool
        self.filters = filters
        self.progress = progress
        self.blobs = blobs

    def resolve(self, request: ImageRequest) -> ResolvedImage:
        reference = request.reference
        client = self.pool.get(reference.registry)
        top = client.manifest_get(reference.repository, reference.identifier)
        if reference.digest and reference.tag:
            self._check_tag(request, top.digest)
        image = ResolvedImage(request, top)
        image.top = self._collect(image, top, depth=0)
        if image.top.digest != top.digest:
            image.original_digest = top.digest
        if not image.platforms and not top.is_index:
            image.platforms = self._single_platform(image, top)
        return image

    def _check_tag(self, request: ImageRequest, digest: Digest) -> None:
        reference = request.reference
        current = self.pool.get(reference.registry).manifest_head(reference.repository, reference.tag)
        if current is not None and current.digest != digest:
            self.progress.warn(
                f"{request.source}: tag {reference.tag} now points at {current.digest}; packing the pinned {digest}"
            )

    def _collect(self, image: ResolvedImage, raw: RawManifest, depth: int) -> RawManifest:
        """Add ``raw`` and all below it to ``image``; return it, or its rewrite to the kept children."""
        if depth > MAX_INDEX_DEPTH:
            raise RegistryContentError(f"{image.request.source}: indexes nested more than {MAX_INDEX_DEPTH} deep")
        if raw.is_index:
            raw = self._collect_index(image, raw, depth)
        elif raw.media_type in IMAGE_MANIFEST_TYPES:
            for blob in raw.manifest().blobs:
                image.blobs[Digest(blob.digest)] = blob
        else:
            raise RegistryContentError(f"{image.request.source}: unsupported manifest media type {raw.media_type!r}")
        image.manifests[raw.digest] = raw
        return raw

    def _collect_index(self, image: ResolvedImage, raw: RawManifest, depth: int) -> RawManifest:
        reference = image.request.reference
        client = self.pool.get(reference.registry)
        children = raw.index().manifests
        kept = kept_children(children, self.filters)
        if not kept:
            wanted = ", ".join(map(str, self.filters))
            raise InputError(f"{image.request.source}: no platform matches {wanted}")
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
        data = self.blobs.read_small(reference, Digest(config.digest), config.size)
        try:
            fields = msgspec.json.decode(data, type=dict)
        except msgspec.DecodeError:
            return []
        os_name, arch = fields.get("os", ""), fields.get("architecture", "")
        variant = fields.get("variant", "")
        return ["/".join(p for p in (os_name, arch, variant) if p)] if os_name and arch else []


def _rewrite_index(raw: RawManifest, kept: list[Descriptor]) -> RawManifest:
    """The index with only the kept children, other fields and their order untouched."""
    document = msgspec.json.decode(raw.data, type=dict)
    keep = {child.digest for child in kept}
    document["manifests"] = [child for child in document["manifests"] if child.get("digest") in keep]
    data = msgspec.json.encode(document)
    return RawManifest.from_bytes(data, raw.media_type)


def resolve_images(
    requests: list[ImageRequest],
    pool: SourcePool,
    *,
    filters: tuple[PlatformFilter, ...] = (),
    skip_missing: bool = False,
    jobs: int = 4,
    progress: Progress = NULL_PROGRESS,
    blobs: "BlobReader | None" = None,
) -> tuple[list[ResolvedImage], list[SkippedEntry]]:
    """Resolve every request; fail listing every failing reference, or skip them with ``skip_missing``."""
    resolver = _Resolver(pool, filters, progress, blobs or BlobReader(pool))
    progress.phase("resolve", total_items=len(requests))

    def attempt(request: ImageRequest) -> ResolvedImage | ImgbundleError:
        try:
            return resolver.resolve(request)
        except (RegistryError, InputError) as error:
            return error
        finally:
            progress.item_done(request.source)

    executor = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="imgbundle-resolve")
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
    skipped = [SkippedEntry(source=r.source, reason=str(error)) for r, error in failures]
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
    details = "; ".join(_failure_detail(request, error) for request, error in failures[:_FAILURES_SHOWN])
    more = f"; and {len(failures) - _FAILURES_SHOWN} more" if len(failures) > _FAILURES_SHOWN else ""
    return type(first)(f"{len(failures)} of {total} references failed: {details}{more}")


def _failure_detail(request: ImageRequest, error: ImgbundleError) -> str:
    """The error, prefixed with the list line unless the message already starts with the reference."""
    text = str(error)
    return text if text.startswith(str(request.reference)) else f"{request.source}: {text}"


def unique_blobs(images: list[ResolvedImage]) -> tuple[list[RawManifest], list[BlobSpec], dict[Digest, Reference]]:
    """Every manifest and blob once, and for each blob a reference it can be fetched through."""
    manifests: dict[Digest, RawManifest] = {}
    blobs: dict[Digest, BlobSpec] = {}
    origin: dict[Digest, Reference] = {}
    for image in images:
        manifests.update(image.manifests)
        for digest, descriptor in image.blobs.items():
            if digest not in blobs:
                blobs[digest] = BlobSpec(digest=digest, size=descriptor.size, media_type=descriptor.media_type)
                origin[digest] = image.request.reference
    return list(manifests.values()), list(blobs.values()), origin


def pack(
    requests: list[ImageRequest],
    output: Path,
    options: RegistryOptions | None = None,
    *,
    source: SourcePool | None = None,
    cache: BlobCache | None = None,
    filters: tuple[PlatformFilter, ...] = (),
    skip_missing: bool = False,
    jobs: int = 4,
    level: int = 3,
    created: str | None = None,
    overwrite: bool = False,
    progress: Progress = NULL_PROGRESS,
    since: DeltaBase | None = None,
    split: int | None = None,
) -> PackResult:
    """Resolve ``requests`` and write them, each blob once, into the bundle at ``output``.

    Images are read from ``source`` (which the caller closes), by default from registries reached
    with ``options``. With ``cache``, blobs it holds are not downloaded and new ones are added to it.
    With ``since``, a delta bundle: blobs that base brought are left out (see ``bundler.bundle.delta``).
    With ``split``, volumes each smaller than ``split`` bytes.
    """
    started = time.monotonic()
    if not overwrite and (existing := existing_outputs(output)):
        raise LocalIOError(f"{existing[0]} exists; use --force to overwrite it")
    with ExitStack() as stack:
        pool = source if source is not None else stack.enter_context(RegistryPool(options))
        reader = BlobReader(pool, cache, progress)
        images, skipped = resolve_images(
            requests, pool, filters=filters, skip_missing=skip_missing, jobs=jobs, progress=progress, blobs=reader
        )
        for image in images:
            if image.original_digest:
                progress.warn(
                    f"{image.request.source}: index rewritten to {len(image.platforms)} platform(s); "
                    f"digest {image.original_digest} becomes {image.top.digest}"
                )
        manifests, blobs, origin = unique_blobs(images)
        blobs, external = split_blobs(blobs, since) if since is not None else (blobs, [])
        progress.phase("download", total_bytes=sum(b.size for b in blobs), total_items=len(blobs))

        def open_blob(spec: BlobSpec) -> Iterator[bytes]:
            for chunk in reader.chunks(origin[spec.digest], spec.digest, spec.size):
                progress.advance(len(chunk))
                yield chunk
            progress.item_done(spec.digest)

        result = write_bundle(
            output,
            images=[image.entry() for image in images],
            skipped=skipped,
            manifests=manifests,
            blobs=blobs,
            open_blob=open_blob,
            created=created or created_now(),
            level=level,
            jobs=jobs,
            overwrite=overwrite,
            split=split,
            base=since.id if since is not None else None,
            external=external,
            verify_digests=False,  # every ImageSource (and the cache) verifies as it streams; a second hash costs a core
        )
    seconds = time.monotonic() - started
    return PackResult(result, images, skipped, reader.downloaded.value, seconds, reader.cached.value)


class BlobReader:
    """Every blob byte pack reads: from the cache when it holds the blob, else from the source (counted).

    Config blobs read while resolving stay in memory until the bundle writer asks for them, so a
    small blob is never fetched twice.
    """

    def __init__(self, pool: SourcePool, cache: BlobCache | None = None, progress: Progress = NULL_PROGRESS) -> None:
        self.pool = pool
        self.cache = cache
        self.progress = progress
        self.downloaded = _Counter()
        self.cached = _Counter()
        self._kept: dict[Digest, bytes] = {}
        self._lock = threading.Lock()

    def read_small(self, reference: Reference, digest: Digest, size: int) -> bytes:
        with self._lock:
            data = self._kept.get(digest)
        if data is None:
            data = b"".join(self._read(reference, digest, size))
            with self._lock:
                self._kept[digest] = data
        return data

    def chunks(self, reference: Reference, digest: Digest, size: int) -> Iterator[bytes]:
        with self._lock:
            kept = self._kept.pop(digest, None)
        return iter([kept]) if kept is not None else self._read(reference, digest, size)

    def _read(self, reference: Reference, digest: Digest, size: int) -> Iterator[bytes]:
        if self.cache is None:
            return self._fetch(reference, digest, size)
        hit = self.cache.read(digest, size, on_corrupt=self.progress.warn)
        if hit is not None:
            return _counted(hit, self.cached)
        return self.cache.fill(digest, size, self._fetch(reference, digest, size))

    def _fetch(self, reference: Reference, digest: Digest, size: int) -> Iterator[bytes]:
        chunks = self.pool.get(reference.registry).blob_chunks(reference.repository, digest, size)
        return _counted(chunks, self.downloaded)


def _counted(chunks: Iterator[bytes], counter: "_Counter") -> Iterator[bytes]:
    for chunk in chunks:
        counter.add(len(chunk))
        yield chunk


class _Counter:
    """A byte counter shared by download threads (``+=`` on an int attribute is not atomic)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n
