"""zstd framing: how member bytes become frames, and the two ways of reading them back.

Writing: every member's bytes are cut into pieces of at most ``FRAME_SIZE`` and each piece is
compressed on its own (content size and checksum in the frame header), so frames can be made on
many threads and read back from any member start.

Reading: ``SeekableFrames`` decompresses frame by frame as the seek table lists them, checking
each frame's header against the table before decompressing (no zstd bombs); ``StreamFrames``
decompresses a pipe front to back. ``Cursor`` reads exact byte counts from either and turns
every decompression or truncation problem into ``CorruptBundleError`` naming the member.
"""

from __future__ import annotations

import bisect
import queue
import re
import threading
from collections.abc import Callable, Iterator

import zstandard

from bundler.bundle.framecheck import FrameError, FrameTracker, Readable
from bundler.bundle.seektable import SeekTable
from bundler.errors import CorruptBundleError

__all__ = [
    "CHUNK_SIZE",
    "COMPRESSED_BLOB_LEVEL",
    "FRAME_SIZE",
    "MAX_FRAME_COMPRESSED",
    "MAX_WINDOW",
    "ZSTD_MAGIC",
    "CompressedDataError",
    "Cursor",
    "SeekableFrames",
    "StreamFrames",
    "blob_level",
    "compress_frames",
    "decompress_frame",
    "new_compressor",
    "new_decompressor",
]

FRAME_SIZE = 4 * 1024 * 1024
"""Most decompressed bytes in one frame: the unit of random access and of parallel work."""
CHUNK_SIZE = 1024 * 1024
"""Size of the chunks readers hand out; a blob is never held in memory whole."""
READ_AHEAD = 8
"""Raw ``CHUNK_SIZE`` pieces a stream reader may read ahead of the decompressor (``_ReadAhead``)."""
MAX_WINDOW = 8 * 1024 * 1024
"""Largest zstd window a reader accepts; our frames need at most FRAME_SIZE."""
MAX_FRAME_COMPRESSED = FRAME_SIZE + FRAME_SIZE // 128 + 4096
"""Above ZSTD_compressBound(FRAME_SIZE): no honest frame is larger."""
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPRESSED_BLOB_LEVEL = 1
"""The level for blobs already compressed (gzip and zstd layers): higher levels barely shrink such
data and cost several times the CPU (measured in docs/benchmark.md)."""
_ALREADY_COMPRESSED = re.compile(r"[+.](gzip|zstd|bzip2|xz)$")


def new_compressor(level: int) -> zstandard.ZstdCompressor:
    """A compressor with the frame options the format requires; not thread-safe, one per thread."""
    return zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True, write_dict_id=False)


def blob_level(media_type: str, level: int) -> int:
    """The level a blob is compressed at: ``COMPRESSED_BLOB_LEVEL`` when its media type says compressed."""
    return COMPRESSED_BLOB_LEVEL if _ALREADY_COMPRESSED.search(media_type) else level


def compress_frames(compressor: zstandard.ZstdCompressor, data: bytes) -> Iterator[tuple[bytes, int]]:
    """``(frame, decompressed_size)`` for each ``FRAME_SIZE`` piece of one member's bytes."""
    view = memoryview(data)
    for start in range(0, len(view), FRAME_SIZE):
        piece = view[start : start + FRAME_SIZE]
        yield compressor.compress(piece), len(piece)


class CompressedDataError(Exception):
    """Damaged compressed data; ``Cursor`` adds the member name and raises ``CorruptBundleError``."""


