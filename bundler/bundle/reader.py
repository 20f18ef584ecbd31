"""Read a bundle: the index, random access to members via the seek table, or a sequential scan.

Every byte is treated as hostile until checked: tar headers are parsed by hand, member names
and order must be exactly what the index says, sizes come from the index and bound every read,
frames are checked against the seek table before they are decompressed, and manifest and blob
contents are verified against their digests (a chunk is handed out only once the bytes before
it passed; the last chunk only after the whole member matched its digest).
"""

from __future__ import annotations

import bisect
import enum
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Union

import zstandard

from bundler.bundle.frames import (
    FRAME_SIZE,
    MAX_FRAME_COMPRESSED,
    MAX_WINDOW,
    ZSTD_MAGIC,
    Cursor,
    SeekableFrames,
    StreamFrames,
)
from bundler.bundle.index import INDEX_NAME, BundleIndex, MemberEntry, blob_path, decode_index
from bundler.bundle.layout import (
    LAYOUT_NAME,
    MAX_INDEX_BYTES,
    MAX_LAYOUT_BYTES,
    MAX_METADATA_LENGTH,
    MAX_OCI_INDEX_BYTES,
    OCI_INDEX_NAME,
    check_metadata_length,
    check_oci_index,
    check_oci_layout,
)
from bundler.bundle.pagecache import DirectReader, read_fully
from bundler.bundle.seektable import MAX_FRAMES, SeekTable, SeekTableError, parse_seek_table
from bundler.bundle.tar import (
    BLOCK,
    END_OF_ARCHIVE,
    TarFormatError,
    TarHeader,
    header_length,
    member_length,
    padding,
    read_header,
)
from bundler.bundle.volumes import BundleFiles, VolumeFile, open_bundle
from bundler.digest import Digest, DigestVerifier
from bundler.errors import BundleError, ContentMismatchError, CorruptBundleError, LocalIOError, NotABundleError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "BundleReader",
    "Location",
    "Member",
    "MemberKind",
    "read_index",
]

class MemberKind(enum.Enum):
    """What a member of a bundle is, in the order members come."""

    INDEX = "bundle-index"
    LAYOUT = "oci-layout"
    OCI_INDEX = "oci-index"
    MANIFEST = "manifest"
    BLOB = "blob"

    def __str__(self) -> str:
        return self.value

    def label(self, digest: str) -> str:
        """How messages name a member of this kind: ``blob sha256:…``."""
        return f"{self} {digest}"

Location = Union[str, "os.PathLike[str]", BundleFiles, BinaryIO]
"""Where a bundle is read from: a path, its volumes, a seekable file or a pipe."""
_MEMBER_NAME_RE = re.compile(r"^blobs/(sha256/[a-f0-9]{64}|sha512/[a-f0-9]{128})$")
_FIXED_NAMES = frozenset({INDEX_NAME, LAYOUT_NAME, OCI_INDEX_NAME})


@dataclass
class Member:
    """One tar member met in a sequential scan. Consume or abandon ``chunks`` before asking for the
    next member; for manifests and blobs, digest and size are checked as the chunks are consumed."""

    name: str
    kind: MemberKind
    digest: Digest | None
    size: int
    chunks: Iterator[bytes]
    media_type: str = ""


