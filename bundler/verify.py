"""verify: prove a bundle whole, and say which images each problem breaks.

One sequential pass reads the file once: the raw bytes feed the sidecar checksum while the
decompressed members are checked against their digests. If the stream itself breaks (damaged
framing), the remaining members are checked one by one through the seek table, so that a single
bad frame costs only the images that need it. A pipe is read once: there is no sidecar beside it
and no second pass, so what comes after a break in its stream is reported as not checked.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import msgspec

from bundler.bundle import KIND_MANIFEST, BundleIndex, BundleReader, Member, read_sidecar
from bundler.bundle.index import ExternalEntry
from bundler.bundle.volumes import (
    BundleFiles,
    VolumeDigests,
    VolumeFile,
    check_volume_digests,
    find_bundle,
    open_bundle,
)
from bundler.digest import Digest
from bundler.errors import BundleError, CorruptBundleError
from bundler.oci import REF_NAME_ANNOTATION, parse_index, parse_manifest
from bundler.progress import NULL_PROGRESS, Progress

__all__ = ["Problem", "VerifyReport", "verify_bundle"]


@dataclass(frozen=True)
class Problem:
    member: str
    message: str
    images: list[str]


@dataclass
class VerifyReport:
    path: Path
    sidecar: str
    images: int = 0
    manifests: int = 0
    blobs: int = 0
    bytes_checked: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    base: str | None = None
    """A delta bundle's base bundle id (its images also need ``expected``, which it does not carry)."""
    expected: list[ExternalEntry] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def broken_summary(self) -> str:
        broken = sorted({image for problem in self.problems for image in problem.images})
        if broken:
            return f"{len(broken)} image(s) broken: {', '.join(broken)}"
        return f"no image broken; damaged: {', '.join(sorted({p.member for p in self.problems}))}"

    def as_dict(self) -> dict:
        return {
            "bundle": str(self.path),
            "ok": self.ok,
            "checksum": self.sidecar,
            "images": self.images,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "bytesChecked": self.bytes_checked,
            "seconds": round(self.seconds, 3),
            "problems": [{"member": p.member, "message": p.message, "images": p.images} for p in self.problems],
            **({"base": self.base, "expected": self.expected} if self.base else {}),
        }


