"""Checking a bundle file by its content digest (spec/bundle-format.md section 10), on every core.

Every frame is decompressed through the seek table (so its zstd checksum is checked), every member's data is
hashed against its digest, and the rest of the tar stream goes into the content digest: each byte is hashed
once, and the compressed file is not hashed at all. Members go largest first, as the hash floor does. A
member's frames are decompressed on a pool while the member's own thread hashes them in order, so one large
blob keeps two cores busy. Read-ahead is bounded: at most ``FRAMES_IN_FLIGHT`` frames are decompressed and not
yet hashed, whatever the number of cores.

Any damage ends the check with ``ContentCheckFailed``: the caller then reads the bundle the thorough way,
which names what is damaged and which images that breaks.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from bundler.bundle.content import ContentDigest
from bundler.bundle.frames import CompressedDataError, decompress_frame, new_decompressor
from bundler.bundle.index import INDEX_NAME, BundleIndex, MemberEntry, blob_path
from bundler.bundle.layout import LAYOUT_NAME, OCI_INDEX_NAME, check_oci_index, check_oci_layout
from bundler.bundle.pagecache import DirectReader, drop_cached
from bundler.bundle.reader import BundleReader
from bundler.bundle.seektable import SeekTable
from bundler.bundle.tar import TarFormatError, header_bytes, header_length, padding, read_header
from bundler.digest import Digest, DigestVerifier
from bundler.errors import ContentMismatchError, CorruptBundleError, LocalIOError

__all__ = ["FRAMES_IN_FLIGHT", "ContentCheck", "ContentCheckFailed", "check_content"]

FRAMES_IN_FLIGHT = 8
"""Frames decompressed ahead of their hashing, over all members together: the memory bound."""
_AHEAD = 3
"""Frames one member may have in flight: enough to keep the pool busy behind its hashing thread."""


class ContentCheckFailed(Exception):
    """Something is wrong (or not as our writer lays it out); the thorough check will say what."""


@dataclass
class ContentCheck:
    """What the check found, all of it good except possibly ``content`` (compare it with the sidecar)."""

    content: str
    """Hex content digest of the tar stream read."""
    manifests: dict[str, bytes] = field(default_factory=dict)
    """By digest, each manifest's bytes (verified)."""
    oci_index: bytes = b""
    bytes_checked: int = 0


@dataclass(frozen=True)
class _Unit:
    """A run of whole frames: one member, or the stretch between members (metadata, end of archive)."""

    first_frame: int
    end_frame: int
    start: int
    """Where its bytes start in the tar stream."""
    size: int
    entry: MemberEntry | None = None
    is_manifest: bool = False
    data_start: int = 0


def check_content(path: Path, reader: BundleReader, *, workers: int, advance: Callable[[int], None],
                  member_done: Callable[[str], None]) -> ContentCheck:
    """Check the bundle ``path`` opened as ``reader``; ``advance(n)`` is called as member bytes are checked,
    ``member_done(digest)`` as each member is found whole.

    ``ContentCheckFailed`` on any damage; ``LocalIOError`` if the file cannot be read.
    """
    units = _plan(reader.index, reader.index_length, reader.seek_table)
    run = _Run(path, reader.seek_table, advance, member_done)
    try:
        run.run(units, workers)
        oci_index = _metadata(run.pieces.get(0, b""), reader)
    except (CompressedDataError, ContentMismatchError, CorruptBundleError, TarFormatError) as error:
        raise ContentCheckFailed(str(error)) from None
    content = ContentDigest()
    for unit in units:
        if unit.entry is None:
            content.add(run.pieces[unit.start])
        else:
            content.add_without_data(blob_path(unit.entry.digest), unit.entry.size)
    return ContentCheck(content.hexdigest(), run.manifests, oci_index, run.bytes_checked)


def _plan(index: BundleIndex, index_length: int, table: SeekTable) -> list[_Unit]:
    """The units in stream order; each member must start and end on a frame boundary, as the writer makes it."""
    members = sorted([(e, True) for e in index.manifests] + [(e, False) for e in index.blobs],
                     key=lambda member: member[0].offset)
    units, position = [], 0
    for entry, is_manifest in members:
        start = index_length + entry.offset
        if start < position:
            raise ContentCheckFailed(f"{entry.digest} overlaps the member before it")
        if start > position:
            units.append(_unit(table, position, start))
        header = header_length(blob_path(entry.digest), entry.size)
        end = start + header + entry.size + padding(entry.size)
        units.append(_unit(table, start, end, entry, is_manifest, start + header))
        position = end
    if position > table.decompressed_total:
        raise ContentCheckFailed("members reach past the end of the stream")
    if position < table.decompressed_total:
        units.append(_unit(table, position, table.decompressed_total))
    return units


def _unit(table: SeekTable, start: int, end: int, entry: MemberEntry | None = None, is_manifest: bool = False,
          data_start: int = 0) -> _Unit:
    first = table.frame_starting_at(start)
    last = table.frame_count if end == table.decompressed_total else table.frame_starting_at(end)
    if first is None or last is None:
        raise ContentCheckFailed(f"bytes {start}-{end} of the stream do not start and end on frame boundaries")
    return _Unit(first, last, start, end - start, entry, is_manifest, data_start)