class BundleReader:
    """An open bundle. Use ``BundleReader.open(path)`` as a context manager.

    From a path or seekable file: random access (``manifest_bytes``, ``blob_chunks``) and any
    number of ``members()`` scans. From a pipe: one ``members()`` scan, front to back.
    """

    def __init__(
        self,
        *,
        index: BundleIndex,
        index_bytes: bytes,
        index_length: int,
        file: BinaryIO,
        owns_file: bool,
        path: Path | None,
        table: SeekTable | None,
        stream_cursor: Cursor | None,
    ) -> None:
        self.index = index
        self._index_bytes = index_bytes
        self._index_length = index_length
        self._file = file
        self._owns_file = owns_file
        self._path = path
        self._table = table
        self._stream_cursor = stream_cursor
        self._stream_to_close = stream_cursor
        """Kept to be closed: a piped bundle is read ahead on a helper thread."""
        self._lock = threading.Lock()
        self._page_cache = False
        self._manifests = {entry.digest: entry for entry in index.manifests}
        self._blobs = {entry.digest: entry for entry in index.blobs}

    @classmethod
    def open(cls, location: Location, *, page_cache: bool = False) -> BundleReader:
        """Open a bundle from a path, a seekable binary file or a pipe (e.g. ``sys.stdin.buffer``).

        Members are read past the page cache (one pass over a big file should not evict everything else);
        ``page_cache`` reads through it, for readers that read the same members again and again (serve).
        """
        file, owns_file, path = _open_file(location)
        try:
            reader = cls._from_file(file, owns_file, path)
        except BaseException:
            if owns_file:
                file.close()
            raise
        reader._page_cache = page_cache
        return reader

    @classmethod
    def _from_file(cls, file: BinaryIO, owns_file: bool, path: Path | None) -> BundleReader:
        seekable = _is_seekable(file)
        if seekable:
            file.seek(0)
        index_bytes, index_length, cursor = _read_index_member(file, read_ahead=not seekable)
        try:
            index = _decode(index_bytes)
            table = _read_seek_table(file, index, index_length) if seekable else None
        except BaseException:
            cursor.close()
            raise
        return cls(
            index=index,
            index_bytes=index_bytes,
            index_length=index_length,
            file=file,
            owns_file=owns_file,
            path=path,
            table=table,
            stream_cursor=None if seekable else cursor,
        )

    @property
    def seekable(self) -> bool:
        return self._table is not None

    @property
    def index_bytes(self) -> bytes:
        """The ``imgbundle.json`` data the index was decoded from."""
        return self._index_bytes

    @property
    def index_length(self) -> int:
        """Where the members after ``imgbundle.json`` start in the tar stream (index offsets count from here)."""
        return self._index_length

    @property
    def seek_table(self) -> SeekTable:
        """The seek table, checked against the file and the index when the bundle was opened."""
        return self._require_table()

    def close(self) -> None:
        if self._stream_to_close is not None:
            self._stream_to_close.close()
        if self._owns_file:
            self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # --- random access ------------------------------------------------------------------------

    def manifest_bytes(self, digest: str) -> bytes:
        """A manifest's bytes, verified against its digest (at most 4 MiB by the index rules)."""
        entry = self._manifests.get(digest)
        if entry is None:
            raise BundleError(f"manifest {digest} is not in this bundle")
        return b"".join(self._random_chunks(entry, MemberKind.MANIFEST))

    def blob_chunks(self, digest: str) -> Iterator[bytes]:
        """A blob's (or manifest's) bytes in chunks of up to a frame (4 MiB), verified as they stream.

        Thread-safe: each call reads through its own file handle when the bundle was opened by path.
        """
        entry = self._blobs.get(digest)
        kind = MemberKind.BLOB
        if entry is None:
            entry, kind = self._manifests.get(digest), MemberKind.MANIFEST
        if entry is None:
            raise BundleError(f"blob {digest} is not in this bundle")
        return self._random_chunks(entry, kind)

    def blob_range(self, digest: str, start: int, stop: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``stop`` (exclusive) of a blob (or manifest), decompressing only the frames
        that hold them. Each frame is checked by its zstd checksum; the blob's digest cannot be (it needs
        every byte), so a whole blob is read with ``blob_chunks``.
        """
        entry = self._blobs.get(digest) or self._manifests.get(digest)
        if entry is None:
            raise BundleError(f"blob {digest} is not in this bundle")
        if not 0 <= start <= stop <= entry.size:
            raise BundleError(f"blob {digest}: bytes {start}-{stop} are outside its {entry.size}")
        table = self._require_table()
        data_start = self._index_length + entry.offset + header_length(blob_path(entry.digest), entry.size)
        first = bisect.bisect_right(table.decompressed_offsets, data_start + start) - 1
        return self._stream_range(f"blob {digest}", first, data_start + start, stop - start)

    def _stream_range(self, label: str, frame: int, position: int, length: int) -> Iterator[bytes]:
        table = self._require_table()
        with self._private_reader() as read_at:
            cursor = Cursor(SeekableFrames(read_at, table, frame), table.decompressed_offsets[frame])
            cursor.label = label
            cursor.skip(position - cursor.position)
            while length:
                chunk = cursor.read_some(min(FRAME_SIZE, length))
                length -= len(chunk)
                yield chunk

    def _random_chunks(self, entry: MemberEntry, kind: MemberKind) -> Iterator[bytes]:
        table = self._require_table()
        label = kind.label(entry.digest)
        position = self._index_length + entry.offset
        frame = table.frame_starting_at(position)
        if frame is None:
            raise CorruptBundleError("its offset is not at the start of a zstd frame", subject=label)
        return self._stream_member(entry, label, frame, position)

    def _stream_member(self, entry: MemberEntry, label: str, frame: int, position: int) -> Iterator[bytes]:
        with self._private_reader() as read_at:
            cursor = Cursor(SeekableFrames(read_at, self._require_table(), frame), position)
            cursor.label = label
            header = _read_header(cursor)
            if header is None or header.name != blob_path(entry.digest) or header.size != entry.size:
                found = "end of archive" if header is None else f"{header.name!r} ({header.size} bytes)"
                raise CorruptBundleError(f"found {found} at its offset", subject=label)
            yield from _DataStream(cursor, entry, label)

    def _require_table(self) -> SeekTable:
        if self._table is None:
            raise BundleError("random access needs a bundle file, not a pipe; read it with members()")
        return self._table

    def _private_reader(self) -> _ReadAt:
        return _ReadAt(self._path, self._file, self._lock, page_cache=self._page_cache)

    # --- sequential scan ----------------------------------------------------------------------

    def members(self) -> Iterator[Member]:
        """Every member in order, checking names, order, offsets, sizes, digests and the end marker."""
        if self._table is None:
            cursor, self._stream_cursor = self._stream_cursor, None
            if cursor is None:
                raise BundleError("a piped bundle can be read only once")
            return self._scan(cursor)
        return self._scan_file()

    def _scan_file(self) -> Iterator[Member]:
        table = self._require_table()
        with self._private_reader() as read_at:
            cursor = Cursor(SeekableFrames(read_at, table, 0))
            cursor.label = INDEX_NAME
            header = _read_header(cursor)
            if header is None or header.name != INDEX_NAME or header.size != len(self._index_bytes):
                raise CorruptBundleError(f"{INDEX_NAME}: changed while the bundle was open")
            if cursor.read_exact(header.size) != self._index_bytes:
                raise CorruptBundleError(f"{INDEX_NAME}: changed while the bundle was open")
            cursor.skip(padding(header.size))
            yield from self._scan(cursor)

    def _scan(self, cursor: Cursor) -> Iterator[Member]:
        yield Member(INDEX_NAME, MemberKind.INDEX, None, len(self._index_bytes), iter([self._index_bytes]))
        data = self._metadata_member(cursor, LAYOUT_NAME, MAX_LAYOUT_BYTES)
        check_oci_layout(data)
        yield Member(LAYOUT_NAME, MemberKind.LAYOUT, None, len(data), iter([data]))
        data = self._metadata_member(cursor, OCI_INDEX_NAME, MAX_OCI_INDEX_BYTES)
        check_oci_index(data, self.index)
        yield Member(OCI_INDEX_NAME, MemberKind.OCI_INDEX, None, len(data), iter([data]))
        for kind, entries in ((MemberKind.MANIFEST, self.index.manifests), (MemberKind.BLOB, self.index.blobs)):
            for entry in entries:
                yield from self._data_member(cursor, kind, entry)
        self._end_of_archive(cursor)

    def _metadata_member(self, cursor: Cursor, name: str, limit: int) -> bytes:
        header = self._next_header(cursor, name)
        if header.size > limit:
            raise CorruptBundleError(f"{name}: {header.size} bytes is more than the {limit} allowed")
        data = cursor.read_exact(header.size)
        cursor.skip(padding(header.size))
        return data

    def _data_member(self, cursor: Cursor, kind: MemberKind, entry: MemberEntry) -> Iterator[Member]:
        label = kind.label(entry.digest)
        offset = cursor.position - self._index_length
        if offset != entry.offset:
            raise CorruptBundleError(f"found at offset {offset}, the index says {entry.offset}", subject=label)
        header = self._next_header(cursor, blob_path(entry.digest), label)
        if header.size != entry.size:
            raise CorruptBundleError(f"tar header says {header.size} bytes, the index says {entry.size}", subject=label)
        stream = _DataStream(cursor, entry, label)
        yield Member(blob_path(entry.digest), kind, Digest(entry.digest), entry.size, iter(stream), entry.media_type)
        stream.skip_rest()
        cursor.skip(padding(entry.size))

    def _next_header(self, cursor: Cursor, name: str, label: str = "") -> TarHeader:
        """The next member's header, which must be ``name`` and start a zstd frame."""
        cursor.label = label or name
        start = cursor.position
        header = _read_header(cursor)
        if header is None:
            raise CorruptBundleError("archive ends where this member was expected", subject=cursor.label)
        if header.name not in _FIXED_NAMES and not _MEMBER_NAME_RE.match(header.name):
            raise CorruptBundleError(f"member {header.name[:200]!r}: name not allowed in a bundle")
        if header.name != name:
            raise CorruptBundleError(f"member {header.name!r}: found where {cursor.label} was expected")
        if not cursor.starts_frame(start):
            raise CorruptBundleError("does not start a new zstd frame", subject=cursor.label)
        return header

    def _end_of_archive(self, cursor: Cursor) -> None:
        cursor.label = "end of archive"
        start = cursor.position
        if cursor.read_exact(len(END_OF_ARCHIVE)) != END_OF_ARCHIVE:
            raise CorruptBundleError("end of archive: a member where the index lists no more")
        if not cursor.starts_frame(start):
            raise CorruptBundleError("end of archive: does not start a new zstd frame")
        cursor.label = "seek table"
        if not cursor.at_end():
            raise CorruptBundleError("end of archive: more data follows the end of the archive")
        cursor.finish()


