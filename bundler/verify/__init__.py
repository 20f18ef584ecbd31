"""verify: prove a bundle whole, and say which images each problem breaks.

When the sidecar has a content digest (spec/bundle-format.md section 10), ``content`` checks every member
through the seek table on every core and the tar stream against that digest, hashing each byte once; the
compressed file is hashed too only when asked (``file_checksum``). Whatever that path finds wrong, or cannot
read, is checked again the thorough way below, which names the damage. Split bundles, pipes and sidecars
without the line take the thorough way directly.

One sequential pass reads the file once: the raw bytes feed the sidecar checksum while the
decompressed members are checked against their digests. If the stream itself breaks (damaged
framing), the remaining members are checked one by one through the seek table, so that a single
bad frame costs only the images that need it. A pipe is read once: there is no sidecar beside it
and no second pass, so what comes after a break in its stream is reported as not checked.

``scan`` reads the bundle, ``checksum`` hashes the compressed file for the sidecar, ``judge``
turns what they found into the ``report``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import BinaryIO

from bundler.bundle import BundleIndex, read_sidecar
from bundler.bundle.sidecar import read_content_digest
from bundler.bundle.volumes import BundleFiles, VolumeFile, find_bundle, open_bundle
from bundler.progress import NULL_PROGRESS, Progress
from bundler.verify.checksum import HashingReader, file_check, volumes_check
from bundler.verify.content import check_by_content
from bundler.verify.judge import judge
from bundler.verify.report import Problem, ProblemKind, SidecarCheck, SidecarState, VerifyReport
from bundler.verify.scan import Finding, Scan, scan_by_seeking, scan_stream

__all__ = ["Problem", "ProblemKind", "SidecarCheck", "SidecarState", "VerifyReport", "verify_bundle"]


def verify_bundle(
    path: Path | BundleFiles,
    progress: Progress = NULL_PROGRESS,
    *,
    stream: BinaryIO | None = None,
    file_checksum: bool = False,
) -> VerifyReport:
    """Check the sidecar checksum, every member, and that every reference resolves inside the bundle.

    With ``stream`` (e.g. a pipe), the bundle is read from it in one pass and ``path`` only names it.
    ``file_checksum``: hash the compressed file against the sidecar even when its content digest suffices.
    """
    started = time.monotonic()
    if stream is None:
        index, scan, sidecar = _check_file(find_bundle(path), progress, file_checksum=file_checksum)
    else:
        index, scan, sidecar = _check_pipe(stream, progress)
    report = judge(path, index, scan, sidecar)
    report.seconds = time.monotonic() - started
    return report


def _check_file(files: BundleFiles, progress: Progress, *, file_checksum: bool) -> tuple[BundleIndex, Scan, SidecarCheck]:
    """By the content digest when the sidecar has one; else, or when that finds anything wrong, thoroughly."""
    expected = read_content_digest(files.name) if not files.volumes else None
    if expected is None:
        return _check_thoroughly(files, progress)
    by_content = check_by_content(files.name, expected, progress, file_checksum=file_checksum)
    if by_content.checked is not None:
        return by_content.checked
    index, scan, sidecar = _check_thoroughly(files, progress)
    if by_content.content not in (None, expected) and sidecar.state is SidecarState.OK:
        sidecar = SidecarCheck(SidecarState.MISMATCH, f"content digest {by_content.content}, sidecar {expected}")
    return index, scan, sidecar


def _check_thoroughly(files: BundleFiles, progress: Progress) -> tuple[BundleIndex, Scan, SidecarCheck]:
    """The stream pass reads the whole file, broken or not, for the sidecar; a broken one is then
    checked member by member through the seek table."""
    expected = read_sidecar(files.name) if not files.volumes else None
    with open_bundle(files) as raw:
        volumes = raw.track_digests() if isinstance(raw, VolumeFile) else None
        hashing = HashingReader(raw)
        index, scan = scan_stream(hashing.file, progress)
        hashing.drain()
    if scan.broken:
        scan_by_seeking(files, index, scan, progress)
    if volumes is not None:
        return index, scan, volumes_check(files, volumes)
    return index, scan, file_check(expected, hashing.hexdigest())


def _check_pipe(stream: BinaryIO, progress: Progress) -> tuple[BundleIndex, Scan, SidecarCheck]:
    """Read once: no second pass, and a pipe whose stream broke is not drained (it may never end)."""
    hashing = HashingReader(stream)
    index, scan = scan_stream(hashing.file, progress)
    if scan.broken:
        scan.unchecked = Finding(ProblemKind.NOT_CHECKED, "not checked: the stream broke before it")
        return index, scan, SidecarCheck(SidecarState.UNCHECKED)
    hashing.drain()
    return index, scan, SidecarCheck(SidecarState.PIPED, hashing.hexdigest())