class _ReadAhead:
    """The raw stream read on a helper thread, up to ``READ_AHEAD`` pieces ahead of the consumer.

    Why: whatever ``raw.read`` does (``verify`` hashes the whole file there, for its sidecar) then
    runs beside the decompression and the member hashes instead of between them; hashlib and
    zstandard release the GIL, so a second core does that work. A read error is raised to the
    consumer at the point of the stream where it happened.
    """

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=READ_AHEAD)
        self._stop = threading.Event()
        self._piece = b""
        self._offset = 0
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="imgbundle-read-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._raw.read(CHUNK_SIZE)
                self._put(data)
                if not data:
                    return
        except BaseException as error:  # noqa: BLE001 - raised again in the consumer's thread
            self._put(error)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (a whole piece when ``size`` is negative); ``b""`` at the end."""
        if self._offset == len(self._piece):
            if self._ended:
                return b""
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            self._piece, self._offset, self._ended = item, 0, not item
        if self._offset == 0 and (size < 0 or size >= len(self._piece)):
            self._offset = len(self._piece)
            return self._piece
        end = len(self._piece) if size < 0 else min(len(self._piece), self._offset + size)
        data, self._offset = self._piece[self._offset : end], end
        return data

    def close(self) -> None:
        """Stop reading ahead; waits briefly for the thread (a stalled pipe cannot be interrupted)."""
        self._stop.set()
        self._thread.join(timeout=1.0)


class StreamFrames:
    """Decompressed bytes of a stream of frames read front to back (a file or a pipe).

    The compressed bytes pass through a ``FrameTracker`` first, so framing is checked as
    strictly as through the seek table, and a stream cut inside a frame is noticed. With
    ``read_ahead`` the raw stream is read on a helper thread (see ``_ReadAhead``); then ``close``
    must be called, and nothing else may read ``raw`` meanwhile.
    """

    def __init__(self, raw: Readable, *, read_ahead: bool = False) -> None:
        self._ahead = _ReadAhead(raw) if read_ahead else None
        self._tracker = FrameTracker(self._ahead or raw, max_content=FRAME_SIZE)
        decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
        # zstandard reads from any object with read(); its stub asks for IO[bytes]
        self._reader = decompressor.stream_reader(
            self._tracker, read_size=CHUNK_SIZE, read_across_frames=True, closefd=False  # type: ignore[arg-type]
        )
        self._position = 0

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end of the stream.

        A framing error the tracker found ahead is raised only once the output reaches the
        frame it belongs to, so it is reported against the right member.
        """
        if self._tracker.error is not None:
            position, message = self._tracker.error
            if self._position >= position:
                raise CompressedDataError(message)
            size = min(size, position - self._position)
        try:
            data = self._reader.read(size)
        except zstandard.ZstdError as error:
            raise CompressedDataError(f"damaged zstd data ({error})") from None
        if self._tracker.error is not None:
            position, message = self._tracker.error
            data = data[: max(0, position - self._position)]
            if not data:
                raise CompressedDataError(message)
        elif not data and self._tracker.ended_inside_a_frame:
            raise CompressedDataError(f"truncated: the data ends inside a zstd frame (after {self._tracker.offset} bytes)")
        self._position += len(data)
        return data

    def starts_frame(self, position: int) -> bool:
        """Whether a frame's output begins at ``position`` (valid once bytes there were read)."""
        starts = self._tracker.frame_starts
        index = bisect.bisect_left(starts, position)
        return index < len(starts) and starts[index] == position

    def finish(self) -> None:
        """Check the rest of the stream is exactly the seek table of the frames seen."""
        try:
            self._tracker.finish()
        except FrameError as error:
            raise CompressedDataError(str(error)) from None

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.close()


class SeekableFrames:
    """Decompressed bytes from frame ``first_frame`` on, one frame at a time, via the seek table.

    ``read_at`` may return a view that its next call overwrites (``DirectReader``): each frame is
    decompressed from it before anything else is read. A read asking for at least a whole frame gets
    the frame itself, uncopied; only reads that split a frame copy their piece.
    """

    def __init__(self, read_at: Callable[[int, int], bytes | memoryview], table: SeekTable, first_frame: int) -> None:
        self._read_at = read_at
        self._table = table
        self._next_frame = first_frame
        self._frame = b""
        self._offset = 0
        self._decompressor = new_decompressor()

    def read(self, size: int) -> bytes:
        if self._offset == len(self._frame):
            if self._next_frame >= self._table.frame_count:
                return b""
            self._frame, self._offset = self._load(self._next_frame), 0
            self._next_frame += 1
        if self._offset == 0 and size >= len(self._frame):
            self._offset = len(self._frame)
            return self._frame
        piece = self._frame[self._offset : self._offset + size]
        self._offset += len(piece)
        return piece

    def starts_frame(self, position: int) -> bool:
        return self._table.frame_starting_at(position) is not None

    def finish(self) -> None:
        """Nothing to do: the seek table was checked against the file when it was opened."""

    def close(self) -> None:
        """Nothing to release: every read goes through ``read_at``."""

    def _load(self, number: int) -> bytes:
        return decompress_frame(self._decompressor, self._read_at, self._table, number)


