"""pack: resolve image references in stores, then copy them into one bundle.

Two steps, data first: ``resolve_images`` (``pack.resolve``) turns references into manifests and
blob descriptors (small requests only); ``write_images`` (``pack.write``) then streams every unique
blob into the bundle writer. Images come from registries, or from any pool of read stores
(``bundler.stores``), with the blob cache in front.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bundler.bundle import SkippedEntry, WriteResult
from bundler.bundle.atomic import WriteClaim
from bundler.bundle.delta import DeltaBase
from bundler.bundle.volumes import existing_outputs
from bundler.errors import LocalIOError, Remedy
from bundler.pack.resolve import ImageRequest, ResolvedImage, read_requests, resolve_images
from bundler.pack.write import created_now, write_images
from bundler.platforms import PlatformFilter
from bundler.progress import NULL_PROGRESS, Progress
from bundler.registry import RegistryOptions
from bundler.stores import StorePool
from bundler.stores.cache import BlobCache, CachedPool
from bundler.stores.registry import RegistryPool

__all__ = ["ImageRequest", "PackResult", "ResolvedImage", "created_now", "pack", "read_requests", "resolve_images"]


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


def pack(
    requests: list[ImageRequest],
    output: Path,
    options: RegistryOptions | None = None,
    *,
    stores: StorePool | None = None,
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

    Images are read from ``stores`` (which the caller closes), by default from registries reached
    with ``options``. With ``cache``, blobs it holds are not downloaded and new ones are added to it.
    With ``since``, a delta bundle: blobs that base brought are left out (see ``bundler.bundle.delta``).
    With ``split``, volumes each smaller than ``split`` bytes.
    """
    started = time.monotonic()
    if not overwrite and (existing := existing_outputs(output)):
        raise LocalIOError(f"{existing[0]} exists", remedy=Remedy.OVERWRITE)
    with ExitStack() as stack:
        stack.enter_context(WriteClaim(output))  # a second pack of this output refuses now, not after downloading
        inner = stores if stores is not None else stack.enter_context(RegistryPool(options))
        pool = CachedPool(inner, cache, progress.warn)
        images, skipped = resolve_images(
            requests, pool, filters=filters, skip_missing=skip_missing, jobs=jobs, progress=progress
        )
        for image in images:
            if image.original_digest:
                progress.warn(
                    f"{image.request.line}: index rewritten to {len(image.platforms)} platform(s); "
                    f"digest {image.original_digest} becomes {image.top.digest}"
                )
        result = write_images(images, skipped, output, pool, progress=progress, jobs=jobs, level=level,
                              created=created, overwrite=overwrite, since=since, split=split)
    seconds = time.monotonic() - started
    return PackResult(result, images, skipped, pool.fetched.value, seconds, pool.cached.value)