class _DataStream:
    """A manifest or blob's data in chunks of up to a frame, so that whole frames pass uncopied; the last
    chunk is released only after the digest matched."""

    def __init__(self, cursor: Cursor, entry: MemberEntry, label: str) -> None:
        self._cursor = cursor
        self._remaining = entry.size
        self._verifier = DigestVerifier(Digest(entry.digest), entry.size, what=label)

    def __iter__(self) -> Iterator[bytes]:
        held: bytes | None = None
        while self._remaining:
            chunk = self._cursor.read_some(min(FRAME_SIZE, self._remaining))
            self._remaining -= len(chunk)
            self._verifier.update(chunk)
            if held is not None:
                yield held
            held = chunk
        try:
            self._verifier.check()
        except ContentMismatchError as error:
            raise error.retyped(CorruptBundleError) from None
        if held is not None:
            yield held

    def skip_rest(self) -> None:
        """Move past what the consumer did not read (unverified: it was not used)."""
        self._cursor.skip(self._remaining)
        self._remaining = 0


class _ReadAt:
    """``read_at(offset, size)`` for one reader: its own direct reader when we have a path, else the
    shared file under a lock (so concurrent readers never interleave seek and read)."""

    def __init__(self, path: Path | None, shared: BinaryIO, lock: threading.Lock, *, page_cache: bool = False) -> None:
        self._path = path
        self._shared = shared
        self._lock = lock
        self._page_cache = page_cache
        self._own: DirectReader | None = None

    def __enter__(self) -> Callable[[int, int], bytes | memoryview]:
        if self._path is not None and self._page_cache:
            return self._read_cached
        if self._path is not None:
            try:
                self._own = DirectReader(self._path)
            except OSError as error:
                raise LocalIOError(f"cannot open {self._path}: {error.strerror or error}") from None
            return self._read_own
        return self._read_shared

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._own is not None:
            self._own.close()

    def _read_own(self, offset: int, size: int) -> bytes | memoryview:
        assert self._own is not None
        try:
            return self._own.read_at(offset, size)
        except OSError as error:
            raise LocalIOError(f"cannot read the bundle: {error.strerror or error}") from None

    def _read_cached(self, offset: int, size: int) -> bytes:
        """Through the page cache, with ``pread`` on the bundle's own descriptor: no seek, so no lock."""
        try:
            return os.pread(self._shared.fileno(), size, offset)
        except OSError as error:
            raise LocalIOError(f"cannot read the bundle: {error.strerror or error}") from None

    def _read_shared(self, offset: int, size: int) -> bytes:
        with self._lock:
            return _pread(self._shared, offset, size)


