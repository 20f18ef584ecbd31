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
from bundler.bundle.delta import Since
from bundler.bundle.volumes import existing_outputs
from bundler.errors import LocalIOError, Remedy
from bundler.pack.referrers import ALL_REFERRERS, ReferrerPolicy
from bundler.pack.resolve import ImageRequest, ResolvedImage, read_requests, resolve_images
from bundler.pack.write import created_now, write_images
from bundler.platforms import PlatformFilter
from bundler.progress import NULL_PROGRESS, Progress
from bundler.registry import RegistryOptions
from bundler.stores import StorePool
from bundler.stores.cache import BlobCache, CachedPool
from bundler.stores.registry import RegistryPool
from bundler.words import counted

__all__ = [
    "ImageRequest",
    "PackResult",
    "ReferrerPolicy",
    "ResolvedImage",
    "check_output",
    "created_now",
    "pack",
    "read_requests",
    "resolve_images",
]


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


def check_output(output: Path, *, overwrite: bool) -> None:
    """That the bundle can be written where asked: before the first request, not after resolving."""
    if not output.parent.is_dir():
        raise LocalIOError(f"{output}: no such directory {output.parent}")
    if not overwrite and (existing := existing_outputs(output)):
        raise LocalIOError(f"{existing[0]} exists", remedy=Remedy.OVERWRITE)


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
    since: Since | None = None,
    split: int | None = None,
    referrers: ReferrerPolicy = ALL_REFERRERS,
) -> PackResult:
    """Resolve ``requests`` and write them, each blob once, into the bundle at ``output``.

    Images are read from ``stores`` (which the caller closes), by default from registries reached
    with ``options``. With ``cache``, blobs it holds are not downloaded and new ones are added to it.
    With ``since``, a delta bundle: blobs its bases hold are left out (see ``bundler.bundle.delta``).
    With ``split``, volumes each smaller than ``split`` bytes. ``referrers`` says which signatures,
    attestations and SBOMs attached to the images come along (by default all).
    """
    started = time.monotonic()
    check_output(output, overwrite=overwrite)
    with ExitStack() as stack:
        stack.enter_context(WriteClaim(output))  # a second pack of this output refuses now, not after downloading
        inner = stores if stores is not None else stack.enter_context(RegistryPool(options))
        pool = CachedPool(inner, cache, progress.warn)
        images, skipped = resolve_images(
            requests, pool, filters=filters, skip_missing=skip_missing, jobs=jobs, progress=progress,
            referrers=referrers,
        )
        for image in images:
            if image.original_digest:
                progress.warn(
                    f"{image.request.line}: index rewritten to {counted(len(image.platforms), 'platform')}; "
                    f"digest {image.original_digest} becomes {image.top.digest}"
                )
            if image.original_referrers:
                progress.warn(
                    f"{image.request.line}: {counted(image.original_referrers, 'signature or other referrer', 'signatures or other referrers')} of "
                    f"{image.original_digest} left out: they do not name the rewritten index"
                )
        result = write_images(images, skipped, output, pool, progress=progress, jobs=jobs, level=level,
                              created=created, overwrite=overwrite, since=since, split=split)
    seconds = time.monotonic() - started
    return PackResult(result, images, skipped, pool.fetched.value, seconds, pool.cached.value)
