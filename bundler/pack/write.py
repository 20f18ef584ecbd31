"""Writing: the resolved images into one bundle, every manifest and blob once, blobs read from stores."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bundler.bundle import BlobSpec, SkippedEntry, WriteResult, write_bundle
from bundler.bundle.delta import Since, split_blobs
from bundler.digest import Digest
from bundler.errors import RegistryError
from bundler.oci import RawManifest
from bundler.pack.resolve import ResolvedImage
from bundler.progress import Progress
from bundler.reference import Reference
from bundler.stores.cache import CachedPool
from bundler.threads import stop_workers

__all__ = ["created_now", "unique_blobs", "write_images"]


def created_now() -> str:
    """RFC 3339 UTC timestamp; ``SOURCE_DATE_EPOCH`` fixes it for reproducible builds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    seconds = int(epoch) if epoch and epoch.isdigit() else int(time.time())
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


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


_USERS_SHOWN = 10


def _users(images: list[ResolvedImage], digest: Digest) -> str:
    """The images that need blob ``digest``, as the user listed them: what a bad copy of it breaks."""
    users = [image.request.line for image in images if digest in image.blobs]
    more = f" and {len(users) - _USERS_SHOWN} more" if len(users) > _USERS_SHOWN else ""
    return ", ".join(users[:_USERS_SHOWN]) + more


def write_images(
    images: list[ResolvedImage],
    skipped: list[SkippedEntry],
    output: Path,
    pool: CachedPool,
    *,
    progress: Progress,
    jobs: int,
    level: int,
    created: str | None,
    overwrite: bool,
    since: Since | None,
    split: int | None,
) -> WriteResult:
    """Copy every manifest and blob of ``images`` from the stores of ``pool`` into the bundle ``output``.

    A blob that fails for good ends the write (there is no bundle without it), naming the images that
    need it; the other blobs are still downloaded into the cache, so that the re-run fetches only it.
    """
    manifests, blobs, origin = unique_blobs(images)
    blobs, external = split_blobs(blobs, since) if since is not None else (blobs, [])
    progress.phase("download", total_bytes=sum(b.size for b in blobs), total_items=len(blobs))
    failed: set[Digest] = set()

    def open_blob(spec: BlobSpec) -> Iterator[bytes]:
        reference = origin[spec.digest]
        try:
            for chunk in pool.get(reference.registry).blob_chunks(reference.repository, spec.digest, spec.size):
                progress.advance(len(chunk))
                yield chunk
        except RegistryError as error:
            failed.add(spec.digest)
            raise error.reworded(f"{error} (breaks: {_users(images, spec.digest)})") from error
        progress.item_done(spec.digest)

    try:
        return write_bundle(
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
            base=since,
            external=external,
            verify_digests=False,  # every store (and the cache) verifies as it streams; a second hash costs CPU
        )
    except RegistryError:
        if failed:
            _download_the_rest(blobs, origin, pool, failed, jobs=jobs, progress=progress)
        raise


def _download_the_rest(blobs: list[BlobSpec], origin: dict[Digest, Reference], pool: CachedPool, failed: set[Digest],
                       *, jobs: int, progress: Progress) -> None:
    """Every blob not failed and not yet cached, into the cache (without one there is nowhere to keep them).

    Their own failures are not reported: the first one is, and the re-run tries them again."""
    cache = pool.cache
    if cache is None:
        return
    rest = [spec for spec in blobs if spec.digest not in failed and not cache.path(spec.digest).exists()]
    if not rest:
        return
    progress.phase("cache", total_bytes=sum(spec.size for spec in rest), total_items=len(rest))

    def fetch(spec: BlobSpec) -> None:
        reference = origin[spec.digest]
        try:
            for chunk in pool.get(reference.registry).blob_chunks(reference.repository, spec.digest, spec.size):
                progress.advance(len(chunk))
        except RegistryError:
            return
        progress.item_done(spec.digest)

    executor = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="imgbundle-rest")
    futures = [executor.submit(fetch, spec) for spec in rest]
    try:
        for future in futures:
            future.result()
    except BaseException:  # Ctrl-C: stop now
        stop_workers(executor, futures)
        raise
    executor.shutdown()
