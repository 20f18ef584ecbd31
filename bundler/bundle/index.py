"""The bundle index (``imgbundle.json``): what a bundle holds and where, as msgspec structs.

Field order is the JSON order. Decoding first reads only ``format`` and ``version`` so that a
bundle of another major version is refused with a clear message before its shape matters;
then the full struct is decoded and its internal consistency checked (sorted, unique, offsets
that chain, totals that add up), so later code can trust every number in it.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import re
from collections.abc import Sequence
from typing import Annotated

import msgspec

from bundler.bundle.tar import member_length
from bundler.errors import CorruptBundleError, NotABundleError, UnsupportedVersionError
from bundler.oci import MAX_MANIFEST_BYTES, JsonTooDeepError, decode_json

__all__ = [
    "BASES_VERSION",
    "COSIGN_SUFFIXES",
    "DELTA_VERSION",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INDEX_NAME",
    "MAX_IMAGES",
    "REFERRERS_VERSION",
    "BaseEntry",
    "BundleIndex",
    "ExternalEntry",
    "FoundBy",
    "ImageEntry",
    "MemberEntry",
    "ReferrerEntry",
    "SkippedEntry",
    "Totals",
    "bases_id",
    "blob_path",
    "bundle_id",
    "cosign_tag",
    "decode_index",
    "encode_index",
    "encode_json",
    "fallback_tag",
    "newer_version",
]

FORMAT_NAME = "imgbundle"
FORMAT_VERSION = "1.0"
DELTA_VERSION = "1.1"
"""Written by bundles that use the 1.1 fields (``base``, ``external``): delta bundles."""
REFERRERS_VERSION = "1.2"
"""Written by bundles whose images carry referrers (signatures, attestations, SBOMs) or left some out."""
BASES_VERSION = "1.3"
"""Written by deltas that use the 1.3 fields: ``bases`` and ``external[].repository``."""
SUPPORTED_MAJOR = 1
INDEX_NAME = "imgbundle.json"

DigestText = Annotated[str, msgspec.Meta(pattern=r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
MAX_IMAGES = 65_536
"""Images, and skipped lines, one bundle may list (``index.json``, at most 16 MiB, holds a descriptor
for each image); refused while decoding, so neither list can grow a reader's memory past it."""
_VERSION_RE = re.compile(r"^([0-9]{1,6})\.([0-9]{1,6})$")


class FoundBy(enum.Enum):
    """How pack found a referrer, so that unpack puts it back the same way."""

    REFERRERS_API = "referrers-api"
    FALLBACK_TAG = "fallback-tag"
    """The OCI 1.1 referrers tag schema: an index of referrers under the tag ``<alg>-<hex>``."""
    COSIGN_TAG = "cosign-tag"
    """cosign's scheme: the artifact is the manifest tagged ``<alg>-<hex>.sig`` (``.att``, ``.sbom``)."""


COSIGN_SUFFIXES = ("sig", "att", "sbom")


def fallback_tag(subject: str) -> str:
    """The referrers tag schema's tag for ``subject``: ``sha256:ab…`` becomes ``sha256-ab…``."""
    return subject.replace(":", "-", 1)


def cosign_tag(subject: str, suffix: str) -> str:
    """cosign's tag for an artifact of ``subject``: ``sha256-ab….sig``, ``.att`` or ``.sbom``."""
    return f"{fallback_tag(subject)}.{suffix}"