def _pread(file: BinaryIO, offset: int, size: int) -> bytes:
    try:
        file.seek(offset)
        return read_fully(file, size)
    except OSError as error:
        raise LocalIOError(f"cannot read the bundle: {error.strerror or error}") from None


# --- opening ---------------------------------------------------------------------------------


def read_index(location: Location) -> BundleIndex:
    """Only the bundle index: reads the first member and nothing more, so it is fast on any size."""
    file, owns_file, _ = _open_file(location)
    try:
        if _is_seekable(file):
            file.seek(0)
        index_bytes, _, _ = _read_index_member(file)
        return _decode(index_bytes)
    finally:
        if owns_file:
            file.close()


def _decode(index_bytes: bytes) -> BundleIndex:
    """The checked index, and the room it leaves for ``index.json``: caps refused before any command works."""
    index = decode_index(index_bytes)
    check_metadata_length(index)
    return index


def _open_file(location: Location) -> tuple[BinaryIO, bool, Path | None]:
    """The file, whether we own it, and a path to reopen it by (none for volumes: they are shared)."""
    if isinstance(location, (str, os.PathLike, BundleFiles)):
        file = open_bundle(location)
        return file, True, (None if isinstance(file, VolumeFile) else Path(file.name))
    return location, False, None


def _is_seekable(file: BinaryIO) -> bool:
    seekable = getattr(file, "seekable", None)
    try:
        return bool(seekable()) if seekable is not None else False
    except (OSError, ValueError):
        return False


