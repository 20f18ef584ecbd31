"""Reading a bundle for verify: the stream pass, then, when the stream broke, the member-by-member pass."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import msgspec

from bundler.bundle import BundleIndex, Member, MemberEntry, MemberKind, blob_path
from bundler.bundle.layout import OCI_INDEX_NAME
from bundler.bundle.links import Links, manifest_links
from bundler.bundle.volumes import BundleFiles
from bundler.digest import Digest
from bundler.errors import BundleError, CorruptBundleError
from bundler.oci import REF_NAME_ANNOTATION, parse_index
from bundler.progress import Progress
from bundler.stores.bundle import BundleStore
from bundler.verify.report import SEEK_TABLE, STREAM, ProblemKind

__all__ = ["Finding", "Scan", "layout_refs", "scan_by_seeking", "scan_stream", "verify_phase"]

_ANY_REPOSITORY = ""
"""A bundle finds a member by its digest, whatever the repository."""


@dataclass(frozen=True)
class Finding:
    """What is wrong with one member (or with the bundle as a whole), before the images are judged."""

    kind: ProblemKind
    message: str


@dataclass
class Scan:
    """What the members said: which digests came through whole, and what each manifest refers to."""

    seen: set[str] = field(default_factory=set)
    children: dict[str, Links] = field(default_factory=dict)
    """By manifest digest, what it links to (the rules of ``bundler.bundle.links``, as unpack applies them)."""
    layout_refs: dict[str, str] | None = None
    problems: dict[str, Finding] = field(default_factory=dict)
    """By member: a digest, or what is damaged when it is no member (``STREAM``, ``SEEK_TABLE``, index.json)."""
    bytes_checked: int = 0
    broken: bool = False
    """Whether the stream broke before its end."""
    unchecked: Finding = Finding(ProblemKind.MISSING, "listed in the index but missing from the bundle")
    """Said of members the scan never reached."""


def scan_stream(file: BinaryIO, progress: Progress) -> tuple[BundleIndex, Scan]:
    """Check members in file order, to the end of the stream or to where it broke.

    A member whose content is wrong is recorded and the scan goes on; damage to the stream itself
    (framing, tar headers, order) ends the scan.
    """
    with BundleStore.open(file) as store:
        index = store.index
        verify_phase(progress, index)
        scan = Scan()
        _check_members(store.members(), index, scan, progress)
    return index, scan


def verify_phase(progress: Progress, index: BundleIndex) -> None:
    """Start the progress of checking every member of ``index``."""
    progress.phase("verify", total_bytes=index.totals.blob_bytes + index.totals.manifest_bytes,
                   total_items=index.totals.manifests + index.totals.blobs)


def _check_members(members: Iterator[Member], index: BundleIndex, scan: Scan, progress: Progress) -> None:
    last: Member | None = None
    member_failed = False
    while True:
        try:
            member = next(members)
        except StopIteration:
            return
        except CorruptBundleError as error:
            scan.broken = True
            if not member_failed:  # else the damaged member just recorded is why the stream broke
                scan.problems.setdefault(STREAM, Finding(_stream_break(index, last), str(error)))
            return
        last = member
        try:
            _check_member(member, scan, progress)
            member_failed = False
        except CorruptBundleError as error:
            name = str(member.digest or member.name)
            scan.problems.setdefault(name, Finding(ProblemKind.DAMAGED, error.about(member.kind.label(name))))
            member_failed = True


def _stream_break(index: BundleIndex, last: Member | None) -> ProblemKind:
    """Where the stream broke. After its last member (manifests, then blobs, in index order) come
    the end of the archive and the seek table, which unpack needs. The reader does not tell a break
    there from one in the last member's own padding: either way, unpack may fail for any image."""
    entries = index.blobs or index.manifests
    final = blob_path(entries[-1].digest) if entries else OCI_INDEX_NAME
    if last is not None and last.name == final:
        return ProblemKind.ARCHIVE_END_DAMAGED
    return ProblemKind.STREAM_BROKEN


def _check_member(member: Member, scan: Scan, progress: Progress) -> None:
    if member.digest is None:
        data = b"".join(member.chunks)
        if member.kind is MemberKind.OCI_INDEX:
            scan.layout_refs = layout_refs(data)
        return
    size = 0
    if member.kind is MemberKind.MANIFEST:
        data = b"".join(member.chunks)
        scan.children[member.digest] = manifest_links(data, member.media_type)
        size = len(data)
        progress.advance(size)
    else:
        for chunk in member.chunks:
            size += len(chunk)
            progress.advance(len(chunk))
    scan.seen.add(member.digest)
    scan.bytes_checked += size
    progress.item_done(member.digest)


def layout_refs(data: bytes) -> dict[str, str]:
    """``index.json``'s images: digest by reference name."""
    try:
        return {d.annotations.get(REF_NAME_ANNOTATION, ""): d.digest for d in parse_index(data).manifests}
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise CorruptBundleError(f"index.json does not parse: {error}") from None


def scan_by_seeking(files: BundleFiles, index: BundleIndex, scan: Scan, progress: Progress) -> None:
    """After the stream broke: check each member on its own through the seek table, as unpack reads
    it; those the stream passed too, since a broken stream cannot vouch for the seek table.

    When that finds what is wrong, it says so exactly and the stream's own problem is dropped; it
    cannot when the seek table itself is damaged.
    """
    try:
        store = BundleStore.open(files)
    except BundleError as error:
        scan.problems.setdefault(
            SEEK_TABLE, Finding(ProblemKind.SEEK_TABLE_UNUSABLE, f"cannot check the rest of the bundle: {error}"))
        scan.unchecked = Finding(ProblemKind.NOT_CHECKED,
                                 "not checked: the stream broke before it and the seek table is unusable")
        return
    found = len(scan.problems)
    with store:
        for entries, are_manifests in ((index.manifests, True), (index.blobs, False)):
            for entry in entries:
                if entry.digest not in scan.problems:
                    _check_entry(store, entry, are_manifests, scan, progress)
    if len(scan.problems) > found:
        scan.problems.pop(STREAM, None)


def _check_entry(store: BundleStore, entry: MemberEntry, is_manifest: bool, scan: Scan, progress: Progress) -> None:
    """One member's stored bytes, a manifest's as a blob's: verify parses manifests itself, alike in both passes."""
    try:
        chunks = store.blob_chunks(_ANY_REPOSITORY, Digest(entry.digest), entry.size)
        if is_manifest:
            data = b"".join(chunks)
            scan.children[entry.digest] = manifest_links(data, entry.media_type)
            size = len(data)
        else:
            size = sum(len(chunk) for chunk in chunks)
    except CorruptBundleError as error:
        kind = MemberKind.MANIFEST if is_manifest else MemberKind.BLOB
        scan.problems[entry.digest] = Finding(ProblemKind.DAMAGED, error.about(kind.label(entry.digest)))
        return
    if entry.digest in scan.seen:
        return
    scan.seen.add(entry.digest)
    scan.bytes_checked += size
    progress.advance(size)
    progress.item_done(entry.digest)