def new_decompressor() -> zstandard.ZstdDecompressor:
    """A decompressor with the window limit readers apply; not thread-safe, one per thread."""
    return zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)


def decompress_frame(
    decompressor: zstandard.ZstdDecompressor,
    read_at: Callable[[int, int], bytes | memoryview],
    table: SeekTable,
    number: int,
) -> bytes:
    """Decompress frame ``number``, refusing it unless its header matches the seek table entry."""
    offset = table.compressed_offsets[number]
    expected = table.decompressed_sizes[number]
    data = read_at(offset, table.compressed_sizes[number])
    if len(data) != table.compressed_sizes[number]:
        raise CompressedDataError(f"frame {number} at byte {offset} is truncated")
    if data[:4] != ZSTD_MAGIC:
        raise CompressedDataError(f"frame {number} at byte {offset} is not a zstd frame")
    try:
        _check_frame_header(zstandard.get_frame_parameters(data), expected, f"frame {number} at byte {offset}")
        output = decompressor.decompress(data, allow_extra_data=False)
    except zstandard.ZstdError as error:
        raise CompressedDataError(f"damaged zstd frame {number} at byte {offset} ({error})") from None
    if len(output) != expected:
        raise CompressedDataError(f"frame {number} at byte {offset} decompressed to the wrong size")
    return output


def _check_frame_header(params: zstandard.FrameParameters, expected: int, where: str) -> None:
    """Before decompressing: the header must promise exactly what the seek table says."""
    if params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
        raise CompressedDataError(f"{where} does not declare its content size")
    if not params.has_checksum or params.dict_id:
        raise CompressedDataError(f"{where} has no content checksum or needs a dictionary")
    if params.content_size != expected:
        raise CompressedDataError(f"{where} declares {params.content_size} bytes; the seek table says {expected}")


class Cursor:
    """Exact reads from decompressed frames, tracking the position in the decompressed tar stream.

    ``label`` names the member being read; every problem becomes ``CorruptBundleError`` with it.
    """

    def __init__(self, frames: StreamFrames | SeekableFrames, position: int = 0) -> None:
        self._frames = frames
        self.position = position
        self.label = "bundle"

    def read_some(self, limit: int) -> bytes:
        """Between 1 and ``limit`` bytes; refuses to hit the end of data."""
        try:
            data = self._frames.read(limit)
        except CompressedDataError as error:
            raise CorruptBundleError(str(error), subject=self.label) from None
        if not data:
            raise CorruptBundleError("truncated (data ends early)", subject=self.label)
        self.position += len(data)
        return data

    def read_upto(self, size: int) -> bytes:
        """``size`` bytes, or fewer only if the data ends first."""
        parts = []
        remaining = size
        while remaining:
            try:
                part = self._frames.read(remaining)
            except CompressedDataError as error:
                raise CorruptBundleError(str(error), subject=self.label) from None
            if not part:
                break
            parts.append(part)
            remaining -= len(part)
            self.position += len(part)
        return b"".join(parts)

    def read_exact(self, size: int) -> bytes:
        parts = []
        remaining = size
        while remaining:
            part = self.read_some(remaining)
            parts.append(part)
            remaining -= len(part)
        return b"".join(parts)

    def skip(self, size: int) -> None:
        while size:
            size -= len(self.read_some(min(size, CHUNK_SIZE)))

    def starts_frame(self, position: int) -> bool:
        return self._frames.starts_frame(position)

    def finish(self) -> None:
        """After the last byte: check the framing of whatever follows (the seek table)."""
        try:
            self._frames.finish()
        except CompressedDataError as error:
            raise CorruptBundleError(str(error), subject=self.label) from None

    def close(self) -> None:
        """Release the frames (stops a stream's read-ahead thread)."""
        self._frames.close()

    def at_end(self) -> bool:
        """True when the decompressed data is exhausted (reads at most one more byte)."""
        try:
            data = self._frames.read(1)
        except CompressedDataError as error:
            raise CorruptBundleError(str(error), subject=self.label) from None
        self.position += len(data)
        return not data