class _Prefixed:
    """A raw stream with some already-read bytes put back in front."""

    def __init__(self, prefix: bytes, raw: BinaryIO) -> None:
        self._prefix = prefix
        self._raw = raw

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            data, self._prefix = (self._prefix, b"") if size < 0 else (self._prefix[:size], self._prefix[size:])
            return data
        return self._raw.read(size)


class _TooFar(Exception):
    """The probe read more compressed bytes than any bundle needs to show its first header."""


class _Recorder:
    """Keeps what the probe reads, so the strict reader can read the same bytes again."""

    def __init__(self, raw: _Prefixed) -> None:
        self._raw = raw
        self.recorded = bytearray()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(min(size, PROBE_LIMIT) if size >= 0 else PROBE_LIMIT)
        self.recorded += data
        if len(self.recorded) > PROBE_LIMIT:
            raise _TooFar()
        return data


PROBE_LIMIT = 1024 * 1024
"""Compressed bytes the probe may read looking for the first tar header."""


def _read_index_member(file: BinaryIO, *, read_ahead: bool = False) -> tuple[bytes, int, Cursor]:
    """The ``imgbundle.json`` bytes, the length of that member, and the cursor just after it.

    A lenient probe first decides whether this is a bundle at all (``NotABundleError``: empty,
    not zstd, not tar, another first member); then the strict reader reads the same bytes again
    and every problem it finds is damage (``CorruptBundleError``). With ``read_ahead`` (for a
    front-to-back scan) the cursor reads the file on a helper thread: close it when done.
    """
    try:
        magic = read_fully(file, 4)
    except OSError as error:
        raise LocalIOError(f"cannot read the bundle: {error.strerror or error}") from None
    if not magic:
        raise NotABundleError("not a bundle: the file is empty")
    if magic != ZSTD_MAGIC:
        raise NotABundleError("not a bundle: not zstd-compressed")
    recorder = _Recorder(_Prefixed(magic, file))
    _probe_first_header(recorder)
    cursor = Cursor(StreamFrames(_Prefixed(bytes(recorder.recorded), file), read_ahead=read_ahead))
    try:
        return _read_index_data(cursor)
    except BaseException:
        cursor.close()
        raise