def _metadata(data: bytes, reader: BundleReader) -> bytes:
    """The members before the first manifest: checked as the reader checks them; ``index.json``'s bytes."""
    stream = io.BytesIO(data)

    def read_exact(size: int) -> bytes:
        piece = stream.read(size)
        if len(piece) != size:
            raise ContentCheckFailed("the metadata members are cut short")
        return piece

    found = {}
    for name in (INDEX_NAME, LAYOUT_NAME, OCI_INDEX_NAME):
        header = read_header(read_exact)
        if header is None or header.name != name:
            raise ContentCheckFailed(f"{name} is not where the bundle has it")
        found[name] = read_exact(header.size)
        read_exact(padding(header.size))
    if stream.read(1) or found[INDEX_NAME] != reader.index_bytes:
        raise ContentCheckFailed("the metadata members are not as the index says")
    check_oci_layout(found[LAYOUT_NAME])
    check_oci_index(found[OCI_INDEX_NAME], reader.index)
    return found[OCI_INDEX_NAME]


class _Run:
    """One check: member threads hash, a pool decompresses, results gather under a lock."""

    def __init__(self, path: Path, table: SeekTable, advance: Callable[[int], None],
                 member_done: Callable[[str], None]) -> None:
        self._path = path
        self._table = table
        self._advance = advance
        self._member_done = member_done
        self._slots = threading.BoundedSemaphore(FRAMES_IN_FLIGHT)
        self._failed = threading.Event()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[DirectReader] = []
        self.pieces: dict[int, bytes] = {}
        """The bytes between members (metadata, end of archive), by position in the tar stream. Those around
        each member's data are not kept (they would add up at hundreds of thousands of blobs): they are
        compared with the header and padding the writer makes, which the content digest then hashes."""
        self.manifests: dict[str, bytes] = {}
        self.bytes_checked = 0

    def run(self, units: list[_Unit], workers: int) -> None:
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="imgbundle-unzstd") as pool, \
                    ThreadPoolExecutor(workers, thread_name_prefix="imgbundle-verify") as hashers:
                futures = [hashers.submit(self._check_unit, pool, unit)
                           for unit in sorted(units, key=lambda unit: unit.size, reverse=True)]
                try:
                    for future in futures:
                        future.result()
                finally:
                    self._failed.set()  # the others stop at their next frame
        finally:
            for reader in self._readers:
                reader.close()
            drop_cached(self._path)

    def _check_unit(self, pool: ThreadPoolExecutor, unit: _Unit) -> None:
        if unit.entry is None:
            data = b"".join(self._frames(pool, unit))
            with self._lock:
                self.pieces[unit.start] = data
            return
        entry = unit.entry
        verifier = DigestVerifier(Digest(entry.digest), entry.size, what=f"{'manifest' if unit.is_manifest else 'blob'} "
                                                                          f"{entry.digest}")
        manifest: list[bytes] = []
        around = bytearray()  # the header(s) and padding: a few blocks, compared with what the writer makes
        data_start, data_end, position = unit.data_start, unit.data_start + entry.size, unit.start
        for frame in self._frames(pool, unit):
            start, end = position, position + len(frame)
            position = end
            if start < data_start:
                around += frame[: min(data_start, end) - start]
            low, high = max(start, data_start), min(end, data_end)
            if low < high:
                piece = memoryview(frame)[low - start : high - start]
                verifier.update(piece)
                if unit.is_manifest:
                    manifest.append(bytes(piece))
                self._advance(high - low)
            if end > data_end:
                around += frame[max(start, data_end) - start :]
        verifier.check()
        name = blob_path(entry.digest)
        if around != header_bytes(name, entry.size) + bytes(padding(entry.size)):
            raise ContentCheckFailed(f"{name}: its header or padding is not as the writer makes them")
        with self._lock:
            self.bytes_checked += entry.size
            if unit.is_manifest:
                self.manifests[entry.digest] = b"".join(manifest)
        self._member_done(entry.digest)

    def _frames(self, pool: ThreadPoolExecutor, unit: _Unit) -> Iterator[bytes]:
        """The unit's frames decompressed in order, up to ``_AHEAD`` of them in flight on ``pool``.

        A slot is waited for only with none in flight, so members never wait on each other's slots."""
        pending: deque[Future[bytes]] = deque()
        number = unit.first_frame
        try:
            while number < unit.end_frame or pending:
                if self._failed.is_set():
                    return
                while (number < unit.end_frame and len(pending) < _AHEAD
                       and self._slots.acquire(blocking=not pending)):
                    pending.append(pool.submit(self._decompress, number))
                    number += 1
                frame = pending.popleft()
                try:
                    yield frame.result()
                finally:
                    self._slots.release()
        finally:
            for frame in pending:
                frame.cancel()
                self._slots.release()

    def _decompress(self, number: int) -> bytes:
        """One frame, in a pool thread with its own direct reader and decompressor."""
        local = self._local
        if not hasattr(local, "reader"):
            try:
                local.reader = DirectReader(self._path)
            except OSError as error:
                raise LocalIOError(f"cannot open {self._path}: {error.strerror or error}") from None
            local.decompressor = new_decompressor()
            with self._lock:
                self._readers.append(local.reader)
        reader: DirectReader = local.reader
        decompressor: zstandard.ZstdDecompressor = local.decompressor
        return decompress_frame(decompressor, self._read_at(reader), self._table, number)

    def _read_at(self, reader: DirectReader) -> Callable[[int, int], bytes | memoryview]:
        def read_at(offset: int, size: int) -> bytes | memoryview:
            try:
                return reader.read_at(offset, size)
            except OSError as error:
                raise LocalIOError(f"cannot read the bundle: {error.strerror or error}") from None
        return read_at