class ReferrerEntry(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """Format 1.2: a manifest attached to an image (a signature, attestation, SBOM), carried in ``manifests``."""

    digest: DigestText
    media_type: str
    artifact_type: str
    """What the referrers API shows (``artifactType``, else the config media type); for a cosign tag,
    whose config says nothing, the media type of its first layer."""
    subject: DigestText
    """The manifest it is attached to: the image's top manifest, a child, or another referrer before it."""
    found_by: FoundBy
    tag: str = ""
    """Only for ``cosign-tag``: the tag it is stored under, ``cosign_tag(subject, suffix)``."""
    annotations: dict[str, str] = {}
    """The referrer manifest's annotations, as a referrers API descriptor carries them."""


class ImageEntry(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """One image the bundle holds: as the user wrote it, normalised, and what it resolved to."""

    source: str
    reference: str
    digest: DigestText
    media_type: str
    platforms: list[str]
    size: Count
    """Bytes of every manifest and blob this image needs (shared blobs counted for each image)."""
    original_digest: DigestText | None = None
    """Set only when the tool rewrote an index to a platform subset: the digest it had upstream."""
    artifact_type: str = ""
    """Set only when the top manifest is not an image (a Helm chart, a WASM module): its ``artifactType``
    or config media type."""
    referrers: list[ReferrerEntry] = []
    """Format 1.2: what is attached to this image, each after its subject."""
    original_referrers: Count = 0
    """Format 1.2: referrers of ``original_digest`` left out (they name the upstream index, not the rewrite)."""


class SkippedEntry(msgspec.Struct, frozen=True, rename="camel"):
    source: str
    reason: str


class MemberEntry(msgspec.Struct, frozen=True, rename="camel"):
    """A manifest or blob member; ``offset`` is where its tar header starts, counted in the
    decompressed tar stream from the end of the ``imgbundle.json`` member."""

    digest: DigestText
    size: Count
    media_type: str
    offset: Count


class ExternalEntry(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """A blob the images need that a delta bundle leaves to its base: the target must hold it."""

    digest: DigestText
    size: Count
    media_type: str
    repository: str = ""
    """Format 1.3: a repository of the target that held it when the site's inventory was taken (a mount source)."""


class BaseEntry(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    """Format 1.3: one of the things a delta leaves blobs to: a bundle (by its id) or a site inventory
    (by its checksum)."""

    kind: str
    id: DigestText
    created: str
    source: str = ""
    """Inventories: what was listed, ``HOST[/PROJECT]`` or ``storage:PATH``."""


class Totals(msgspec.Struct, frozen=True, rename="camel"):
    images: Count
    manifests: Count
    blobs: Count
    manifest_bytes: Count
    blob_bytes: Count


class BundleIndex(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    format: str
    version: str
    created: str
    tool: str
    images: Annotated[list[ImageEntry], msgspec.Meta(max_length=MAX_IMAGES)]
    skipped: Annotated[list[SkippedEntry], msgspec.Meta(max_length=MAX_IMAGES)]
    manifests: list[MemberEntry]
    blobs: list[MemberEntry]
    totals: Totals
    base: DigestText | None = None
    """Format 1.1, delta bundles only: the id (``bundle_id``) of the bundle this one builds on."""
    external: list[ExternalEntry] = []
    """Format 1.1, delta bundles only: blobs the images need that the base carried, sorted by digest."""
    bases: list[BaseEntry] = []
    """Format 1.3: what ``base`` names when it is not one bundle: inventories, several bases, sorted by id."""


class _Head(msgspec.Struct):
    format: object = None
    version: object = None


_head_decoder = msgspec.json.Decoder(_Head)
_index_decoder = msgspec.json.Decoder(BundleIndex)


def _encode_str_subclass(value: object) -> object:
    """``Digest`` and other ``str`` subclasses encode as plain strings."""
    if isinstance(value, str):
        return str(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_encode_str_subclass)


def blob_path(digest: str) -> str:
    """The member name (and OCI layout path) of a manifest or blob."""
    algorithm, _, hex_digits = digest.partition(":")
    return f"blobs/{algorithm}/{hex_digits}"


def bundle_id(index: BundleIndex) -> str:
    """What a delta names its base by: ``sha256:`` of every carried manifest and blob digest, sorted,
    one per line. It depends on the content only, so a bundle and its index exported as JSON have the
    same id, and so does any bundle of any version carrying the same members."""
    digests = sorted([*(entry.digest for entry in index.manifests), *(entry.digest for entry in index.blobs)])
    return "sha256:" + hashlib.sha256("".join(f"{digest}\n" for digest in digests).encode()).hexdigest()


def bases_id(ids: Sequence[str]) -> str:
    """What a delta names its bases by: the one id, or ``sha256:`` of the sorted ids, one per line."""
    if len(ids) == 1:
        return ids[0]
    return "sha256:" + hashlib.sha256("".join(f"{i}\n" for i in sorted(ids)).encode()).hexdigest()


def newer_version(first: str, second: str) -> str:
    """The later of two ``MAJOR.MINOR`` versions of this major version."""
    return max(first, second, key=lambda version: tuple(int(part) for part in version.split(".")))


def encode_index(index: BundleIndex) -> bytes:
    return _encoder.encode(index)


def encode_json(value: object) -> bytes:
    """Compact JSON in the order given, as every JSON member of a bundle is written."""
    return _encoder.encode(value)


def decode_index(data: bytes) -> BundleIndex:
    """Decode and check ``imgbundle.json`` bytes.

    Raises ``NotABundleError`` when this is not our format at all, ``UnsupportedVersionError``
    for an unknown major version and ``CorruptBundleError`` for anything malformed.
    """
    try:
        head = decode_json(_head_decoder, data)
    except JsonTooDeepError as error:  # our member, its JSON crafted: damage, not another format
        raise CorruptBundleError(f"{INDEX_NAME}: {error}") from None
    except msgspec.DecodeError:
        raise NotABundleError(f"{INDEX_NAME}: not a JSON object") from None
    if head.format != FORMAT_NAME:
        raise NotABundleError(f"{INDEX_NAME}: format is {head.format!r}, not {FORMAT_NAME!r}")
    _check_version(head.version)
    try:
        index = decode_json(_index_decoder, data)
    except msgspec.DecodeError as error:
        raise CorruptBundleError(f"{INDEX_NAME}: {error}") from None
    check_index(index)
    return index


def _check_version(version: object) -> None:
    match = _VERSION_RE.match(version) if isinstance(version, str) else None
    if not match:
        raise CorruptBundleError(f"{INDEX_NAME}: version {version!r} is not MAJOR.MINOR")
    if int(match.group(1)) != SUPPORTED_MAJOR:
        raise UnsupportedVersionError(
            f"bundle format version {version} is not supported; this reader supports {SUPPORTED_MAJOR}.x"
        )


def check_index(index: BundleIndex) -> None:
    """Refuse an index whose lists are unsorted, duplicated, inconsistent or whose offsets do not chain."""
    _check_sorted_unique(index.manifests, "manifests")
    _check_sorted_unique(index.blobs, "blobs")
    manifest_digests = {entry.digest for entry in index.manifests}
    if manifest_digests & {entry.digest for entry in index.blobs}:
        raise CorruptBundleError(f"{INDEX_NAME}: a digest is listed both as manifest and as blob")
    for entry in index.manifests:
        if entry.size > MAX_MANIFEST_BYTES:
            raise CorruptBundleError(f"{INDEX_NAME}: manifest {entry.digest} is larger than 4 MiB")
    _check_offsets([*index.manifests, *index.blobs])
    manifests = {entry.digest: entry for entry in index.manifests}
    _check_images(index, manifests)
    for image in index.images:
        _check_referrers(image, manifests)
    _check_totals(index)
    _check_external(index, manifest_digests)
    _check_bases(index)


def _check_external(index: BundleIndex, manifest_digests: set[str]) -> None:
    """A delta's expected blobs: sorted, unique, not carried, and only with a base to come from."""
    if not index.external:
        return
    if index.base is None:
        raise CorruptBundleError(f"{INDEX_NAME}: external blobs listed without a base bundle")
    _check_sorted_unique(index.external, "external blobs")
    carried = manifest_digests | {entry.digest for entry in index.blobs}
    if carried.intersection(entry.digest for entry in index.external):
        raise CorruptBundleError(f"{INDEX_NAME}: a digest is listed both as carried and as external")


def _check_bases(index: BundleIndex) -> None:
    """``bases`` sorted, unique, and named together by ``base``."""
    if not index.bases:
        return
    ids = [entry.id for entry in index.bases]
    if any(a >= b for a, b in itertools.pairwise(ids)) or index.base != bases_id(ids):
        raise CorruptBundleError(f"{INDEX_NAME}: bases are not sorted and unique, or base does not name them")


def _check_sorted_unique(entries: Sequence[MemberEntry | ExternalEntry], what: str) -> None:
    digests = [entry.digest for entry in entries]
    if any(a >= b for a, b in itertools.pairwise(digests)):
        raise CorruptBundleError(f"{INDEX_NAME}: {what} are not sorted by digest or not unique")


def _check_offsets(entries: list[MemberEntry]) -> None:
    """Members follow each other without gaps; the first comes after oci-layout and index.json."""
    minimum_start = member_length("oci-layout", 1) + member_length("index.json", 1)
    if entries and entries[0].offset < minimum_start:
        raise CorruptBundleError(f"{INDEX_NAME}: offset of {entries[0].digest} is impossible")
    for previous, entry in itertools.pairwise(entries):
        if entry.offset != previous.offset + member_length(blob_path(previous.digest), previous.size):
            raise CorruptBundleError(f"{INDEX_NAME}: offset of {entry.digest} does not follow the member before it")


def _check_images(index: BundleIndex, manifests: dict[str, MemberEntry]) -> None:
    seen: dict[str, str] = {}
    for image in index.images:
        entry = manifests.get(image.digest)
        if entry is None:
            raise CorruptBundleError(f"{INDEX_NAME}: image {image.reference} has no manifest {image.digest}")
        if entry.media_type != image.media_type:
            raise CorruptBundleError(f"{INDEX_NAME}: image {image.reference} media type disagrees with its manifest")
        if seen.setdefault(image.reference, image.digest) != image.digest:
            raise CorruptBundleError(f"{INDEX_NAME}: reference {image.reference} names two digests")


def _check_referrers(image: ImageEntry, manifests: dict[str, MemberEntry]) -> None:
    """Each referrer is a carried manifest, after its subject when that is another referrer, and a
    cosign tag is exactly the one its subject names (unpack pushes under it)."""
    earlier: set[str] = set()
    referrer_digests = {referrer.digest for referrer in image.referrers}
    for referrer in image.referrers:
        entry = manifests.get(referrer.digest)
        if entry is None or entry.media_type != referrer.media_type:
            raise CorruptBundleError(f"{INDEX_NAME}: referrer {referrer.digest} of {image.reference} is not carried")
        if referrer.subject in referrer_digests and referrer.subject not in earlier:
            raise CorruptBundleError(f"{INDEX_NAME}: referrer {referrer.digest} comes before its subject")
        is_cosign = referrer.found_by is FoundBy.COSIGN_TAG
        if is_cosign != bool(referrer.tag) or (
            is_cosign and referrer.tag not in {cosign_tag(referrer.subject, s) for s in COSIGN_SUFFIXES}
        ):
            raise CorruptBundleError(f"{INDEX_NAME}: referrer {referrer.digest} has tag {referrer.tag[:100]!r}")
        earlier.add(referrer.digest)


def _check_totals(index: BundleIndex) -> None:
    expected = Totals(
        images=len(index.images),
        manifests=len(index.manifests),
        blobs=len(index.blobs),
        manifest_bytes=sum(entry.size for entry in index.manifests),
        blob_bytes=sum(entry.size for entry in index.blobs),
    )
    if index.totals != expected:
        raise CorruptBundleError(f"{INDEX_NAME}: totals do not match the lists")
