"""What a manifest in a bundle links to, and the structural rules that verify and unpack both apply.

One validation for both commands, so that "verify OK" means unpack will not find the bundle broken:
a manifest must parse as the media type the index gives it (an index or an image manifest), list no
more than the caps allow, an index's children must be manifests the bundle carries (not blobs), and an
image manifest's blobs must be carried, left to the target by a delta, or foreign (``urls``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import msgspec

from bundler.digest import Digest
from bundler.errors import CorruptBundleError, InputError
from bundler.oci import (
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    Descriptor,
    detect_media_type,
    parse_index,
    parse_manifest,
)

__all__ = ["MAX_INDEX_CHILDREN", "MAX_MANIFEST_BLOBS", "BrokenLink", "Links", "check_children", "check_links",
           "manifest_links"]

MAX_INDEX_CHILDREN = 4096
"""Manifests one image index may list (a multi-platform image with attestations lists a few dozen)."""
MAX_MANIFEST_BLOBS = 4096
"""Config and layers one image manifest may list (overlay filesystems stack at most about 128)."""


@dataclass(frozen=True)
class Links:
    """An index's children, or an image manifest's blobs (config first); ``foreign`` are blobs with
    ``urls`` that a bundle may leave out (Windows base layers); ``subject``, the manifest an OCI 1.1
    referrer is attached to."""

    media_type: str
    children: tuple[Digest, ...] = ()
    blobs: tuple[Digest, ...] = ()
    foreign: frozenset[Digest] = frozenset()
    subject: Digest | None = None


def manifest_links(data: bytes, declared: str) -> Links:
    """Parse manifest bytes of ``declared`` media type (from the bundle index) into their links.

    Raises ``CorruptBundleError`` for bytes that do not parse, an unsupported media type, or a list
    longer than its cap.
    """
    try:
        media_type = detect_media_type(data, declared)
        if media_type in INDEX_TYPES:
            index = parse_index(data)
            children = index.manifests
            _check_cap(len(children), MAX_INDEX_CHILDREN, "an index listing", "manifests")
            return Links(media_type, children=tuple(Digest(c.digest) for c in children),
                         subject=_subject(index.subject))
        if media_type in IMAGE_MANIFEST_TYPES:
            manifest = parse_manifest(data)
            blobs = manifest.blobs
            _check_cap(len(blobs), MAX_MANIFEST_BLOBS, "a manifest listing", "blobs")
            return Links(media_type, blobs=tuple(dict.fromkeys(Digest(b.digest) for b in blobs)),
                         foreign=frozenset(Digest(b.digest) for b in blobs if b.urls), subject=_subject(manifest.subject))
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise CorruptBundleError(f"manifest does not parse: {error}") from None
    except InputError as error:
        raise CorruptBundleError(f"manifest lists {error}") from None
    raise CorruptBundleError(f"manifest has unsupported media type {media_type!r}")


def _subject(descriptor: Descriptor | None) -> Digest | None:
    return Digest(descriptor.digest) if descriptor is not None else None


def _check_cap(count: int, cap: int, what: str, items: str) -> None:
    if count > cap:
        raise CorruptBundleError(f"{what} {count} {items}, more than the {cap} allowed")


@dataclass(frozen=True)
class BrokenLink:
    """What is wrong with a link: ``digest`` is the member to blame (the missing one, or the manifest
    that points at a blob as if it were a manifest)."""

    digest: Digest
    message: str


def check_children(parent: Digest, links: Links, manifests: Collection[str],
                   carried: Collection[str]) -> list[BrokenLink]:
    """An index's children that are not manifests of the bundle (``manifests``; ``carried``: every member).

    A bundle that breaks this is broken whatever the target holds: verify and unpack both refuse it.
    """
    return [BrokenLink(parent, f"lists {child} as a manifest, but the bundle holds it as a blob")
            if child in carried else BrokenLink(child, f"referenced by {parent} but not in the bundle")
            for child in links.children if child not in manifests]


def check_links(parent: Digest, links: Links, manifests: Collection[str], carried: Collection[str],
                external: Collection[str]) -> list[BrokenLink]:
    """Everything ``parent``'s ``links`` point at that the bundle cannot supply (verify's rule); empty when whole.

    Besides ``check_children``: blobs neither carried, nor left to the target by a delta (``external``),
    nor foreign. unpack leaves those to the push, which succeeds where the target holds them already.
    """
    broken = check_children(parent, links, manifests, carried)
    broken += [BrokenLink(blob, f"referenced by {parent} but not in the bundle") for blob in links.blobs
               if blob not in carried and blob not in external and blob not in links.foreign]
    return broken
