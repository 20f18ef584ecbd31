"""The canonical member plan of a bundle: names, order, sizes and offsets, as pure data.

Both the writer (to lay members out) and the reader (to know what must come next) use it, so
the ordering rules live in one place: ``imgbundle.json``, ``oci-layout``, ``index.json``,
manifests by digest, blobs by digest, end of archive.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import msgspec

import bundler
from bundler.bundle.index import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_NAME,
    REFERRERS_VERSION,
    BundleIndex,
    ImageEntry,
    MemberEntry,
    SkippedEntry,
    Totals,
    blob_path,
    decode_index,
    encode_index,
    encode_json,
)
from bundler.bundle.links import manifest_links
from bundler.bundle.tar import member_length
from bundler.digest import Digest
from bundler.errors import BundleError, CorruptBundleError, InputError
from bundler.oci import MAX_MANIFEST_BYTES, OCI_INDEX, REF_NAME_ANNOTATION, RawManifest, decode_json

__all__ = [
    "LAYOUT_NAME",
    "MAX_METADATA_LENGTH",
    "MAX_OCI_INDEX_BYTES",
    "OCI_INDEX_NAME",
    "OCI_LAYOUT_BYTES",
    "BlobSpec",
    "BundlePlan",
    "check_created",
    "check_manifest",
    "check_metadata_length",
    "check_oci_index",
    "check_oci_layout",
    "lay_out",
    "oci_index_bytes",
    "plan_bundle",
]

LAYOUT_NAME = "oci-layout"
OCI_INDEX_NAME = "index.json"
OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'
MAX_LAYOUT_BYTES = 4096
MAX_OCI_INDEX_BYTES = 16 * 1024 * 1024
MAX_INDEX_BYTES = 64 * 1024 * 1024
"""Caps on the metadata members a reader holds in memory (about 300,000 blobs fit)."""
MAX_METADATA_LENGTH = member_length(LAYOUT_NAME, MAX_LAYOUT_BYTES) + member_length(OCI_INDEX_NAME, MAX_OCI_INDEX_BYTES)
"""The most tar-stream bytes ``oci-layout`` and ``index.json`` may take, before the first manifest."""

_CREATED_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$")


@dataclass(frozen=True)
class BlobSpec:
    """A non-manifest blob pack wants stored: config or layer."""

    digest: Digest
    size: int
    media_type: str


@dataclass(frozen=True)
class BundlePlan:
    """Everything about a bundle except the blob bytes, in canonical order."""

    index: BundleIndex
    index_bytes: bytes
    oci_index_bytes: bytes
    manifests: tuple[RawManifest, ...]
    blobs: tuple[BlobSpec, ...]


def check_created(created: str) -> str:
    """``created`` when it is a time as the index records it; checked by pack before the first request."""
    if not _CREATED_RE.match(created):
        raise InputError(f"{created!r} is not an RFC 3339 UTC time like 2026-11-23T10:00:00Z")
    return created


def plan_bundle(
    *,
    images: Sequence[ImageEntry],
    skipped: Sequence[SkippedEntry],
    manifests: Sequence[RawManifest],
    blobs: Sequence[BlobSpec],
    created: str,
) -> BundlePlan:
    """Validate the inputs, then lay the bundle out (``lay_out``) and check its index as a reader will.

    Raises ``InputError`` for inputs that cannot make a valid bundle (the caller's bug, not the
    user's data): a manifest readers refuse (``check_manifest``), a digest given twice with different
    sizes, an image whose manifest is missing, an index past the format's caps.
    """
    check_created(created)
    for manifest in manifests:
        check_manifest(manifest)
    plan = lay_out(images=images, skipped=skipped, manifests=manifests, blobs=blobs, created=created)
    try:
        index = decode_index(plan.index_bytes)  # what a reader will check, checked before anything is written
    except BundleError as error:
        raise InputError(f"cannot build a valid bundle index: {error}") from None
    if len(plan.index_bytes) > MAX_INDEX_BYTES or len(plan.oci_index_bytes) > MAX_OCI_INDEX_BYTES:
        raise InputError("too many images or blobs for one bundle: its index would exceed the format's limits")
    return replace(plan, index=index)


def check_manifest(manifest: RawManifest) -> None:
    """Refuse (``InputError``) a manifest no reader accepts: over 4 MiB, bytes not matching its digest, or
    breaking the structural rules and caps of ``bundler.bundle.links`` (its media type, a list past its cap)."""
    if len(manifest.data) > MAX_MANIFEST_BYTES:
        raise InputError(f"manifest {manifest.digest} is larger than 4 MiB")
    if Digest.of(manifest.data, manifest.digest.algorithm) != manifest.digest:
        raise InputError(f"manifest {manifest.digest}: bytes do not match the digest")
    try:
        manifest_links(manifest.data, manifest.media_type)
    except CorruptBundleError as error:
        raise InputError(f"manifest {manifest.digest}: {error}; no bundle can carry it") from None


def lay_out(
    *,
    images: Sequence[ImageEntry],
    skipped: Sequence[SkippedEntry],
    manifests: Sequence[RawManifest],
    blobs: Sequence[BlobSpec],
    created: str,
) -> BundlePlan:
    """Sort and deduplicate members, compute offsets and totals, encode both indexes: the layout alone,
    with no check of what the members hold (``plan_bundle`` checks first)."""
    sorted_manifests = _unique_manifests(manifests)
    sorted_blobs = _unique_blobs(blobs, {m.digest for m in sorted_manifests})
    manifest_by_digest = {m.digest: m for m in sorted_manifests}
    oci_index = oci_index_bytes(images, manifest_by_digest)
    position = member_length(LAYOUT_NAME, len(OCI_LAYOUT_BYTES)) + member_length(OCI_INDEX_NAME, len(oci_index))
    manifest_entries, position = _entries(
        [(m.digest, len(m.data), m.media_type) for m in sorted_manifests], position
    )
    blob_entries, _ = _entries([(b.digest, b.size, b.media_type) for b in sorted_blobs], position)
    index = BundleIndex(
        format=FORMAT_NAME,
        version=REFERRERS_VERSION if any(i.referrers or i.original_referrers for i in images) else FORMAT_VERSION,
        created=created,
        tool=f"imgbundle {bundler.__version__}",
        images=[_without_empty_original(image) for image in images],
        skipped=list(skipped),
        manifests=manifest_entries,
        blobs=blob_entries,
        totals=Totals(
            images=len(images),
            manifests=len(manifest_entries),
            blobs=len(blob_entries),
            manifest_bytes=sum(entry.size for entry in manifest_entries),
            blob_bytes=sum(entry.size for entry in blob_entries),
        ),
    )
    return BundlePlan(index, encode_index(index), oci_index, tuple(sorted_manifests), tuple(sorted_blobs))


def _without_empty_original(image: ImageEntry) -> ImageEntry:
    """An empty ``original_digest`` means "not rewritten": omit it rather than write ``""``."""
    return msgspec.structs.replace(image, original_digest=None) if not image.original_digest else image


def _unique_manifests(manifests: Sequence[RawManifest]) -> list[RawManifest]:
    by_digest = {manifest.digest: manifest for manifest in reversed(manifests)}  # the first given of each digest
    return [by_digest[digest] for digest in sorted(by_digest)]


def _unique_blobs(blobs: Sequence[BlobSpec], manifest_digests: set[Digest]) -> list[BlobSpec]:
    by_digest: dict[str, BlobSpec] = {}
    for blob in blobs:
        Digest(blob.digest)
        if blob.size < 0:
            raise InputError(f"blob {blob.digest}: negative size")
        if blob.digest in manifest_digests:
            continue
        if by_digest.setdefault(blob.digest, blob).size != blob.size:
            raise InputError(f"blob {blob.digest} given twice with different sizes")
    return [by_digest[digest] for digest in sorted(by_digest)]


def _entries(members: list[tuple[str, int, str]], position: int) -> tuple[list[MemberEntry], int]:
    entries = []
    for digest, size, media_type in members:
        entries.append(MemberEntry(digest=digest, size=size, media_type=media_type, offset=position))
        position += member_length(blob_path(digest), size)
    return entries, position


def oci_index_bytes(images: Sequence[ImageEntry], manifests: dict[Digest, RawManifest]) -> bytes:
    """``index.json``: one descriptor per distinct reference, sorted by reference, compact JSON."""
    names: dict[str, str] = {}
    for image in images:
        if image.digest not in manifests:
            raise InputError(f"image {image.reference}: manifest {image.digest} is not among the manifests")
        if names.setdefault(image.reference, image.digest) != image.digest:
            raise InputError(f"reference {image.reference} given with two digests")
    descriptors = []
    for reference in sorted(names):
        manifest = manifests[Digest(names[reference])]
        descriptors.append(
            {
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": len(manifest.data),
                "annotations": {REF_NAME_ANNOTATION: reference},
            }
        )
    return encode_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})


# --- checks a reader applies to the two OCI metadata members ----------------------------------


class _Layout(msgspec.Struct):
    imageLayoutVersion: str


class _RefDescriptor(msgspec.Struct):
    mediaType: str
    digest: str
    size: int
    annotations: dict[str, str] = {}


class _RefIndex(msgspec.Struct):
    schemaVersion: int
    manifests: list[_RefDescriptor]


_layout_decoder = msgspec.json.Decoder(_Layout)
_ref_index_decoder = msgspec.json.Decoder(_RefIndex)


def check_metadata_length(index: BundleIndex) -> None:
    """The first manifest's offset is the length of ``oci-layout`` and ``index.json``: refuse an index
    that leaves them more room than their caps, before any command reads them (or works at all)."""
    entries = index.manifests or index.blobs
    if entries and entries[0].offset > MAX_METADATA_LENGTH:
        raise CorruptBundleError(
            f"{OCI_INDEX_NAME}: {INDEX_NAME} places the first member at {entries[0].offset}, leaving "
            f"{OCI_INDEX_NAME} more than the {MAX_OCI_INDEX_BYTES} bytes allowed")


def check_oci_layout(data: bytes) -> None:
    """``oci-layout`` must be an OCI layout 1.x marker."""
    try:
        layout = decode_json(_layout_decoder, data)
    except msgspec.DecodeError as error:
        raise CorruptBundleError(f"{LAYOUT_NAME}: {error}") from None
    if not layout.imageLayoutVersion.startswith("1."):
        raise CorruptBundleError(f"{LAYOUT_NAME}: layout version {layout.imageLayoutVersion!r} is not 1.x")


def check_oci_index(data: bytes, index: BundleIndex) -> None:
    """``index.json`` must name every image of the index with its digest, and nothing else."""
    try:
        oci_index = decode_json(_ref_index_decoder, data)
    except msgspec.DecodeError as error:
        raise CorruptBundleError(f"{OCI_INDEX_NAME}: {error}") from None
    manifests = {entry.digest: entry for entry in index.manifests}
    found: dict[str, str] = {}
    for descriptor in oci_index.manifests:
        name = descriptor.annotations.get(REF_NAME_ANNOTATION, "")
        entry = manifests.get(descriptor.digest)
        if entry is None or entry.size != descriptor.size or entry.media_type != descriptor.mediaType:
            raise CorruptBundleError(f"{OCI_INDEX_NAME}: {name or descriptor.digest} does not match {INDEX_NAME}")
        found[name] = descriptor.digest
    expected = {image.reference: image.digest for image in index.images}
    if found != expected:
        raise CorruptBundleError(f"{OCI_INDEX_NAME}: references differ from the images in {INDEX_NAME}")
