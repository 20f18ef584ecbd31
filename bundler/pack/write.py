"""Writing: the resolved images into one bundle, every manifest and blob once, blobs read from stores."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from bundler.bundle import BlobSpec, SkippedEntry, WriteResult, write_bundle
from bundler.bundle.delta import DeltaBase, split_blobs
from bundler.digest import Digest
from bundler.errors import NotFoundError, RegistryContentError
from bundler.oci import RawManifest
from bundler.pack.resolve import ResolvedImage
from bundler.progress import Progress
from bundler.reference import Reference
from bundler.stores.cache import CachedPool

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
    since: DeltaBase | None,
    split: int | None,
) -> WriteResult:
    """Copy every manifest and blob of ``images`` from the stores of ``pool`` into the bundle ``output``."""
    manifests, blobs, origin = unique_blobs(images)
    blobs, external = split_blobs(blobs, since) if since is not None else (blobs, [])
    progress.phase("download", total_bytes=sum(b.size for b in blobs), total_items=len(blobs))

    def open_blob(spec: BlobSpec) -> Iterator[bytes]:
        reference = origin[spec.digest]
        try:
            for chunk in pool.get(reference.registry).blob_chunks(reference.repository, spec.digest, spec.size):
                progress.advance(len(chunk))
                yield chunk
        except (RegistryContentError, NotFoundError) as error:
            raise error.reworded(f"{error} (breaks: {_users(images, spec.digest)})") from None
        progress.item_done(spec.digest)

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
        base=since.id if since is not None else None,
        external=external,
        verify_digests=False,  # every store (and the cache) verifies as it streams; a second hash costs CPU
    )