def _read_index_data(cursor: Cursor) -> tuple[bytes, int, Cursor]:
    """The index member through the strict cursor (see ``_read_index_member``)."""
    cursor.label = INDEX_NAME
    header = _read_header(cursor)
    if header is None or header.name != INDEX_NAME:
        raise CorruptBundleError(f"{INDEX_NAME}: the first member changed between two reads")
    if header.size > MAX_INDEX_BYTES:
        raise CorruptBundleError(f"{INDEX_NAME}: {header.size} bytes is more than the {MAX_INDEX_BYTES} allowed")
    data = cursor.read_exact(header.size)
    cursor.skip(padding(header.size))
    return data, cursor.position, cursor


def _probe_first_header(recorder: _Recorder) -> None:
    """Decompress just enough to see the first tar header, ignoring our framing rules."""
    # zstandard reads from any object with read(); its stub asks for IO[bytes]
    probe = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).stream_reader(
        recorder, read_size=16 * 1024, read_across_frames=True  # type: ignore[arg-type]
    )
    try:
        block = read_fully(probe, BLOCK)
    except zstandard.ZstdError as error:
        raise CorruptBundleError(f"{INDEX_NAME}: damaged zstd data ({error})") from None
    except _TooFar:
        raise NotABundleError("not a bundle: no tar header near the start") from None
    if len(block) < BLOCK:
        raise NotABundleError("not a bundle: too short to hold a tar header")
    try:
        header = read_header(_first_block_only(block))
    except TarFormatError as error:
        raise NotABundleError(f"not a bundle: not a tar archive of ours ({error})") from None
    if header is None or header.name != INDEX_NAME:
        first = "an end-of-archive block" if header is None else repr(header.name[:200])
        raise NotABundleError(f"not a bundle: the first member is {first}, not {INDEX_NAME}")


def _first_block_only(block: bytes) -> Callable[[int], bytes]:
    """A ``read_exact`` for the probe: the first block; a pax header's data is not looked at."""
    blocks = [block]

    def read_exact(size: int) -> bytes:
        if not blocks:
            raise TarFormatError("first member has a pax header")  # ours never does
        return blocks.pop()

    return read_exact


def _read_header(cursor: Cursor) -> TarHeader | None:
    try:
        return read_header(cursor.read_exact)
    except TarFormatError as error:
        raise CorruptBundleError(f"bad tar header ({error})", subject=cursor.label) from None


def _most_frames(index: BundleIndex, index_length: int) -> int:
    """How many frames a bundle with this index can have: each member in frames of at most ``FRAME_SIZE``,
    ``oci-layout`` and ``index.json`` in up to one more than their joint length needs, and the end of archive.
    A seek table claiming more is refused before it is read."""
    entries = [*index.manifests, *index.blobs]
    metadata = entries[0].offset if entries else MAX_METADATA_LENGTH
    members = sum(-(-member_length(blob_path(entry.digest), entry.size) // FRAME_SIZE) for entry in entries)
    return min(MAX_FRAMES, -(-index_length // FRAME_SIZE) + -(-metadata // FRAME_SIZE) + 1 + members + 1)


def _read_seek_table(file: BinaryIO, index: BundleIndex, index_length: int) -> SeekTable:
    """Parse the seek table and check it agrees with the index on where members start and end."""

    def read_at(offset: int, size: int) -> bytes:
        return _pread(file, offset, size)

    try:
        file_size = file.seek(0, os.SEEK_END)
        table = parse_seek_table(read_at, file_size, max_compressed=MAX_FRAME_COMPRESSED, max_decompressed=FRAME_SIZE,
                                 max_frames=_most_frames(index, index_length))
    except SeekTableError as error:
        raise CorruptBundleError(f"seek table: {error}") from None
    except OSError as error:
        raise LocalIOError(f"cannot read the bundle: {error.strerror or error}") from None
    if table.frame_starting_at(index_length) is None:
        raise CorruptBundleError(f"seek table: no frame starts after {INDEX_NAME}")
    members = index.blobs or index.manifests
    if members:
        last = members[-1]
        end = index_length + last.offset + member_length(blob_path(last.digest), last.size) + len(END_OF_ARCHIVE)
        if table.decompressed_total != end:
            raise CorruptBundleError("seek table: frame sizes disagree with the member sizes in the index")
    return table
