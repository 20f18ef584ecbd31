"""Check the zstd frame structure of a stream as its compressed bytes pass by.

python-zstandard's ``stream_reader`` decompresses a pipe, but it accepts input that ends inside
a frame and never sees the seek table. ``FrameTracker`` sits between the pipe and the
decompressor and parses only the frame layout (RFC 8878 frame and block headers, skippable
frames): every frame must carry a content size of at most ``FRAME_SIZE`` and a checksum, the
stream must end on a frame boundary, and the last frame must be a seek table whose entries are
exactly the frames seen. So a pipe reader checks the same framing rules as a file reader.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from typing import Protocol

from bundler.bundle.seektable import FOOTER_SIZE, SEEKABLE_MAGIC, SKIPPABLE_MAGIC

__all__ = ["FrameError", "FrameTracker", "Readable"]

_ZSTD_FRAME_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK = 0xFFFFFFF0
_SKIPPABLE_ANY = 0x184D2A50
_FCS_BYTES = {1: 2, 2: 4, 3: 8}
_RLE_BLOCK = 1
_RESERVED_BLOCK = 3

# The parser is a generator that asks for ("read", n) bytes or to ("skip", n) bytes, and is sent
# the bytes read (nothing, ``b""``, for a skip).
_Request = tuple[str, int]
_Parser = Generator[_Request, bytes, None]


class Readable(Protocol):
    """A stream of bytes read front to back: a file, a pipe, or a wrapper around one."""

    def read(self, size: int = -1, /) -> bytes: ...


class FrameError(Exception):
    """The compressed stream breaks the framing rules; the caller adds context."""


class FrameTracker:
    """A read-only pass-through of ``raw`` that checks frame structure as it goes.

    It reads ahead of the decompressed data the caller has used, so the first broken rule is
    not raised but kept in ``error`` as (decompressed position of the offending frame, message),
    and no more input is read; the caller raises it when its reading reaches that position.
    ``frame_starts`` lists where each zstd frame's output starts (known once its header passed).
    """

    def __init__(self, raw: Readable, *, max_content: int) -> None:
        self._raw = raw
        self._max_content = max_content
        self.offset = 0
        """Compressed bytes seen so far."""
        self.frame_starts: list[int] = []
        self._frames: list[tuple[int, int]] = []
        self._decompressed = 0
        self._table_seen = False
        self._at_boundary = True
        self._buffer = bytearray()
        self._skipped = 0
        self._parser = self._parse()
        self._request: _Request = next(self._parser)
        self._eof = False
        self._frame_output_start = 0
        self.error: tuple[int, str] | None = None

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            return b""
        data = self._raw.read(size)
        if not data:
            self._eof = True
            return data
        try:
            self._feed(memoryview(data))
        except FrameError as error:
            self.error = (self._frame_output_start, str(error))
        return data

    @property
    def ended_inside_a_frame(self) -> bool:
        return self._eof and not (self._at_boundary and not self._buffer)

    def finish(self) -> None:
        """Read to the end of the stream and check it ended with a complete seek table."""
        while not self._eof and self.error is None:
            self.read(64 * 1024)
        if self.error is not None:
            raise FrameError(self.error[1])
        if self.ended_inside_a_frame:
            raise FrameError(f"the stream ends inside a frame (after {self.offset} bytes)")
        if not self._table_seen:
            raise FrameError("the stream ends without a seek table")

    # --- feeding the parser ---------------------------------------------------------------

    def _feed(self, data: memoryview) -> None:
        while data:
            kind, size = self._request
            if kind == "skip":
                take = min(size - self._skipped, len(data))
                self._skipped += take
                self.offset += take
                data = data[take:]
                if self._skipped == size:
                    self._advance(b"")
            else:
                take = min(size - len(self._buffer), len(data))
                self._buffer += data[:take]
                self.offset += take
                data = data[take:]
                if len(self._buffer) == size:
                    value = bytes(self._buffer)
                    self._buffer.clear()
                    self._advance(value)

    def _advance(self, value: bytes) -> None:
        self._skipped = 0
        try:
            self._request = self._parser.send(value)
            while self._request == ("skip", 0):
                self._request = self._parser.send(b"")
        except StopIteration:  # pragma: no cover - the parser never returns
            raise FrameError("internal parser stopped") from None

    # --- the frame grammar ------------------------------------------------------------------

    def _parse(self) -> _Parser:
        while True:
            self._at_boundary = True
            self._frame_output_start = self._decompressed
            magic_bytes = yield ("read", 4)
            self._at_boundary = False
            start = self.offset - 4
            if self._table_seen:
                raise FrameError(f"data after the seek table at byte {start}")
            magic = int.from_bytes(magic_bytes, "little")
            if magic == _ZSTD_FRAME_MAGIC:
                content = yield from self._zstd_frame(start)
                self._frames.append((self.offset - start, content))
            elif magic & _SKIPPABLE_MASK == _SKIPPABLE_ANY:
                yield from self._seek_table(magic, start)
            else:
                raise FrameError(f"no zstd frame at byte {start}")

    def _zstd_frame(self, start: int) -> Generator[_Request, bytes, int]:
        descriptor = (yield ("read", 1))[0]
        fcs_flag, single_segment = descriptor >> 6, descriptor >> 5 & 1
        if descriptor & 0x08 or descriptor & 0x03 or not descriptor & 0x04:
            raise FrameError(f"frame at byte {start}: reserved bit, dictionary, or no checksum")
        if not single_segment:
            yield ("read", 1)  # window descriptor; the decompressor bounds the window
        fcs_bytes = _FCS_BYTES.get(fcs_flag, 1 if single_segment else 0)
        if not fcs_bytes:
            raise FrameError(f"frame at byte {start} does not declare its content size")
        content = int.from_bytes((yield ("read", fcs_bytes)), "little") + (256 if fcs_bytes == 2 else 0)
        if not 0 < content <= self._max_content:
            raise FrameError(f"frame at byte {start} declares {content} bytes, outside 1..{self._max_content}")
        self.frame_starts.append(self._decompressed)
        self._decompressed += content
        last = 0
        while not last:
            header = int.from_bytes((yield ("read", 3)), "little")
            last, block_type, size = header & 1, header >> 1 & 3, header >> 3
            if block_type == _RESERVED_BLOCK:
                raise FrameError(f"frame at byte {start} has a reserved block type")
            yield ("skip", 1 if block_type == _RLE_BLOCK else size)
        yield ("skip", 4)  # content checksum, verified by the decompressor
        return content

    def _seek_table(self, magic: int, start: int) -> Generator[_Request, bytes, None]:
        size = int.from_bytes((yield ("read", 4)), "little")
        expected = 8 * len(self._frames) + FOOTER_SIZE
        if magic != SKIPPABLE_MAGIC or size != expected:
            raise FrameError(f"skippable frame at byte {start} is not the seek table of the frames before it")
        body = yield ("read", size)
        entries = list(struct.iter_unpack("<II", body[: size - FOOTER_SIZE]))
        count, descriptor, seekable = struct.unpack("<IBI", body[size - FOOTER_SIZE :])
        if (count, descriptor, seekable) != (len(self._frames), 0, SEEKABLE_MAGIC) or entries != self._frames:
            raise FrameError("the seek table does not match the frames of the stream")
        self._table_seen = True
