"""Reading a bundle for verify: the stream pass, then, when the stream broke, the member-by-member pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from bundler.bundle import KIND_MANIFEST, BundleIndex, BundleReader, Member
from bundler.digest import Digest
from bundler.errors import BundleError, CorruptBundleError
from bundler.oci import REF_NAME_ANNOTATION, parse_index, parse_manifest
from bundler.progress import Progress

__all__ = ["Scan", "scan_stream", "scan_by_seeking"]


@dataclass
class Scan:
    """What the members said: which digests came through whole, and what each manifest refers to."""

    seen: set[str] = field(default_factory=set)
    children: dict[str, list[str]] = field(default_factory=dict)
    layout_refs: dict[str, str] | None = None
    problems: dict[str, str] = field(default_factory=dict)
    bytes_checked: int = 0
    unchecked: str = "listed in the index but missing from the bundle"
    """Said of members the scan never reached."""


def scan_stream(reader: BundleReader, scan: Scan, progress: Progress) -> str | None:
    """Check members in file order; return why the stream broke, or None when it was read to the end.

    A member whose content is wrong is recorded and the scan goes on; damage to the stream itself
    (framing, tar headers, order) ends the scan.
    """
    members = reader.members()
    member_failed = False
    while True:
        try:
            member = next(members)
        except StopIteration:
            return None
        except CorruptBundleError as error:
            if not member_failed:  # else the damaged member just recorded is why the stream broke
                scan.problems.setdefault("stream", str(error))
            return str(error)
        try:
            _check_member(member, scan, progress)
            member_failed = False
        except CorruptBundleError as error:
            scan.problems.setdefault(str(member.digest or member.name), str(error))
            member_failed = True


def _check_member(member: Member, scan: Scan, progress: Progress) -> None:
    if member.digest is None:
        data = b"".join(member.chunks)
        if member.name == "index.json":
            scan.layout_refs = _layout_refs(data)
        return
    size = 0
    if member.kind == KIND_MANIFEST:
        data = b"".join(member.chunks)
        scan.children[member.digest] = _referenced_digests(data)
        size = len(data)
        progress.advance(size)
    else:
        for chunk in member.chunks:
            size += len(chunk)
            progress.advance(len(chunk))
    scan.seen.add(member.digest)
    scan.bytes_checked += size
    progress.item_done(member.digest)


def _referenced_digests(data: bytes) -> list[str]:
    """Digests a manifest or index refers to; unparseable manifests are corrupt."""
    try:
        document = msgspec.json.decode(data, type=dict)
        if "manifests" in document:
            return [d.digest for d in parse_index(data).manifests]
        return [d.digest for d in parse_manifest(data).blobs]
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise CorruptBundleError(f"manifest does not parse: {error}") from None


def _layout_refs(data: bytes) -> dict[str, str]:
    try:
        return {d.annotations.get(REF_NAME_ANNOTATION, ""): d.digest for d in parse_index(data).manifests}
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise CorruptBundleError(f"index.json does not parse: {error}") from None


def scan_by_seeking(path: Path, index: BundleIndex, scan: Scan, progress: Progress) -> bool:
    """After the stream broke: check each member on its own through the seek table, as unpack reads
    it; those the stream passed too, since a broken stream cannot vouch for the seek table.

    Returns whether that found what is wrong (it cannot when the seek table itself is damaged).
    """
    try:
        reader = BundleReader.open(path)
    except BundleError as error:
        scan.problems.setdefault("seek table", f"cannot check the rest of the bundle: {error}")
        scan.unchecked = "not checked: the stream broke before it and the seek table is unusable"
        return False
    found = len(scan.problems)
    with reader:
        for entry in [*index.manifests, *index.blobs]:
            if entry.digest not in scan.problems:
                _check_entry(reader, entry, index, scan, progress)
    return len(scan.problems) > found


def _check_entry(reader: BundleReader, entry, index: BundleIndex, scan: Scan, progress: Progress) -> None:
    is_manifest = entry in index.manifests
    try:
        if is_manifest:
            data = reader.manifest_bytes(entry.digest)
            scan.children[entry.digest] = _referenced_digests(data)
            size = len(data)
        else:
            size = sum(len(chunk) for chunk in reader.blob_chunks(Digest(entry.digest)))
    except CorruptBundleError as error:
        scan.problems[entry.digest] = str(error)
        return
    if entry.digest in scan.seen:
        return
    scan.seen.add(entry.digest)
    scan.bytes_checked += size
    progress.advance(size)
    progress.item_done(entry.digest)