class _HashingReader:
    """A non-seekable view of a file that hashes every byte read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha256.update(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._raw.readinto(buffer)
        self.sha256.update(memoryview(buffer)[:n])
        return n

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


@dataclass
class _Scan:
    """What the members said: which digests came through whole, and what each manifest refers to."""

    seen: set[str] = field(default_factory=set)
    children: dict[str, list[str]] = field(default_factory=dict)
    layout_refs: dict[str, str] | None = None
    problems: dict[str, str] = field(default_factory=dict)
    bytes_checked: int = 0
    unchecked: str = "listed in the index but missing from the bundle"
    """Said of members the scan never reached."""


def verify_bundle(
    path: Path | BundleFiles, progress: Progress = NULL_PROGRESS, *, stream: BinaryIO | None = None
) -> VerifyReport:
    """Check the sidecar checksum, every member, and that every reference resolves inside the bundle.

    With ``stream`` (e.g. a pipe), the bundle is read from it in one pass and ``path`` only names it.
    """
    started = time.monotonic()
    files = find_bundle(path) if stream is None else None
    expected_sha = read_sidecar(files.name) if files is not None and not files.volumes else None
    with open_bundle(files) if files is not None else nullcontext(stream) as raw:
        volumes = raw.track_digests() if isinstance(raw, VolumeFile) else None
        hashing = _HashingReader(raw)
        with BundleReader.open(hashing) as reader:
            index = reader.index
            progress.phase("verify", total_bytes=index.totals.blob_bytes + index.totals.manifest_bytes,
                           total_items=index.totals.manifests + index.totals.blobs)
            scan = _Scan()
            broken_at = _scan_stream(reader, scan, progress)
        hashed = broken_at is None or stream is None  # a broken pipe may never end: do not drain it
        if hashed:
            hashing.drain()
    if broken_at is not None and stream is not None:
        scan.unchecked = "not checked: the stream broke before it"
    elif broken_at is not None and _scan_by_seeking(path, index, scan, progress):
        scan.problems.pop("stream", None)  # the member-by-member check says exactly what is wrong
    sidecar = _sidecar_state(expected_sha, hashing.sha256.hexdigest() if hashed else None, piped=stream is not None)
    if files is not None and volumes is not None:
        sidecar = _volumes_state(files, volumes)
    report = VerifyReport(path, sidecar)
    _judge(index, scan, report)
    report.seconds = time.monotonic() - started
    return report


def _scan_stream(reader: BundleReader, scan: _Scan, progress: Progress) -> str | None:
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


def _check_member(member: Member, scan: _Scan, progress: Progress) -> None:
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


def _scan_by_seeking(path: Path, index: BundleIndex, scan: _Scan, progress: Progress) -> bool:
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


def _check_entry(reader: BundleReader, entry, index: BundleIndex, scan: _Scan, progress: Progress) -> None:
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


def _volumes_state(files: BundleFiles, digests: VolumeDigests) -> str:
    """The sidecar check of a split bundle: one line per volume, each volume named when it is wrong."""
    if not files.sidecar.exists():
        return "no sidecar (skipped)"
    if not digests.complete:
        return "not checked (stream damaged)"
    mismatch = check_volume_digests(files, digests.hexdigests())
    return f"MISMATCH: {mismatch}" if mismatch else f"ok (sha256 of all {len(files.volumes)} volumes match sidecar)"


def _sidecar_state(expected: str | None, actual: str | None, *, piped: bool) -> str:
    if actual is None:
        return "not checked (stream damaged)"
    if piped:
        return f"no sidecar for a pipe; compare by hand: sha256 {actual}"
    if expected is None:
        return "no sidecar (skipped)"
    return "ok (sha256 matches sidecar)" if actual == expected else f"MISMATCH: file {actual}, sidecar {expected}"


def _judge(index: BundleIndex, scan: _Scan, report: VerifyReport) -> None:
    """Turn the scan into problems, each naming the images it breaks."""
    present = {e.digest for e in index.manifests} | {e.digest for e in index.blobs}
    external = {e.digest for e in index.external}  # a delta's blobs that the target holds, not missing
    problems = dict(scan.problems)
    for entry in [*index.manifests, *index.blobs]:
        if entry.digest not in scan.seen and entry.digest not in problems:
            problems[entry.digest] = scan.unchecked
    for parent, children in scan.children.items():
        for child in children:
            if child not in present and child not in external:
                problems.setdefault(child, f"referenced by {parent} but not in the bundle")
    for image in index.images:
        if image.digest not in present:
            problems.setdefault(image.digest, f"top manifest of {image.reference} is not in the bundle")
    _check_layout_refs(index, scan, problems)
    if report.sidecar.startswith("MISMATCH"):
        problems.setdefault("checksum", f"file does not match its .sha256 sidecar ({report.sidecar})")
    closures = {image.reference: _closure(image.digest, scan.children) for image in index.images}
    for member, message in sorted(problems.items()):
        broken = sorted(ref for ref, digests in closures.items() if member in digests or _unusable(member, message))

        report.problems.append(Problem(member, message, broken))
    report.images = len(index.images)
    report.manifests = len(index.manifests)
    report.blobs = len(index.blobs)
    report.bytes_checked = scan.bytes_checked
    report.base, report.expected = index.base, list(index.external)


def _unusable(member: str, message: str) -> bool:
    """Damage to the seek table or the end of the archive: unpack, which reads through the seek
    table, cannot open the bundle at all, so every image is broken."""
    return member == "seek table" or (member == "stream" and message.startswith(("seek table", "end of archive")))


def _check_layout_refs(index: BundleIndex, scan: _Scan, problems: dict[str, str]) -> None:
    expected = {image.reference: image.digest for image in index.images}
    if scan.layout_refs is None:
        problems.setdefault("index.json", "the OCI index.json member is missing")
    elif scan.layout_refs != expected:
        differing = sorted(set(expected.items()) ^ set(scan.layout_refs.items()))
        problems.setdefault("index.json", f"does not agree with the bundle index: {differing[:3]}")


def _closure(top: str, children: dict[str, list[str]]) -> set[str]:
    """Every digest an image needs, following manifests as far as they were readable."""
    needed, stack = set(), [top]
    while stack:
        digest = stack.pop()
        if digest not in needed:
            needed.add(digest)
            stack.extend(children.get(digest, []))
    return needed
