"""The zstd seekable-format seek table: one skippable frame at the very end of the file.

Layout (facebook/zstd contrib/seekable_format, version 0.1.0), all integers little-endian::

    Skippable_Magic_Number u32 = 0x184D2A5E
    Frame_Size             u32 = 8 * Number_Of_Frames + 9
    Number_Of_Frames x (Compressed_Size u32, Decompressed_Size u32)   # no checksum entries
    Number_Of_Frames       u32
    Seek_Table_Descriptor  u8  = 0
    Seekable_Magic_Number  u32 = 0x8F92EAB1

It lets a reader jump to the frame where a member starts without decompressing what precedes it.
"""

from __future__ import annotations

import bisect
import struct
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

__all__ = [
    "FOOTER_SIZE",
    "MAX_FRAMES",
    "SEEKABLE_MAGIC",
    "SKIPPABLE_MAGIC",
    "SeekTable",
    "SeekTableError",
    "encode_seek_table",
    "parse_seek_table",
]

SKIPPABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
FOOTER_SIZE = 9
_SKIPPABLE_HEADER = 8
_ENTRY = 8
MAX_FRAMES = 1 << 22
"""Frames a seek table may list: 16 TiB of tar stream in 4 MiB frames. Held as compact arrays (24 bytes a
frame), so the table of the largest bundle allowed costs at most 96 MiB."""


class SeekTableError(Exception):
    """A missing or inconsistent seek table; the reader turns it into ``CorruptBundleError``."""


def encode_seek_table(frames: Sequence[tuple[int, int]]) -> bytes:
    """The skippable frame for ``(compressed_size, decompressed_size)`` pairs, in file order."""
    entries = b"".join(struct.pack("<II", compressed, decompressed) for compressed, decompressed in frames)
    footer = struct.pack("<IBI", len(frames), 0, SEEKABLE_MAGIC)
    return struct.pack("<II", SKIPPABLE_MAGIC, len(entries) + FOOTER_SIZE) + entries + footer


@dataclass(frozen=True)
class SeekTable:
    """Frame sizes plus running offsets: ``compressed_offsets[i]`` is where frame ``i`` starts in
    the file, ``decompressed_offsets[i]`` where its output starts in the tar stream."""

    compressed_sizes: array[int]
    decompressed_sizes: array[int]
    compressed_offsets: array[int]
    decompressed_offsets: array[int]
    table_size: int

    @property
    def frame_count(self) -> int:
        return len(self.compressed_sizes)

    @property
    def decompressed_total(self) -> int:
        return self.decompressed_offsets[-1] + self.decompressed_sizes[-1] if self.frame_count else 0

    def frame_starting_at(self, position: int) -> int | None:
        """The frame whose output starts exactly at ``position`` of the tar stream, if any."""
        index = bisect.bisect_left(self.decompressed_offsets, position)
        if index < self.frame_count and self.decompressed_offsets[index] == position:
            return index
        return None


def parse_seek_table(
    read_at: Callable[[int, int], bytes],
    file_size: int,
    *,
    max_compressed: int,
    max_decompressed: int,
    max_frames: int = MAX_FRAMES,
) -> SeekTable:
    """Read and check the seek table at the end of a file of ``file_size`` bytes.

    The frame count is checked against ``max_frames`` and the file size before the table is read.
    Frame sizes are bounded (``max_compressed``, ``max_decompressed``, both non-zero) and must add
    up to exactly the bytes before the table, so a reader can trust every offset it derives.
    """
    if file_size < _SKIPPABLE_HEADER + FOOTER_SIZE:
        raise SeekTableError("file too short for a seek table")
    count, descriptor, magic = struct.unpack("<IBI", read_at(file_size - FOOTER_SIZE, FOOTER_SIZE))
    if magic != SEEKABLE_MAGIC:
        raise SeekTableError("no seek table at the end of the file (truncated?)")
    if descriptor != 0:
        raise SeekTableError(f"seek table descriptor {descriptor:#04x} is not 0")
    table_size = _SKIPPABLE_HEADER + count * _ENTRY + FOOTER_SIZE
    if table_size > file_size:
        raise SeekTableError(f"seek table claims {count} frames, more than the file holds")
    if count > max_frames:
        raise SeekTableError(f"seek table claims {count} frames, more than the {max_frames} the index allows")
    table = read_at(file_size - table_size, table_size)
    skippable, frame_size = struct.unpack_from("<II", table)
    if skippable != SKIPPABLE_MAGIC or frame_size != table_size - _SKIPPABLE_HEADER:
        raise SeekTableError("seek table frame header is wrong")
    entries = array("I", bytes(table[_SKIPPABLE_HEADER : _SKIPPABLE_HEADER + count * _ENTRY]))
    del table
    if sys.byteorder == "big":
        entries.byteswap()
    compressed, decompressed = entries[0::2], entries[1::2]
    del entries
    _check_sizes(compressed, decompressed, max_compressed, max_decompressed)
    if sum(compressed) != file_size - table_size:
        raise SeekTableError("frame sizes in the seek table do not add up to the file size")
    return SeekTable(
        compressed,
        decompressed,
        _starts(compressed),
        _starts(decompressed),
        table_size,
    )


def _starts(sizes: array[int]) -> array[int]:
    """Where each frame starts: the running sum of the sizes before it."""
    starts = array("Q", accumulate(sizes, initial=0))
    starts.pop()
    return starts


def _check_sizes(compressed: array[int], decompressed: array[int], max_c: int, max_d: int) -> None:
    if not compressed or (0 < min(compressed) and max(compressed) <= max_c
                          and 0 < min(decompressed) and max(decompressed) <= max_d):
        return
    for number, (csize, dsize) in enumerate(zip(compressed, decompressed)):
        if not 0 < csize <= max_c or not 0 < dsize <= max_d:
            raise SeekTableError(f"seek table entry {number} has impossible sizes {csize}/{dsize}")
