"""verify by the sidecar's content digest: every member checked on every core, the compressed file not hashed
(unless asked), each byte hashed once. Anything wrong, or a bundle this path cannot read, hands the bundle to
the thorough path, which names what is damaged."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bundler.bundle import BundleIndex, BundleReader, read_sidecar
from bundler.bundle.contentcheck import ContentCheck, ContentCheckFailed, check_content
from bundler.bundle.links import manifest_links
from bundler.bundle.sidecar import file_sha256
from bundler.errors import BundleError, CorruptBundleError
from bundler.progress import Progress
from bundler.verify.checksum import file_check
from bundler.verify.report import SidecarCheck, SidecarState
from bundler.verify.scan import Scan, layout_refs, verify_phase

__all__ = ["ByContent", "check_by_content"]


@dataclass(frozen=True)
class ByContent:
    checked: tuple[BundleIndex, Scan, SidecarCheck] | None
    """The outcome when every member and the content digest matched; ``None``: check the thorough way."""
    content: str | None = None
    """The content digest computed, when the whole stream was read."""


def check_by_content(path: Path, expected: str, progress: Progress, *, file_checksum: bool) -> ByContent:
    """Check the bundle ``path`` against the sidecar's content digest ``expected``; with ``file_checksum``
    the compressed file is hashed beside it and checked against the sidecar's first line."""
    with ThreadPoolExecutor(1, thread_name_prefix="imgbundle-sha256") as hasher:
        file_hash = hasher.submit(file_sha256, path) if file_checksum else None
        try:
            with BundleReader.open(path) as reader:
                verify_phase(progress, reader.index)
                found = check_content(path, reader, workers=os.cpu_count() or 1, advance=progress.advance,
                                      member_done=progress.item_done)
                index = reader.index
        except (ContentCheckFailed, BundleError):
            return ByContent(None)
        if found.content != expected:
            return ByContent(None, found.content)
        try:
            scan = _scan(found, index)
        except CorruptBundleError:
            return ByContent(None, found.content)
        return ByContent((index, scan, _sidecar(path, file_hash)), found.content)


def _scan(found: ContentCheck, index: BundleIndex) -> Scan:
    media_types = {entry.digest: entry.media_type for entry in index.manifests}
    scan = Scan(bytes_checked=found.bytes_checked, layout_refs=layout_refs(found.oci_index))
    for digest, data in found.manifests.items():
        scan.children[digest] = manifest_links(data, media_types[digest])
    scan.seen.update(entry.digest for entry in [*index.manifests, *index.blobs])
    return scan


def _sidecar(path: Path, file_hash: Future[str] | None) -> SidecarCheck:
    if file_hash is None:
        return SidecarCheck(SidecarState.CONTENT_OK)
    check = file_check(read_sidecar(path), file_hash.result())
    return SidecarCheck(SidecarState.CONTENT_AND_FILE_OK) if check.state is SidecarState.OK else check
